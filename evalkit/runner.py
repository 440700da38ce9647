"""One run end to end: documents -> requests -> backend -> per-document metrics -> aggregates -> files.

Every input is read and validated before the model is loaded, so a bad file costs seconds, not GPU hours.
Results are written atomically (temporary file + rename); a report is rendered from the saved results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from evalkit import __version__, fewshot_lmeval
from evalkit.batching import flatten_windows, join_windows
from evalkit.cache import CachingBackend, RequestCache, model_key, resolve_cache_dir
from evalkit.data import (TaskCodeError, drop_tasks_without_data, duplicate_rows, load_docs, local_path,
                          resolve_data_dir, size_warning, subset_ids)
from evalkit.fewshot import (SOURCE_SPLIT, FewshotPlan, check_sources, document_contexts, draw_examples,
                             fewshot_source, resolve_shots, short_warning)
from evalkit.batching import initial_batch_size
from evalkit.finite import FiniteGuard, NonFiniteScore, non_finite
from evalkit.groups import aggregate_group
from evalkit.hub_check import check_hub
from evalkit.metrics import HIGHER_IS_BETTER, PER_DOC_KEYS, aggregator, doc_metrics, finite_or_none
from evalkit.metrics import has_closed_form_stderr, per_doc_values
from evalkit.model_args import hub_options
from evalkit.registry import load_registry, resolve_model
from evalkit.results_io import atomic_write_text, results_path, strict_json
from evalkit.stats import bootstrap_stderr, mean_stderr
from evalkit.tokenization import context_prefix, tokenize_windows
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
    fewshot: FewshotPlan | None = None
    contexts: list[list[str]] | None = None
    duplicates: int = 0


@dataclass
class RunOutput:
    """Paths written by a run (None when the run wrote no files) and the in-memory results dict.

    ``report_path`` is None and ``report_error`` says why when the results were written but the report could not
    be (an unwritable ``reports/``): the results are complete, ``evalkit report`` re-renders the report.
    """

    results_path: Path | None
    report_path: Path | None
    samples_path: Path | None
    results: dict[str, Any]
    report_error: str | None = None


def prepare_task(
    task: Task, data_dir: Path | None, limit: int | None, seed: int, num_fewshot: int = 0, fewshot_seed: int = 42,
    task_file: Path | None = None,
) -> PreparedTask:
    """Load and validate a task's split (and its few-shot split when ``num_fewshot`` > 0), pick the seeded subset
    and build its requests (doc order, choice order) with each document's full few-shot context
    (:mod:`evalkit.fewshot`; per-choice contexts where the task has them).

    Documents identical to an earlier chosen one are scored again (as lm-eval does) but warned about, with their
    count.

    Raises:
        EvalkitError: bad input in either split (file, line, field), no few-shot source, too few rows to draw, or a
            task function raising on a document (names ``task_file``, the document and the exception).
    """
    lmeval = task.fewshot_sampler != "v0.2.0"  # an lm-eval 0.4 task YAML draws with lm-eval's own sampler
    try:
        docs = load_docs(task, data_dir)
        pool = docs
        if not lmeval and fewshot_source(task, num_fewshot) == SOURCE_SPLIT:  # examples from another split
            pool = load_docs(task, data_dir, task.fewshot_split)
    except TaskCodeError as exc:
        raise EvalkitError(f"task file {task_file or '?'}: {exc}") from None
    warnings = [w for w in [size_warning(task, len(docs))] if w]
    ids = subset_ids(len(docs), limit, seed, task.name)
    chosen = [docs[i] for i in ids]
    duplicates = duplicate_rows(chosen)
    if duplicates:
        shown = ", ".join(f"doc {ids[i]} = doc {ids[j]}" for i, j in duplicates[:5])
        more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        warnings.append(f"{task.name}: {len(duplicates)} of {len(chosen)} documents are identical to an earlier one "
                        f"({shown}{more}); each copy is scored and counted in the metrics")
    if lmeval:
        plan = None
        contexts = (lmeval_fewshot_contexts(task, data_dir, chosen, num_fewshot) if num_fewshot else
                    [task.choice_contexts(doc) if task.choice_contexts else [task.context(doc)] * len(
                        task.continuations(doc)) for doc in chosen])
    else:
        plan = draw_examples(task, docs, pool, num_fewshot, fewshot_seed)
        contexts = document_contexts(task, docs, pool, plan, ids)
    if task.scoring == "rolling":
        for doc_id, doc in zip(ids, chosen):
            check_rolling_doc(task, doc_id, doc)
    requests = [
        LoglikelihoodRequest(task.name, doc_id, k, ctx, cont)
        for doc_id, doc, ctxs in zip(ids, chosen, contexts)
        for k, (ctx, cont) in enumerate(zip(ctxs, task.continuations(doc)))
    ]
    if plan is not None:
        warnings += [w for w in [short_warning(task, plan, ids)] if w]
    return PreparedTask(task, len(docs), ids, chosen, requests, warnings, plan, contexts, len(duplicates))


def _missing_fewshot_file(task: Task, data_dir: Path | None) -> str | None:
    """The local few-shot file ``task`` needs but the data folder lacks, else None (the hub is not checked here)."""
    if data_dir is None or task.fewshot_split in (None, task.dataset.split):
        return None
    path = local_path(task, data_dir, task.fewshot_split)
    return None if path.is_file() else str(path)


def check_rolling_doc(task: Task, doc_id: int, doc: Any) -> None:
    """Refuse a rolling task's document whose requests or word/byte counts would be wrong (before the model loads).

    A rolling task (:class:`evalkit.types.Task`, ``scoring="rolling"``) needs ``context(doc) == ""``, exactly
    one non-empty continuation (the scored text) and, when it has ``units_text``, a non-empty string there.

    Raises:
        EvalkitError: naming the task, the document's row and the field.
    """
    where = f"task {task.name} doc {doc_id}"
    if task.context(doc) != "":
        raise EvalkitError(f"{where}: a rolling task's context must be empty, got {task.context(doc)[:40]!r}")
    texts = task.continuations(doc)
    if len(texts) != 1 or not isinstance(texts[0], str) or not texts[0]:
        raise EvalkitError(f"{where}: a rolling task has exactly one non-empty text to score, got "
                           f"{len(texts)} continuations")
    if task.units_text is not None:
        units = task.units_text(doc)
        if not isinstance(units, str) or not units:
            raise EvalkitError(f"{where}: units_text must give a non-empty string (its words and bytes normalise "
                               f"the perplexities), got {units!r}")


def lmeval_fewshot_contexts(task: Task, data_dir: Path | None, chosen: Sequence[Any], shots: int) -> list[list[str]]:
    """Per chosen document, the context of each continuation with ``shots`` examples drawn by lm-eval 0.4's sampler
    (one ``random.Random(1234)`` for the task, advanced document by document in id order).

    Raises:
        EvalkitError: a task whose sampler is not lm-eval 0.4's, without a few-shot split, or with too few examples.
    """
    parsed = fewshot_lmeval.parse_sampler(task.fewshot_sampler)
    if parsed is None or task.fewshot_contexts is None:
        raise EvalkitError(f"task {task.name}: {shots} few-shot examples asked for, but only lm-eval 0.4 task YAMLs "
                           f"assemble few-shot contexts in this evalkit")
    if task.fewshot_split is None:
        raise EvalkitError(f"task {task.name}: {shots} few-shot examples asked for, but it has no few-shot split")
    pool = load_docs(task, data_dir, task.fewshot_split)
    sampler, exclude = parsed
    try:
        drawn = fewshot_lmeval.draw_examples(pool, chosen, shots, fewshot_lmeval.LMEVAL_FEWSHOT_SEED, sampler,
                                             exclude)
    except ValueError as exc:
        raise EvalkitError(f"task {task.name}: {exc}") from None
    try:
        return [task.fewshot_contexts(doc, examples) for doc, examples in zip(chosen, drawn)]
    except ValueError as exc:
        raise EvalkitError(f"task {task.name}, few-shot split {task.fewshot_split}: {exc}") from None


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
        units = task.units_text(doc) if task.units_text is not None else None
        metrics = doc_metrics(task.scoring, doc_lls, doc_greedy, conts, task.gold(doc), units)
        out.append(DocResult(task.name, doc_id, metrics, doc_lls, doc_greedy))
    return out


def aggregate(task: Task, results: Sequence[DocResult], iters: int, seed: int) -> dict[str, dict[str, Any]]:
    """Metric name -> {value, stderr, stderr_bootstrap, n, higher_is_better} over a task's documents.

    Means (acc, acc_norm) get the closed-form stderr and a bootstrap; perplexities (``perplexity`` and the
    rolling ratios of sums) the bootstrap alone, each resample recomputing the statistic from its documents.
    """
    arrays = _per_doc_arrays(task, results)
    out = {}
    for offset, metric in enumerate(task.metrics):
        values = per_doc_values(metric, arrays)
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
    (0, or at least 2: a standard deviation of one resample does not exist), ``--seed`` and ``--fewshot-seed``
    (0 to 2**64 - 1) and that ``--output-dir`` is, or can be created as, a writable folder (and its ``results/``
    and ``reports/``, where they exist, are writable folders). Nothing is created.

    Raises:
        EvalkitError: naming the flag and the value.
    """
    if isinstance(config.batch_size, str) and config.batch_size != "auto":
        raise EvalkitError(f"--batch-size must be a whole number or 'auto', got {config.batch_size!r}")
    batch_size = None if config.batch_size == "auto" else config.batch_size
    sizes = (("--batch-size", batch_size), ("--max-batch-tokens", config.extra.get("max_batch_tokens")),
             ("--max-length", config.max_length))
    for flag, value in sizes:
        if value is not None and value < 1:
            raise EvalkitError(f"{flag} must be at least 1, got {value}")
    if config.bootstrap_iters < 0 or config.bootstrap_iters == 1:
        raise EvalkitError(f"--bootstrap-iters must be 0 (no bootstrap) or at least 2, got {config.bootstrap_iters}")
    hub_options(config)
    if not 0 <= config.seed < SEED_LIMIT:
        raise EvalkitError(f"--seed must be between 0 and 2**64 - 1, got {config.seed}")
    if not 0 <= config.fewshot_seed < SEED_LIMIT:
        raise EvalkitError(f"--fewshot-seed must be between 0 and 2**64 - 1, got {config.fewshot_seed}")
    out = Path(config.output_dir)
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())  # "/" always exists
    if not existing.is_dir():
        raise EvalkitError(f"--output-dir {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EvalkitError(f"--output-dir {out}: {existing} is not writable")
    for sub in ("results", "reports"):  # an existing subfolder may be read-only while its parent is not
        folder = out / sub
        if folder.exists() and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise EvalkitError(f"--output-dir {out}: {folder} is not a writable folder, so the "
                               f"{'results' if sub == 'results' else 'report'} could not be written after scoring")


def run(config: RunConfig, progress: bool = True, write: bool = True) -> RunOutput | None:
    """Evaluate ``config.model`` on ``config.tasks`` and write results, samples and a report (``write=False``:
    only return the results; the request cache is still used unless ``config.use_cache`` is False).

    Under ``torchrun`` every rank scores a share of the requests and rank 0 alone writes the files
    (:mod:`evalkit.distributed`); the other ranks return None.

    Order: flags, tasks, data (every document validated and its prompt built), cache, then the tokenizer and the
    model's config (no weights): ``--max-length`` against the trained positions, tokenization (continuations that
    cannot fit, text the tokenizer refuses), the local folder's content key; only then the weights.

    Raises:
        EvalkitError: bad input of any kind, before the weights are loaded; or, after scoring, a non-finite
            log-likelihood without ``extra["allow_non_finite"]`` (task, document and request named; no results
            written; finite answers kept in the request cache).
    """
    started = time.perf_counter()
    check_config(config)
    registry = load_registry(config.include_paths)
    tasks = registry.expand(config.tasks)
    groups = [g for g in registry.selected_groups(config.tasks) if g.aggregation is not None]
    resolved = resolve_model(config.model)
    if resolved["kind"] == "random" and config.extra.get("revision") is not None:
        raise EvalkitError(f"--revision {config.extra['revision']}: {config.model} has random weights, no hub "
                           f"revision (its seed is its revision)")
    data_dir = resolve_data_dir(config.data_dir)
    shots = resolve_shots(tasks, config.num_fewshot, config.fewshot_overrides, registry.groups)
    for t in tasks:  # an lm-eval task YAML's own num_fewshot applies when the run asks for no shots
        if shots[t.name] == 0 and t.num_fewshot and t.name not in config.fewshot_overrides:
            shots[t.name] = t.num_fewshot
    for path, reason in registry.refused.items():
        log.warning("task file not loaded: %s", reason if reason.startswith(path) else f"{path}: {reason}")
    tasks, skipped = drop_tasks_without_data(tasks, data_dir, config, shots)
    check_sources(tasks, shots, lambda t: _missing_fewshot_file(t, data_dir), config.tasks, config.fewshot_overrides)
    if resolved["kind"] == "random" and config.tokenizer is None:
        raise EvalkitError(f"{config.model} has random weights and no tokenizer of its own: add --tokenizer "
                           f"(e.g. ../shared/data/tokenizers/20B_tokenizer.json; tokenizer= in evalkit.evaluate)")
    check_hub(tasks, data_dir, resolved, config.model, config.tokenizer,  # one message for all that is missing
              hub_options(config)["hub_kwargs"].get("cache_dir"))
    prepared = [prepare_task(t, data_dir, config.limit, config.seed, shots[t.name], config.fewshot_seed,
                             registry.files.get(t.name)) for t in tasks]
    for p in prepared:
        for warning in p.warnings:
            log.warning(warning)
    if config.use_cache:  # a broken cache fails here, before the model is loaded
        RequestCache(resolve_cache_dir(config.cache_dir)).close()
    if resolved["kind"] == "gguf":  # the gguf package and the file's header are checked before the model loads
        _identify_gguf(resolved, config)

    from evalkit import distributed, hf_backend, hf_loading  # torch loads only when there is work for it

    ranks = distributed.start(config)  # a single rank unless launched by torchrun
    hub = hub_options(config)
    t0 = time.perf_counter()
    tokenizer = hf_loading.load_tokenizer(config.tokenizer, resolved.get("path"), hub["revision"],
                                          hub["trust_remote_code"], hub["hub_kwargs"])
    t_tokenizer = time.perf_counter() - t0
    run_warnings = []
    own = hf_loading.own_tokenizer(resolved.get("path"), config.tokenizer) if config.tokenizer else None
    if own is not None and own.identity["sha256"] != tokenizer.identity["sha256"]:
        run_warnings.append(
            f"--tokenizer {config.tokenizer} (sha256 {tokenizer.identity['sha256'][:12]}…) is not the tokenizer "
            f"the model folder ships (sha256 {own.identity['sha256'][:12]}…): a tokenizer whose vocabulary fits "
            f"but that does not belong to the model scores garbage"
        )
    model_config = hf_loading.load_config(  # no weights yet: every input check runs before they load
        resolved, {"revision": hub["revision"], "trust_remote_code": hub["trust_remote_code"], **hub["hub_kwargs"]})
    window = hf_loading.config_window(model_config, config.max_length, config.model)
    prefix = context_prefix(getattr(model_config, "model_type", None), tokenizer.prefix_ids)
    all_requests = [r for p in prepared for r in p.requests]
    t0 = time.perf_counter()
    windows = tokenize_tasks(prepared, tokenizer.encode_batch, tokenizer.eot_id, window,
                             config.extra.get("tokenization", "separate"), prefix)
    tokenized, owners = flatten_windows(windows)  # one sequence per request, several for a rolling one
    t_tok = time.perf_counter() - t0
    _warn_truncated(prepared, windows, window)
    _warn_joint_fallbacks(prepared, windows)
    fingerprint = None
    if resolved["kind"] == "pretrained" and Path(resolved["path"]).is_dir():
        memo = resolve_cache_dir(config.cache_dir) if config.use_cache else None
        fingerprint = hf_loading.folder_fingerprint(Path(resolved["path"]), bool(config.extra.get("full_weight_hash")),
                                                    memo)
    t0 = time.perf_counter()
    with hf_loading.loading_bars(progress):
        model, identity = hf_loading.load_model(resolved, config.dtype, ranks.device, config.seed,
                                                **ranks.load_kwargs, revision=hub["revision"],
                                                trust_remote_code=hub["trust_remote_code"],
                                                model_args=hub["model_args"], fingerprint=fingerprint)
    t_model = time.perf_counter() - t0
    rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.vocab_size > rows:
        raise EvalkitError(
            f"tokenizer {tokenizer.identity['name']} has {tokenizer.vocab_size} tokens but the model's embedding "
            f"has {rows} rows: wrong tokenizer for this model?"
        )
    for warning in run_warnings:
        log.warning(warning)
    start_size, per_task = initial_batch_size(config.batch_size, hf_backend.execution_device(
        model.get_input_embeddings()).type)
    backend = hf_backend.HFBackend(
        model, window, batch_size=start_size, max_batch_tokens=config.extra.get("max_batch_tokens", 32768),
        pad_id=tokenizer.eot_id, share_context=config.extra.get("share_context", True), progress=progress,
    )
    versions = library_versions()
    allow_non_finite = bool(config.extra.get("allow_non_finite"))
    t0 = time.perf_counter()
    sequences = [len(own) for own in windows]  # per request: 1, or a rolling request's windows
    parts, k = [], 0
    for p in prepared:  # (task, sequences) so a batch size can be probed per task
        parts.append((p.task.name, sum(sequences[k : k + len(p.requests)])))
        k += len(p.requests)
    parts = parts if per_task else None
    task_sizes: dict[str, int | None] = {}
    try:
        responses, cache_info, counts = _score(ranks, backend, tokenized, config, identity,
                                               tokenizer.identity["sha256"], versions, parts, task_sizes,
                                               allow_non_finite)
    except NonFiniteScore as exc:
        raise EvalkitError(_non_finite_message(all_requests[owners[tokenized.index(exc.request)]], exc.value, config)) \
            from None
    t_score = time.perf_counter() - t0
    if responses is None:  # a rank other than 0: its responses went to rank 0, which writes the results
        return None
    responses = join_windows(responses, owners, len(all_requests))  # a rolling request: the sum of its windows
    bad = non_finite(responses)
    if bad and not allow_non_finite:  # answered by another rank
        raise EvalkitError(_non_finite_message(all_requests[bad[0]], responses[bad[0]].loglikelihood, config))

    task_results: dict[str, Any] = {}
    doc_results: dict[str, list[DocResult]] = {}
    k = 0
    for p in prepared:
        n = len(p.requests)
        resp, toks = responses[k : k + n], windows[k : k + n]
        k += n
        docs = score_documents(p, [r.loglikelihood for r in resp], [r.greedy for r in resp])
        kept = _drop_non_finite(p, docs)
        doc_results[p.task.name] = docs
        task_results[p.task.name] = task_summary(p, kept, toks, config) | {
            "non_finite_requests": len(non_finite(resp)), "non_finite_documents": len(docs) - len(kept)}
    group_results = {g.name: aggregate_group(g, registry.members(g), task_results, config.bootstrap_iters,
                                             config.seed)
                     for g in groups if all(name in task_results for name in registry.members(g))}
    timing = {
        "wall_time_s": round(time.perf_counter() - started, 3),
        "load_tokenizer_s": round(t_tokenizer, 3),
        "load_model_s": round(t_model, 3),
        "tokenize_s": round(t_tok, 3),
        "score_s": round(t_score, 3),
        "requests": len(all_requests),
        "sequences": len(tokenized),
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
    if config.batch_size == "auto":
        timing["batch_size_auto"] = {"start": start_size, "per_task": task_sizes or None}
    tokenizer_info = tokenizer.identity | {"eot_id": tokenizer.eot_id, "vocab_size": tokenizer.vocab_size}
    if own is not None:
        tokenizer_info["model_tokenizer_sha256"] = own.identity["sha256"]
    if backend.mask_fallback:  # same numbers, but the run was slower than it should be: say so in the report
        for summary in task_results.values():
            summary["warnings"].append(f"shared-context scoring was turned off: {backend.mask_fallback}")
    results = {
        "evalkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(config),
        "model": identity,
        "tokenizer": tokenizer_info | {"adds_prefix_ids": list(tokenizer.prefix_ids),
                                       "context_prefix_ids": list(prefix)},
        "window": window,
        "versions": versions,
        "cache": cache_info,
        "timing": timing,
        "warnings": run_warnings,
        "tasks": task_results,
        "skipped_tasks": skipped,
        "groups": group_results,
    }
    ranks.annotate(results)
    if not write:
        return RunOutput(None, None, None, results)
    return write_outputs(results, doc_results, prepared, config)


def tokenize_tasks(
    prepared: Sequence[PreparedTask], encode_batch: Any, eot_id: int, window: int, run_mode: str,
    prefix_ids: Sequence[int] = (),
) -> list[tuple[TokenizedRequest, ...]]:
    """Every task's requests tokenized in order (:func:`evalkit.tokenization.tokenize_windows`: one sequence per
    request, a rolling request's windows), each task in its own mode (``Task.tokenization``, else the run's);
    ``prefix_ids`` (a BOS, :func:`evalkit.tokenization.context_prefix`) go before every context.

    Raises:
        EvalkitError: as :func:`evalkit.tokenization.tokenize_requests`.
    """
    modes = [p.task.tokenization or run_mode for p in prepared]
    by_mode = {}
    for mode in dict.fromkeys(modes):  # one call per mode, in task order: each text is encoded once
        chosen = [(r, p.task.scoring == "rolling") for p, m in zip(prepared, modes) if m == mode for r in p.requests]
        by_mode[mode] = iter(tokenize_windows([r for r, _ in chosen], [x for _, x in chosen], encode_batch, eot_id,
                                              window, mode, prefix_ids))
    return [next(by_mode[m]) for p, m in zip(prepared, modes) for _ in p.requests]


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
    p: PreparedTask, docs: Sequence[DocResult], windows: Sequence[Sequence[TokenizedRequest]], config: RunConfig
) -> dict[str, Any]:
    """A task's entry in the results JSON: definition, sizes, prompt hash, metrics and per-document values.

    ``windows`` holds each request's tokenized sequences (one, or a rolling request's windows); ``tokens``
    counts the input tokens of all of them and ``sequences`` how many there are.
    """
    toks = [t for own in windows for t in own]
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
        "sequences": len(toks),
        "tokens": int(sum(len(t.context_ids) + len(t.continuation_ids) - 1 for t in toks)),
        "truncated_requests": int(sum(1 for own in windows if any(t.truncated_tokens for t in own))),
        "joint_fallback_requests": int(sum(1 for own in windows if any(t.joint_fallback for t in own))),
        "duplicate_documents": p.duplicates,
        "prompt_sha256": prompt_hash(p.requests),
        "num_fewshot": p.fewshot.num_fewshot if p.fewshot else 0,
        "fewshot_split": p.fewshot.split if p.fewshot else None,
        "fewshot_seed": config.fewshot_seed,
        "fewshot_source": p.fewshot.source if p.fewshot else "none",
        "fewshot_pool_size": p.fewshot.pool_size if p.fewshot else 0,
        "warnings": p.warnings,
        "metrics": aggregate(p.task, docs, config.bootstrap_iters, config.seed),
        "documents": _per_doc_arrays(p.task, docs),
    }


