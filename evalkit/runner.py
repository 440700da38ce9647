"""One run end to end: documents -> requests -> backend -> per-document metrics -> aggregates -> files.

Every input is read and validated before the model is loaded, so a bad file costs seconds, not GPU hours.
Results are written atomically (temporary file + rename); a report is rendered from the saved results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evalkit import __version__
from evalkit.cache import CachingBackend, RequestCache, model_key, resolve_cache_dir
from evalkit.data import load_docs, resolve_data_dir, size_warning, subset_ids
from evalkit.metrics import HIGHER_IS_BETTER, PER_DOC_KEY, aggregator, doc_metrics, finite_or_none
from evalkit.metrics import has_closed_form_stderr
from evalkit.registry import load_registry, resolve_model
from evalkit.report import write_report
from evalkit.results_io import atomic_write_text, results_path
from evalkit.stats import bootstrap_stderr, mean_stderr
from evalkit.tokenization import context_prefix, tokenize_requests
from evalkit.types import DocResult, EvalkitError, LoglikelihoodRequest, RunConfig, Task, TokenizedRequest

log = logging.getLogger(__name__)


@dataclass
class PreparedTask:
    """A task's selected documents and their requests, ready for scoring."""

    task: Task
    n_split: int
    doc_ids: list[int]
    docs: list[Any]
    requests: list[LoglikelihoodRequest]
    warnings: list[str]


@dataclass
class RunOutput:
    """Paths written by a run and the in-memory results dict."""

    results_path: Path
    report_path: Path
    samples_path: Path | None
    results: dict[str, Any]


def prepare_task(task: Task, data_dir: Path | None, limit: int | None, seed: int) -> PreparedTask:
    """Load and validate a task's split, pick the seeded subset and build its requests (doc order, choice order)."""
    docs = load_docs(task, data_dir)
    warnings = [w for w in [size_warning(task, len(docs))] if w]
    ids = subset_ids(len(docs), limit, seed, task.name)
    chosen = [docs[i] for i in ids]
    requests = [
        LoglikelihoodRequest(task.name, doc_id, k, task.context(doc), cont)
        for doc_id, doc in zip(ids, chosen)
        for k, cont in enumerate(task.continuations(doc))
    ]
    return PreparedTask(task, len(docs), ids, chosen, requests, warnings)


def prompt_hash(requests: Sequence[LoglikelihoodRequest]) -> str:
    """sha256 over every request's (doc_id, choice_index, context, continuation): changes with any prompt edit."""
    digest = hashlib.sha256()
    for r in requests:
        digest.update(json.dumps([r.doc_id, r.choice_index, r.context, r.continuation]).encode("utf-8"))
    return digest.hexdigest()


def score_documents(prepared: PreparedTask, lls: Sequence[float], greedy: Sequence[bool]) -> list[DocResult]:
    """Per-document results from the task's responses (given in request order)."""
    out, k = [], 0
    task = prepared.task
    for doc_id, doc in zip(prepared.doc_ids, prepared.docs):
        conts = task.continuations(doc)
        doc_lls = tuple(float(x) for x in lls[k : k + len(conts)])
        doc_greedy = tuple(bool(x) for x in greedy[k : k + len(conts)])
        k += len(conts)
        metrics = doc_metrics(task.scoring, doc_lls, doc_greedy, conts, task.gold(doc))
        out.append(DocResult(task.name, doc_id, metrics, doc_lls, doc_greedy))
    return out


