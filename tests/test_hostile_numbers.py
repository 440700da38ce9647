"""Hostile inputs that used to give a plausible but wrong number: each is now an error or a loud warning with its
count recorded, and finished work (results, cache rows) stays intact."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.types import EvalkitError, LoglikelihoodRequest
from tests.conftest import DATA_DIR, TOKENIZER_JSON, make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

GPT2_TOKENIZER_JSON = DATA_DIR / "tokenizers" / "gpt2_tokenizer.json"


def strict_load(path: Path) -> dict:
    """Parse a JSON file as a strict parser does: NaN and Infinity are errors."""
    def refuse(name):
        raise ValueError(f"{name} in {path}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def cache_rows(cache: Path) -> int:
    conn = sqlite3.connect(cache / "loglikelihood.sqlite3")
    try:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    finally:
        conn.close()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- joint tokenization -------------------------------------------------------------------------------------------

def test_joint_tokenization_never_scores_part_of_the_continuation_as_context(tokenizer):
    """'hello wor' + 'ld is big' encodes jointly as hello| world| is| big: splitting at the context's two tokens
    scored ' is big' after 'hello world'. The separate encodings are used instead, and the request is flagged."""
    from evalkit.scoring.tokenization import encode_pairs, tokenize_requests

    assert tokenizer.encode_batch(["hello world is big"]) == [[25521, 1533, 310, 1943]]
    [(ctx, cont)] = encode_pairs([("hello wor", "ld is big")], tokenizer.encode_batch, tokenizer.eot_id, "joint")
    assert (ctx, cont) == ([25521, 548], [392, 310, 1943])  # 'hello', ' wor' | 'ld', ' is', ' big'
    requests = [LoglikelihoodRequest("t", 0, 0, "hello wor", "ld is big"),
                LoglikelihoodRequest("t", 0, 1, "hello", " world is big")]
    got = tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, 2048, "joint")
    assert [(g.context_ids, g.continuation_ids, g.joint_fallback) for g in got] == [
        ((25521, 548), (392, 310, 1943), True),
        ((25521,), (1533, 310, 1943), False),  # the join falls between tokens: the joint split as before
    ]
    separate = tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, 2048, "separate")
    assert not any(t.joint_fallback for t in separate)


SPLIT_TASK = '''
from evalkit.types import DatasetSpec, Task

TASK = Task(
    name="split_words", version="1.0", dataset=DatasetSpec("local/split", None, "test", 3, {"head": str, "tail": str}),
    context=lambda d: d["head"], continuations=lambda d: [d["tail"]], gold=lambda d: 0,
    scoring="target", metrics=("acc", "perplexity"),
)
'''


def test_a_joint_run_counts_its_fallbacks_per_task_in_results_and_report(tmp_path):
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "split_words.py").write_text(SPLIT_TASK, encoding="utf-8")
    data = tmp_path / "data" / "split_words"
    data.mkdir(parents=True)
    rows = [{"head": "hello wor", "tail": "ld is big"}, {"head": "The cat", "tail": " sat"},
            {"head": "Question: Who?\nAns", "tail": "wer"}]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = RunConfig(model="random:pythia-14m", tasks=("split_words",), tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(tmp_path / "data"), include_paths=(str(tmp_path / "tasks"),), bootstrap_iters=0,
                       output_dir=str(tmp_path / "out"), use_cache=False, extra={"tokenization": "joint"})
    out = run(config, progress=False)
    task = out.results["tasks"]["split_words"]
    assert task["joint_fallback_requests"] == 2
    warning = ("split_words: 2 of 3 requests have a token spanning the join of context and continuation; "
               "--tokenization joint scored them with the context and the continuation encoded separately, so the "
               "continuation scored is exactly its text")
    assert task["warnings"] == [warning]
    assert f"> **Warning:** {warning}" in out.report_path.read_text(encoding="utf-8")


# --- non-finite log-likelihoods -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nan_model(tmp_path_factory, tokenizer):
    """A tiny model folder whose embedding row of one token is NaN, and the one PIQA request (of documents 47,
    568, 649, the seeded --limit 3 subset) that feeds that token to the model."""
    from evalkit.tasks.registry import load_registry
    from evalkit.run.prepare import prepare_task
    from evalkit.scoring.tokenization import tokenize_requests

    task = load_registry().get("piqa")
    prepared = prepare_task(task, DATA_DIR, 3, 1234)
    toks = tokenize_requests(prepared.requests, tokenizer.encode_batch, tokenizer.eot_id, 2048)
    inputs = [set(t.context_ids) | set(t.continuation_ids[:-1]) for t in toks]
    # the shortest request with a token no other request reads: scored last (longest first), so others are cached
    order = sorted(range(len(toks)), key=lambda i: len(toks[i].context_ids) + len(toks[i].continuation_ids))
    for index in order:
        others = set().union(*(s for j, s in enumerate(inputs) if j != index))
        own = [t for t in toks[index].continuation_ids[:-1] if t not in others]
        if own:
            break
    model = make_tiny_model(0)
    with __import__("torch").no_grad():
        model.get_input_embeddings().weight[own[0]] = float("nan")
    folder = tmp_path_factory.mktemp("nan-model")
    model.save_pretrained(folder)
    return folder, prepared.requests[index], len(toks)


def nan_run_argv(folder: Path, out: Path, *flags: str) -> list[str]:
    return ["run", "--model", str(folder), "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa", "--data-dir",
            str(DATA_DIR), "--limit", "3", "--batch-size", "1", "--no-shared-context", "--bootstrap-iters", "0",
            "--output-dir", str(out), "--no-progress", *flags]


def test_a_nan_model_stops_the_run_naming_the_request_and_keeps_the_finite_answers_cached(
        nan_model, tmp_path, capsys, isolated_cache):
    """A NaN weight gave PIQA acc 0.5 (argmax over NaN picks choice 0) and a bare NaN in the results JSON."""
    folder, bad, n_requests = nan_model
    out = tmp_path / "out"
    assert main(nan_run_argv(folder, out)) == 2
    err = capsys.readouterr().err
    assert (f"evalkit: error: task piqa doc {bad.doc_id} choice {bad.choice_index}: the model's log-likelihood is nan "
            f"(context {bad.context[-60:]!r}, continuation {bad.continuation[:60]!r})") in err
    assert "No results were written; the finite answers scored so far are kept in the request cache" in err
    assert "--allow-non-finite counts such requests" in err
    assert files_under(out / "results") == [] and files_under(out / "reports") == []
    kept = cache_rows(isolated_cache)
    assert 0 < kept < n_requests  # the finite answers scored before the NaN one, and never the NaN itself

    # --allow-non-finite: the cached answers are reused, the NaN request is counted and its document left out
    assert main(nan_run_argv(folder, out, "--allow-non-finite", "--log-samples")) == 0
    capsys.readouterr()
    [path] = (out / "results").rglob("[0-9]*Z.json")
    results = strict_load(path)
    task = results["tasks"]["piqa"]
    assert (task["non_finite_requests"], task["non_finite_documents"], task["n"]) == (1, 1, 2)
    assert bad.doc_id not in task["documents"]["doc_id"]
    assert results["timing"]["requests_cached"] == kept
    assert results["timing"]["requests_scored"] == n_requests - kept
    assert cache_rows(isolated_cache) == n_requests - 1  # the NaN answer is never stored
    warning = ("piqa: 1 of 3 documents have a non-finite log-likelihood (1 requests, --allow-non-finite); they are "
               "left out of the metrics, which cover 2 documents")
    assert warning in task["warnings"]
    samples = [json.loads(line) for line in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert [s["loglikelihoods"][bad.choice_index] for s in samples if s["doc_id"] == bad.doc_id] == [None]


def test_results_files_are_strict_json(tmp_path):
    from evalkit.results.files import strict_json

    assert strict_json({"a": [1.5, None]}, "x.json") == '{"a": [1.5, null]}'
    with pytest.raises(EvalkitError) as caught:
        strict_json({"tasks": {"lambada": {"metrics": {"perplexity": {"value": float("nan")}}}}}, "x.json")
    assert str(caught.value) == ("x.json: refusing to write a non-finite number at "
                                 "'tasks.lambada.metrics.perplexity.value' (strict JSON)")


def test_the_cache_never_stores_or_serves_a_non_finite_answer(tmp_path):
    from evalkit.scoring.cache import CachingBackend, RequestCache, request_key
    from evalkit.types import LoglikelihoodResponse, TokenizedRequest

    class Fixed:
        def __init__(self, values):
            self.values, self.calls = values, 0

        def loglikelihood(self, requests, on_batch=None):
            self.calls += 1
            out = [LoglikelihoodResponse(v, False, 1) for v in self.values[: len(requests)]]
            if on_batch:
                on_batch(list(range(len(out))), out)
            return out

    requests = [TokenizedRequest((1,), (2,)), TokenizedRequest((1,), (3,))]
    with RequestCache(tmp_path) as cache:
        CachingBackend(Fixed([-1.5, float("nan")]), cache, "m").loglikelihood(requests)
        assert cache.count("m") == 1
        cache.put_many("m", [(request_key(requests[1]), float("inf"), False)])  # as an older evalkit stored it
        again = Fixed([-2.5])
        backend = CachingBackend(again, cache, "m")
        got = backend.loglikelihood(requests)
        assert [r.loglikelihood for r in got] == [-1.5, -2.5]
        assert (backend.requests_cached, backend.requests_scored) == (1, 1)


# --- local model folders are keyed by content ---------------------------------------------------------------------

def _rewrite_in_place(path: Path, change) -> None:
    """Rewrite ``path``'s bytes in place (same inode and size) and put its modification time back."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    change(data)
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def test_weights_rewritten_in_place_with_the_old_mtime_get_another_cache_key(tmp_path, monkeypatch):
    from evalkit.models import weights_hash
    from evalkit.models.weights_hash import MEMO_NAME, folder_digest

    folder = tmp_path / "model"
    make_tiny_model(0).save_pretrained(folder)
    weights = folder / "model.safetensors"
    memo = tmp_path / "cache"
    before = folder_digest(folder, memo_dir=memo)
    assert before.startswith("local:") and (memo / MEMO_NAME).is_file()

    def unread(*args, **kwargs):
        raise AssertionError("the weights were read again although unchanged")

    with monkeypatch.context() as patch:  # remembered per (path, size, mtime, ctime, inode): not read again
        patch.setattr(weights_hash, "weight_file_digest", unread)
        assert folder_digest(folder, memo_dir=memo) == before

    fine_tuned = make_tiny_model(1)  # same shapes, other values: a fine-tune saved over the old file
    fine_tuned.save_pretrained(tmp_path / "other")
    new_bytes = (tmp_path / "other" / "model.safetensors").read_bytes()
    assert len(new_bytes) == weights.stat().st_size
    _rewrite_in_place(weights, lambda data: data.__setitem__(slice(None), new_bytes))
    assert folder_digest(folder, memo_dir=memo) != before


