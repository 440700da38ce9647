"""Log-likelihood scoring with a Hugging Face causal LM.

For each batch of packed groups (see :mod:`evalkit.scoring.batching`) one forward pass runs the model body; the output
layer and the log-softmax are applied only at the positions that predict a continuation token. A group with
several continuations uses a 4-D additive attention mask in which each continuation segment sees the shared
context and itself only, with position ids restarting after the context, so each continuation is scored
exactly as if it followed the context alone. Position ids are passed explicitly, so rotary models (GPT-NeoX,
Llama) see the positions the continuation would have alone.

transformers hands a ready-made 4-D mask to every layer unchanged, so a model with sliding-window or chunked
layers (Gemma 2/3, Mistral, Qwen2 with ``use_sliding_window``, Llama 4, ...; see :mod:`evalkit.models.attention_windows`)
gets one mask per layer type, keyed by the config's layer type names, each restricted to that layer's window or
chunk measured in position ids: the window a continuation token would have if the continuation followed the
context alone. A model whose layers include a pattern no mask can reproduce (recurrent or sparse layers) is scored
unshared from the start, with a warning.

Before the first packed batch, a probe scores a group packed and unpacked, with a context longer than the
model's largest window or chunk (so that a mask that reaches a windowed layer unwindowed shows): an attention
implementation that ignores or rejects the masks (e.g. flash attention, a model that takes no per-layer masks)
switches the backend to unshared scoring with a warning instead of returning wrong numbers.

The result per request is the summed natural-log probability of its continuation tokens and whether every
one of them is the argmax (ties resolved as ``torch.argmax``, lowest id), as in lm-evaluation-harness.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np
import torch

from evalkit.scoring.batching import PackedGroup, make_batches, pack_groups
from evalkit.models.attention_windows import layer_patterns, unpackable_layer_types, windowed_attention
from evalkit.types import BatchCallback, EvalkitError, LoglikelihoodResponse, TokenizedRequest

log = logging.getLogger(__name__)

HEAD_CHUNK = 2048
"""Scored positions per output-layer call: bounds the (positions x vocab) float32 logits in memory."""

PROBE_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
"""Largest |log-likelihood difference| (nats) between packed and unpacked scoring of the mask probe, per dtype;
other dtypes (float16, bfloat16) allow 0.1. A mask that is ignored moves a continuation by far more."""

MASK_ERRORS = (ValueError, TypeError, RuntimeError, NotImplementedError, IndexError, AssertionError, KeyError,
               AttributeError)
"""Errors by which an attention implementation refuses a custom 4-D mask (flash attention raises ValueError or
RuntimeError; a model that takes no per-layer-type masks, AttributeError or KeyError on the dict); others (an
interrupt) propagate from the probe as from any batch."""

PROBE_CONTEXT = 4
"""Context tokens of the mask probe for a model without windowed layers; with windowed layers, the largest window
or chunk plus this (within the model window), so that the probe's continuations lie past every window."""


