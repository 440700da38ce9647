"""Log-likelihood scoring with a Hugging Face causal LM.

For each batch of packed groups (see :mod:`evalkit.scoring.batching`) one forward pass runs the model body; the output
layer and the log-softmax are applied only at the positions that predict a continuation token. A group with
several continuations uses a 4-D additive attention mask in which each continuation segment sees the shared
context and itself only, with position ids restarting after the context, so each continuation is scored
exactly as if it followed the context alone. Position ids are passed explicitly, so rotary models (GPT-NeoX,
Llama) see the positions the continuation would have alone. The arrays and masks are built in
:mod:`evalkit.scoring.packed_inputs`.

transformers hands a ready-made 4-D mask to every layer unchanged, so a model with sliding-window or chunked layers
(Gemma 2/3, Mistral, Qwen2 with ``use_sliding_window``, Llama 4, ...; see :mod:`evalkit.models.attention_windows`)
gets one mask per layer type, keyed by the config's layer type names, each restricted to that layer's window or
chunk measured in position ids: the window a continuation token would have if the continuation followed the context
alone. A model whose layers include a pattern no mask can reproduce (recurrent or sparse layers) is scored unshared
from the start, with a warning.

Before the first packed batch, a probe scores a group packed and unpacked, with a context longer than the
model's largest window or chunk (so that a mask that reaches a windowed layer unwindowed shows): an attention
implementation that ignores or rejects the masks (e.g. flash attention, a model that takes no per-layer masks)
switches the backend to unshared scoring with a warning instead of returning wrong numbers.

Token prefixes shared by several packed sequences (few-shot examples) are forwarded once and the rest of each
sequence is scored on top of their keys and values (:mod:`evalkit.scoring.prefix_scoring`, planned by
:mod:`evalkit.scoring.prefix_cache`); a probe checks that this reproduces scoring without reuse. A model with
windowed attention layers reuses prefixes only for sequences whose every position lies within its smallest window
(there a window excludes nothing); longer ones forward their whole context, with a warning. A batch that runs out of
memory is retried at half the size (:mod:`evalkit.scoring.oom`).

The result per request is the summed natural-log probability of its continuation tokens and whether every
one of them is the argmax (ties resolved as ``torch.argmax``, lowest id), as in lm-evaluation-harness.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch

from evalkit.scoring import prefix_cache as prefix_cache_lib
from evalkit.scoring.batching import PackedGroup, make_batches, pack_groups
from evalkit.scoring.oom import is_cuda_oom, run_halving
from evalkit.scoring.packed_inputs import (  # noqa: F401 - _last_position: tests import it from here
    MASK_ERRORS, PROBE_TOLERANCE, _describe, _last_position, _layout, _packed_mask, _packed_masks)
from evalkit.scoring.prefix_scoring import (  # noqa: F401 - prefix_timing: tests and benchmarks import it from here
    PREFIX_BUDGET_BYTES, PREFIX_PROBE_POSITIONS, PrefixScoring, _prefix_token_budget, prefix_timing)
from evalkit.models.attention_windows import layer_patterns, unpackable_layer_types, windowed_attention
from evalkit.types import BatchCallback, EvalkitError, LoglikelihoodResponse, TokenizedRequest

log = logging.getLogger(__name__)

HEAD_CHUNK = 2048
"""Scored positions per output-layer call: bounds the (positions x vocab) float32 logits in memory."""


PROBE_CONTEXT = 4
"""Context tokens of the mask probe for a model without windowed layers; with windowed layers, the largest window
or chunk plus this (within the model window), so that the probe's continuations lie past every window."""


