"""Adversarial inputs: flags, data files, tokenizers and caches at their edges. Each case once made evalkit crash
after the work was done, report a wrong place, or silently compute something else than asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.types import EvalkitError, RunConfig, TokenizedRequest
from tests.conftest import DATA_DIR, TOKENIZER_JSON


def _config(tmp_path: Path, **changes) -> RunConfig:
    base = dict(model="random:pythia-14m", tasks=("piqa",), tokenizer=str(TOKENIZER_JSON), data_dir=str(DATA_DIR),
                limit=2, bootstrap_iters=0, output_dir=str(tmp_path / "out"), use_cache=False)
    return RunConfig(**(base | changes))


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: a bad flag must stop the run before that (and before any scoring)."""
    from evalkit.models import hf_loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although a flag was bad")

    monkeypatch.setattr(hf_loading, "load_model", refuse)


BAD_FLAGS = [
    ("batch_size_zero", {"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ("batch_size_negative", {"batch_size": -3}, "--batch-size must be at least 1, got -3"),
    ("max_batch_tokens_zero", {"extra": {"max_batch_tokens": 0}}, "--max-batch-tokens must be at least 1, got 0"),
    ("max_length_zero", {"max_length": 0}, "--max-length must be at least 1, got 0"),
    ("max_length_negative", {"max_length": -5}, "--max-length must be at least 1, got -5"),
    ("bootstrap_negative", {"bootstrap_iters": -4},
     "--bootstrap-iters must be 0 (no bootstrap) or at least 2, got -4"),
    ("bootstrap_one", {"bootstrap_iters": 1}, "--bootstrap-iters must be 0 (no bootstrap) or at least 2, got 1"),
    ("seed_negative", {"seed": -1}, "--seed must be between 0 and 2**64 - 1, got -1"),
    ("seed_too_large", {"seed": 2 ** 64}, f"--seed must be between 0 and 2**64 - 1, got {2 ** 64}"),
]


@pytest.mark.parametrize("changes, message", [c[1:] for c in BAD_FLAGS], ids=[c[0] for c in BAD_FLAGS])
def test_bad_numeric_flags_stop_the_run_before_the_model_loads(tmp_path, no_model, changes, message):
    """``--seed -1`` used to score every request and then crash in the bootstrap (results lost); ``--batch-size 0``
    crashed with a traceback after the model loaded; ``--max-length 0`` silently meant "the model's window"."""
    from evalkit.run.pipeline import run

    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path, **changes), progress=False)
    assert str(caught.value) == message
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_is_a_file_stops_the_run_before_scoring(tmp_path, no_model):
    """It used to score everything and then fail to write the results (lost, with --no-cache)."""
    from evalkit.run.pipeline import run

    blocker = tmp_path / "taken"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path, output_dir=str(blocker / "sub")), progress=False)
    assert str(caught.value) == f"--output-dir {blocker / 'sub'}: {blocker} is not a folder"


def test_bad_flags_through_the_command_line(tmp_path, capsys, no_model):
    from evalkit.cli.main import main

    out = tmp_path / "out"
    status = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                   "--data-dir", str(DATA_DIR), "--output-dir", str(out), "--limit", "2", "--batch-size", "0"])
    assert status == 2
    assert capsys.readouterr().err.splitlines()[-1] == "evalkit: error: --batch-size must be at least 1, got 0"
    assert not out.exists()


def test_an_unknown_device_is_a_clear_error():
    from evalkit.models.hf_loading import pick_device

    with pytest.raises(EvalkitError) as caught:
        pick_device("nonsense")
    assert str(caught.value).startswith("unknown --device 'nonsense': ")
    assert str(pick_device("cpu")) == "cpu"


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "--seed must be between 0 and 2**64 - 1, got -1"),
    ({"alpha": 0.0}, "--alpha must be between 0 and 1 (exclusive), got 0.0"),
    ({"alpha": 5.0}, "--alpha must be between 0 and 1 (exclusive), got 5.0"),
], ids=["negative_seed", "alpha_zero", "alpha_above_one"])
def test_compare_refuses_a_bad_seed_or_alpha_before_reading_the_runs(tmp_path, kwargs, message):
    """A negative seed crashed the paired bootstrap with numpy's traceback; alpha 5 called every row significant."""
    from evalkit.reports.compare import compare

    with pytest.raises(EvalkitError) as caught:
        compare([str(tmp_path / "a.json"), str(tmp_path / "b.json")], tmp_path / "c.md", 100, **kwargs)
    assert str(caught.value) == message