def _warn_truncated(
    prepared: Sequence[PreparedTask], windows: Sequence[Sequence[TokenizedRequest]], window: int
) -> None:
    """Add a warning to each task whose requests were cut to the window (shown in the log, results and report).

    ``windows`` holds each request's tokenized sequences; rolling windows are never cut.
    """
    k = 0
    for p in prepared:
        toks = windows[k : k + len(p.requests)]
        k += len(p.requests)
        cut = [sum(t.truncated_tokens for t in own) for own in toks if any(t.truncated_tokens for t in own)]
        if cut:
            warning = (f"{p.task.name}: {len(cut)} of {len(toks)} requests were longer than the window of {window} "
                       f"tokens; their contexts were truncated on the left ({sum(cut)} tokens dropped, at most "
                       f"{max(cut)} from one request)")
            p.warnings.append(warning)
            log.warning(warning)


def _by_task(ranks: Any, scorer: Any, backend: Any, tokenized: Sequence[TokenizedRequest],
             parts: Sequence[tuple[str, int]] | None, sizes: dict[str, int | None]) -> list[Any] | None:
    """``ranks.loglikelihood`` over all requests, or task by task (``parts``: (name, requests)) with the batch
    size reset to its start before each task; ``sizes`` gets each task's final size (None: nothing scored)."""
    if parts is None:
        return ranks.loglikelihood(scorer, tokenized)
    start, out, k = backend.batch_size, [], 0
    for name, n in parts:
        backend.batch_size, calls = start, backend.forward_calls
        got = ranks.loglikelihood(scorer, tokenized[k : k + n])
        k += n
        sizes[name] = backend.batch_size if backend.forward_calls > calls else None
        out = None if got is None or out is None else out + list(got)
    return out


