"""The model stage: the tokenizer and the model's config (checks that need them: the window against the trained
positions, a tokenizer that is not the model's own, a generation length that leaves no room for a prompt), every
request tokenized (continuations that cannot fit, text the tokenizer refuses; generation contexts cut to the window
minus the generation length), and only then the weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from evalkit.import_gc import paused_collection
from evalkit.models import tokenizer_loading
from evalkit.run import generation_stage
from evalkit.run.plan import RunPlan
from evalkit.run.prepare import PreparedTask, check_generation_window
from evalkit.run.requests import RunRequests
from evalkit.scoring.batching import flatten_windows
from evalkit.scoring.cache import resolve_cache_dir
from evalkit.scoring.tokenization import context_prefix, tokenize_windows
from evalkit.types import EvalkitError, TokenizedGeneration, TokenizedRequest

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """The model and tokenizer of a run, and the requests as token ids.

    Attributes:
        ranks: this process's place in a data-parallel run (:mod:`evalkit.scoring.distributed`).
        tokenizer: the loaded tokenizer (``encode_batch``, ``eot_id``, ``vocab_size``, ``identity``, ...).
        own_tokenizer: the model's own tokenizer when ``--tokenizer`` named another one, else None.
        window: tokens the model attends over (``--max-length`` or the trained positions).
        prefix: token ids put before every context (a BOS the tokenizer adds, never for GPT-NeoX).
        windows: per request, its tokenized sequences (one; several for a rolling request), request order.
        tokenized: ``windows`` flattened: the sequences the backend scores.
        owners: per sequence of ``tokenized``, the index of its request.
        model: the loaded ``transformers`` model (eval mode, on its device).
        identity: the model's identity (name, content key, dtype, ...), recorded in the results and cache key.
        warnings: run-level warnings (e.g. a foreign tokenizer), for the results and the report.
        timing: seconds spent loading the tokenizer, tokenizing and loading the weights.
        generations: generation task name -> its tokenized generation requests (contexts cut to the window minus
            the generation length).
    """

    ranks: Any
    tokenizer: Any
    own_tokenizer: Any
    window: int
    prefix: tuple[int, ...]
    windows: list[tuple[TokenizedRequest, ...]]
    tokenized: list[TokenizedRequest]
    owners: list[int]
    model: Any
    identity: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    generations: dict[str, list[TokenizedGeneration]] = field(default_factory=dict)


def load_model(plan: RunPlan, requests: RunRequests, progress: bool = True) -> LoadedModel:
    """Load the tokenizer and config, tokenize every request, then load the weights.

    Raises:
        EvalkitError: ``--max-length`` beyond the trained positions, a request whose continuation cannot fit or
            whose text the tokenizer refuses (before the weights load), or a tokenizer with more tokens than the
            model's embedding has rows (after).
    """
    config, resolved, hub = plan.config, plan.model, plan.hub
    with paused_collection():  # torch loads only when there is work for it
        from evalkit.models import hf_loading
        from evalkit.scoring import distributed

        hf_loading.import_model_support()

    ranks = distributed.start(config)  # a single rank unless launched by torchrun
    if resolved["kind"] == "gguf":  # the tokenizer, config and weights below share one parse of the file
        from evalkit.models.gguf_loading import parsed_once

        with parsed_once():
            return _load(plan, requests, ranks, progress)
    return _load(plan, requests, ranks, progress)


def _load(plan: RunPlan, requests: RunRequests, ranks: Any, progress: bool) -> LoadedModel:
    """:func:`load_model` once ``ranks`` is known."""
    config, resolved, hub = plan.config, plan.model, plan.hub
    from evalkit.models import hf_loading

    t0 = time.perf_counter()
    tokenizer = tokenizer_loading.load_tokenizer(config.tokenizer, resolved.get("path"), hub["revision"],
                                                 hub["trust_remote_code"], hub["hub_kwargs"])
    timing = {"load_tokenizer_s": time.perf_counter() - t0}
    warnings = []
    own = tokenizer_loading.own_tokenizer(resolved.get("path"), config.tokenizer) if config.tokenizer else None
    if own is not None and own.identity["sha256"] != tokenizer.identity["sha256"]:
        warnings.append(
            f"--tokenizer {config.tokenizer} (sha256 {tokenizer.identity['sha256'][:12]}…) is not the tokenizer "
            f"the model folder ships (sha256 {own.identity['sha256'][:12]}…): a tokenizer whose vocabulary fits "
            f"but that does not belong to the model scores garbage"
        )
    if config.tokenizer and resolved["kind"] == "gguf":  # a GGUF file has no tokenizer.json: compare vocabularies
        foreign = tokenizer_loading.foreign_gguf_tokenizer(resolved.get("path"), config.tokenizer)
        if foreign:
            warnings.append(foreign)
    model_config = hf_loading.load_config(  # no weights yet: every input check runs before they load
        resolved, {"revision": hub["revision"], "trust_remote_code": hub["trust_remote_code"], **hub["hub_kwargs"]})
    window = hf_loading.config_window(model_config, config.max_length, config.model)
    prefix = context_prefix(getattr(model_config, "model_type", None), tokenizer.prefix_ids)
    t0 = time.perf_counter()
    windows = tokenize_tasks(requests.prepared, tokenizer.encode_batch, tokenizer.eot_id, window,
                             config.extra.get("tokenization", "separate"), prefix,
                             tokenizer.prefix_text if prefix else "")
    tokenized, owners = flatten_windows(windows)  # one sequence per request, several for a rolling one
    check_generation_window(requests.prepared, window)
    generations = generation_stage.tokenize_tasks(requests.prepared, tokenizer, window, prefix,
                                                  tokenizer.prefix_text if prefix else "")
    timing["tokenize_s"] = time.perf_counter() - t0
    _warn_truncated(requests.prepared, windows, window)
    _warn_joint_fallbacks(requests.prepared, windows)
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
    timing["load_model_s"] = time.perf_counter() - t0
    rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.vocab_size > rows:
        raise EvalkitError(
            f"tokenizer {tokenizer.identity['name']} has {tokenizer.vocab_size} tokens but the model's embedding "
            f"has {rows} rows: wrong tokenizer for this model?"
        )
    for warning in warnings:
        log.warning(warning)
    return LoadedModel(ranks, tokenizer, own, window, tuple(prefix), windows, tokenized, owners, model, identity,
                       warnings, timing, generations)


def tokenize_tasks(
    prepared: Sequence[PreparedTask], encode_batch: Any, eot_id: int, window: int, run_mode: str,
    prefix_ids: Sequence[int] = (), prefix_text: str = "",
) -> list[tuple[TokenizedRequest, ...]]:
    """Every task's requests tokenized in order (:func:`evalkit.scoring.tokenization.tokenize_windows`: one sequence per
    request, a rolling request's windows), each task in its own mode (``Task.tokenization``, else the run's);
    ``prefix_ids`` (a BOS, :func:`evalkit.scoring.tokenization.context_prefix`) go before every context that does
    not already start with ``prefix_text``, their text (a chat template that writes the BOS itself).

    Generation tasks are left out (:func:`evalkit.run.generation_stage.tokenize_tasks` tokenizes theirs).

    Raises:
        EvalkitError: as :func:`evalkit.scoring.tokenization.tokenize_requests`.
    """
    prepared = loglikelihood_tasks(prepared)
    modes = [p.task.tokenization or run_mode for p in prepared]
    by_mode = {}
    for mode in dict.fromkeys(modes):  # one call per mode, in task order: each text is encoded once
        chosen = [(r, p.task.scoring == "rolling") for p, m in zip(prepared, modes) if m == mode for r in p.requests]
        by_mode[mode] = iter(tokenize_windows([r for r, _ in chosen], [x for _, x in chosen], encode_batch, eot_id,
                                              window, mode, prefix_ids, prefix_text))
    return [next(by_mode[m]) for p, m in zip(prepared, modes) for _ in p.requests]


def _warn_truncated(
    prepared: Sequence[PreparedTask], windows: Sequence[Sequence[TokenizedRequest]], window: int
) -> None:
    """Add a warning to each task whose requests were cut to the window (shown in the log, results and report).

    ``windows`` holds each request's tokenized sequences; rolling windows are never cut.
    """
    k = 0
    for p in loglikelihood_tasks(prepared):
        toks = windows[k : k + len(p.requests)]
        k += len(p.requests)
        cut = [sum(t.truncated_tokens for t in own) for own in toks if any(t.truncated_tokens for t in own)]
        if cut:
            warning = (f"{p.task.name}: {len(cut)} of {len(toks)} requests were longer than the window of {window} "
                       f"tokens; their contexts were truncated on the left ({sum(cut)} tokens dropped, at most "
                       f"{max(cut)} from one request)")
            p.warnings.append(warning)
            log.warning(warning)


def _warn_joint_fallbacks(prepared: Sequence[PreparedTask], windows: Sequence[Sequence[TokenizedRequest]]) -> None:
    """Add a warning to each task with requests that ``--tokenization joint`` scored with the separate encodings
    (a token spans the join; the count is also in the results as ``joint_fallback_requests``)."""
    k = 0
    for p in loglikelihood_tasks(prepared):
        toks = windows[k : k + len(p.requests)]
        k += len(p.requests)
        fell_back = sum(1 for own in toks if any(t.joint_fallback for t in own))
        if fell_back:
            warning = (f"{p.task.name}: {fell_back} of {len(toks)} requests have a token spanning the join of "
                       f"context and continuation; --tokenization joint scored them with the context and the "
                       f"continuation encoded separately, so the continuation scored is exactly its text")
            p.warnings.append(warning)
            log.warning(warning)


def loglikelihood_tasks(prepared: Sequence[PreparedTask]) -> list[PreparedTask]:
    """The prepared tasks scored by log-likelihood (every task but the generation ones), in run order: the tasks
    whose requests ``RunRequests.loglikelihood`` concatenates."""
    return [p for p in prepared if p.task.scoring != "generate_until"]