class HFBackend(PrefixScoring):
    """Scores tokenized requests with a causal LM.

    Args:
        model: a transformers causal LM in eval mode.
        max_length: window in tokens; requests must already fit (see :mod:`evalkit.scoring.tokenization`).
        batch_size: packed sequences per forward pass.
        max_batch_tokens: padded tokens per forward pass (None: no limit).
        pad_id: token id placed in padding (masked out; any valid id).
        share_context: score all continuations of a context in one packed sequence.
        progress: show a tqdm bar over requests.
        is_oom: ``exception -> bool``, which errors mean "out of memory, retry with a smaller batch"
            (default :func:`is_cuda_oom`; tests inject their own).
        prefix_cache: forward token prefixes shared by several packed sequences once (few-shot examples) and score
            the rest of each sequence on their keys and values; same numbers as without (fp32: within 1e-4 nats).
        prefix_budget_bytes: most bytes the keys and values of one cached prefix may take; longer shared prefixes
            are cut to fit.
        prefix_min_tokens: shortest shared prefix worth reuse (tokens).

    Attributes:
        batch_size: sequences per forward pass; after an out-of-memory, the halved size that is in use.
        oom_retries: batches retried after an out-of-memory (int).
        share_context: whether continuations of one context are packed into one sequence; set to False by the
            mask probe when the model cannot take a custom 4-D attention mask, or at once for a model with layers
            no mask reproduces (:func:`evalkit.models.attention_windows.unpackable_layer_types`).
        mask_fallback: None, or why context sharing was turned off (str; recorded in the results).
        patterns: ``{layer type: (kind, size)}`` from :func:`evalkit.models.attention_windows.layer_patterns`.
        window: the smallest sliding window or chunk in tokens, None without windowed layers.
        prefix_cache: whether shared prefixes are reused; False after a fallback.
        prefix_fallback: None, or why prefix reuse was turned off (str; a warning was logged).

    Counters (for benchmarks): ``forward_calls``; ``forward_tokens`` (real input tokens),
    ``padded_tokens`` (batch x width), ``scored_positions`` (positions through the output layer);
    ``prefix_tokens_forwarded`` (shared prefixes' tokens, once each; part of ``forward_tokens``),
    ``prefix_tokens_reused`` (prefix tokens read from a cache instead of forwarded, summed over sequences),
    ``naive_tokens`` (input tokens that scoring without prefix reuse would have forwarded);
    :attr:`work_fraction` is ``forward_tokens / naive_tokens``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        max_length: int,
        batch_size: int = 16,
        max_batch_tokens: int | None = 32768,
        pad_id: int = 0,
        share_context: bool = True,
        progress: bool = True,
        is_oom: Callable[[BaseException], bool] = is_cuda_oom,
        prefix_cache: bool = True,
        prefix_budget_bytes: int = PREFIX_BUDGET_BYTES,
        prefix_min_tokens: int = prefix_cache_lib.MIN_PREFIX_TOKENS,
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = pad_id
        self.share_context = share_context
        self.progress = progress
        self.input_device = execution_device(model.get_input_embeddings())
        self.dtype = model.get_input_embeddings().weight.dtype
        self.head = model.get_output_embeddings()
        self.body = self._split_body()
        self.forward_calls = 0
        self.forward_tokens = 0
        self.padded_tokens = 0
        self.scored_positions = 0
        self.is_oom = is_oom
        self.oom_retries = 0
        self.mask_fallback: str | None = None
        self._mask_checked = not share_context
        self.patterns = layer_patterns(model.config)
        self.window = windowed_attention(model.config)
        others = unpackable_layer_types(model.config)
        if others and share_context:
            self._stop_sharing(f"the model has {', '.join(map(repr, others))} layers, whose attention a packed "
                               f"mask cannot reproduce")
        self.prefix_cache = prefix_cache
        self.prefix_min_tokens = prefix_min_tokens
        self.prefix_max_tokens = _prefix_token_budget(model.config, prefix_budget_bytes, self.dtype)
        self.prefix_fallback: str | None = None
        self.prefix_tokens_forwarded = 0
        self.prefix_tokens_reused = 0
        self.naive_tokens = 0
        self._prefix_checked = False
        self._window_skips = 0
        if prefix_cache:
            unknown = self.window is None and any(k != "full" for k, _ in self.patterns.values())
            if unknown or self.window is not None and self.window <= PREFIX_PROBE_POSITIONS:
                self._prefix_off(f"the model has windowed attention layers (window {self.window or 'unknown'} tokens), "
                                 f"whose rules a cached prefix would break")

    def _split_body(self) -> torch.nn.Module | None:
        """The model without its output layer, when body + head reproduce the full model's logits.

        Models that post-process logits (soft-capping, scaling) fail the check and keep the full forward.
        """
        body = getattr(self.model, "base_model", None)
        if body is None or body is self.model or self.head is None:
            return None
        ids = torch.tensor([[self.pad_id, 1, 2, 3]], device=self.input_device)
        with torch.inference_mode():
            full = self.model(input_ids=ids, use_cache=False).logits.float()
            split = self.head(body(input_ids=ids, use_cache=False)[0].to(execution_device(self.head))).float()
        if full.shape != split.shape or not torch.allclose(full.cpu(), split.cpu(), atol=1e-3, rtol=1e-3):
            log.warning("output layer cannot be split from the model body; computing logits at all positions")
            return None
        return body

    def loglikelihood(
        self, requests: Sequence[TokenizedRequest], on_batch: BatchCallback | None = None
    ) -> list[LoglikelihoodResponse]:
        """Score requests; returns one response per request, in order.

        Args:
            requests: tokenized requests that fit the window.
            on_batch: called after each batch with (indices into ``requests``, their responses), so the caller
                can store finished work batch by batch (see :class:`evalkit.scoring.cache_wrappers.CachingBackend`).

        When a batch runs out of memory (``is_oom``), the batch size is halved and the batch retried, down to
        one packed sequence; :attr:`batch_size` keeps the size that worked and :attr:`oom_retries` counts retries.

        Raises:
            ValueError: a request longer than the window or without a context token (tokenize with
                evalkit.tokenization first), or a batch size below 1.
            EvalkitError: out of memory with a single packed sequence.
        """
        for index, request in enumerate(requests):
            if not request.context_ids:  # its first token would be read from a position that predicts nothing
                raise ValueError(f"request {index} has no context token; an empty context is the end-of-text token")
            if len(request.context_ids) + len(request.continuation_ids) - 1 > self.max_length:
                raise ValueError("request longer than the model window; truncate it first")
        if requests and self.batch_size < 1:  # the batches on cached prefixes would take any size
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not self._mask_checked and self._has_shared_contexts(requests):
            self._check_packed_masks()
        groups = pack_groups(requests, self.max_length, self.share_context)
        results: list[LoglikelihoodResponse | None] = [None] * len(requests)
        bar = _progress(len(requests), self.progress)

        def finish(members: Sequence[PackedGroup], scored: list[list[tuple[float, bool]]]) -> None:
            done_indices, done = [], []
            for group, per_cont in zip(members, scored):
                self.naive_tokens += group.length
                for indices, (ll, greedy) in zip(group.request_indices, per_cont):
                    for index in indices:
                        req = requests[index]
                        results[index] = LoglikelihoodResponse(
                            ll, greedy, len(req.continuation_ids), req.truncated_tokens
                        )
                        done_indices.append(index)
                        done.append(results[index])
            if on_batch is not None:
                on_batch(done_indices, done)
            bar.update(len(done))

        units = self._plan(groups)
        plain = [m for unit in units if not unit.prefix for m in unit.members]
        with_prefix = [unit for unit in units if unit.prefix]
        if with_prefix and self.prefix_cache:
            plain = self._score_on_prefixes(with_prefix, groups, finish) + plain
        else:
            plain = [m for unit in with_prefix for m in unit.members] + plain
        if plain:
            self._score_plain([groups[i] for i in plain], finish)
        bar.close()
        return results  # type: ignore[return-value]

    def _score_plain(self, members: list[PackedGroup], finish: Callable[..., None]) -> None:
        """Score groups without prefix reuse, in length-sorted batches, halving the batch on out-of-memory."""
        def alone(batch: list[int], exc: BaseException) -> None:
            raise EvalkitError(
                f"out of memory scoring one packed sequence of {members[batch[0]].length} tokens; lower "
                f"--max-length or --max-batch-tokens, use --no-shared-context, or spread the model "
                f"with --parallelize"
            ) from exc

        self._in_batches(members, lambda batch: self.score_groups([members[i] for i in batch]),
                         lambda batch, scored: finish([members[i] for i in batch], scored), alone)

    def _in_batches(self, members: Sequence[PackedGroup], attempt: Callable[[list[int]], Any],
                    done: Callable[[list[int], Any], None], alone: Callable[[list[int], BaseException], None],
                    cut: Callable[[list[int], int], list[list[int]]] | None = None) -> list[int]:
        """Run ``attempt`` on batches of indices into ``members`` (``cut(indices, batch size)``, by default
        length-sorted by :func:`make_batches`), halving the batch size on out-of-memory and re-cutting the batches
        left alike (:func:`evalkit.scoring.oom.run_halving`, which says what ``done`` and ``alone`` are); returns the
        indices left undone."""
        def by_length(rest: list[int], size: int) -> list[list[int]]:
            batches = make_batches([members[i] for i in rest], size, self.max_batch_tokens)
            return [[rest[j] for j in b] for b in batches]

        cut = cut or by_length
        return run_halving(self, cut(list(range(len(members))), self.batch_size), attempt, done, cut, alone, log,
                           "out of memory with %d sequences per batch; retrying with %d")

    def _skip_windowed(self, skipped: int, total: int) -> None:
        """Note (and warn once) that ``skipped`` of ``total`` packed sequences reach past the model's smallest
        attention window: their positions would see a cached prefix under window rules the cache cannot apply, so
        they forward their whole context."""
        self._window_skips += skipped
        reason = (f"the model has windowed attention layers (window {self.window} tokens); sequences reaching past "
                  f"the window forward their whole context")
        if self.prefix_fallback is None:
            self.prefix_fallback = reason
            log.warning("shared-prefix reuse skips %d of %d sequences: %s (same numbers, slower)", skipped, total,
                        reason)

    def _prefix_off(self, reason: str) -> None:
        self.prefix_cache = False
        self.prefix_fallback = reason
        log.warning("shared-prefix reuse is off: %s; every sequence forwards its whole context (same numbers, "
                    "slower)", reason)

    @staticmethod
    def _has_shared_contexts(requests: Sequence[TokenizedRequest]) -> bool:
        seen: set[tuple[int, ...]] = set()
        for request in requests:
            if request.context_ids in seen:
                return True
            seen.add(request.context_ids)
        return False

    def _check_packed_masks(self) -> None:
        """Score one group packed (4-D masks) and unpacked; on an error or a mismatch, stop sharing contexts.

        The group's context is :data:`PROBE_CONTEXT` tokens, or for a model with windowed layers its largest
        window or chunk plus :data:`PROBE_CONTEXT` (at most the model window less the continuations), so its
        continuations sit past every window. The probe's forward passes are not counted in the benchmark counters.
        """
        self._mask_checked = True
        vocab = self.model.get_input_embeddings().weight.shape[0]
        sizes = [size for kind, size in self.patterns.values() if kind in ("sliding", "chunked")]
        n_ctx = max(1, min(max(sizes) + PROBE_CONTEXT, self.max_length - 3)) if sizes else PROBE_CONTEXT
        # seeded ids below 32000 (real tokens in most vocabularies, not a padded embedding's untrained rows)
        ids = [int(i) for i in np.random.default_rng(0).integers(1, max(2, min(vocab, 32000)), size=n_ctx + 5)]
        context, conts = tuple(ids[:n_ctx]), (tuple(ids[n_ctx : n_ctx + 3]), tuple(ids[n_ctx + 3 :]))
        packed = PackedGroup(context, conts, ((0,), (1,)))
        alone = [PackedGroup(context, (c,), ((0,),)) for c in conts]
        counters = (self.forward_calls, self.forward_tokens, self.padded_tokens, self.scored_positions)
        try:
            score = HFBackend.score_groups  # the class's own: wrappers of the instance's see only real batches
            single = [score(self, [g])[0][0][0] for g in alone]
            shared = [ll for ll, _ in score(self, [packed])[0]]
            tolerance = PROBE_TOLERANCE.get(self.dtype, 0.1)
            worst = max(abs(a - b) for a, b in zip(shared, single))
            reason = (None if worst <= tolerance else
                      f"packed continuations differ from unpacked ones by {worst:.3g} nats (tolerance {tolerance:g}, "
                      f"{n_ctx}-token probe context)")
        except MASK_ERRORS as exc:
            if self.is_oom(exc):  # not about the mask: the batches that follow meet it with the usual back-off
                return
            reason = f"the model rejected a 4-D attention mask ({type(exc).__name__}: {exc})"
        finally:
            self.forward_calls, self.forward_tokens, self.padded_tokens, self.scored_positions = counters
        if reason is not None:
            attn = getattr(self.model.config, "_attn_implementation", None)
            windows = "" if self.window is None else f"; windowed layers {_describe(self.patterns)}"
            self._stop_sharing(f"{reason}; attention implementation {attn!r}{windows}")

    def _stop_sharing(self, why: str) -> None:
        self.mask_fallback = why
        self.share_context = False
        self._mask_checked = True
        log.warning("shared-context scoring is off: %s; every request is scored as its own sequence "
                    "(same numbers, slower)", why)

    def _probe_score(self, groups: Sequence[PackedGroup], prefix: PrefixRows | None = None,
                     ) -> list[list[tuple[float, bool]]]:
        """This class's own :meth:`score_groups`, for the probes: a wrapper put on an instance's ``score_groups``
        sees only real batches."""
        return HFBackend.score_groups(self, groups, prefix)

    def score_groups(self, groups: Sequence[PackedGroup], prefix: PrefixRows | None = None
                     ) -> list[list[tuple[float, bool]]]:
        """One forward pass over packed groups.

        Args:
            groups: packed groups, one row each.
            prefix: None, or (cached prefixes, each its per-layer (keys, values); per group the index of the prefix
                it reads; per group the number of its leading context tokens read from that prefix instead of
                forwarded); see :meth:`score_on_prefixes`.

        Returns:
            per group, per continuation: (summed log-likelihood in nats, greedy flag).
        """
        used = list(prefix[2]) if prefix is not None else [0] * len(groups)
        layout = _layout(groups, self.pad_id, used)
        input_ids = torch.from_numpy(layout["input_ids"]).to(self.input_device)
        position_ids = torch.from_numpy(layout["position_ids"]).to(self.input_device)
        segments = torch.from_numpy(layout["segments"]).to(self.input_device)
        cache_kwargs: dict[str, Any] = {}
        if prefix is not None:
            width = max(used)
            shares = torch.tensor(used, device=self.input_device)[:, None]
            seen = torch.arange(width, device=self.input_device)[None] < shares
            mask = _packed_mask(segments, self.dtype, prefix_seen=seen)
            body = self.body if self.body is not None else self.model
            cache_kwargs = {prefix_cache_lib.cache_argument(body): prefix_cache_lib.row_prefix_cache(
                prefix[0], prefix[1], used), "use_cache": True}
        elif max(len(g.continuations) for g in groups) > 1:
            mask = _packed_masks(segments, position_ids, self.dtype, self.patterns)
        else:
            mask = (segments >= 0).long()
        self.forward_calls += 1
        self.forward_tokens += int((layout["segments"] >= 0).sum())
        self.padded_tokens += int(layout["segments"].size)
        self.scored_positions += int(layout["targets"].size)
        with torch.inference_mode():
            rows = torch.from_numpy(layout["pred_rows"])
            cols = torch.from_numpy(layout["pred_cols"])
            if self.body is not None:
                hidden = self.body(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                   **(cache_kwargs or {"use_cache": False}))[0]  # no cache: 1 MB/token at 20B
                picked = hidden[rows.to(hidden.device), cols.to(hidden.device)].to(execution_device(self.head))
                token_ll, token_greedy = _score_positions(self.head, picked, layout["targets"])
            else:
                logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                    **(cache_kwargs or {"use_cache": False})).logits
                picked = logits[rows.to(logits.device), cols.to(logits.device)]
                token_ll, token_greedy = _score_positions(None, picked, layout["targets"])
        n_conts = len(layout["cont_offsets"]) - 1
        owner = np.repeat(np.arange(n_conts), np.diff(layout["cont_offsets"]))
        sums = np.bincount(owner, weights=token_ll, minlength=n_conts)
        misses = np.bincount(owner, weights=~token_greedy, minlength=n_conts)
        out, k = [], 0
        for group in groups:
            out.append([(float(sums[k + j]), bool(misses[k + j] == 0)) for j in range(len(group.continuations))])
            k += len(group.continuations)
        return out


PrefixRows = tuple[Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]], Sequence[int], Sequence[int]]
"""(prefixes' per-layer keys/values, per row its prefix, per row the prefix tokens it reads)."""


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device a module computes on: its weight's, or, for a layer offloaded by accelerate (weights on
    the meta device until its forward), the execution device of its dispatch hook."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return module.weight.device


