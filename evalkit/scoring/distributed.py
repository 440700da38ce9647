"""Data-parallel runs with torch.distributed: one rank per process, launched by ``torchrun``.

Every rank reads the same documents and tokenizes the same requests; :func:`evalkit.scoring.batching.split_requests`
then gives each rank a share of the packed groups of about equal cost (the split is a pure function of the
requests, so the ranks agree on it without talking). Each rank scores its share on its own device(s), and
one ``gather_object`` brings the responses to rank 0, which alone computes metrics and writes results.
NCCL carries the gather when the ranks run on GPUs, gloo on CPU. Generation requests are split the same way
(:meth:`Ranks.generate`, :func:`evalkit.scoring.batching.split_generations`).

Failure: a rank that raises exits at once (the CLI names the rank); torchrun then stops the other ranks and
exits non-zero, and rank 0 never writes a results file. Every collective has a timeout, so ranks launched
without torchrun's supervision fail after ``timeout_s`` instead of waiting forever.

With ``--parallelize`` each of a machine's N ranks shards its model over its own G/N GPUs
(:func:`evalkit.models.placement.gpu_share`), with ``max_memory`` restricted to them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from evalkit.scoring.batching import pack_groups, split_generations, split_requests
from evalkit.models.placement import RankInfo, gpu_share, rank_max_memory
from evalkit.types import (
    EvalkitError,
    GenerationResponse,
    LoglikelihoodResponse,
    RunConfig,
    TokenizedGeneration,
    TokenizedRequest,
)

log = logging.getLogger(__name__)

COUNTERS = ("forward_calls", "forward_tokens", "padded_tokens", "scored_positions", "prefix_tokens_forwarded",
            "prefix_tokens_reused", "naive_tokens", "requests_scored", "requests_cached")
"""Backend counters that are summed over the ranks into the results' timing section (the last two: a
:class:`~evalkit.scoring.cache_wrappers.CachingBackend`'s requests scored by the model and answered from the cache)."""

GENERATION_COUNTERS = ("forward_calls", "forward_tokens", "padded_tokens", "generated_tokens", "requests_generated",
                       "requests_shared", "requests_cached")
"""Generator counters (:class:`~evalkit.scoring.generation.HFGenerator`, and a
:class:`~evalkit.scoring.cache_wrappers.CachingGenerator`'s answers from the cache) summed over the ranks likewise."""

DEFAULT_TIMEOUT_S = 3600
"""Longest wait in a collective (joining, the gather): covers ranks that finish at slightly different times."""