def _piqa_lines(n: int) -> list[bytes]:
    with open(DATA_DIR / "piqa" / "validation.jsonl", "rb") as handle:
        return [next(handle).rstrip(b"\r\n") for _ in range(n)]


def _write_piqa(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "data" / "piqa" / "validation.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_a_line_of_unicode_spaces_is_named_not_skipped_and_later_lines_keep_their_numbers(tmp_path):
    """A line holding only a no-break space was skipped as blank by the parser but counted by the line numberer,
    so the error for the bad row on line 4 named line 3."""
    from evalkit.data.documents import load_docs
    from evalkit.tasks.registry import load_registry

    rows = _piqa_lines(2)
    path = _write_piqa(tmp_path, rows[0] + b"\n" + rows[1] + b"\n" + b'{"goal": "g"}\n')
    piqa = load_registry().get("piqa")
    with pytest.raises(EvalkitError) as caught:
        load_docs(piqa, path.parent.parent)
    assert str(caught.value) == f"{path} line 3: missing field 'sol1'"
    path.write_bytes(rows[0] + b"\n\xc2\xa0\n" + rows[1] + b"\n" + b'{"goal": "g"}\n')
    with pytest.raises(EvalkitError) as caught:
        load_docs(piqa, path.parent.parent)
    assert str(caught.value) == f"{path} line 2: malformed JSON (Expecting value at column 1)"


def test_a_byte_order_mark_and_crlf_line_ends_read_the_same_documents(tmp_path):
    """A UTF-8 byte order mark (RFC 8259 lets a parser ignore it) made the first line malformed JSON."""
    import json

    from evalkit.data.documents import load_docs
    from evalkit.tasks.registry import load_registry

    rows = _piqa_lines(3)
    path = _write_piqa(tmp_path, b"\xef\xbb\xbf" + b"\r\n".join(rows) + b"\r\n\r\n")
    docs = load_docs(load_registry().get("piqa"), path.parent.parent)
    assert docs == [json.loads(r) for r in rows]
    assert docs[0]["goal"] == json.loads(rows[0])["goal"] and len(docs) == 3


def _drops_spaces(texts: list[str]) -> list[list[int]]:
    """A tokenizer that, like some SentencePiece and normalizing ones, encodes spaces and zero-width spaces to no
    tokens (other characters to their code points)."""
    return [[ord(c) for c in t if c not in " \u200b"] for t in texts]


@pytest.mark.parametrize("mode, context, continuation_ids", [
    ("separate", "   ", (97, 98)),
    ("separate", "\u200b", (97, 98)),
    ("joint", "\u200b", (97, 98)),
], ids=["separate_spaces", "separate_zero_width", "joint_zero_width"])
def test_a_context_that_encodes_to_no_tokens_becomes_end_of_text(mode, context, continuation_ids):
    """A non-empty context that encoded to [] was kept empty; the backend then read the first continuation token's
    prediction from column -1 (the row's last position) and returned a wrong log-likelihood without a word."""
    from evalkit.scoring.tokenization import tokenize_requests
    from evalkit.types import LoglikelihoodRequest

    requests = [LoglikelihoodRequest("t", 0, 0, context, "ab"), LoglikelihoodRequest("t", 1, 0, "", "ab")]
    got = tokenize_requests(requests, _drops_spaces, 7, 16, mode)
    assert got == [TokenizedRequest((7,), continuation_ids), TokenizedRequest((7,), (97, 98))]


def test_the_backend_refuses_a_request_without_context_tokens(tiny_model):
    from evalkit.scoring.hf_backend import HFBackend

    backend = HFBackend(tiny_model, 16, progress=False)
    with pytest.raises(ValueError) as caught:
        backend.loglikelihood([TokenizedRequest((5, 6), (7,)), TokenizedRequest((), (8, 9))])
    assert str(caught.value) == "request 1 has no context token; an empty context is the end-of-text token"


def test_random_weights_made_on_a_gpu_are_another_model_for_the_cache():
    """torch's CPU and CUDA generators draw different numbers from one seed, so random:<alias> built on a GPU has
    other weights than the same seed on the CPU; both were "seed=N" and shared cached answers."""
    from evalkit.scoring.cache import model_key
    from evalkit.models.hf_loading import random_revision

    assert random_revision(3, "cpu") == "seed=3"
    assert random_revision(3, "cuda (NVIDIA H200)") == "seed=3,init=cuda (NVIDIA H200)"
    identity = {"name": "random:pythia-14m", "kind": "random", "revision": random_revision(3, "cpu"),
                "dtype": "float32", "config_sha256": "c" * 64}
    versions = {"evalkit": "0", "torch": "0", "transformers": "0"}
    on_gpu = identity | {"revision": random_revision(3, "cuda (NVIDIA H200)")}
    assert model_key(identity, "t" * 64, "hf", versions)[0] != model_key(on_gpu, "t" * 64, "hf", versions)[0]
    from evalkit.models.hf_loading import load_model
    from tests.conftest import TINY_NEOX

    _, loaded = load_model({"kind": "random", "alias": "tiny", "config": dict(TINY_NEOX)}, "float32", "cpu", 3)
    assert loaded["revision"] == "seed=3"


def test_a_cache_damaged_inside_is_a_clear_error_before_scoring(tmp_path):
    """Damaged pages pass the header check at open and used to surface as sqlite3's traceback at the first lookup
    (after the model had loaded) or, worse, at a commit in the middle of the run."""
    import hashlib

    from evalkit.scoring.cache import CachingBackend, RequestCache

    keys = [hashlib.sha256(str(i).encode()).digest() for i in range(2000)]
    with RequestCache(tmp_path) as cache:
        cache.put_many("m", [(k, -float(i), i % 2 == 0) for i, k in enumerate(keys)])
        cache.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "loglikelihood.sqlite3"
    data = bytearray(path.read_bytes())
    for start in range(2 * 4096, len(data), 4096):  # every page's header after the first two
        data[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    message = f"request cache {path} is damaged (database disk image is malformed): remove it, or use --no-cache"
    with RequestCache(tmp_path) as cache:
        with pytest.raises(EvalkitError) as caught:
            cache.get_many("m", keys)
        assert str(caught.value) == message

        class Unused:
            def loglikelihood(self, requests, on_batch=None):
                raise AssertionError("scored although the cache could not be read")

        with pytest.raises(EvalkitError) as caught:
            CachingBackend(Unused(), cache, "m").loglikelihood([TokenizedRequest((1,), (2,))])
        assert str(caught.value) == message
        with pytest.raises(EvalkitError) as caught:
            cache.put_many("m", [(hashlib.sha256(b"new").digest(), -1.0, True)])
        assert str(caught.value) == message


def test_a_baseline_of_a_sharded_run_keeps_gpu_indices_as_integers(tmp_path):
    """JSON turns the GPU indices of --max-memory into strings; accelerate refuses a device "0", so `evalkit check`
    could not re-run a baseline made with --parallelize --max-memory."""
    import json

    from evalkit.regression.baseline import config_from_baseline
    from evalkit.cli.parser import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--model", "random:pythia-14m", "--tasks", "piqa", "--parallelize",
                                      "--max-memory", "0=20GiB,1=30GiB,cpu=64GiB"])
    extra = config_from_args(args).extra
    assert extra["load_kwargs"] == {"device_map": "auto", "max_memory": {0: "20GiB", 1: "30GiB", "cpu": "64GiB"}}
    stored = json.loads(json.dumps({"config": {
        "model": "random:pythia-14m", "tasks": ["piqa"], "tokenizer": None, "data_dir": None, "include_paths": [],
        "limit": 2, "seed": 1, "batch_size": 4, "max_length": None, "dtype": "float16", "device": None,
        "bootstrap_iters": 0, "extra": dict(extra)}}))
    assert stored["config"]["extra"]["load_kwargs"]["max_memory"] == {"0": "20GiB", "1": "30GiB", "cpu": "64GiB"}
    config = config_from_baseline(stored, tmp_path / "b.json", None, str(tmp_path))
    assert config.extra["load_kwargs"] == {"device_map": "auto",
                                           "max_memory": {0: "20GiB", 1: "30GiB", "cpu": "64GiB"}}