def _warn_joint_fallbacks(prepared: Sequence[PreparedTask], windows: Sequence[Sequence[TokenizedRequest]]) -> None:
    """Add a warning to each task with requests that ``--tokenization joint`` scored with the separate encodings
    (a token spans the join; the count is also in the results as ``joint_fallback_requests``)."""
    k = 0
    for p in prepared:
        toks = windows[k : k + len(p.requests)]
        k += len(p.requests)
        fell_back = sum(1 for own in toks if any(t.joint_fallback for t in own))
        if fell_back:
            warning = (f"{p.task.name}: {fell_back} of {len(toks)} requests have a token spanning the join of "
                       f"context and continuation; --tokenization joint scored them with the context and the "
                       f"continuation encoded separately, so the continuation scored is exactly its text")
            p.warnings.append(warning)
            log.warning(warning)


def _non_finite_message(request: LoglikelihoodRequest, value: float, config: RunConfig) -> str:
    """The error that stops a run at a non-finite log-likelihood: task, document, request, and what was kept."""
    kept = ("the finite answers scored so far are kept in the request cache" if config.use_cache
            else "nothing was cached (--no-cache)")
    return (f"task {request.task} doc {request.doc_id} choice {request.choice_index}: the model's log-likelihood is "
            f"{value!r} (context {request.context[-60:]!r}, continuation {request.continuation[:60]!r}); a NaN or "
            f"infinite weight, or an overflow (float16?), gives no valid score. No results were written; {kept}. "
            f"--allow-non-finite counts such requests and leaves their documents out of the metrics instead")


