"""Greedy generation with a Hugging Face causal LM: batched, left-padded, with a key/value cache.

Semantics follow lm-eval 0.4's ``HFLM.generate_until`` (read for facts from lm-eval 0.4.13):

* requests run longest context first; identical requests (same context ids, stop strings and token budget) are
  generated once and their answer given to each;
* a batch is left-padded, with an attention mask and position ids that count real tokens only, so a padded row
  sees what it would see alone (its greedy tokens equal the unpadded ones up to float rounding: a near-tie between
  two tokens can flip under padding, as it can in lm-eval's own batches);
* decoding is greedy (``argmax`` of the last position's logits, lowest id on an exact tie, as HF ``generate``);
* a row stops when an end-of-text id is generated, when one of its stop strings appears in the decoded text of its
  generated tokens (a stop string may span tokens, or end inside one), or after ``max_new_tokens`` tokens; lm-eval
  stops only when every row of its batch has stopped and cuts the text afterwards, which gives the same text
  (:func:`cut_at_stop` applies lm-eval's cut); stopping each row at once saves the rest of its tokens;
* a finished row leaves the batch at once: its input, mask and key/value cache rows are dropped
  (``DynamicCache.batch_select_indices``), so the steps that follow cost only the rows still running;
* the text is the tokenizer's decoding of the generated tokens without special tokens (lm-eval's ``tok_decode``),
  cut before the first stop string.

Stop strings are looked for in the decoded text of all generated tokens of a row (decoding the tail alone can
differ: SentencePiece drops a leading space, a split UTF-8 character decodes as U+FFFD), but only the text's tail
that the new token can have completed is searched.

Out of memory (``is_oom``): the batch size is halved and the unfinished rows of the batch retried (finished rows
keep their answers), down to one row, as :class:`evalkit.scoring.hf_backend.HFBackend` does for scoring
(:func:`evalkit.scoring.oom.run_halving`).

With ``prefix_cache=True``, prompt prefixes shared by several distinct requests (few-shot examples) are forwarded
once (planned by :mod:`evalkit.scoring.prefix_cache`, forwarded and probed by
:mod:`evalkit.scoring.generation_prefix`): each batch holds requests of one prefix, feeds only the rest of each
context on the prefix's keys and values (a row's 4-D mask hides the prefix positions it does not share; its position
ids continue from the part it shares) and decodes on them. A probe compares next-token log-probabilities with and
without a cached prefix first; a model that rejects the masks or disagrees, or one with windowed layers of unknown
size, generates without reuse, with a warning. A request whose context plus token budget reaches past the smallest
attention window of a windowed model is generated without reuse.

A model whose ``generation_config`` asks for more than greedy decoding (a repetition penalty, a minimum length,
forbidden words) is generated plainly greedy here, whereas lm-eval's ``model.generate`` would apply those settings.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from evalkit.models.attention_windows import layer_patterns, windowed_attention
from evalkit.scoring import prefix_cache as prefix_cache_lib
from evalkit.scoring.hf_backend import _progress, execution_device
from evalkit.scoring.generation_prefix import GenerationPrefixReuse, _prefix_mask
from evalkit.scoring.oom import is_cuda_oom, run_halving
from evalkit.types import EvalkitError, GenerationCallback, GenerationResponse, TokenizedGeneration

log = logging.getLogger(__name__)

UNSTABLE_CHARS = 4
"""Characters at the end of a row's decoded text that the next token may still change (a UTF-8 character split
over tokens decodes as U+FFFD until it is complete); they are searched again for stop strings."""

GenerationKey = tuple[tuple[int, ...], tuple[str, ...], int]
"""What makes two generation requests the same: (context ids, stop strings, max_new_tokens)."""


def busy_cpu_warning(threads: int, load_average: float, cores: int) -> str | None:
    """A warning when generating on the CPU with several torch threads while the machine is already busy, else None.

    Greedy decoding forwards a few rows of one token per step: each matrix product is small, and with more threads
    than idle cores every product waits for a worker thread the system has descheduled. Measured on a 2-core CPU
    at load average 5.5 with SmolLM2-135M (float32, 4 rows): a decode step took 3.0 s on 2 threads and 0.42 s on
    one, prefilling 4 x 200 tokens 14 s and 4.4 s (docs/performance.md).

    Args:
        threads: torch's intra-op threads (``torch.get_num_threads()``).
        load_average: the system's one-minute load average (``os.getloadavg()[0]``).
        cores: CPU cores (``os.cpu_count()``).
    """
    if threads <= 1 or load_average < cores:
        return None
    return (f"generating on the CPU with {threads} torch threads while the load average is {load_average:.1f} on "
            f"{cores} cores: small decode steps stall on busy cores (measured 7x slower than one thread at load "
            f"5.5 on 2 cores); set OMP_NUM_THREADS=1 (or fewer threads than idle cores) for this run")


def generation_key(request: TokenizedGeneration) -> GenerationKey:
    """The identity of a generation request: its context ids, stop strings and token budget (not the truncation
    count, which follows from them)."""
    return (tuple(request.context_ids), tuple(request.until), int(request.max_new_tokens))


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The text before the stop strings, cut as lm-eval 0.4 cuts a generation (``postprocess_generated_text``):
    for each non-empty stop string in ``until`` order, keep what comes before its first occurrence.

    That is the text before the earliest occurrence of any stop string, except where two stop strings overlap in
    the text: with ``until = ["bc", "ab"]``, ``"xabc"`` becomes ``"xa"`` (cut at ``"bc"`` first, after which
    ``"ab"`` no longer occurs), not ``"x"``.
    """
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