def _lambada_like(lls: list[float]) -> tuple[dict, list[dict]]:
    """A task entry (results format) and its samples rows for documents 0 and 1 with these log-likelihoods."""
    import math

    samples = [{"task": "t", "doc_id": i, "context": f"passage {i}", "continuations": [" word"], "gold": 0,
                "loglikelihoods": [ll], "greedy": [False], "metrics": {"acc": 0.0, "loglikelihood": ll}}
               for i, ll in enumerate(lls)]
    entry = {"version": "1.0", "prompt_sha256": "p" * 64,
             "documents": {"doc_id": [0, 1], "acc": [0.0, 0.0], "loglikelihood": list(lls)},
             "metrics": {"acc": {"value": 0.0}, "perplexity": {"value": math.exp(-sum(lls) / len(lls))}}}
    return entry, samples


@pytest.mark.parametrize("shift, expected", [
    (5e-5, []),
    (5e-4, ["FAIL t: 2 log-likelihoods moved beyond 0.0001 + 1e-05·|ll| nats",
            "  log-likelihood: doc 0 choice 0: -10.000000 -> -9.999500 nats (Δ +0.000500)",
            "  log-likelihood: doc 1 choice 0: -20.000000 -> -19.999500 nats (Δ +0.000500)",
            "FAIL t perplexity: 3.26902e+06 -> 3.26738e+06 (Δ -1634.1)"]),
], ids=["within_the_request_tolerance", "beyond_it"])
def test_check_accepts_the_perplexity_of_log_likelihoods_it_accepts(shift, expected):
    """Every request moved 5e-5 nats (inside 1e-4 + 1e-5·|ll|), yet the perplexity, exp(-mean ll), moved by 5e-5
    relative, past the metric tolerance of 1e-5: the check failed on a metric of requests it had passed."""
    from evalkit.regression.baseline import Tolerance, request_records
    from evalkit.regression.check import _task_diffs

    old, old_samples = _lambada_like([-10.0, -20.0])
    old["requests"] = request_records(old_samples)
    new, new_samples = _lambada_like([-10.0 + shift, -20.0 + shift])
    assert _task_diffs("t", old, new, new_samples, Tolerance()) == expected


