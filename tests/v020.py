"""lm-evaluation-harness v0.2.0's own fixtures, rebuilt from evalkit's task files (SPEC-suite Appendix V).

``tests/test_version_stable.py`` at v0.2.0 runs every task zero-shot against a fake LM: it pins the sha256 of the
complete request list and the metrics that fake answers give. This module rebuilds both:

* requests in evaluator order (SPEC-suite A.1, A.8): the evaluated split in natural order, shuffled in place by
  ``random.Random(42)``, then each document's requests in ``construct_requests`` order. A document whose
  log-likelihood *and* greedy flag are both used (LAMBADA: ``ll, is_greedy = rf.loglikelihood(...)``) sends two
  identical requests; every other request is sent once.
* serialisation: ``json.dumps`` of the list of ``[context, continuation]`` pairs with default separators and
  ``ensure_ascii``; sha256 of its UTF-8 bytes.
* fake answers: the global ``random`` reseeded with 42, then ``-random.random()`` per request in order, greedy
  always False; metrics through evalkit's own per-document metric code and aggregators.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Sequence

import numpy as np

from evalkit.stats.metrics import PER_DOC_KEY, aggregator, doc_metrics
from evalkit.types import Doc, Task


def sends_pair(task: Task) -> bool:
    """True when v0.2.0 uses both outputs of one call (log-likelihood for perplexity, greedy for acc)."""
    return task.scoring == "target" and "perplexity" in task.metrics


def shuffled(docs: Sequence[Doc]) -> list[Doc]:
    """The evaluated documents in v0.2.0's order: ``rnd = random.Random(); rnd.seed(42); rnd.shuffle(docs)``."""
    order = list(docs)
    rnd = random.Random()
    rnd.seed(42)
    rnd.shuffle(order)
    return order


def doc_requests(task: Task, doc: Doc) -> list[tuple[str, str]]:
    """One document's zero-shot (context, continuation) pairs in ``construct_requests`` order."""
    conts = task.continuations(doc)
    contexts = task.choice_contexts(doc) if task.choice_contexts else [task.context(doc)] * len(conts)
    pairs = list(zip(contexts, conts))
    if sends_pair(task):
        return [pair for pair in pairs for _ in range(2)]
    return pairs


def request_list(task: Task, docs: Sequence[Doc]) -> list[tuple[str, str]]:
    """Every request of a zero-shot, unlimited v0.2.0 run of ``task`` over ``docs`` (natural split order)."""
    return [pair for doc in shuffled(docs) for pair in doc_requests(task, doc)]


def request_hash(requests: Sequence[tuple[str, str]]) -> str:
    """sha256 (hex) of the request list serialised as v0.2.0's fixture does."""
    return hashlib.sha256(json.dumps([list(r) for r in requests]).encode("utf-8")).hexdigest()


def fake_metrics(task: Task, docs: Sequence[Doc]) -> dict[str, Any]:
    """The task's metrics when every request is answered ``-random()`` after ``random.seed(42)``, greedy False."""
    order = shuffled(docs)
    n_requests = sum(len(doc_requests(task, doc)) for doc in order)
    random.seed(42)
    answers = [-random.random() for _ in range(n_requests)]
    per_doc, k = [], 0
    for doc in order:
        conts = task.continuations(doc)
        width = len(conts) * (2 if sends_pair(task) else 1)
        lls = answers[k : k + width : 2 if sends_pair(task) else 1]
        k += width
        per_doc.append(doc_metrics(task.scoring, lls, [False] * len(conts), conts, task.gold(doc)))
    return {metric: float(aggregator(metric)(np.array([d[PER_DOC_KEY[metric]] for d in per_doc])))
            for metric in task.metrics}
