"""What a baseline freezes of a generation task, and the run that yields it.

A generation task's baseline entry holds, per document (columns, request order): ``doc_id``, ``context_ids_sha``
(16 hex digits of the sha256 of the context token ids, after the cut to the window, as JSON), ``until`` (the stop
strings), ``max_new_tokens``, ``generation`` (the generated text, cut at the stop strings, stored whole: a check
compares it character for character) and ``stop_reason`` (``stop``, ``eot`` or ``length``). The task's metrics
and per-document values are stored as for a log-likelihood task.

The samples file has neither the token ids nor the stop reason, so :func:`run_with_generations` runs the stages of
:func:`evalkit.run.pipeline.run` itself and keeps the tokenized requests and responses of the generation tasks.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Sequence

from evalkit.run.answers import answer
from evalkit.run.model import load_model
from evalkit.run.outputs import RunOutput, write_outputs
from evalkit.run.plan import plan_run
from evalkit.run.requests import build_requests
from evalkit.run.summarize import summarize
from evalkit.types import EvalkitError, GenerationResponse, RunConfig, TokenizedGeneration

GENERATION_COLUMNS = ("doc_id", "context_ids_sha", "until", "max_new_tokens", "generation", "stop_reason")
"""The per-document columns a baseline keeps of a generation task."""


def ids_sha(ids: Sequence[int]) -> str:
    """First 16 hex digits of the sha256 of ``ids`` written as a JSON list (``[1, 2, 3]``)."""
    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode("utf-8")).hexdigest()[:16]


def generation_records(doc_ids: Sequence[int], tokenized: Sequence[TokenizedGeneration],
                       responses: Sequence[GenerationResponse]) -> dict[str, list]:
    """A generation task's frozen columns (:data:`GENERATION_COLUMNS`), one entry per document.

    Raises:
        EvalkitError: document, request and response counts that differ.
    """
    if not len(doc_ids) == len(tokenized) == len(responses):
        raise EvalkitError(f"{len(doc_ids)} documents, {len(tokenized)} generation requests and {len(responses)} "
                           f"responses: they must match one to one")
    cols: dict[str, list] = {k: [] for k in GENERATION_COLUMNS}
    for doc_id, request, response in zip(doc_ids, tokenized, responses):
        cols["doc_id"].append(int(doc_id))
        cols["context_ids_sha"].append(ids_sha(request.context_ids))
        cols["until"].append(list(request.until))
        cols["max_new_tokens"].append(int(request.max_new_tokens))
        cols["generation"].append(response.text)
        cols["stop_reason"].append(response.stop_reason)
    return cols


@dataclass
class FrozenRun:
    """A run's written outputs and, per generation task, its frozen columns (:func:`generation_records`)."""

    output: RunOutput
    generations: dict[str, dict[str, list]] = field(default_factory=dict)


def run_with_generations(config: RunConfig, progress: bool = False) -> FrozenRun:
    """:func:`evalkit.run.pipeline.run` (one process, files written) keeping each generation task's token ids and
    stop reasons.

    Raises:
        EvalkitError: as :func:`evalkit.run.pipeline.run`; or a ``torchrun`` rank other than 0 (a baseline or check
            runs on one process).
    """
    started = time.perf_counter()
    plan = plan_run(config)
    requests = build_requests(plan)
    model = load_model(plan, requests, progress)
    answers = answer(plan, requests, model, progress)
    if answers is None:
        raise EvalkitError("a baseline or check runs on one process: run it without torchrun")
    summary = summarize(plan, requests, model, answers, started)
    output = write_outputs(summary.results, summary.doc_results, requests.prepared, config)
    generations = {}
    for p in requests.prepared:
        if p.task.name in answers.generation:
            generations[p.task.name] = generation_records(p.doc_ids, model.generations[p.task.name],
                                                          answers.generation[p.task.name])
    return FrozenRun(output, generations)


def generation_diffs(task: str, old: dict[str, list], new: dict[str, list], shown: int) -> list[str]:
    """Failure lines for one generation task whose documents match: changed requests (context token ids, stop
    strings, length) and changed generations (text or stop reason), each listing the documents (``shown`` of each
    kind, then a count).

    A greedy generation is deterministic: any changed text is a failure, there is no tolerance.
    """
    at = {doc_id: j for j, doc_id in enumerate(new["doc_id"])}
    changed_requests, changed_texts = [], []
    for i, doc_id in enumerate(old["doc_id"]):
        j = at.get(doc_id)
        if j is None:
            changed_requests.append(f"doc {doc_id} no longer exists")
            continue
        parts = [name for name, col in (("context token ids", "context_ids_sha"), ("stop strings", "until"),
                                        ("max_new_tokens", "max_new_tokens")) if old[col][i] != new[col][j]]
        if parts:
            changed_requests.append(f"doc {doc_id}: {' and '.join(parts)} changed")
            continue
        a, b = old["generation"][i], new["generation"][j]
        ra, rb = old["stop_reason"][i], new["stop_reason"][j]
        if a != b or ra != rb:
            changed_texts.append(f"doc {doc_id}: {_short(a)} ({ra}) -> {_short(b)} ({rb})")
    lines = []
    if changed_requests:
        lines.append(f"FAIL {task}: {len(changed_requests)} of {len(old['doc_id'])} generation requests changed")
        lines += _listed("request", changed_requests, shown)
    if changed_texts:
        lines.append(f"FAIL {task}: {len(changed_texts)} of {len(old['doc_id'])} greedy generations changed")
        lines += _listed("generation", changed_texts, shown)
    return lines


def _short(text: str, width: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= width else f"{text[: width // 2 - 2]} … {text[-(width // 2 - 2):]}"


def _listed(kind: str, items: list[str], shown: int) -> list[str]:
    out = [f"  {kind}: {item}" for item in items[:shown]]
    if len(items) > shown:
        out.append(f"  {kind}: … and {len(items) - shown} more")
    return out