def test_two_runs_of_one_model_finishing_in_the_same_second_keep_both_results(tmp_path, monkeypatch):
    """Both runs picked <stamp>.json (the name was only checked for existence, not taken), and the second rename
    replaced the first run's results."""
    from datetime import datetime, timezone

    from evalkit.results import files as results_io

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)

    monkeypatch.setattr(results_io, "datetime", Frozen)
    first = results_io.results_path(tmp_path, "random:pythia-14m")
    second = results_io.results_path(tmp_path, "random:pythia-14m")
    folder = tmp_path / "results" / "random_pythia-14m"
    assert (first, second) == (folder / "20261130T120000Z.json", folder / "20261130T120000Z-1.json")
    results_io.atomic_write_text(second, '{"run": 2}\n')
    results_io.atomic_write_text(first, '{"run": 1}\n')
    assert [p.read_text() for p in (first, second)] == ['{"run": 1}\n', '{"run": 2}\n']


TASK_FILE = '''
from evalkit.types import DatasetSpec, Task

TASK = Task(
    name="odd", version="1.0", dataset=DatasetSpec("x/y", None, "test", 3, {{"goal": str}}),
    context=lambda d: d["goal"], continuations=lambda d: [" a", " b"], gold=lambda d: 0,
    scoring={scoring!r}, metrics={metrics!r}, primary_metric={primary!r},
)
'''


@pytest.mark.parametrize("scoring, metrics, primary, message", [
    ("multiple_choice", ("acc", "perplexity"), "acc",
     "task 'odd' lists metric 'perplexity', which scoring 'multiple_choice' does not give (it gives acc, acc_norm)"),
    ("target", ("acc", "f1"), "acc", "task 'odd' lists metric 'f1', which scoring 'target' does not give "
                                      "(it gives acc, perplexity)"),
    ("generate", ("acc",), "acc", "task 'odd' has scoring 'generate'; expected one of multiple_choice, target, "
                                  "any_greedy, yes_no, classification, rolling, generate_until"),
    ("generate_until", ("acc", "bleu"), "acc", "task 'odd' lists metric 'bleu', which scoring 'generate_until' does "
                                               "not give (it gives acc, exact_match and each as metric,filter)"),
    ("multiple_choice", ("acc_norm",), "acc", "task 'odd' has primary metric 'acc', which is not among its metrics "
                                              "(acc_norm)"),
], ids=["perplexity_of_multiple_choice", "unknown_metric", "unknown_scoring", "generation_metric",
        "primary_not_listed"])