@dataclass
class Ranks:
    """This process's rank, the device and model-loading arguments it uses, and the gathered statistics.

    Attributes:
        info: rank and world size (:class:`~evalkit.placement.RankInfo`).
        device: torch device string for ``load_model`` (None: pick cuda when available, else cpu).
        load_kwargs: extra ``load_model`` arguments (``device_map``, ``max_memory``) for this rank.
        backend: ``"nccl"``, ``"gloo"``, or None when there is a single rank.
        per_rank: after :meth:`loglikelihood`, on rank 0: one dict of counts and timings per rank (and gather).
        per_rank_generation: after :meth:`generate`, on rank 0: the same for the generations (kept apart, so the
            log-likelihood counters summed by :meth:`annotate` never include generation passes).
    """

    info: RankInfo
    device: str | None
    load_kwargs: dict[str, Any]
    backend: str | None = None
    per_rank: list[dict[str, Any]] = field(default_factory=list)
    per_rank_generation: list[dict[str, Any]] = field(default_factory=list)

    def loglikelihood(
        self, backend: Any, requests: Sequence[TokenizedRequest], close: bool = True
    ) -> list[LoglikelihoodResponse] | None:
        """Score ``requests`` over all ranks; the full list of responses, in order, on rank 0.

        ``backend`` is an :class:`~evalkit.hf_backend.HFBackend` or anything with its ``loglikelihood``,
        ``max_length`` and ``share_context`` (these two decide the packing the split follows); its
        ``progress`` bar is kept on rank 0 only and its :data:`COUNTERS` are reported when it has them.
        With a single rank this is ``backend.loglikelihood(requests)``.

        ``close`` (default True) leaves the process group after the gather; False keeps it for another collective
        (a later :meth:`generate`, or the next task's scoring), and the caller calls :meth:`close` at the end.

        Returns:
            responses in request order on rank 0; None on every other rank.

        Raises:
            EvalkitError: a rank scored different requests than rank 0 (different data or tokenizer on its
                machine), or a rank's responses are missing.
        """
        if not self.info.is_distributed:
            return backend.loglikelihood(requests)
        mine = split_requests(requests, backend.max_length, backend.share_context, self.info.world_size)[self.info.rank]
        return self._run_share(backend, requests, mine, backend.loglikelihood, SCORING, self.per_rank, close)

    def generate(
        self, generator: Any, requests: Sequence[TokenizedGeneration], close: bool = True
    ) -> list[GenerationResponse] | None:
        """Generate answers to ``requests`` over all ranks; the full list of answers, in order, on rank 0.

        ``generator`` is an :class:`~evalkit.scoring.generation.HFGenerator` or anything with its ``generate``
        (a :class:`~evalkit.scoring.cache_wrappers.CachingGenerator`). Each rank generates its share
        (:func:`~evalkit.scoring.batching.split_generations`: identical requests on one rank, about equal tokens);
        the progress bar is kept on rank 0 only and :data:`GENERATION_COUNTERS` are reported when present.
        ``close`` as for :meth:`loglikelihood`. With a single rank this is ``generator.generate(requests)``.

        Returns:
            answers in request order on rank 0; None on every other rank.

        Raises:
            EvalkitError: a rank tokenized different requests than rank 0, or a rank's answers are missing.
        """
        if not self.info.is_distributed:
            return generator.generate(requests)
        mine = split_generations(requests, self.info.world_size)[self.info.rank]
        return self._run_share(generator, requests, mine, generator.generate, GENERATING, self.per_rank_generation,
                               close)

    def _run_share(self, worker: Any, requests: Sequence[Any], mine: list[int], work: Callable[[list[Any]], list[Any]],
                   kind: _ShareKind, per_rank: list[dict[str, Any]], close: bool) -> list[Any] | None:
        """Run ``work`` (the worker's ``loglikelihood`` or ``generate``) on this rank's share ``mine`` (indices into
        ``requests``), gather every rank's answers and figures on rank 0 and merge them there (the figures appended
        to ``per_rank``).

        The worker's progress bar is kept on rank 0 only. Returns the answers in request order on rank 0, None on
        every other rank; raises as :meth:`_merge` does.
        """
        rank = self.info.rank
        if hasattr(worker, "progress"):
            worker.progress = worker.progress and self.info.is_main
        share = [requests[i] for i in mine]
        started = time.perf_counter()
        answered = work(share)
        payload = {
            "rank": rank,
            "digest": kind.digest(requests),
            "indices": mine,
            "responses": [kind.values(r) for r in answered],
            "stats": {"rank": rank, "device": self.device or "auto", "requests": len(share)}
            | kind.extra_stats(worker, share)
            | {kind.seconds: round(time.perf_counter() - started, 3)}
            | {name: getattr(worker, name) for name in kind.counters if hasattr(worker, name)},
        }
        log.info(f"%s {kind.done} in %.1f s; waiting for the other ranks", self.info.label, len(share),
                 payload["stats"][kind.seconds])
        gathered = self._gather(payload, close)
        if gathered is None:
            return None
        return self._merge(gathered, len(requests), payload["digest"], kind.response_type, per_rank)

    def _gather(self, payload: dict[str, Any], close: bool) -> list[Any] | None:
        """Every rank's payload on rank 0 (None elsewhere); leaves the process group after it when ``close``."""
        gathered: list[Any] | None = [None] * self.info.world_size if self.info.is_main else None
        try:
            dist.gather_object(payload, gathered, dst=0)
        except RuntimeError as exc:  # gloo/NCCL errors and timeouts; a peer that died is the usual cause
            raise EvalkitError(
                f"gathering the responses failed, most likely because another rank failed first (see its error): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        if close:
            self.close()
        return gathered if self.info.is_main else None

    def _merge(self, gathered: list[Any], n: int, digest: str, response_type: type,
               stats: list[dict[str, Any]]) -> list[Any]:
        results: list[Any] = [None] * n
        for part in gathered:
            if part["digest"] != digest:
                raise EvalkitError(
                    f"rank {part['rank']} tokenized different requests than rank 0: every machine needs the same "
                    "data, tokenizer, task files and evalkit version"
                )
            for index, values in zip(part["indices"], part["responses"]):
                results[index] = response_type(*values)
            stats.append(part["stats"])
        missing = sum(1 for r in results if r is None)
        if missing:
            raise EvalkitError(f"{missing} of {n} requests came back from no rank")
        return results  # type: ignore[return-value]

    def annotate(self, results: dict[str, Any]) -> None:
        """Add the ranks' figures to a results dict (rank 0, distributed runs only): a ``distributed``
        section (``ranks``: each rank's scoring figures; ``generation_ranks``: its generation figures, when the
        run generated), the backend counters of ``results["timing"]`` and the generator counters of
        ``results["timing"]["generation"]`` summed over the ranks."""
        if not self.info.is_distributed or not (self.per_rank or self.per_rank_generation):
            return
        results["distributed"] = {"world_size": self.info.world_size, "backend": self.backend,
                                  "ranks": self.per_rank}
        for name in COUNTERS:
            if self.per_rank and name in results["timing"] and all(name in r for r in self.per_rank):
                results["timing"][name] = sum(r[name] for r in self.per_rank)
        generation = results["timing"].get("generation")
        if self.per_rank_generation:
            results["distributed"]["generation_ranks"] = self.per_rank_generation
            for name in GENERATION_COUNTERS:
                if generation is not None and name in generation and all(name in r for r in
                                                                         self.per_rank_generation):
                    generation[name] = sum(r[name] for r in self.per_rank_generation)
        timing = results["timing"]
        if "work_fraction" in timing and timing.get("naive_tokens"):  # of the summed counters
            timing["work_fraction"] = round(timing["forward_tokens"] / timing["naive_tokens"], 4)

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def generations_digest(requests: Sequence[TokenizedGeneration]) -> str:
    """sha256 over every generation request's context ids, stop strings and budget: equal on two ranks exactly
    when they built the same requests."""
    digest = hashlib.sha256()
    for r in requests:
        digest.update(repr((r.context_ids, r.until, r.max_new_tokens)).encode("utf-8"))
    return digest.hexdigest()


def requests_digest(requests: Sequence[TokenizedRequest]) -> str:
    """sha256 over every request's token ids: equal on two ranks exactly when they tokenized alike."""
    digest = hashlib.sha256()
    for r in requests:
        digest.update(repr((r.context_ids, r.continuation_ids)).encode("ascii"))
    return digest.hexdigest()


@dataclass(frozen=True)
class _ShareKind:
    """What differs between scoring and generating over the ranks (:meth:`Ranks._run_share`).

    Attributes:
        digest: requests -> the sha256 hex digest by which rank 0 checks that every rank built the same requests.
        values: a response -> its fields in constructor order (what travels in the gather).
        response_type: the response class rebuilt from those fields on rank 0.
        counters: the worker's counters reported per rank when present.
        seconds: the key of this rank's wall time (seconds, 3 decimals) in its figures.
        done: the log line's middle, formatted with the share's size ("scored %d requests").
        extra_stats: (worker, share) -> more figures, placed before the wall time.
    """

    digest: Callable[[Sequence[Any]], str]
    values: Callable[[Any], tuple[Any, ...]]
    response_type: type
    counters: tuple[str, ...]
    seconds: str
    done: str
    extra_stats: Callable[[Any, list[Any]], dict[str, Any]] = lambda worker, share: {}


SCORING = _ShareKind(
    requests_digest, lambda r: (r.loglikelihood, r.greedy, r.continuation_tokens, r.truncated_tokens),
    LoglikelihoodResponse, COUNTERS, "score_s", "scored %d requests",
    lambda backend, share: {"tokens": sum(g.length for g in pack_groups(share, backend.max_length,
                                                                        backend.share_context))})
GENERATING = _ShareKind(
    generations_digest, lambda r: (r.text, r.tokens, r.stop_reason, r.truncated_tokens), GenerationResponse,
    GENERATION_COUNTERS, "generate_s", "generated %d answers")


def start(config: RunConfig, environ: dict[str, str] | None = None) -> Ranks:
    """Find this process's rank (torchrun's variables), pick its device, and join the process group.

    Without torchrun (no ``WORLD_SIZE``) or with a single rank this only passes ``config.device`` and the
    ``load_kwargs`` of ``config.extra`` through. ``config.extra["dist_timeout_s"]`` bounds every wait.

    A single rank checks ``--device`` here, before the tokenizer and the model load (:func:`check_device`).

    Raises:
        EvalkitError: bad rank variables, a CUDA ``--device`` without a visible GPU, a rank without a GPU of its
            own, or a process group that could not be formed within the timeout.
    """
    env = os.environ if environ is None else environ
    info = RankInfo.from_env(env)
    load_kwargs = dict(config.extra.get("load_kwargs", {}))
    if not info.is_distributed:
        check_device(config.device, load_kwargs)
        return Ranks(info, config.device, load_kwargs)
    device = _rank_device(info, config.device, load_kwargs)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    timeout = float(config.extra.get("dist_timeout_s", DEFAULT_TIMEOUT_S))
    where = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except Exception as exc:  # noqa: BLE001 - rendezvous fails in many ways; say where and how long
        raise EvalkitError(
            f"could not join the process group of {info.world_size} ranks at {where} within {timeout:.0f} s: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    log.info("%s joined (%s, device %s)", info.label, backend, device)
    return Ranks(info, device, load_kwargs, backend)


def check_device(device: str | None, load_kwargs: dict[str, Any]) -> None:
    """Refuse a CUDA ``--device`` this process cannot use; warn that ``--parallelize`` (a ``device_map`` in
    ``load_kwargs``) spreads nothing over GPUs when none is visible (the model loads on the CPU, and on disk where
    ``--max-memory`` says so).

    Raises:
        EvalkitError: ``--device cuda[:K]`` without a visible GPU (a CPU-only torch, or none visible), or with
            K beyond the visible GPUs.
    """
    if device is not None and device.split(":")[0] == "cuda":
        if not torch.cuda.is_available():
            why = "has no CUDA support" if torch.version.cuda is None else "sees no GPU"
            raise EvalkitError(f"--device {device}: no CUDA GPU is visible to this process (this torch {why}); use "
                               f"--device cpu, or leave --device out")
        index = device.partition(":")[2]
        if index.isdigit() and int(index) >= torch.cuda.device_count():
            raise EvalkitError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible "
                               f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if "device_map" in load_kwargs and not torch.cuda.is_available():
        log.warning("--parallelize: no CUDA GPU is visible, so nothing is spread over GPUs: the model loads on the "
                    "CPU (and on disk where --max-memory says so)")


def _rank_device(info: RankInfo, device: str | None, load_kwargs: dict[str, Any]) -> str:
    """This rank's device; with a device map, also restricts ``load_kwargs["max_memory"]`` to its GPUs."""
    if device is not None and not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        if device is not None:
            raise EvalkitError(f"--device {device} but no CUDA GPU is visible to {info.label}")
        return "cpu"
    n_gpus = torch.cuda.device_count()
    if "device_map" in load_kwargs:
        share = gpu_share(info.local_rank, info.local_world_size, n_gpus)
        free = {g: torch.cuda.mem_get_info(g)[0] for g in share}
        load_kwargs["max_memory"] = rank_max_memory(load_kwargs.get("max_memory"), share, free)
        return f"cuda:{share[0]}"
    if device not in (None, "cuda"):
        return device  # an explicit cuda:K: the user's choice
    if info.local_rank >= n_gpus:
        raise EvalkitError(f"{info.label} has local rank {info.local_rank} but only {n_gpus} GPU(s) are visible; "
                           f"use --nproc-per-node {n_gpus} or fewer")
    return f"cuda:{info.local_rank}"