def _drop_non_finite(p: PreparedTask, docs: list[DocResult]) -> list[DocResult]:
    """The documents whose log-likelihoods are all finite; warns (log and task warnings) when some are not."""
    kept = [d for d in docs if all(math.isfinite(ll) for ll in d.loglikelihoods)]
    if len(kept) < len(docs):
        bad = sum(1 for d in docs for ll in d.loglikelihoods if not math.isfinite(ll))
        warning = (f"{p.task.name}: {len(docs) - len(kept)} of {len(docs)} documents have a non-finite "
                   f"log-likelihood ({bad} requests, --allow-non-finite); they are left out of the metrics, which "
                   f"cover {len(kept)} documents")
        p.warnings.append(warning)
        log.warning(warning)
    if not kept:
        raise EvalkitError(f"{p.task.name}: every document has a non-finite log-likelihood: no metric can be computed")
    return kept


def _score(
    ranks: Any, backend: Any, tokenized: Sequence[TokenizedRequest], config: RunConfig, identity: dict[str, Any],
    tokenizer_sha256: str, versions: dict[str, str], parts: Sequence[tuple[str, int]] | None = None,
    sizes: dict[str, int | None] | None = None, allow_non_finite: bool = False,
) -> tuple[list[Any] | None, dict[str, str] | None, tuple[int, int]]:
    """Responses for every request (over all ranks), through the request cache unless ``config.use_cache`` is
    False.

    Each rank answers its share from the cache and commits what its model scores, batch by batch. With
    ``parts``, tasks are scored one after the other, each probing its batch size afresh (:func:`_by_task`).

    Returns:
        (responses in request order, None on ranks other than 0; ``{"path", "model_key"}`` of the cache or None;
        (requests answered from the cache, requests scored by the model) on this rank).
    """
    sizes = {} if sizes is None else sizes
    guarded = FiniteGuard(backend, allow_non_finite)  # a NaN or inf answer stops the run (or is counted)
    if not config.use_cache:
        return _by_task(ranks, guarded, backend, tokenized, parts, sizes), None, (0, len(tokenized))
    key, fields = model_key(identity, tokenizer_sha256, "hf", versions)
    with RequestCache(resolve_cache_dir(config.cache_dir)) as cache:
        cache.register_model(key, fields)
        caching = CachingBackend(guarded, cache, key)
        responses = _by_task(ranks, caching, backend, tokenized, parts, sizes)
        log.info("%d requests answered from the cache %s, %d scored by the model",
                 caching.requests_cached, cache.path, caching.requests_scored)
        return responses, {"path": str(cache.path), "model_key": key}, (caching.requests_cached,
                                                                         caching.requests_scored)