def aggregate(task: Task, results: Sequence[DocResult], iters: int, seed: int) -> dict[str, dict[str, Any]]:
    """Metric name -> {value, stderr, stderr_bootstrap, n, higher_is_better} over a task's documents."""
    out = {}
    for offset, metric in enumerate(task.metrics):
        values = np.array([r.metrics[PER_DOC_KEY[metric]] for r in results], dtype=np.float64)
        stat = aggregator(metric)
        closed = mean_stderr(values) if has_closed_form_stderr(metric) else None
        boot = bootstrap_stderr(values, stat, iters, seed + offset) if iters else None
        out[metric] = {
            "value": float(stat(values)),
            "stderr": finite_or_none(closed) if closed is not None else None,
            "stderr_bootstrap": finite_or_none(boot) if boot is not None else None,
            "n": len(values),
            "higher_is_better": HIGHER_IS_BETTER[metric],
        }
    return out


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "evalkit": __version__}
    for name in ("torch", "transformers", "tokenizers", "numpy", "datasets"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


SEED_LIMIT = 2 ** 64
"""Seeds run from 0 to 2**64 - 1: ``torch.manual_seed`` takes at most that, numpy's generators no negative value."""


def check_config(config: RunConfig) -> None:
    """Refuse numeric flags and an output folder that would fail the run later, after the model has scored.

    Checks ``--batch-size``, ``--max-batch-tokens`` and ``--max-length`` (at least 1), ``--bootstrap-iters``
    (0, or at least 2: a standard deviation of one resample does not exist), ``--seed`` (0 to 2**64 - 1) and that
    ``--output-dir`` is, or can be created as, a writable folder. Nothing is created.

    Raises:
        EvalkitError: naming the flag and the value.
    """
    sizes = (("--batch-size", config.batch_size), ("--max-batch-tokens", config.extra.get("max_batch_tokens")),
             ("--max-length", config.max_length))
    for flag, value in sizes:
        if value is not None and value < 1:
            raise EvalkitError(f"{flag} must be at least 1, got {value}")
    if config.bootstrap_iters < 0 or config.bootstrap_iters == 1:
        raise EvalkitError(f"--bootstrap-iters must be 0 (no bootstrap) or at least 2, got {config.bootstrap_iters}")
    if not 0 <= config.seed < SEED_LIMIT:
        raise EvalkitError(f"--seed must be between 0 and 2**64 - 1, got {config.seed}")
    out = Path(config.output_dir)
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())  # "/" always exists
    if not existing.is_dir():
        raise EvalkitError(f"--output-dir {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EvalkitError(f"--output-dir {out}: {existing} is not writable")


def run(config: RunConfig, progress: bool = True) -> RunOutput | None:
    """Evaluate ``config.model`` on ``config.tasks`` and write results, samples and a report.

    Under ``torchrun`` every rank scores a share of the requests and rank 0 alone writes the files
    (:mod:`evalkit.distributed`); the other ranks return None.

    Raises:
        EvalkitError: bad input of any kind, before the model is loaded.
    """
    started = time.perf_counter()
    check_config(config)
    registry = load_registry(config.include_paths)
    tasks = registry.expand(config.tasks)
    resolved = resolve_model(config.model)
    data_dir = resolve_data_dir(config.data_dir)
    prepared = [prepare_task(t, data_dir, config.limit, config.seed) for t in tasks]
    for p in prepared:
        for warning in p.warnings:
            log.warning(warning)
    if config.use_cache:  # a broken cache fails here, before the model is loaded
        RequestCache(resolve_cache_dir(config.cache_dir)).close()
    if resolved["kind"] == "gguf":  # the gguf package and the file's header are checked before the model loads
        _identify_gguf(resolved, config)

    from evalkit import distributed, hf_backend, hf_loading  # torch loads only when there is work for it

    ranks = distributed.start(config)  # a single rank unless launched by torchrun
    t0 = time.perf_counter()
    tokenizer = hf_loading.load_tokenizer(config.tokenizer, resolved.get("path"))
    t_tokenizer = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, identity = hf_loading.load_model(resolved, config.dtype, ranks.device, config.seed, **ranks.load_kwargs)
    t_model = time.perf_counter() - t0
    rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.vocab_size > rows:
        raise EvalkitError(
            f"tokenizer {tokenizer.identity['name']} has {tokenizer.vocab_size} tokens but the model's embedding "
            f"has {rows} rows: wrong tokenizer for this model?"
        )
    window = hf_loading.model_window(model, config.max_length)
    prefix = context_prefix(getattr(model.config, "model_type", None), tokenizer.prefix_ids)
    all_requests = [r for p in prepared for r in p.requests]
    t0 = time.perf_counter()
    tokenized = tokenize_requests(all_requests, tokenizer.encode_batch, tokenizer.eot_id, window,
                                  config.extra.get("tokenization", "separate"), prefix)
    t_tok = time.perf_counter() - t0
    _warn_truncated(prepared, tokenized, window)
    backend = hf_backend.HFBackend(
        model, window, batch_size=config.batch_size, max_batch_tokens=config.extra.get("max_batch_tokens", 32768),
        pad_id=tokenizer.eot_id, share_context=config.extra.get("share_context", True), progress=progress,
    )
    versions = library_versions()
    t0 = time.perf_counter()
    responses, cache_info, counts = _score(ranks, backend, tokenized, config, identity,
                                           tokenizer.identity["sha256"], versions)
    t_score = time.perf_counter() - t0
    if responses is None:  # a rank other than 0: its responses went to rank 0, which writes the results
        return None

    task_results: dict[str, Any] = {}
    doc_results: dict[str, list[DocResult]] = {}
    k = 0
    for p in prepared:
        n = len(p.requests)
        resp, toks = responses[k : k + n], tokenized[k : k + n]
        k += n
        docs = score_documents(p, [r.loglikelihood for r in resp], [r.greedy for r in resp])
        doc_results[p.task.name] = docs
        task_results[p.task.name] = task_summary(p, docs, toks, config)
    timing = {
        "wall_time_s": round(time.perf_counter() - started, 3),
        "load_tokenizer_s": round(t_tokenizer, 3),
        "load_model_s": round(t_model, 3),
        "tokenize_s": round(t_tok, 3),
        "score_s": round(t_score, 3),
        "requests": len(all_requests),
        "requests_per_s": round(len(all_requests) / t_score, 2) if t_score > 0 else None,
        "forward_calls": backend.forward_calls,
        "forward_tokens": backend.forward_tokens,
        "padded_tokens": backend.padded_tokens,
        "scored_positions": backend.scored_positions,
        "requests_scored": counts[1],
        "requests_cached": counts[0],
        "batch_size": config.batch_size,
        "batch_size_final": backend.batch_size,
        "oom_retries": backend.oom_retries,
        "shared_context": backend.share_context,
    }
    if backend.mask_fallback:  # same numbers, but the run was slower than it should be: say so in the report
        for summary in task_results.values():
            summary["warnings"].append(f"shared-context scoring was turned off: {backend.mask_fallback}")
    results = {
        "evalkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(config),
        "model": identity,
        "tokenizer": tokenizer.identity | {"eot_id": tokenizer.eot_id, "vocab_size": tokenizer.vocab_size,
                                           "adds_prefix_ids": list(tokenizer.prefix_ids),
                                           "context_prefix_ids": list(prefix)},
        "window": window,
        "versions": versions,
        "cache": cache_info,
        "timing": timing,
        "tasks": task_results,
    }
    ranks.annotate(results)
    return write_outputs(results, doc_results, prepared, config)


def _identify_gguf(resolved: dict[str, Any], config: RunConfig) -> None:
    """Add the GGUF file's content sha256 (remembered in the cache folder unless ``--no-cache``) and its declared
    quantization to ``resolved``, so the model's identity is its content.

    Raises:
        EvalkitError: the gguf package is missing or the file cannot be read or parsed.
    """
    from evalkit.file_identity import file_sha256, remembered
    from evalkit.gguf_file import describe_gguf

    memo = resolve_cache_dir(config.cache_dir) if config.use_cache else None
    try:
        resolved["gguf"] = remembered(resolved["path"], memo, "gguf", describe_gguf)
        resolved["sha256"] = file_sha256(resolved["path"], memo)
    except OSError as exc:
        raise EvalkitError(f"cannot read GGUF file {resolved['path']}: {exc}") from None


def task_summary(
    p: PreparedTask, docs: Sequence[DocResult], toks: Sequence[TokenizedRequest], config: RunConfig
) -> dict[str, Any]:
    """A task's entry in the results JSON: definition, sizes, prompt hash, metrics and per-document values."""
    return {
        "version": p.task.version,
        "description": p.task.description,
        "source": p.task.source,
        "dataset": asdict(p.task.dataset) | {"fields": sorted(p.task.dataset.fields)},
        "n": len(docs),
        "n_split": p.n_split,
        "expected_n": p.task.dataset.n,
        "subset": config.limit is not None and len(docs) < p.n_split,
        "primary_metric": p.task.primary_metric,
        "requests": len(p.requests),
        "tokens": int(sum(len(t.context_ids) + len(t.continuation_ids) - 1 for t in toks)),
        "truncated_requests": int(sum(1 for t in toks if t.truncated_tokens)),
        "prompt_sha256": prompt_hash(p.requests),
        "warnings": p.warnings,
        "metrics": aggregate(p.task, docs, config.bootstrap_iters, config.seed),
        "documents": _per_doc_arrays(p.task, docs),
    }


def _warn_truncated(prepared: Sequence[PreparedTask], tokenized: Sequence[TokenizedRequest], window: int) -> None:
    """Add a warning to each task whose requests were cut to the window (shown in the log, results and report)."""
    k = 0
    for p in prepared:
        toks = tokenized[k : k + len(p.requests)]
        k += len(p.requests)
        cut = [t.truncated_tokens for t in toks if t.truncated_tokens]
        if cut:
            warning = (f"{p.task.name}: {len(cut)} of {len(toks)} requests were longer than the window of {window} "
                       f"tokens; their contexts were truncated on the left ({sum(cut)} tokens dropped, at most "
                       f"{max(cut)} from one request)")
            p.warnings.append(warning)
            log.warning(warning)


def _score(
    ranks: Any, backend: Any, tokenized: Sequence[TokenizedRequest], config: RunConfig, identity: dict[str, Any],
    tokenizer_sha256: str, versions: dict[str, str],
) -> tuple[list[Any] | None, dict[str, str] | None, tuple[int, int]]:
    """Responses for every request (over all ranks), through the request cache unless ``config.use_cache`` is
    False.

    Each rank answers its share from the cache and commits what its model scores, batch by batch.

    Returns:
        (responses in request order, None on ranks other than 0; ``{"path", "model_key"}`` of the cache or None;
        (requests answered from the cache, requests scored by the model) on this rank).
    """
    if not config.use_cache:
        return ranks.loglikelihood(backend, tokenized), None, (0, len(tokenized))
    key, fields = model_key(identity, tokenizer_sha256, "hf", versions)
    with RequestCache(resolve_cache_dir(config.cache_dir)) as cache:
        cache.register_model(key, fields)
        caching = CachingBackend(backend, cache, key)
        responses = ranks.loglikelihood(caching, tokenized)
        log.info("%d requests answered from the cache %s, %d scored by the model",
                 caching.requests_cached, cache.path, caching.requests_scored)
        return responses, {"path": str(cache.path), "model_key": key}, (caching.requests_cached,
                                                                         caching.requests_scored)


def _per_doc_arrays(task: Task, docs: Sequence[DocResult]) -> dict[str, list]:
    keys = sorted({PER_DOC_KEY[m] for m in task.metrics})
    arrays: dict[str, list] = {"doc_id": [d.doc_id for d in docs]}
    for key in keys:
        arrays[key] = [d.metrics[key] for d in docs]
    return arrays


def write_outputs(
    results: dict[str, Any], doc_results: dict[str, list[DocResult]], prepared: Sequence[PreparedTask],
    config: RunConfig,
) -> RunOutput:
    """Write samples (optional), results JSON and the Markdown report; returns their paths."""
    out_dir = Path(config.output_dir)
    path = results_path(out_dir, results["model"]["name"])  # reserved (created empty) until written below
    try:
        samples_path = _write_samples(path, results, doc_results, prepared) if config.log_samples else None
        atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    except BaseException:
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise
    report_path = write_report([results], out_dir / "reports", path.stem, source_paths=[path],
                               draw_figure=config.extra.get("figure", True))
    return RunOutput(path, report_path, samples_path, results)


def _write_samples(
    path: Path, results: dict[str, Any], doc_results: dict[str, list[DocResult]], prepared: Sequence[PreparedTask]
) -> Path:
    """Write ``<results stem>.samples.jsonl`` (one line per document) and name it in ``results``."""
    samples_path = path.with_suffix(".samples.jsonl")
    lines = []
    for p in prepared:
        for doc, result in zip(p.docs, doc_results[p.task.name]):
            lines.append(json.dumps({
                "task": p.task.name, "doc_id": result.doc_id, "context": p.task.context(doc),
                "continuations": p.task.continuations(doc), "gold": p.task.gold(doc),
                "loglikelihoods": list(result.loglikelihoods), "greedy": list(result.greedy),
                "metrics": dict(result.metrics),
            }))
    atomic_write_text(samples_path, "\n".join(lines) + "\n")
    results["samples_file"] = samples_path.name
    return samples_path