def is_cuda_oom(exc: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` (the default out-of-memory test of :class:`HFBackend`)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class HFBackend:
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

    Attributes:
        batch_size: sequences per forward pass; after an out-of-memory, the halved size that is in use.
        oom_retries: batches retried after an out-of-memory (int).
        share_context: whether continuations of one context are packed into one sequence; set to False by the
            mask probe when the model cannot take a custom 4-D attention mask, or at once for a model with layers
            no mask reproduces (:func:`evalkit.models.attention_windows.unpackable_layer_types`).
        mask_fallback: None, or why context sharing was turned off (str; recorded in the results).
        patterns: ``{layer type: (kind, size)}`` from :func:`evalkit.models.attention_windows.layer_patterns`.
        window: the smallest sliding window or chunk in tokens, None without windowed layers.

    Counters (for benchmarks): ``forward_calls``; ``forward_tokens`` (real input tokens),
    ``padded_tokens`` (batch x width), ``scored_positions`` (positions through the output layer).
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
                can store finished work batch by batch (see :class:`evalkit.scoring.cache.CachingBackend`).

        When a batch runs out of memory (``is_oom``), the batch size is halved and the batch retried, down to
        one packed sequence; :attr:`batch_size` keeps the size that worked and :attr:`oom_retries` counts retries.

        Raises:
            ValueError: a request longer than the window or without a context token (tokenize with
                evalkit.tokenization first).
            EvalkitError: out of memory with a single packed sequence.
        """
        for index, request in enumerate(requests):
            if not request.context_ids:  # its first token would be read from a position that predicts nothing
                raise ValueError(f"request {index} has no context token; an empty context is the end-of-text token")
            if len(request.context_ids) + len(request.continuation_ids) - 1 > self.max_length:
                raise ValueError("request longer than the model window; truncate it first")
        if not self._mask_checked and self._has_shared_contexts(requests):
            self._check_packed_masks()
        groups = pack_groups(requests, self.max_length, self.share_context)
        queue = deque(make_batches(groups, self.batch_size, self.max_batch_tokens))
        results: list[LoglikelihoodResponse | None] = [None] * len(requests)
        bar = _progress(len(requests), self.progress)
        while queue:
            batch = queue.popleft()
            members = [groups[i] for i in batch]
            try:
                scored = self.score_groups(members)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
                if not self.is_oom(exc):
                    raise
                if len(batch) == 1:
                    raise EvalkitError(
                        f"out of memory scoring one packed sequence of {members[0].length} tokens; lower "
                        f"--max-length or --max-batch-tokens, use --no-shared-context, or spread the model "
                        f"with --parallelize"
                    ) from exc
                scored = None
            if scored is None:  # outside the except block, so the failed batch's tensors can be freed
                queue = self._rebatch(groups, [batch, *queue], max(1, len(batch) // 2))
                continue
            done_indices, done = [], []
            for group, per_cont in zip(members, scored):
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
        bar.close()
        return results  # type: ignore[return-value]

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

    def _rebatch(self, groups: Sequence[PackedGroup], pending: list[list[int]], size: int) -> deque[list[int]]:
        """Re-cut the pending batches (longest first, as before) at ``size`` sequences after an out-of-memory."""
        self.oom_retries += 1
        log.warning("out of memory with %d sequences per batch; retrying with %d", len(pending[0]), size)
        self.batch_size = size
        _free_accelerator_memory()
        rest = [i for batch in pending for i in batch]
        cut = make_batches([groups[i] for i in rest], size, self.max_batch_tokens)
        return deque([rest[j] for j in b] for b in cut)

    def score_groups(self, groups: Sequence[PackedGroup]) -> list[list[tuple[float, bool]]]:
        """One forward pass over packed groups.

        Returns:
            per group, per continuation: (summed log-likelihood in nats, greedy flag).
        """
        layout = _layout(groups, self.pad_id)
        input_ids = torch.from_numpy(layout["input_ids"]).to(self.input_device)
        position_ids = torch.from_numpy(layout["position_ids"]).to(self.input_device)
        segments = torch.from_numpy(layout["segments"]).to(self.input_device)
        if max(len(g.continuations) for g in groups) > 1:
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
                                   use_cache=False)[0]  # no key/value cache: 1 MB per token for a 20B model
                picked = hidden[rows.to(hidden.device), cols.to(hidden.device)].to(execution_device(self.head))
                token_ll, token_greedy = _score_positions(self.head, picked, layout["targets"])
            else:
                logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                    use_cache=False).logits
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


def _layout(groups: Sequence[PackedGroup], pad_id: int) -> dict[str, np.ndarray]:
    """Arrays for a batch: inputs, positions, segment ids (0 context, i+1 continuation i, -1 padding),
    the (row, column) that predicts each continuation token, the target ids, and per-continuation offsets."""
    width = max(g.length for g in groups)
    input_ids = np.full((len(groups), width), pad_id, dtype=np.int64)
    position_ids = np.zeros((len(groups), width), dtype=np.int64)
    segments = np.full((len(groups), width), -1, dtype=np.int64)
    pred_rows: list[int] = []
    pred_cols: list[int] = []
    targets: list[int] = []
    offsets = [0]
    for row, group in enumerate(groups):
        n_ctx = len(group.context_ids)
        input_ids[row, :n_ctx] = group.context_ids
        position_ids[row, :n_ctx] = np.arange(n_ctx)
        segments[row, :n_ctx] = 0
        start = n_ctx
        for index, cont in enumerate(group.continuations):
            n_in = len(cont) - 1
            input_ids[row, start : start + n_in] = cont[:-1]
            position_ids[row, start : start + n_in] = np.arange(n_ctx, n_ctx + n_in)
            segments[row, start : start + n_in] = index + 1
            pred_cols.append(n_ctx - 1)
            pred_cols.extend(range(start, start + n_in))
            pred_rows.extend([row] * len(cont))
            targets.extend(cont)
            offsets.append(offsets[-1] + len(cont))
            start += n_in
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segments": segments,
        "pred_rows": np.asarray(pred_rows, dtype=np.int64),
        "pred_cols": np.asarray(pred_cols, dtype=np.int64),
        "targets": np.asarray(targets, dtype=np.int64),
        "cont_offsets": np.asarray(offsets, dtype=np.int64),
    }


def _packed_mask(
    segments: torch.Tensor, dtype: torch.dtype, allowed_extra: torch.Tensor | None = None
) -> torch.Tensor:
    """Additive mask (batch, 1, L, L): a token sees earlier tokens of the context and of its own segment (and,
    when given, only where the boolean (batch, L, L) ``allowed_extra`` holds)."""
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    keys = segments[:, None, :]
    allowed = causal[None] & ((keys == 0) | (keys == segments[:, :, None]))
    if allowed_extra is not None:
        allowed &= allowed_extra
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _window_rule(kind: str, size: int | None, positions: torch.Tensor) -> torch.Tensor | None:
    """Boolean (batch, L, L): which keys a query may see under a layer's window, from the position ids (the
    positions a continuation has when it follows the context alone); None when the rule excludes nothing here."""
    if kind == "full" or size is None or int(positions.max()) < size:
        return None  # every key of a causal row lies within the window / the first chunk
    q, k = positions[:, :, None], positions[:, None, :]
    if kind == "sliding":  # transformers' sliding_window_overlay: q - window < k
        return k > q - size
    return torch.div(k, size, rounding_mode="floor") == torch.div(q, size, rounding_mode="floor")  # chunked


def _packed_masks(
    segments: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype,
    patterns: dict[str, tuple[str, int | None]],
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The packed mask of :func:`_packed_mask` for each layer type, restricted to that type's window or chunk.

    Returns one tensor when every layer type gets the same mask (no windowed layers, or no position reaches a
    window), else ``{layer type: mask}`` as transformers' models with ``config.layer_types`` accept it; masks
    equal between types are one tensor shared."""
    built: dict[tuple[str, int | None], torch.Tensor] = {}
    by_type: dict[str, torch.Tensor] = {}
    for layer_type, (kind, size) in patterns.items():
        rule = _window_rule(kind, size, positions)
        key = ("full", None) if rule is None else (kind, size)
        if key not in built:
            built[key] = _packed_mask(segments, dtype, rule)
        by_type[layer_type] = built[key]
    if len(built) == 1:
        return next(iter(built.values()))
    return by_type


def _describe(patterns: dict[str, tuple[str, int | None]]) -> str:
    return ", ".join(f"{name}: {kind} {size}" for name, (kind, size) in patterns.items() if size is not None)


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