@dataclass
class _Row:
    """One distinct request being generated: its generated ids and how much of its text was searched."""

    uid: int
    request: TokenizedGeneration
    stops: tuple[str, ...]
    ids: list[int] = field(default_factory=list)
    searched: int = 0

    def push(self, token: int, eot_ids: frozenset[int], decode: Callable[[list[int]], str]
             ) -> GenerationResponse | None:
        """Append a generated token; the answer when this row is finished, else None."""
        self.ids.append(token)
        n, request = len(self.ids), self.request
        if token in eot_ids:
            return self._answer(decode(self.ids[:-1]), "eot")
        text = None
        if self.stops:
            text = decode(self.ids)
            longest = max(len(s) for s in self.stops)
            start = max(0, self.searched - longest - UNSTABLE_CHARS)
            tail = text[start:]
            self.searched = len(text)
            if any(stop in tail for stop in self.stops):
                return self._answer(text, "stop")
        if n >= request.max_new_tokens:
            return self._answer(decode(self.ids) if text is None else text, "length")
        return None

    def _answer(self, text: str, reason: str) -> GenerationResponse:
        return GenerationResponse(cut_at_stop(text, self.stops), len(self.ids), reason, self.request.truncated_tokens)


class HFGenerator(GenerationPrefixReuse):
    """Greedy generation for tokenized requests with a causal LM (see the module docstring for the semantics).

    Args:
        model: a transformers causal LM in eval mode (its forward takes ``attention_mask``, ``position_ids`` and a
            ``DynamicCache``).
        window: the model's window in tokens; every request's context + ``max_new_tokens`` must fit
            (:func:`evalkit.scoring.generation_tokens.tokenize_generations` cuts contexts so).
        batch_size: rows per batch (>= 1).
        eot_id: end-of-text token id, or several (a model whose generation config lists more than one end token):
            generating any of them ends the row (stop reason ``"eot"``); it is not part of the text. An empty
            sequence: no token ends a row, as in lm-eval v0.2.0's ``greedy_until``, which passes its first stop
            string's token as HF's ``eos_token_id`` in place of the model's end-of-text and decodes with special
            tokens (give ``decode`` with ``skip_special_tokens=False`` to match it).
        decode: ``ids -> str``, the tokenizer's decoding without special tokens (``LoadedTokenizer.decode``).
        progress: show a tqdm bar over requests (documents).
        pad_id: id placed in padding (masked out; any id of the vocabulary).
        eot_text: the end-of-text token's text (decoded with special tokens), which lm-eval 0.4 adds to every
            request's stop strings; None adds nothing.
        is_oom: ``exception -> bool``, which errors mean "out of memory, retry with a smaller batch".
        prefix_cache: forward prompt prefixes shared by several requests once and decode on their keys and values
            (the same greedy tokens up to float rounding, as under padding).
        prefix_min_tokens: shortest shared prefix worth reuse (tokens).

    Attributes:
        batch_size: rows per batch; after an out-of-memory, the halved size in use.
        oom_retries: batches retried after an out-of-memory.

    Counters (for the run's timing): ``forward_calls`` (model calls), ``forward_tokens`` (real input tokens fed:
    contexts, then one per running row per step), ``padded_tokens`` (rows x width of every call),
    ``generated_tokens`` (tokens generated, for distinct requests), ``requests_generated`` (distinct requests
    generated), ``requests_shared`` (requests answered by an identical one's generation) and ``decode_s`` (seconds
    spent decoding generated tokens to look for stop strings); with prefix reuse, ``prefix_tokens_forwarded``
    (shared prefixes' tokens, once each; part of ``forward_tokens``) and ``prefix_tokens_reused`` (prefix tokens
    read from a cache instead of fed, summed over rows). ``prefix_fallback``: None, or why reuse was turned off.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        window: int,
        batch_size: int,
        eot_id: int | Sequence[int],
        decode: Callable[[list[int]], str],
        progress: bool = True,
        *,
        pad_id: int = 0,
        eot_text: str | None = None,
        is_oom: Callable[[BaseException], bool] = is_cuda_oom,
        prefix_cache: bool = False,
        prefix_min_tokens: int = prefix_cache_lib.MIN_PREFIX_TOKENS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.model = model
        self.window = window
        self.batch_size = batch_size
        self.eot_ids = frozenset([int(eot_id)] if isinstance(eot_id, int) else [int(i) for i in eot_id])
        self.decode = decode
        self.decode_s = 0.0
        self.progress = progress
        self.pad_id = pad_id
        self.eot_text = eot_text or None
        self.is_oom = is_oom
        self.oom_retries = 0
        self.input_device = execution_device(model.get_input_embeddings())
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers 5.2x renamed it
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None
        self.forward_calls = 0
        self.forward_tokens = 0
        self.padded_tokens = 0
        self.generated_tokens = 0
        self.requests_generated = 0
        self.requests_shared = 0
        self.prefix_cache = prefix_cache
        self.prefix_min_tokens = prefix_min_tokens
        self.prefix_fallback: str | None = None
        self.prefix_tokens_forwarded = 0
        self.prefix_tokens_reused = 0
        self._prefix_checked = False
        self.attention_window = windowed_attention(model.config)
        if prefix_cache and self.attention_window is None and any(
                kind != "full" for kind, _ in layer_patterns(model.config).values()):
            self._prefix_off("the model has windowed attention layers of unknown size")

    def generate(self, requests: Sequence[TokenizedGeneration],
                 on_done: GenerationCallback | None = None) -> list[GenerationResponse]:
        """Greedy answers to ``requests``, in request order.

        Args:
            requests: tokenized requests that fit the window.
            on_done: called as rows finish with (indices into ``requests``, their responses), every copy of a
                shared request included, so a caller can store each answer as soon as it exists
                (:class:`evalkit.scoring.cache_wrappers.CachingGenerator`).

        Raises:
            ValueError: a request without a context token, with ``max_new_tokens`` < 1, or longer than the window.
            EvalkitError: out of memory with a single row.
        """
        for index, request in enumerate(requests):
            if not request.context_ids:
                raise ValueError(f"generation request {index} has no context token")
            if request.max_new_tokens < 1:
                raise ValueError(f"generation request {index} asks for {request.max_new_tokens} new tokens")
            if len(request.context_ids) + request.max_new_tokens > self.window:
                raise ValueError(f"generation request {index}: {len(request.context_ids)} context tokens + "
                                 f"{request.max_new_tokens} new tokens exceed the window of {self.window}; "
                                 f"truncate it first")
        if requests and self.input_device.type == "cpu" and hasattr(os, "getloadavg"):
            warning = busy_cpu_warning(torch.get_num_threads(), os.getloadavg()[0], os.cpu_count() or 1)
            if warning:
                log.warning(warning)
        owners: dict[GenerationKey, list[int]] = {}
        for index, request in enumerate(requests):
            owners.setdefault(generation_key(request), []).append(index)
        distinct = [requests[indices[0]] for indices in owners.values()]
        copies = list(owners.values())
        self.requests_generated += len(distinct)
        self.requests_shared += len(requests) - len(distinct)
        order = sorted(range(len(distinct)), key=lambda u: (-len(distinct[u].context_ids), u))
        results: list[GenerationResponse | None] = [None] * len(requests)
        bar = _progress(len(requests), self.progress, desc="generations", unit="doc")

        def finish(done: list[tuple[int, GenerationResponse]]) -> None:
            indices, responses = [], []
            for uid, response in done:
                self.generated_tokens += response.tokens
                for index in copies[uid]:
                    results[index] = response
                    indices.append(index)
                    responses.append(response)
            if on_done is not None:
                on_done(indices, responses)
            bar.update(len(indices))

        for prefix, used in self._prefix_units(distinct):
            states = self._forward_prefix(prefix) if prefix and self.prefix_cache else None
            if prefix and states is None:  # out of memory: reuse is off, these rows are generated whole
                used = {uid: 0 for uid in used}
            self._generate_unit([u for u in order if u in used], distinct, results, copies, finish,
                                (states, used) if states is not None else None)
        bar.close()
        return results  # type: ignore[return-value]

    def _generate_unit(self, order: list[int], distinct: Sequence[TokenizedGeneration],
                       results: list[GenerationResponse | None], copies: list[list[int]],
                       finish: Callable[[list[tuple[int, GenerationResponse]]], None],
                       prefix: tuple[list[tuple[torch.Tensor, torch.Tensor]], dict[int, int]] | None) -> None:
        """Generate the distinct requests ``order`` in batches, halving the batch on out-of-memory; with ``prefix``
        (a cached prefix's per-layer states, and per request id the prefix tokens it shares), on that prefix."""
        def attempt(batch: list[int]) -> None:
            self._run_batch([_Row(uid, distinct[uid], self._stops(distinct[uid])) for uid in batch], finish, prefix)

        def alone(batch: list[int], exc: BaseException) -> None:
            raise EvalkitError(
                f"out of memory generating for one context of {len(distinct[batch[0]].context_ids)} tokens; "
                f"lower --max-length or the task's max_gen_toks, or spread the model with --parallelize"
            ) from exc

        def recut(left: list[int], size: int) -> list[list[int]]:
            """The unfinished requests (finished rows of the failed batch keep their answers) in batches of size."""
            unfinished = [uid for uid in left if results[copies[uid][0]] is None]
            return [unfinished[k : k + size] for k in range(0, len(unfinished), size)]

        run_halving(self, [order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)], attempt,
                    lambda batch, _: None, recut, alone, log,
                    "out of memory generating %d rows per batch; retrying with %d")

    def _prefix_units(self, distinct: Sequence[TokenizedGeneration]) -> list[tuple[tuple[int, ...], dict[int, int]]]:
        """(prefix, {request id: prefix tokens it shares}) per unit of
        :func:`evalkit.scoring.prefix_cache.plan_prefixes` over the distinct contexts, the unit without a prefix
        last; one unit without a prefix when reuse is off or fails its probe. Requests that reach past a windowed
        model's smallest window are left out of the plan."""
        everything = [((), {uid: 0 for uid in range(len(distinct))})]
        if not self.prefix_cache or not distinct:
            return everything
        window = self.attention_window
        fits = [u for u, r in enumerate(distinct)
                if window is None or len(r.context_ids) + r.max_new_tokens - 1 <= window]
        units = prefix_cache_lib.plan_prefixes([tuple(distinct[u].context_ids) for u in fits], self.prefix_min_tokens)
        if len(fits) < len(distinct):
            log.warning("shared-prefix reuse skips %d of %d generation requests: their context and token budget "
                        "reach past the model's attention window of %d tokens", len(distinct) - len(fits),
                        len(distinct), window)
        if not any(unit.prefix for unit in units):
            return everything
        if not self._prefix_checked:
            self._check_prefix_reuse()
            if not self.prefix_cache:
                return everything
        out = [(unit.prefix, {fits[m]: n for m, n in zip(unit.members, unit.used)}) for unit in units if unit.prefix]
        plain = set(range(len(distinct))) - {uid for _, used in out for uid in used}
        return out + ([((), {uid: 0 for uid in sorted(plain)})] if plain else [])

    def _prefix_off(self, reason: str) -> None:
        self.prefix_cache = False
        self.prefix_fallback = reason
        log.warning("shared-prefix reuse in generation is off: %s; every request feeds its whole context (same "
                    "tokens, slower)", reason)

    def _timed_decode(self, ids: list[int]) -> str:
        started = time.perf_counter()
        text = self.decode(ids)
        self.decode_s += time.perf_counter() - started
        return text

    def _stops(self, request: TokenizedGeneration) -> tuple[str, ...]:
        """The request's non-empty stop strings, then the end-of-text text when set and not among them
        (lm-eval 0.4 ``handle_stop_sequences``)."""
        stops = [s for s in request.until if s]
        if self.eot_text is not None and self.eot_text not in stops:
            stops.append(self.eot_text)
        return tuple(stops)

    def _new_cache(self):
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # transformers before 4.56's config-aware cache
            return DynamicCache()

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        """One model call; returns the last position's logits, (rows, vocab). ``mask`` (rows, keys) marks the keys
        each row sees; with ``dtype`` (a cached prefix's batch) the model gets the 4-D additive mask of
        :func:`_prefix_mask` built from it."""
        self.forward_calls += 1
        self.forward_tokens += int(mask[:, -input_ids.shape[1]:].sum())
        self.padded_tokens += int(input_ids.numel())
        kwargs = {self._cache_arg: cache, "use_cache": True}
        if self._keep_arg is not None:
            kwargs[self._keep_arg] = 1
        attention = mask if dtype is None else _prefix_mask(mask, input_ids.shape[1], dtype)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions, **kwargs)
        return out.logits[:, -1]

    def _run_batch(self, rows: list[_Row], finish: Callable[[list[tuple[int, GenerationResponse]]], None],
                   prefix: tuple[list[tuple[torch.Tensor, torch.Tensor]], dict[int, int]] | None = None) -> None:
        """Generate every row of a batch to its end; ``finish`` is told at each step which rows ended. With
        ``prefix`` (per-layer prefix states, and per request id the prefix tokens it shares), each row feeds only
        the rest of its context, on the prefix's keys and values."""
        device = self.input_device
        shared = [prefix[1][row.uid] if prefix is not None else 0 for row in rows]
        width = max(len(r.request.context_ids) - u for r, u in zip(rows, shared))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, (row, skip) in enumerate(zip(rows, shared)):
            n = len(row.request.context_ids) - skip
            input_ids[k, width - n:] = torch.tensor(row.request.context_ids[skip:], dtype=torch.long)
            mask[k, width - n:] = 1
        # real tokens count on from the prefix part a row shares (0 without one); padding is masked out
        positions = (mask.cumsum(-1) - 1).clamp(min=0) + torch.tensor(shared, dtype=torch.long)[:, None]
        dtype = None
        if prefix is not None:
            seen = max(shared)
            mask = torch.cat([(torch.arange(seen)[None] < torch.tensor(shared)[:, None]).long(), mask], dim=1)
            cache = prefix_cache_lib.prefix_cache_for_batch(prefix[0], seen, keep=True)
            dtype = self.model.get_input_embeddings().weight.dtype
            self.prefix_tokens_reused += sum(shared)
        else:
            cache = self._new_cache()
        input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)
        next_position = positions[:, -1:] + 1
        active = list(rows)
        with torch.inference_mode():
            logits = self._forward(input_ids, mask, positions, cache, dtype)
            while True:
                tokens = logits.argmax(dim=-1).tolist()
                keep, done = [], []
                for k, (row, token) in enumerate(zip(active, tokens)):
                    answer = row.push(int(token), self.eot_ids, self._timed_decode)
                    if answer is None:
                        keep.append(k)
                    else:
                        done.append((row.uid, answer))
                if done:
                    finish(done)
                if not keep:
                    return
                if len(keep) < len(active):  # finished rows leave the batch, their cache rows with them
                    index = torch.tensor(keep, dtype=torch.long)  # on the CPU: indexes a cache on any device(s)
                    cache.batch_select_indices(index)
                    index = index.to(device)
                    mask, next_position = mask[index], next_position[index]
                    active = [active[k] for k in keep]
                step = torch.tensor([[row.ids[-1]] for row in active], dtype=torch.long, device=device)
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
                logits = self._forward(step, mask, next_position, cache, dtype)
                next_position = next_position + 1