def test_sampled_and_full_weight_hashes(tmp_path):
    """The sampled digest reads the safetensors header and samples of the data; a one-byte edit between two samples
    is caught by the full hash only (--full-weight-hash)."""
    from evalkit.models.weights_hash import CHUNK, SAMPLES, weight_file_digest

    header = json.dumps({"w": {"dtype": "F32", "shape": [SAMPLES * CHUNK], "data_offsets": [0, 4 * SAMPLES * CHUNK]}})
    path = tmp_path / "w.safetensors"
    body = bytes(4 * SAMPLES * CHUNK)
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + body)
    sampled, full = weight_file_digest(path), weight_file_digest(path, full=True)
    assert sampled.startswith("sampled:") and full.startswith("full:")
    start = 8 + len(header)
    step = (len(body) - CHUNK) / (SAMPLES - 1)
    gap = start + CHUNK + int((step - CHUNK) / 2)  # a byte between the first and the second sample

    def flip(data, at):
        data[at] ^= 0xFF

    _rewrite_in_place(path, lambda data: flip(data, gap))
    assert weight_file_digest(path) == sampled and weight_file_digest(path, full=True) != full
    _rewrite_in_place(path, lambda data: flip(data, start))  # the first byte of the data: sampled
    assert weight_file_digest(path) != sampled
    _rewrite_in_place(path, lambda data: flip(data, start))
    _rewrite_in_place(path, lambda data: data.__setitem__(slice(8, start), header.replace("F32", "I32").encode()))
    assert weight_file_digest(path) != sampled  # the header is hashed whole