def _score_positions(
    head: torch.nn.Module | None, picked: torch.Tensor, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability (float64, nats) and argmax-hit (bool) of each target token, in chunks of positions."""
    target = torch.from_numpy(targets).to(picked.device)
    lls, hits = [], []
    for start in range(0, picked.shape[0], HEAD_CHUNK):
        part = picked[start : start + HEAD_CHUNK]
        logits = (head(part) if head is not None else part).float()
        tgt = target[start : start + HEAD_CHUNK]
        logprobs = torch.log_softmax(logits, dim=-1)
        lls.append(logprobs.gather(1, tgt[:, None])[:, 0].double().cpu())
        hits.append((logits.argmax(dim=-1) == tgt).cpu())
    return torch.cat(lls).numpy(), torch.cat(hits).numpy()


LOG_INTERVAL_S = 10.0
"""Seconds between progress lines when stderr is not a terminal (a log file, a pipe, a batch job)."""


class _LineWriter:
    """A stream for tqdm that turns its in-place redraws (``\r``) into whole lines, for logs and pipes."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _progress(total: int, enabled: bool, stream: Any = None, desc: str = "requests", unit: str = "req"):
    """A tqdm bar over requests (``desc``, counted in ``unit``) on stderr: redrawn in place on a terminal;
    elsewhere one line every :data:`LOG_INTERVAL_S` seconds (and the last), never hundreds of ``\r`` updates."""
    import sys

    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, smoothing=0.1, file=stream)
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, smoothing=0.1,
                file=_LineWriter(stream), mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S * 6,
                dynamic_ncols=False, ncols=100, ascii=True)