def _per_doc_arrays(task: Task, docs: Sequence[DocResult]) -> dict[str, list]:
    """``doc_id`` and every per-document value the task's metrics need (:data:`evalkit.metrics.PER_DOC_KEYS`)."""
    keys = sorted({k for m in task.metrics for k in PER_DOC_KEYS[m]})
    arrays: dict[str, list] = {"doc_id": [d.doc_id for d in docs]}
    for key in keys:
        arrays[key] = [d.metrics[key] for d in docs]
    return arrays


def write_outputs(
    results: dict[str, Any], doc_results: dict[str, list[DocResult]], prepared: Sequence[PreparedTask],
    config: RunConfig,
) -> RunOutput:
    """Write samples (optional), results JSON (strict: no NaN or Infinity) and the Markdown report.

    The report gets a name of its own (``reports/<results stem>.md``, ``-N`` added when taken by another run that
    finished in the same second). When it cannot be written, the results stay and the returned
    :attr:`RunOutput.report_error` says what was not written and how to re-render it.

    Raises:
        EvalkitError: the results or samples cannot be written (nothing half written is left behind).
    """
    out_dir = Path(config.output_dir)
    path = results_path(out_dir, results["model"]["name"])  # reserved (created empty) until written below
    try:
        samples_path = _write_samples(path, results, doc_results, prepared) if config.log_samples else None
        atomic_write_text(path, strict_json(results, str(path), indent=1) + "\n")
    except BaseException:
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise
    from evalkit.report import write_report  # lazily: scipy and jinja2 load only once there is a report to write

    try:
        report_path = write_report([results], out_dir / "reports", path.stem, source_paths=[path], unique=True,
                                   draw_figure=config.extra.get("figure", True))
    except OSError as exc:
        where = exc.filename or out_dir / "reports"
        error = (f"the report was not written ({where}: {exc.strerror or exc}); the results are complete in {path}"
                 + (f" and {samples_path}" if samples_path else "")
                 + f"; re-render the report with: evalkit report {path} --output REPORT.md")
        log.error(error)
        return RunOutput(path, None, samples_path, results, error)
    return RunOutput(path, report_path, samples_path, results)


