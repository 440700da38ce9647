"""The answers of a run's generation tasks: their requests tokenized and cut to the window
(:func:`evalkit.scoring.generation_tokens.tokenize_generations`), generated greedily
(:class:`evalkit.scoring.generation.HFGenerator`) through the request cache
(:class:`evalkit.scoring.cache_wrappers.CachingGenerator`, the same model key as the log-likelihoods), and handed back
task by task.

Under ``torchrun`` every rank generates a share of the requests (:meth:`evalkit.scoring.distributed.Ranks.generate`:
identical requests on one rank, shares of about equal cost), each through the request cache, and rank 0 gathers
the answers in request order: the same answers, metrics and samples as one process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from evalkit.run.prepare import PreparedTask
from evalkit.types import GenerationRequest, GenerationResponse, RunConfig, TokenizedGeneration

log = logging.getLogger(__name__)


def generation_tasks(prepared: Sequence[PreparedTask]) -> list[PreparedTask]:
    """The prepared tasks that generate (``scoring="generate_until"``), in run order."""
    return [p for p in prepared if p.task.scoring == "generate_until"]


@dataclass
class GenerationOutcome:
    """Every generation task's responses and the numbers the results record.

    Attributes:
        responses: task name -> one response per document, in the task's request order (empty on the ranks
            other than 0 of a ``torchrun`` run: their answers went to rank 0).
        tokenized: task name -> the tokenized requests (context ids cut to the window).
        timing: ``tokenize_s``, ``generate_s``, ``requests``, ``requests_cached``, ``requests_generated``,
            ``forward_calls``, ``generated_tokens``, ``batch_size_final``, ``oom_retries``, ``forward_tokens``,
            ``prefix_cache``, ``prefix_fallback``, ``prefix_tokens_forwarded``, ``prefix_tokens_reused``.
        warnings: task name -> warnings (contexts cut on the left).
    """

    responses: dict[str, list[GenerationResponse]]
    tokenized: dict[str, list[TokenizedGeneration]]
    timing: dict[str, Any] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)


def tokenize_tasks(prepared: Sequence[PreparedTask], tokenizer: Any, window: int, prefix_ids: Sequence[int] = (),
                   prefix_text: str = "") -> dict[str, list[TokenizedGeneration]]:
    """Each generation task's requests tokenized and cut to ``window - max_new_tokens`` context tokens;
    ``prefix_ids`` go before every context that does not already start with ``prefix_text`` (a chat template
    writing the BOS itself).

    Raises:
        EvalkitError: a length that leaves no room for a context (names the task and document).
    """
    from evalkit.scoring.generation_tokens import tokenize_generations

    out = {}
    for p in generation_tasks(prepared):
        requests: list[GenerationRequest] = list(p.requests)  # type: ignore[arg-type]
        out[p.task.name] = tokenize_generations(requests, tokenizer.encode_batch, window, prefix_ids,
                                                tokenizer.eot_id, prefix_text)
    return out


def generate_tasks(
    prepared: Sequence[PreparedTask], tokenized: dict[str, list[TokenizedGeneration]], model: Any, tokenizer: Any,
    window: int, batch_size: int, config: RunConfig, cache_key: tuple[str, dict[str, Any]] | None,
    progress: bool = True, ranks: Any = None,
) -> GenerationOutcome:
    """Generate every generation task's answers, through the request cache when ``cache_key`` is given; under
    ``torchrun`` (``ranks``) each rank generates its share through its own connection to the cache and rank 0
    gathers the answers, keeping the process group open (the caller closes it).

    Args:
        prepared: the run's prepared tasks (the others are skipped).
        tokenized: :func:`tokenize_tasks`' output.
        model: the loaded causal LM.
        tokenizer: the run's :class:`evalkit.models.tokenizer_loading.LoadedTokenizer` (``eot_id``, ``decode``).
        window: the model's window in tokens.
        batch_size: rows per generation batch (halved on out-of-memory).
        config: the run's config (``cache_dir``).
        cache_key: ``(model key, its fields)`` of :func:`evalkit.scoring.cache.model_key`, or None for no cache.
        progress: show a progress bar.
        ranks: the run's :class:`evalkit.scoring.distributed.Ranks` (None: this process generates everything).

    Returns:
        a :class:`GenerationOutcome`; on ranks other than 0 one without responses, timing or warnings.

    Raises:
        EvalkitError: a rank built other requests than rank 0, or a gather that failed (another rank failed).
    """
    from evalkit.scoring.cache import RequestCache, resolve_cache_dir
    from evalkit.scoring.cache_wrappers import CachingGenerator
    from evalkit.scoring.generation import HFGenerator

    tasks = generation_tasks(prepared)
    outcome = GenerationOutcome({}, tokenized)
    if not tasks:
        return outcome
    eot_text = tokenizer.decode([tokenizer.eot_id], skip_special_tokens=False)
    generator = HFGenerator(model, window, batch_size, tokenizer.eot_id, tokenizer.decode, progress,
                            eot_text=eot_text, prefix_cache=bool(config.extra.get("prefix_cache", True)))
    flat = [t for p in tasks for t in tokenized[p.task.name]]
    t0 = time.perf_counter()
    cached = 0
    def run(inner: Any) -> list[GenerationResponse] | None:
        if ranks is None:
            return inner.generate(flat)
        return ranks.generate(inner, flat, close=False)

    if cache_key is None:
        answers = run(generator)
    else:
        with RequestCache(resolve_cache_dir(config.cache_dir)) as cache:
            cache.register_model(*cache_key)
            caching = CachingGenerator(generator, cache, cache_key[0])
            answers = run(caching)
            cached = caching.requests_cached
            log.info("%d generations answered from the cache %s, %d generated", cached, cache.path,
                     caching.requests_sent)
    if answers is None:  # a rank other than 0: its answers went to rank 0
        return outcome
    k = 0
    for p in tasks:
        n = len(tokenized[p.task.name])
        outcome.responses[p.task.name] = list(answers[k : k + n])
        k += n
        cut = [t.truncated_tokens for t in tokenized[p.task.name] if t.truncated_tokens]
        if cut:
            outcome.warnings[p.task.name] = [
                f"{p.task.name}: {len(cut)} of {n} generation contexts were longer than the window of {window} "
                f"tokens minus the generation length; they were truncated on the left ({sum(cut)} tokens dropped, "
                f"at most {max(cut)} from one request)"]
    outcome.timing = {
        "generate_s": round(time.perf_counter() - t0, 3),
        "requests": len(flat),
        "requests_cached": cached,
        "requests_generated": generator.requests_generated,
        "forward_calls": generator.forward_calls,
        "generated_tokens": generator.generated_tokens,
        "batch_size_final": generator.batch_size,
        "oom_retries": generator.oom_retries,
        "forward_tokens": generator.forward_tokens,
        "prefix_cache": generator.prefix_cache,
        "prefix_fallback": generator.prefix_fallback,
        "prefix_tokens_forwarded": generator.prefix_tokens_forwarded,
        "prefix_tokens_reused": generator.prefix_tokens_reused,
    }
    return outcome
