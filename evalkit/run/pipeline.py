"""One run end to end, as named stages: plan -> requests -> model -> answers -> results -> outputs.

Every input is read and validated before the weights load, so a bad file costs seconds, not GPU hours: the plan
stage refuses what needs no model file, the requests stage validates every document, the model stage checks what
needs the tokenizer and the model's config before it loads the weights. Results are written atomically
(temporary file + rename); the report is rendered from the saved results.
"""

from __future__ import annotations

import time

from evalkit.run.answers import answer
from evalkit.run.model import load_model
from evalkit.run.outputs import RunOutput, write_outputs
from evalkit.run.plan import plan_run
from evalkit.run.requests import build_requests
from evalkit.run.summarize import summarize
from evalkit.types import RunConfig


def run(config: RunConfig, progress: bool = True, write: bool = True) -> RunOutput | None:
    """Evaluate ``config.model`` on ``config.tasks`` and write results, samples and a report.

    Args:
        config: the run's flags.
        progress: show progress bars.
        write: write the results, samples and report under ``config.output_dir``; False only returns the results
            (the request cache is still used unless ``config.use_cache`` is False).

    Returns:
        The files written and the results dict; None on ranks other than 0 of a ``torchrun`` run (every rank
        answers a share of the requests, rank 0 alone writes: :mod:`evalkit.scoring.distributed`).

    Raises:
        EvalkitError: bad input of any kind, before the weights are loaded (:mod:`evalkit.run.plan`,
            :mod:`evalkit.run.requests`, :mod:`evalkit.run.model`); or, after scoring, a non-finite
            log-likelihood without ``--allow-non-finite`` (no results written; finite answers kept in the cache).
    """
    started = time.perf_counter()
    plan = plan_run(config)  # flags, tasks, shots, data, hub, cache: no model file read
    requests = build_requests(plan)  # documents -> few-shot contexts -> requests, every document validated
    model = load_model(plan, requests, progress)  # tokenizer, config checks, tokenization, weights
    answers = answer(plan, requests, model, progress)  # request cache, backend, ranks
    if answers is None:  # a rank other than 0: its answers went to rank 0, which writes the results
        return None
    summary = summarize(plan, requests, model, answers, started)  # per-document metrics, tasks, groups
    if not write:
        return RunOutput(None, None, None, summary.results)
    return write_outputs(summary.results, summary.doc_results, requests.prepared, config)
