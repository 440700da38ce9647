"""Rolling log-likelihood (document perplexity, SPEC-suite B.24): the window rule, the backend against a naive
one-window-at-a-time reference, the ratio-of-sums metrics by hand, and a tiny rolling task end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evalkit.scoring.batching import flatten_windows, join_windows
from evalkit.stats.metrics import aggregator, check_task_metrics, doc_metrics, per_doc_values
from evalkit.stats.stderr import bootstrap_stderr
from evalkit.scoring.tokenization import rolling_windows, tokenize_rolling, tokenize_windows
from evalkit.types import EvalkitError, LoglikelihoodRequest, LoglikelihoodResponse, RunConfig
from evalkit.types import TokenizedRequest as TR
from tests.conftest import TOKENIZER_JSON
from tests.reference import naive_rolling_loglikelihood

E = -1  # a stand-in end-of-text id, distinct from every token of the examples


def test_the_specs_example_ten_tokens_in_windows_of_four():
    # SPEC-suite B.24: ([E,0,1,2] -> 0,1,2,3), ([3,4,5,6] -> 4,5,6,7), ([5,6,7,8] -> 8,9)
    assert rolling_windows(range(10), E, 4) == [TR((E,), (0, 1, 2, 3)), TR((3,), (4, 5, 6, 7)),
                                                 TR((5, 6, 7), (8, 9))]


@pytest.mark.parametrize("n, expected", [
    (1, [TR((E,), (0,))]),                                       # p = 1 in the first window: EOT predicts it
    (3, [TR((E,), (0, 1, 2))]),                                  # shorter than the window: one window
    (4, [TR((E,), (0, 1, 2, 3))]),
    (5, [TR((E,), (0, 1, 2, 3)), TR((0, 1, 2, 3), (4,))]),       # N = L + 1: the last token from the 4 before it
    (9, [TR((E,), (0, 1, 2, 3)), TR((3,), (4, 5, 6, 7)), TR((4, 5, 6, 7), (8,))]),  # N = 2L + 1
    (12, [TR((E,), (0, 1, 2, 3)), TR((3,), (4, 5, 6, 7)), TR((7,), (8, 9, 10, 11))]),
])
def test_windows_of_four_by_hand(n, expected):
    assert rolling_windows(range(n), E, 4) == expected


@pytest.mark.parametrize("window", [1, 2, 4, 16])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 15, 16, 17, 31, 32, 33, 50])
def test_every_token_is_predicted_once_from_the_tokens_just_before_it(n, window):
    tokens = list(range(100, 100 + n))
    windows = rolling_windows(tokens, E, window)
    assert [tok for w in windows for tok in w.continuation_ids] == tokens
    sequence = [E] + tokens
    done = 0
    for w in windows:
        whole = list(w.context_ids + w.continuation_ids)
        p = len(w.continuation_ids)
        # context + continuation is the contiguous stretch of [E] + t that ends at the last predicted token
        assert whole == sequence[done + p + 1 - len(whole) : done + p + 1]
        assert w.context_ids and w.truncated_tokens == 0
        # the first window starts at EOT; every later one fills the model window exactly (L input tokens)
        assert len(whole) == (min(window, n) + 1 if done == 0 else window + 1)
        done += p


def test_bad_window_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one token"):
        rolling_windows([], E, 4)
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        rolling_windows([1, 2], E, 0)


def _encode(texts):  # a toy tokenizer: one id per character
    return [[ord(c) for c in text] for text in texts]


def test_rolling_and_ordinary_requests_keep_their_order():
    requests = [LoglikelihoodRequest("doc", 0, 0, "", "abcdef"), LoglikelihoodRequest("mc", 3, 0, "Q", " x"),
                LoglikelihoodRequest("doc", 1, 0, "", "gh")]
    windows = tokenize_windows(requests, [True, False, True], _encode, E, 4)
    a, b, c, d, e, f, g, h = (ord(x) for x in "abcdefgh")  # N = 6, L = 4: the second window reads b..e
    assert windows == [(TR((E,), (a, b, c, d)), TR((b, c, d), (e, f))), (TR((ord("Q"),), (ord(" "), ord("x"))),),
                       (TR((E,), (g, h)),)]
    flat, owners = flatten_windows(windows)
    assert owners == [0, 0, 1, 2] and flat[2] == windows[1][0]


def test_a_rolling_request_with_a_context_or_no_tokens_is_refused():
    with pytest.raises(EvalkitError, match="task doc doc 4: a rolling request .* needs an empty context"):
        tokenize_rolling([LoglikelihoodRequest("doc", 4, 0, "Q:", "text")], _encode, E, 4)
    with pytest.raises(EvalkitError, match="task doc doc 2: text '' encodes to no tokens"):
        tokenize_rolling([LoglikelihoodRequest("doc", 2, 0, "", "")], _encode, E, 4)


def test_window_answers_add_up_per_request_in_float64():
    responses = [LoglikelihoodResponse(-1.25, True, 4), LoglikelihoodResponse(-0.5, False, 2),
                 LoglikelihoodResponse(-3.0, True, 1, 2), LoglikelihoodResponse(-1e-17, True, 1)]
    joined = join_windows(responses, [0, 0, 1, 0], 2)
    assert joined == [LoglikelihoodResponse(-1.75 - 1e-17, False, 7, 0), responses[2]]
    assert joined[0].loglikelihood == -1.75  # fsum: -1e-17 is below float64 resolution of -1.75, as it should be
    with pytest.raises(ValueError, match="request 1 got no response"):
        join_windows(responses[:2], [0, 0], 2)


# --- the backend against the naive reference ---------------------------------------------------------------

LENGTHS = (1, 3, 4, 5, 16, 17, 33, 40, 90)  # with L = 16 and L = 4: one window, full windows, and p = 1 cases


def _documents(n_docs_seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(n_docs_seed)
    return [[int(x) for x in rng.integers(10, 50000, size=n)] for n in LENGTHS]


def _backend_sums(model, docs, window, eot, batch_size, share_context=True):
    from evalkit.scoring.hf_backend import HFBackend

    windows = [tuple(rolling_windows(d, eot, window)) for d in docs]
    flat, owners = flatten_windows(windows)
    backend = HFBackend(model, window, batch_size=batch_size, share_context=share_context, progress=False)
    return [r.loglikelihood for r in join_windows(backend.loglikelihood(flat), owners, len(docs))], flat


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("window", [16, 4])
def test_document_loglikelihoods_match_scoring_each_window_alone(tiny_model, window):
    eot = 0
    docs = _documents()
    sums, flat = _backend_sums(tiny_model, docs, window, eot, batch_size=8)
    assert all(len(w.context_ids) + len(w.continuation_ids) - 1 <= window for w in flat)
    for doc, ll in zip(docs, sums):
        assert ll == pytest.approx(naive_rolling_loglikelihood(tiny_model, doc, eot, window), abs=1e-4)
        assert ll < 0


@pytest.mark.usefixtures("one_thread")
def test_document_loglikelihoods_do_not_depend_on_batching_or_packing(tiny_model):
    docs = _documents(1)
    first, _ = _backend_sums(tiny_model, docs, 16, 0, batch_size=1, share_context=False)
    for batch_size, share in ((1, True), (3, True), (64, True), (64, False)):
        again, _ = _backend_sums(tiny_model, docs, 16, 0, batch_size=batch_size, share_context=share)
        assert again == pytest.approx(first, abs=1e-5), (batch_size, share)


# --- metrics by hand ---------------------------------------------------------------------------------------

def test_per_document_words_and_bytes_count_the_units_text():
    # " héllo\n": re.split(r"\s+") gives ['', 'héllo', ''] (3 words); bytes 1 + 6 (é is 2 bytes) + 1 = 8
    assert doc_metrics("rolling", [-7.5], [False], ["scored text"], 0, " héllo\n") == {
        "loglikelihood": -7.5, "words": 3, "bytes": 8}
    # without units_text the scored text counts: "a b  c" -> 3 words, 6 bytes
    assert doc_metrics("rolling", [-1.0], [True], ["a b  c"], 0) == {"loglikelihood": -1.0, "words": 3, "bytes": 6}


def test_rolling_metrics_are_ratios_of_sums_worked_by_hand():
    documents = {"loglikelihood": [-10.0, -20.0], "words": [3, 3], "bytes": [5, 8]}
    # Σll = -30, Σwords = 6, Σbytes = 13
    assert aggregator("word_perplexity")(per_doc_values("word_perplexity", documents)) == pytest.approx(
        148.4131591025766, rel=1e-12)                                  # exp(30 / 6) = e^5
    assert aggregator("byte_perplexity")(per_doc_values("byte_perplexity", documents)) == pytest.approx(
        10.0512027875, rel=1e-10)                                      # exp(30 / 13)
    assert aggregator("bits_per_byte")(per_doc_values("bits_per_byte", documents)) == pytest.approx(
        3.3292962482, rel=1e-10)                                       # 30 / 13 / ln 2
    # (the mean of the per-document byte perplexities, (e^(10/5) + e^(20/8)) / 2 = 9.79, is not the metric)


def test_the_bootstrap_resamples_whole_documents_and_recomputes_the_ratio():
    same_rate = per_doc_values("bits_per_byte", {"loglikelihood": [-2.0, -4.0, -6.0], "bytes": [1, 2, 3]})
    # every resample has the rate 2 nats a byte, so the spread is zero (up to rounding in numpy.std)
    assert bootstrap_stderr(same_rate, aggregator("bits_per_byte"), 500, 3) == pytest.approx(0.0, abs=1e-12)
    two = per_doc_values("byte_perplexity", {"loglikelihood": [-1.0, -9.0], "bytes": [1, 3]})
    # the exact bootstrap distribution of two documents: both first (1/4) exp(2/2), mixed (1/2) exp(10/4),
    # both second (1/4) exp(18/6)
    outcomes, weights = np.exp([1.0, 2.5, 3.0]), np.array([0.25, 0.5, 0.25])
    exact = math.sqrt(np.sum(weights * (outcomes - np.sum(weights * outcomes)) ** 2))
    assert exact == pytest.approx(6.1526, abs=1e-4)  # mean 11.7922; sqrt(.25·82.33 + .5·0.152 + .25·68.78)
    assert bootstrap_stderr(two, aggregator("byte_perplexity"), 40000, 7) == pytest.approx(exact, rel=0.02)


def test_rolling_tasks_give_rolling_metrics_only():
    check_task_metrics("doc", "rolling", ("word_perplexity", "byte_perplexity", "bits_per_byte"), "word_perplexity")
    with pytest.raises(ValueError, match="lists metric 'acc', which scoring 'rolling' does not give"):
        check_task_metrics("doc", "rolling", ("acc",), "acc")
    with pytest.raises(ValueError, match="lists metric 'word_perplexity', which scoring 'target' does not give"):
        check_task_metrics("doc", "target", ("word_perplexity",), "word_perplexity")


# --- a tiny rolling task end to end --------------------------------------------------------------------------

ROLLING_TASK = '''
from evalkit.types import DatasetSpec, Task

TASK = Task(
    name="tiny_pages", version="1",
    dataset=DatasetSpec("none/none", None, "test", 3, {"page": str, "raw": str}),
    context=lambda doc: "", continuations=lambda doc: [doc["page"]], gold=lambda doc: 0,
    scoring="rolling", metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"),
    primary_metric="word_perplexity", units_text=lambda doc: doc["raw"],
    description="tiny hand-made pages", source="test",
)
'''

PAGES = [
    {"page": "The cat sat on the mat, and the dog sat on the log.", "raw": "The cat sat on the mat , and the dog sat "
     "on the log ."},
    {"page": "Hi", "raw": " Hi \n"},
    {"page": "A longer page: it runs on for a while, so that a window of sixteen tokens cannot hold it and the "
     "rolling windows must carry the text from one window into the next one, twice or more.",
     "raw": "A longer page : it runs on for a while , so that a window of sixteen tokens cannot hold it and the "
     "rolling windows must carry the text from one window into the next one , twice or more ."},
]


def _rolling_config(tmp_path: Path, model: str = "random:pythia-14m", **changes) -> RunConfig:
    """A run of the tiny rolling task over PAGES (task file and data written under ``tmp_path`` once)."""
    tasks, data = tmp_path / "tasks", tmp_path / "data"
    if not tasks.exists():
        tasks.mkdir()
        (data / "tiny_pages").mkdir(parents=True)
        (tasks / "tiny_pages.py").write_text(ROLLING_TASK, encoding="utf-8")
        (data / "tiny_pages" / "test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAGES),
                                                        encoding="utf-8")
    base = dict(model=model, tasks=("tiny_pages",), tokenizer=str(TOKENIZER_JSON), data_dir=str(data),
                include_paths=(str(tasks),), max_length=16, dtype="float32", device="cpu", bootstrap_iters=200,
                output_dir=str(tmp_path / "out"), use_cache=False)
    return RunConfig(**(base | changes))


@pytest.fixture(scope="module")
def rolling_run(tmp_path_factory):
    from evalkit.run.pipeline import run

    folder = tmp_path_factory.mktemp("rolling")
    return folder, run(_rolling_config(folder), progress=False)


@pytest.mark.usefixtures("one_thread")
def test_a_rolling_task_runs_end_to_end_in_windows_of_sixteen(rolling_run, tokenizer):
    from evalkit.models.hf_loading import load_model
    from evalkit.models.resolve import resolve_model

    _, output = rolling_run
    entry = output.results["tasks"]["tiny_pages"]
    ids = [tokenizer.encode_batch([p["page"]])[0] for p in PAGES]
    assert entry["requests"] == 3
    assert entry["sequences"] == sum(math.ceil(len(t) / 16) for t in ids) > 3  # the long page needs windows
    assert entry["truncated_requests"] == 0 and not entry["warnings"]
    docs = entry["documents"]
    assert docs["doc_id"] == [0, 1, 2]
    assert docs["words"] == [15, 3, 41] and docs["bytes"] == [len(p["raw"].encode()) for p in PAGES]
    model, _ = load_model(resolve_model("random:pythia-14m"), "float32", "cpu", 1234)
    for ll, t in zip(docs["loglikelihood"], ids):
        assert ll == pytest.approx(naive_rolling_loglikelihood(model, t, tokenizer.eot_id, 16), abs=1e-4)
    total_ll, words, size = sum(docs["loglikelihood"]), sum(docs["words"]), sum(docs["bytes"])
    metrics = entry["metrics"]
    assert metrics["word_perplexity"]["value"] == pytest.approx(math.exp(-total_ll / words), rel=1e-12)
    assert metrics["byte_perplexity"]["value"] == pytest.approx(math.exp(-total_ll / size), rel=1e-12)
    assert metrics["bits_per_byte"]["value"] == pytest.approx(-total_ll / size / math.log(2), rel=1e-12)
    for m in metrics.values():
        assert m["stderr"] is None and m["stderr_bootstrap"] > 0 and m["n"] == 3 and not m["higher_is_better"]
    saved = json.loads(output.results_path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved["tasks"]["tiny_pages"]["metrics"] == metrics
    report = output.report_path.read_text()
    assert "| tiny_pages v1 | 0-shot | word_perplexity |" in report and "| tiny_pages v1 | 0-shot | bits_per_byte |" in report


def test_a_rolling_document_that_breaks_the_contract_stops_the_run_before_the_model_loads(tmp_path, monkeypatch):
    from evalkit.models import hf_loading
    from evalkit.run.pipeline import run

    config = _rolling_config(tmp_path)
    with (tmp_path / "data" / "tiny_pages" / "test.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"page": "fine", "raw": ""}) + "\n")
    monkeypatch.setattr(hf_loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(EvalkitError, match=r"task tiny_pages doc 3: units_text must give a non-empty string"):
        run(config, progress=False)


def test_compare_pairs_two_rolling_runs_document_by_document(rolling_run):
    from evalkit.reports.compare import compare
    from evalkit.run.pipeline import run

    folder, first = rolling_run
    second = run(_rolling_config(folder, model="random:pythia-14m@7"), progress=False)
    out = compare([str(first.results_path), str(second.results_path)], output=folder / "cmp.md", iters=300,
                  with_references=False)
    rows = {r.metric: r for r in out.paired[0].rows}
    assert set(rows) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    for metric, row in rows.items():
        a = first.results["tasks"]["tiny_pages"]["metrics"][metric]["value"]
        b = second.results["tasks"]["tiny_pages"]["metrics"][metric]["value"]
        assert (row.value_a, row.value_b, row.n, row.test) == (pytest.approx(a), pytest.approx(b), 3,
                                                               "paired bootstrap")
        assert row.delta == pytest.approx(b - a) and row.low <= row.delta <= row.high
        assert row.only_a is None and 0 < row.p_value <= 1
    assert "| tiny_pages | word_perplexity | 3 |" in out.report_path.read_text()


def test_a_paired_bootstrap_of_a_ratio_counts_documents_not_columns():
    from evalkit.stats.significance import paired_bootstrap

    # one document, two columns (ll, bytes): its floor is 2**(1 - 1) = 1, not 2**(1 - 2) = 0.5
    a = per_doc_values("bits_per_byte", {"loglikelihood": [-4.0], "bytes": [2]})
    b = per_doc_values("bits_per_byte", {"loglikelihood": [-2.0], "bytes": [2]})
    result = paired_bootstrap(a, b, aggregator("bits_per_byte"), iters=100, seed=1)
    assert result.delta == pytest.approx(1 / math.log(2) - 2 / math.log(2))  # 1 - 2 nats a byte, in bits
    assert result.p_value == 1.0


def _rolling_entry(lls: list[float]) -> tuple[dict, list[dict]]:
    """A rolling task's results entry and samples rows: two documents of 2 and 6 words, 4 and 12 bytes."""
    words, size = [2, 6], [4, 12]
    samples = [{"task": "t", "doc_id": i, "context": "", "continuations": [f"page {i}"], "gold": 0,
                "loglikelihoods": [ll], "greedy": [False], "metrics": {}} for i, ll in enumerate(lls)]
    total = sum(lls)
    metrics = {"word_perplexity": math.exp(-total / 8), "byte_perplexity": math.exp(-total / 16),
               "bits_per_byte": -total / 16 / math.log(2)}
    entry = {"version": "1", "prompt_sha256": "p" * 64, "metrics": {m: {"value": v} for m, v in metrics.items()},
             "documents": {"doc_id": [0, 1], "loglikelihood": list(lls), "words": words, "bytes": size}}
    return entry, samples


