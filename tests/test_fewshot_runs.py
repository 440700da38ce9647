"""Few-shot runs end to end: examples independent of --limit and the batch size, long contexts truncated and packed,
per-choice contexts scored like the naive reference, baselines that re-run the shots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.regression.baseline import load_baseline
from evalkit.scoring.batching import pack_groups
from evalkit.cli.main import main
from evalkit.scoring.hf_backend import HFBackend
from evalkit.tasks.registry import load_registry
from evalkit.run.prepare import prepare_task
from evalkit.run.pipeline import run
from evalkit.scoring.tokenization import tokenize_requests
from evalkit.types import RunConfig

from .conftest import TOKENIZER_JSON
from .reference import naive_loglikelihood

TASKS = ("sciq", "arc_challenge", "lambada_openai")


def _samples(path: Path) -> dict[tuple[str, int], dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return {(r["task"], r["doc_id"]): r for r in rows}


@pytest.fixture(scope="module")
def limited_runs(tmp_path_factory, data_dir):
    """The same 3-shot run of 6 documents per task at batch sizes 1 and 16, window 512 (SciQ contexts get cut)."""
    out = {}
    for batch_size in (1, 16):
        folder = tmp_path_factory.mktemp(f"bs{batch_size}")
        config = RunConfig(model="random:pythia-14m", tasks=TASKS, tokenizer=str(TOKENIZER_JSON),
                           data_dir=str(data_dir), limit=6, batch_size=batch_size, max_length=512, bootstrap_iters=0,
                           output_dir=str(folder), log_samples=True, use_cache=False, num_fewshot=3)
        done = run(config, progress=False)
        out[batch_size] = (done, _samples(done.samples_path))
    return out


@pytest.mark.usefixtures("one_thread")
def test_examples_do_not_depend_on_limit_or_batch_size(limited_runs, data_dir):
    registry = load_registry()
    (_, small), (_, large) = limited_runs[1], limited_runs[16]
    assert small.keys() == large.keys() and len(small) == 18
    for name in TASKS:
        full = prepare_task(registry.get(name), data_dir, None, 1234, 3)  # every document, no --limit
        for (task, doc_id), row in small.items():
            if task != name:
                continue
            assert row["fewshot_doc_ids"] == list(full.fewshot.examples[doc_id]) == large[task, doc_id]["fewshot_doc_ids"]
            assert len(row["fewshot_doc_ids"]) == 3
            contexts = {r.context for r in full.requests if r.doc_id == doc_id}
            assert {row["context"]} == contexts == {large[task, doc_id]["context"]}
            assert row["loglikelihoods"] == pytest.approx(large[task, doc_id]["loglikelihoods"], abs=1e-4)
            assert row["greedy"] == large[task, doc_id]["greedy"]


def test_results_say_the_shots_and_count_truncation(limited_runs):
    done, _ = limited_runs[16]
    tasks = done.results["tasks"]
    assert {n: (t["num_fewshot"], t["fewshot_split"], t["fewshot_seed"], t["fewshot_source"]) for n, t in
            tasks.items()} == {"sciq": (3, "train", 42, "split"), "arc_challenge": (3, "train", 42, "split"),
                               "lambada_openai": (3, "test", 42, "evaluated split without the document")}
    assert tasks["sciq"]["truncated_requests"] > 0
    assert any("longer than the window of 512 tokens" in w for w in tasks["sciq"]["warnings"])
    report = done.report_path.read_text(encoding="utf-8")
    assert "| **random:pythia-14m (float32)** | **3-shot** |" in report
    assert "| GPT-NeoX-20B | 0-shot |" in report
    assert "| sciq v1.0 | 3-shot | acc |" in report


def test_prompt_hash_covers_the_examples(limited_runs, data_dir):
    registry = load_registry()
    done, _ = limited_runs[1]
    zero = prepare_task(registry.get("sciq"), data_dir, 6, 1234, 0)
    other_seed = prepare_task(registry.get("sciq"), data_dir, 6, 1234, 3, fewshot_seed=7)
    from evalkit.run.task_results import prompt_hash

    hashes = {done.results["tasks"]["sciq"]["prompt_sha256"], prompt_hash(zero.requests),
              prompt_hash(other_seed.requests)}
    assert len(hashes) == 3


@pytest.mark.usefixtures("one_thread")
def test_long_shared_contexts_pack_and_score_like_the_naive_reference(tokenizer, data_dir, tiny_model):
    # seed 137 draws documents 170, 376 and 490, whose five-shot contexts are 910, 1278 and 863 tokens
    prepared = prepare_task(load_registry().get("sciq"), data_dir, 3, 137, 5)
    for window in (2048, 840, 300):
        requests = tokenize_requests(prepared.requests, tokenizer.encode_batch, tokenizer.eot_id, window)
        groups = pack_groups(requests, window)
        assert sorted(i for g in groups for ids in g.request_indices for i in ids) == list(range(len(requests)))
        for group in groups:
            assert group.length <= window
            for ids in group.request_indices:
                assert all(requests[i].context_ids == group.context_ids for i in ids)
        if window == 2048:  # five-shot SciQ fits 2048: one sequence per document, its four choices packed
            assert [len(g.continuations) for g in groups] == [4, 4, 4]
            assert all(len(g.context_ids) > 800 for g in groups)
        if window == 840:  # a context cut to nearly the whole window leaves room for fewer choices per sequence
            assert len(groups) > 3 and any(r.truncated_tokens for r in requests)
    assert all(r.truncated_tokens > 0 for r in requests)  # window 300: every context cut on the left
    responses = HFBackend(tiny_model, 300, batch_size=4, progress=False).loglikelihood(requests)
    for request, response in zip(requests, responses):
        ll, greedy = naive_loglikelihood(tiny_model, request)
        assert response.loglikelihood == pytest.approx(ll, abs=1e-4)
        assert response.greedy == greedy


# --- per-choice contexts ------------------------------------------------------------------------------------------

WINO_TASK = '''
from evalkit.types import DatasetSpec, Task


def partial(doc, option):
    return doc["sentence"][: doc["sentence"].index("_")] + option


def context(doc):
    return partial(doc, doc["option1"] if doc["answer"] == "1" else doc["option2"])


def target(doc):
    return " " + doc["sentence"][doc["sentence"].index("_") + 1:].strip()


TASK = Task(
    name="wino_mini", version="0",
    dataset=DatasetSpec("none", None, "validation", 4, {"sentence": str, "option1": str, "option2": str, "answer": str}),
    context=context, continuations=lambda d: [target(d), target(d)], gold=lambda d: 0 if d["answer"] == "1" else 1,
    scoring="multiple_choice", metrics=("acc",), fewshot_split="train", target=target,
    choice_contexts=lambda d: [partial(d, d["option1"]), partial(d, d["option2"])],
)
'''

VALIDATION = [("Sarah beat Maria so _ won the prize.", "Sarah", "Maria", "1"),
              ("The cup did not fit in the box because _ was too big.", "cup", "box", "1"),
              ("Tom gave Ben his coat because _ was cold.", "Tom", "Ben", "2"),
              ("The ice melted on the road as _ was  warm.", "ice", "road", "2")]
TRAIN = [(f"Person {i} thanked person {i + 1} because _ had helped.", f"Ann{i}", f"Bob{i}", "12"[i % 2])
         for i in range(8)]


def _rows(items):
    return "".join(json.dumps({"sentence": s, "option1": a, "option2": b, "answer": c}) + "\n" for s, a, b, c in items)


@pytest.fixture()
def wino(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "wino_mini.py").write_text(WINO_TASK)
    (tmp_path / "data" / "wino_mini").mkdir(parents=True)
    (tmp_path / "data" / "wino_mini" / "validation.jsonl").write_text(_rows(VALIDATION))
    (tmp_path / "data" / "wino_mini" / "train.jsonl").write_text(_rows(TRAIN))
    return load_registry((str(tmp_path / "tasks"),)).get("wino_mini"), tmp_path / "data"


def test_per_choice_contexts_exactly_at_zero_and_two_shots(wino):
    import random

    task, data = wino
    zero = prepare_task(task, data, None, 1, 0)
    assert [r.context for r in zero.requests[:2]] == ["Sarah beat Maria so Sarah", "Sarah beat Maria so Maria"]
    assert [r.continuation for r in zero.requests[:2]] == [" won the prize."] * 2
    assert zero.requests[7].continuation == " was  warm."  # the tail is stripped at its ends only
    two = prepare_task(task, data, None, 1, 2)
    rnd = random.Random(42)
    order = list(range(4))
    rnd.shuffle(order)
    draws = {row: rnd.sample(range(8), 2) for row in order}
    for row, (sentence, a, b, answer) in enumerate(VALIDATION):
        shots = ""
        for i in draws[row]:
            s, x, y, c = TRAIN[i]
            blank = s.index("_")
            shots += s[:blank] + (x if c == "1" else y) + " " + s[blank + 1:].strip() + "\n\n"
        blank = sentence.index("_")
        expected = [shots + sentence[:blank] + a, shots + sentence[:blank] + b]
        assert [r.context for r in two.requests if r.doc_id == row] == expected
        assert two.contexts[row] == expected


@pytest.mark.usefixtures("one_thread")
def test_per_choice_contexts_score_like_the_naive_reference_at_any_batch_size(wino, tokenizer, tiny_model):
    task, data = wino
    prepared = prepare_task(task, data, None, 1, 2)
    requests = tokenize_requests(prepared.requests, tokenizer.encode_batch, tokenizer.eot_id, 2048)
    naive = [naive_loglikelihood(tiny_model, r) for r in requests]
    by_batch = {}
    for batch_size in (1, 8):
        responses = HFBackend(tiny_model, 2048, batch_size=batch_size, progress=False).loglikelihood(requests)
        by_batch[batch_size] = [r.loglikelihood for r in responses]
        for response, (ll, greedy) in zip(responses, naive):
            assert response.loglikelihood == pytest.approx(ll, abs=1e-4)
            assert response.greedy == greedy
    assert by_batch[1] == pytest.approx(by_batch[8], abs=1e-5)


def test_per_choice_samples_hold_one_context_per_choice_and_a_baseline_checks_them(wino, tmp_path, capsys):
    task, data = wino
    (data / "tokenizers").mkdir()
    (data / "tokenizers" / "20B_tokenizer.json").symlink_to(TOKENIZER_JSON)
    common = ["--model", "random:pythia-14m", "--tokenizer", str(data / "tokenizers" / "20B_tokenizer.json"),
              "--data-dir", str(data), "--include-path", str(tmp_path / "tasks"), "--bootstrap-iters", "0"]
    baseline = tmp_path / "baseline.json"
    assert main(["baseline", *common, "--tasks", "wino_mini:2", "--output", str(baseline),
                 "--output-dir", str(tmp_path / "a")]) == 0
    frozen = load_baseline(baseline)
    assert (frozen["config"]["num_fewshot"], frozen["config"]["fewshot_overrides"]) == (0, {"wino_mini": 2})
    assert "--tasks wino_mini:2 " in frozen["equivalent_run"]
    (samples,) = (tmp_path / "a" / "results").glob("*/*.samples.jsonl")
    row = json.loads(samples.read_text().split("\n")[0])
    assert isinstance(row["context"], list) and len(row["context"]) == 2 and len(row["fewshot_doc_ids"]) == 2
    capsys.readouterr()
    check = ["check", "--baseline", str(baseline), "--data-dir", str(data), "--output-dir", str(tmp_path / "b")]
    assert main(check) == 0
    assert "check passed: 1 tasks, 8 requests match" in capsys.readouterr().out
    frozen["config"]["fewshot_seed"] = 7  # other examples: the check must see changed prompts
    baseline.write_text(json.dumps(frozen))
    assert main(check) == 1
    assert "FAIL wino_mini: prompt_sha256" in capsys.readouterr().out


def test_comparisons_say_when_the_shots_differ(limited_runs):
    import copy

    from evalkit.reports.compare import paired_table, reference_table
    from evalkit.reports.report import reference_tables

    a = limited_runs[16][0].results
    b = copy.deepcopy(a)
    b["tasks"]["sciq"]["num_fewshot"] = 0
    table = paired_table(a, b, ("A", "B"), ("a.json", "b.json"), 200, 1, 0.05)
    assert "sciq: A is 3-shot and B 0-shot, so Δ mixes the model and the shots" in table.notes
    assert not any(n.startswith(("arc_challenge:", "lambada_openai:")) for n in table.notes)
    card = next(t for t in reference_tables() if t["name"] == "neox20b_card")
    assert reference_table(a, "A", card, 200, 1, 0.05).fewshot == ("lambada_openai", "sciq", "arc_challenge")
    assert reference_table(b, "B", card, 200, 1, 0.05).fewshot == ("lambada_openai", "arc_challenge")
