"""One run end to end, the orchestration of its stages: flags and tasks checked, tasks prepared
(:mod:`evalkit.run.prepare`), tokenizer and model loaded, requests tokenized and scored (through the request cache),
tasks summarised (:mod:`evalkit.run.task_results`) and the files written (:mod:`evalkit.run.outputs`).

Every input is read and validated before the model is loaded, so a bad file costs seconds, not GPU hours.
Results are written atomically (temporary file + rename); a report is rendered from the saved results.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from evalkit import __version__
from evalkit.models import tokenizer_loading
from evalkit.scoring.batching import flatten_windows, join_windows
from evalkit.scoring.cache import CachingBackend, RequestCache, model_key, resolve_cache_dir
from evalkit.data.documents import drop_tasks_without_data, resolve_data_dir
from evalkit.fewshot.v020 import check_sources, resolve_shots
from evalkit.scoring.batching import initial_batch_size
from evalkit.scoring.finite import FiniteGuard, NonFiniteScore, non_finite
from evalkit.stats.groups import aggregate_group, mixed_shots_warning
from evalkit.data.hub_check import check_hub
from evalkit.import_gc import paused_collection
from evalkit.models.model_args import hub_options
from evalkit.run.outputs import RunOutput, write_outputs
from evalkit.run.prepare import PreparedTask, missing_fewshot_file, prepare_task
from evalkit.tasks.registry import load_registry
from evalkit.models.resolve import resolve_model
from evalkit.run.task_results import prompt_hash, score_documents, task_summary  # noqa: F401 - prompt_hash re-exported
from evalkit.scoring.tokenization import context_prefix, tokenize_windows
from evalkit.types import DocResult, EvalkitError, LoglikelihoodRequest, RunConfig, TokenizedRequest

log = logging.getLogger(__name__)


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
    whole = (("--limit", config.limit), ("--seed", config.seed), ("--fewshot-seed", config.fewshot_seed),
             ("--bootstrap-iters", config.bootstrap_iters), ("--max-length", config.max_length),
             ("--max-batch-tokens", config.extra.get("max_batch_tokens")),
             ("--batch-size", None if config.batch_size == "auto" else config.batch_size))
    for flag, value in whole:  # the Python API passes values through untyped
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise EvalkitError(f"{flag} must be a whole number, got {value!r}")
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
    (:mod:`evalkit.scoring.distributed`); the other ranks return None.

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
    check_sources(tasks, shots, lambda t: missing_fewshot_file(t, data_dir), config.tasks, config.fewshot_overrides)
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
    group_warnings = [w for g in groups if (w := mixed_shots_warning(g, registry.members(g), shots))]
    for warning in group_warnings:
        log.warning(warning)
    if config.use_cache:  # a broken cache fails here, before the model is loaded
        RequestCache(resolve_cache_dir(config.cache_dir)).close()
    if resolved["kind"] == "gguf":  # the gguf package and the file's header are checked before the model loads
        _identify_gguf(resolved, config)

    with paused_collection():  # torch loads only when there is work for it
        from evalkit.scoring import distributed
        from evalkit.scoring import hf_backend
        from evalkit.models import hf_loading

        hf_loading.import_model_support()

    ranks = distributed.start(config)  # a single rank unless launched by torchrun
    hub = hub_options(config)
    t0 = time.perf_counter()
    tokenizer = tokenizer_loading.load_tokenizer(config.tokenizer, resolved.get("path"), hub["revision"],
                                                 hub["trust_remote_code"], hub["hub_kwargs"])
    t_tokenizer = time.perf_counter() - t0
    run_warnings = []
    own = tokenizer_loading.own_tokenizer(resolved.get("path"), config.tokenizer) if config.tokenizer else None
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
        "warnings": group_warnings + run_warnings,
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
    """Every task's requests tokenized in order (:func:`evalkit.scoring.tokenization.tokenize_windows`: one sequence per
    request, a rolling request's windows), each task in its own mode (``Task.tokenization``, else the run's);
    ``prefix_ids`` (a BOS, :func:`evalkit.scoring.tokenization.context_prefix`) go before every context.

    Raises:
        EvalkitError: as :func:`evalkit.scoring.tokenization.tokenize_requests`.
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
    from evalkit.models.weights_hash import file_sha256, remembered
    from evalkit.models.gguf_file import describe_gguf

    memo = resolve_cache_dir(config.cache_dir) if config.use_cache else None
    try:
        resolved["gguf"] = remembered(resolved["path"], memo, "gguf", describe_gguf)
        resolved["sha256"] = file_sha256(resolved["path"], memo)
    except OSError as exc:
        raise EvalkitError(f"cannot read GGUF file {resolved['path']}: {exc}") from None


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