def test_a_task_whose_metrics_its_scoring_cannot_give_is_refused_when_loaded(tmp_path, scoring, metrics, primary,
                                                                             message):
    """Such a task used to be scored in full and then crash in the aggregation (KeyError 'loglikelihood')."""
    from evalkit.tasks.registry import load_registry

    path = tmp_path / "odd.py"
    path.write_text(TASK_FILE.format(scoring=scoring, metrics=metrics, primary=primary), encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        load_registry([str(tmp_path)])
    assert str(caught.value) == f"task file {path}: {message}"


def test_reports_of_a_results_file_outside_a_results_folder_go_beside_it(tmp_path, capsys):
    """The default report folder was always three levels up (<root>/results/<model>/<stem>.json -> <root>/reports),
    so `evalkit report /tmp/run.json` wrote /reports/run.md at the file system's root."""
    import shutil

    from evalkit.cli.main import main
    from evalkit.reports.compare import default_output
    from evalkit.run.pipeline import run

    done = run(_config(tmp_path, bootstrap_iters=0), progress=False)
    assert done.results_path.parent.parent == tmp_path / "out" / "results"
    assert default_output([str(done.results_path)] * 2) == tmp_path / "out" / "reports" / (
        f"{done.results_path.stem}_vs_{done.results_path.stem}.md")
    loose = tmp_path / "shared" / "run.json"
    loose.parent.mkdir()
    shutil.copy(done.results_path, loose)
    assert main(["report", str(loose)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"report: {tmp_path / 'shared' / 'reports' / 'run.md'}"]
    assert (tmp_path / "shared" / "reports" / "run.png").is_file()
    assert default_output([str(loose), str(loose)]) == tmp_path / "shared" / "reports" / "run_vs_run.md"


@pytest.mark.parametrize("n, expected", [(1, 1.0), (2, 0.5), (3, 0.25)])
def test_a_paired_bootstrap_over_a_few_documents_is_not_significant_by_construction(n, expected):
    """Every document improving made every resample improve, so one or two documents gave p = 2/(iters+1) and a
    'significant' perplexity change (compare, check --statistical). No exact paired test of n documents can go
    below 2**(1-n): swapping the two runs on every document mirrors the observed difference."""
    import math

    from evalkit.stats.metrics import perplexity
    from evalkit.stats.significance import paired_bootstrap

    a = [-10.0, -12.0, -11.0][:n]
    result = paired_bootstrap(a, [x + 1.0 for x in a], perplexity, iters=1000, seed=1)
    assert result.p_value == expected
    assert result.delta == pytest.approx(math.exp(-sum(a) / n - 1.0) - math.exp(-sum(a) / n))


def test_a_json_file_that_is_not_a_tokenizer_is_a_clear_error(tmp_path):
    from evalkit.models.tokenizer_loading import load_tokenizer

    path = tmp_path / "tokenizer.json"
    path.write_text('{"a": 1}\n', encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        load_tokenizer(str(path), None)
    assert str(caught.value).startswith(f"could not load tokenizer {path}: ")


def test_a_weight_seed_beyond_torch_range_is_refused_when_the_model_is_named():
    """random:<alias>@<seed> with a seed of 2**64 reached torch.manual_seed and failed with an overflow traceback."""
    from evalkit.models.resolve import resolve_model

    assert resolve_model(f"random:pythia-14m@{2 ** 64 - 1}")["seed"] == 2 ** 64 - 1
    for seed in (str(2 ** 64), "\u00b2"):  # "²" passes str.isdigit but not int()
        with pytest.raises(EvalkitError) as caught:
            resolve_model(f"random:pythia-14m@{seed}")
        assert str(caught.value) == (f"'random:pythia-14m@{seed}': the weight seed after '@' must be a non-negative "
                                     "integer below 2**64")