def test_a_run_of_a_rewritten_local_model_is_not_answered_from_the_cache(tmp_path, capsys):
    folder = tmp_path / "model"
    make_tiny_model(0).save_pretrained(folder)
    argv = ["run", "--model", str(folder), "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa", "--data-dir",
            str(DATA_DIR), "--limit", "2", "--bootstrap-iters", "0", "--output-dir", str(tmp_path / "out"),
            "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 0
    make_tiny_model(1).save_pretrained(tmp_path / "other")
    new_bytes = (tmp_path / "other" / "model.safetensors").read_bytes()
    _rewrite_in_place(folder / "model.safetensors", lambda data: data.__setitem__(slice(None), new_bytes))
    assert main(argv + ["--full-weight-hash"]) == 0
    capsys.readouterr()
    runs = sorted((tmp_path / "out" / "results").rglob("[0-9]*Z*.json"), key=lambda p: p.stat().st_mtime_ns)
    timings = [json.loads(p.read_text())["timing"] for p in runs]
    assert [(t["requests_cached"], t["requests_scored"]) for t in timings] == [(0, 4), (4, 0), (0, 4)]
    revisions = [json.loads(p.read_text())["model"]["revision"] for p in runs]
    assert revisions[0] == revisions[1] != revisions[2]


# --- --max-length beyond the learned positions --------------------------------------------------------------------

@pytest.fixture
def no_model(monkeypatch):
    from evalkit.models import hf_loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model weights were loaded although the input was bad")

    monkeypatch.setattr(hf_loading, "load_model", refuse)


@pytest.mark.parametrize("local", [False, True], ids=["random", "local_folder"])
def test_a_max_length_beyond_the_trained_positions_is_refused_before_the_weights_load(tmp_path, capsys, no_model,
                                                                                      local):
    model = "random:pythia-14m"
    if local:
        model = str(tmp_path / "model")
        (tmp_path / "model").mkdir()
        shutil.copy(_tiny_config(tmp_path), tmp_path / "model" / "config.json")
    argv = ["run", "--model", model, "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa", "--data-dir",
            str(DATA_DIR), "--limit", "2", "--max-length", "20000", "--output-dir", str(tmp_path / "out"),
            "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (f"evalkit: error: --max-length 20000 is above the 2048 positions {model} was trained with (its config's "
            "max_position_embeddings or equivalent): its rotary positions do not extrapolate, so longer inputs would "
            "be scored with garbage; use --max-length 2048 or less (only ALiBi models, e.g. BLOOM, may go beyond "
            "their trained length)") in err
    assert not (tmp_path / "out" / "results").exists()


def _tiny_config(tmp_path: Path) -> Path:
    from transformers import AutoConfig

    from tests.conftest import TINY_NEOX

    cfg = dict(TINY_NEOX)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config.save_pretrained(tmp_path / "cfg")
    return tmp_path / "cfg" / "config.json"


def test_position_schemes_and_which_may_run_past_their_length():
    from transformers import BloomConfig, GPT2Config, GPTNeoXConfig

    from evalkit.models.hf_loading import config_window, position_scheme

    neox, gpt2, bloom = GPTNeoXConfig(max_position_embeddings=2048), GPT2Config(n_positions=1024), BloomConfig()
    assert [position_scheme(c) for c in (neox, gpt2, bloom)] == ["rotary", "learned", "alibi"]
    assert config_window(neox, None) == 2048 and config_window(neox, 2048) == 2048 and config_window(neox, 512) == 512
    with pytest.raises(EvalkitError, match="--max-length 1025 is above the 1024 positions the model was trained"):
        config_window(gpt2, 1025)
    assert config_window(bloom, 20000) == 20000  # ALiBi extrapolates


# --- a tokenizer that is not the model's own ----------------------------------------------------------------------

def test_a_tokenizer_other_than_the_model_folders_own_is_warned_about_and_both_hashes_recorded(tmp_path, caplog):
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    folder = tmp_path / "model"
    make_tiny_model(0).save_pretrained(folder)
    shutil.copy(TOKENIZER_JSON, folder / "tokenizer.json")  # the folder ships the NeoX tokenizer

    def config(tokenizer: Path) -> RunConfig:
        return RunConfig(model=str(folder), tasks=("piqa",), tokenizer=str(tokenizer), data_dir=str(DATA_DIR),
                         limit=2, bootstrap_iters=0, output_dir=str(tmp_path / "out"), use_cache=False)

    out = run(config(GPT2_TOKENIZER_JSON), progress=False)  # GPT-2's 50,257 tokens fit NeoX's 50,304 rows
    tok = out.results["tokenizer"]
    assert tok["sha256"] != tok["model_tokenizer_sha256"]
    [warning] = out.results["warnings"]
    assert warning == (f"--tokenizer {GPT2_TOKENIZER_JSON} (sha256 {tok['sha256'][:12]}…) is not the tokenizer the "
                       f"model folder ships (sha256 {tok['model_tokenizer_sha256'][:12]}…): a tokenizer whose "
                       f"vocabulary fits but that does not belong to the model scores garbage")
    assert warning in caplog.messages
    assert f"> **Warning:** {warning}" in out.report_path.read_text(encoding="utf-8")
    same = run(config(TOKENIZER_JSON), progress=False)
    assert same.results["warnings"] == []
    assert same.results["tokenizer"]["sha256"] == same.results["tokenizer"]["model_tokenizer_sha256"]


# --- duplicate documents ------------------------------------------------------------------------------------------

def test_duplicate_documents_are_warned_about_with_their_count(tmp_path):
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    lines = (DATA_DIR / "piqa" / "validation.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:3]
    data = tmp_path / "data" / "piqa"
    data.mkdir(parents=True)
    reordered = json.dumps(dict(reversed(list(json.loads(lines[0]).items())))) + "\n"  # same row, keys reordered
    (data / "validation.jsonl").write_text("".join([*lines, lines[1], reordered]), encoding="utf-8")
    config = RunConfig(model="random:pythia-14m", tasks=("piqa",), tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(tmp_path / "data"), bootstrap_iters=0, output_dir=str(tmp_path / "out"),
                       use_cache=False)
    out = run(config, progress=False)
    task = out.results["tasks"]["piqa"]
    assert task["duplicate_documents"] == 2 and task["n"] == 5
    assert ("piqa: 2 of 5 documents are identical to an earlier one (doc 3 = doc 1, doc 4 = doc 0); each copy is "
            "scored and counted in the metrics") in task["warnings"]


# --- Wilson intervals beside the stderr ---------------------------------------------------------------------------

def test_an_accuracy_of_100_percent_shows_its_wilson_interval_in_report_and_compare(tmp_path):
    from evalkit.reports.compare import compare
    from evalkit.reports.report import write_report_file
    from evalkit.run.pipeline import run
    from evalkit.stats.significance import wilson_interval
    from evalkit.types import RunConfig

    config = RunConfig(model="random:pythia-14m", tasks=("piqa",), tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(DATA_DIR), limit=12, bootstrap_iters=0, output_dir=str(tmp_path / "out"),
                       use_cache=False)
    done = run(config, progress=False)
    results = json.loads(done.results_path.read_text())
    task = results["tasks"]["piqa"]
    task["documents"]["acc"] = [1.0] * 12
    task["metrics"]["acc"].update(value=1.0, stderr=0.0)
    perfect = tmp_path / "perfect.json"
    perfect.write_text(json.dumps(results), encoding="utf-8")
    low, high = wilson_interval(1.0, 12)
    assert high == 1.0 and round(low, 4) == 0.7575
    text = write_report_file([results], tmp_path / "r.md").read_text()
    assert "| piqa v1.0 | 0-shot | acc | 1.0000 | 0.0000 | [0.7575, 1.0000] |" in text
    assert "| 95% CI (Wilson) |" in text
    assert "**1.000 [0.758, 1.000]**" in text  # the card table's measured PIQA cell (no bootstrap in this run)
    table = compare([str(perfect), str(done.results_path)], tmp_path / "c.md", 200, 1, 0.05, False).report_path
    acc_b = sum(json.loads(done.results_path.read_text())["tasks"]["piqa"]["documents"]["acc"]) / 12
    b_low, b_high = wilson_interval(acc_b, 12)
    row = next(line for line in table.read_text().splitlines() if line.startswith("| piqa | acc |"))
    assert row.endswith(f"| [0.7575, 1.0000] / [{b_low:.4f}, {b_high:.4f}] |")