def _finite_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """Per-document metrics with non-finite values (a document left out under --allow-non-finite) as None."""
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def _write_samples(
    path: Path, results: dict[str, Any], doc_results: dict[str, list[DocResult]], prepared: Sequence[PreparedTask]
) -> Path:
    """Write ``<results stem>.samples.jsonl`` (one line per document) and name it in ``results``.

    ``context`` is the context scored with the first continuation; ``choice_contexts`` (one per continuation) is
    added when the continuations were scored after different contexts (WinoGrande's per-choice contexts).
    """
    samples_path = path.with_suffix(".samples.jsonl")
    lines = []
    for p in prepared:
        for index, (doc, result) in enumerate(zip(p.docs, doc_results[p.task.name])):
            contexts = p.contexts[index] if p.contexts else [p.task.context(doc)]
            lines.append(json.dumps({
                "task": p.task.name, "doc_id": result.doc_id,
                "context": contexts[0] if len(set(contexts)) == 1 else contexts,  # a list: per-choice contexts
                "fewshot_doc_ids": list(p.fewshot.examples[result.doc_id]) if p.fewshot else [],
                "continuations": p.task.continuations(doc), "gold": p.task.gold(doc),
                "loglikelihoods": [ll if math.isfinite(ll) else None for ll in result.loglikelihoods],
                "greedy": list(result.greedy), "metrics": _finite_metrics(result.metrics),
            }, allow_nan=False))
    atomic_write_text(samples_path, "\n".join(lines) + "\n")
    results["samples_file"] = samples_path.name
    return samples_path