@pytest.mark.parametrize("shift, expected", [
    (9e-5, []),
    (5e-4, ["FAIL t: 2 log-likelihoods moved beyond 0.0001 + 1e-05·|ll| nats",
            "  log-likelihood: doc 0 choice 0: -1.000000 -> -0.999500 nats (Δ +0.000500)",
            "  log-likelihood: doc 1 choice 0: -2.000000 -> -1.999500 nats (Δ +0.000500)",
            "FAIL t word_perplexity: 1.45499 -> 1.45481 (Δ -0.000181863)",
            "FAIL t byte_perplexity: 1.20623 -> 1.20615 (Δ -7.5387e-05)",
            "FAIL t bits_per_byte: 0.270505 -> 0.270415 (Δ -9.01684e-05)"]),
], ids=["within_the_request_tolerance", "beyond_it"])
def test_check_accepts_the_rolling_metrics_of_log_likelihoods_it_accepts(shift, expected):
    """Both documents moved 9e-5 nats (inside 1e-4 + 1e-5·|ll|); Σll = -3 moved 1.8e-4, i.e. 6e-5 relative, past
    the metric tolerance of 1e-5, so without a bound from the log-likelihoods the check would fail its own pass."""
    from evalkit.regression.baseline import Tolerance, request_records
    from evalkit.regression.check import _task_diffs

    old, old_samples = _rolling_entry([-1.0, -2.0])
    old["requests"] = request_records(old_samples)
    new, new_samples = _rolling_entry([-1.0 + shift, -2.0 + shift])
    bits = old["metrics"]["bits_per_byte"]["value"], new["metrics"]["bits_per_byte"]["value"]
    assert not Tolerance().metric_ok(*bits)  # the metric alone would fail even the small shift
    assert _task_diffs("t", old, new, new_samples, Tolerance()) == expected


def test_windows_are_cached_one_by_one_and_a_repeat_run_is_answered_from_the_cache(tmp_path):
    from evalkit.run.pipeline import run

    config = _rolling_config(tmp_path, use_cache=True, cache_dir=str(tmp_path / "cache"), bootstrap_iters=0)
    first = run(config, progress=False).results
    again = run(config, progress=False).results
    windows = first["tasks"]["tiny_pages"]["sequences"]
    assert (first["timing"]["requests_scored"], first["timing"]["requests_cached"]) == (windows, 0)
    assert (again["timing"]["requests_scored"], again["timing"]["requests_cached"]) == (0, windows)
    assert again["tasks"]["tiny_pages"]["documents"] == first["tasks"]["tiny_pages"]["documents"]
