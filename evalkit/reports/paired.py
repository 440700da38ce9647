"""Paired comparison of two runs over the documents both scored: per task and metric the difference (second run
minus first) with a paired bootstrap percentile interval, McNemar's exact test for 0/1 metrics and the paired
bootstrap p-value otherwise, Holm-corrected across the rows of the table; an aggregated micro group (MMLU, its
categories) present in both runs gets a row of its own over its member tasks' pooled documents. Runs over the same
documents are compared as they are; a pilot run whose documents all lie among a larger run's (nested subsets) is
compared on those documents, with a note; other documents are refused. Used by ``evalkit compare``
(:mod:`evalkit.reports.compare`) and ``evalkit check --statistical``.

See :mod:`evalkit.stats.significance` for the tests and their sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkit.stats.metrics import aggregator, has_closed_form_stderr, per_doc_values
from evalkit.stats.significance import holm, mcnemar_exact, paired_bootstrap
from evalkit.types import EvalkitError


@dataclass(frozen=True)
class PairedRow:
    """One task and metric of a paired comparison (values in the metric's units; Δ = b - a).

    ``only_a``/``only_b`` count discordant documents (right in one run only) for 0/1 metrics, else None.
    """

    task: str
    metric: str
    n: int
    value_a: float
    value_b: float
    delta: float
    low: float
    high: float
    test: str
    p_value: float
    p_holm: float
    significant: bool
    only_a: int | None
    only_b: int | None
    kind: str = "task"
    """``"task"``, or ``"group"`` for an aggregated group's row over its member tasks' pooled documents."""

    @property
    def name(self) -> str:
        """The row's name as tables print it: the task, or ``mmlu (group)``."""
        return self.task if self.kind == "task" else f"{self.task} (group)"


@dataclass(frozen=True)
class PairedTable:
    """Run b against run a over their common tasks; ``notes`` name tasks left out and differences of prompt, shots,
    tokenizer and tokenization mode."""

    label_a: str
    label_b: str
    path_a: str
    path_b: str
    rows: tuple[PairedRow, ...]
    notes: tuple[str, ...]


def _documents(results: dict[str, Any], task: str, source: str) -> dict[str, list]:
    docs = results["tasks"][task].get("documents")
    if not docs or "doc_id" not in docs:
        raise EvalkitError(f"{source}: task '{task}' has no per-document values ('documents'); re-run it")
    return docs


def check_same_documents(task: str, docs_a: dict[str, list], docs_b: dict[str, list], path_a: str,
                         path_b: str) -> None:
    """Refuse a paired comparison over different documents.

    Raises:
        EvalkitError: naming both files, the task, the sizes and the first differing document.
    """
    ids_a, ids_b = list(docs_a["doc_id"]), list(docs_b["doc_id"])
    if ids_a == ids_b:
        return
    common = len(set(ids_a) & set(ids_b))
    first = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
    raise EvalkitError(
        f"cannot compare task '{task}': {path_a} scored {len(ids_a)} documents and {path_b} scored {len(ids_b)} "
        f"({common} in common; they first differ at position {first}); a paired comparison needs the same "
        f"documents, or one run's all among the other's: run both with the same --seed, or without --limit"
    )


def common_documents(task: str, docs_a: dict[str, list], docs_b: dict[str, list], path_a: str, path_b: str,
                     ) -> tuple[dict[str, list], dict[str, list], str | None]:
    """Both runs' per-document values of ``task`` on the documents they share, in the smaller run's order, when one
    run's documents all lie in the other's (nested subsets: ``--limit 100`` and ``--limit 1000`` with one seed draw
    the first 100 of the same permutation, docs/subsets.md); with the note saying so. The same documents: both
    unchanged, no note.

    Raises:
        EvalkitError: documents that are neither the same nor nested (:func:`check_same_documents`).
    """
    ids_a, ids_b = list(docs_a["doc_id"]), list(docs_b["doc_id"])
    if ids_a == ids_b:
        return docs_a, docs_b, None
    small, large = (ids_a, ids_b) if len(ids_a) <= len(ids_b) else (ids_b, ids_a)
    if len(set(small)) != len(small) or not set(small) <= set(large) or len(small) == len(large):
        check_same_documents(task, docs_a, docs_b, path_a, path_b)
    keep = small

    def restrict(docs: dict[str, list]) -> dict[str, list]:
        where = {doc_id: i for i, doc_id in enumerate(docs["doc_id"])}
        rows = [where[doc_id] for doc_id in keep]
        return {key: [values[i] for i in rows] if isinstance(values, list) and len(values) == len(where) else values
                for key, values in docs.items()}

    note = (f"{task}: compared on the {len(keep)} documents both runs scored (A {len(ids_a)}, B {len(ids_b)}: "
            f"nested subsets); the A and B columns are those documents' values, not each run's own result")
    return restrict(docs_a), restrict(docs_b), note


def generation_notes(task: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Notes on a generation task whose two runs generated under other settings: the stop strings (``until``), the
    token budget (``max_new_tokens``) or the filters (the ``metric,filter`` rows of one run only, which are not
    compared). Empty for a log-likelihood task or equal settings.

    A generation task's ``prompt_sha256`` covers its contexts, stop strings and budget together, so when the
    settings differ the contexts cannot be told apart from them: the note says the prompts may differ as well.
    """
    if "generate_until" not in (a.get("output_type"), b.get("output_type")):
        return []
    notes = []
    changed = [f"{key} {a[key]!r} vs {b[key]!r}" for key in ("until", "max_new_tokens")
               if key in a and key in b and a[key] != b[key]]  # a baseline's task entry records neither
    if changed:
        same_prompt = a.get("prompt_sha256") == b.get("prompt_sha256")
        notes.append(f"{task}: the generation settings differ ({'; '.join(changed)})"
                     + ("" if same_prompt else ", and the prompt hash, which covers them, may also hide other "
                        "prompt changes") + ", so Δ mixes the model and the generation settings")
    only = [(label, sorted(set(x["metrics"]) - set(y["metrics"]))) for label, x, y in (("A", a, b), ("B", b, a))]
    if any(rows for _, rows in only):
        notes.append(f"{task}: the filters differ; rows of one run only are not compared ("
                     + "; ".join(f"{label}: {', '.join(rows)}" for label, rows in only if rows) + ")")
    return notes


def paired_table(
    a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str], paths: tuple[str, str], iters: int = 10000,
    seed: int = 1234, alpha: float = 0.05, confidence: float = 0.95, nested: bool = True,
) -> PairedTable:
    """Paired comparison of run b against run a over every task and metric they share, then over every aggregated
    group they share (:func:`_group_rows`). With ``nested`` (``evalkit compare``), a task whose documents in one run
    all lie among the other's is compared on those documents, with a note (:func:`common_documents`); without it
    (``evalkit check``), only the same documents are compared.

    Raises:
        EvalkitError: no common task, or a common task scored on documents neither the same nor nested.
    """
    common = [t for t in a["tasks"] if t in b["tasks"]]
    if not common:
        raise EvalkitError(f"{paths[0]} and {paths[1]} share no task: nothing to compare")
    notes = [f"only in {lab}: {', '.join(t for t in r['tasks'] if t not in common)}"
             for lab, r in zip(labels, (a, b)) if any(t not in common for t in r["tasks"])]
    tokenizer_note = _tokenizer_note(a, b)
    if tokenizer_note:
        notes.append(tokenizer_note)
    rows: list[dict[str, Any]] = []
    documents: dict[str, tuple[dict[str, list], dict[str, list]]] = {}
    for task in common:
        docs_a, docs_b = _documents(a, task, paths[0]), _documents(b, task, paths[1])
        if nested:
            docs_a, docs_b, shared = common_documents(task, docs_a, docs_b, *paths)
            if shared:
                notes.append(shared)
        else:
            check_same_documents(task, docs_a, docs_b, *paths)
        documents[task] = docs_a, docs_b
        settings = generation_notes(task, a["tasks"][task], b["tasks"][task])
        notes += settings
        if a["tasks"][task]["prompt_sha256"] != b["tasks"][task]["prompt_sha256"] and not settings:
            notes.append(f"{task}: the prompts differ (version {a['tasks'][task]['version']} vs "
                         f"{b['tasks'][task]['version']}), so Δ mixes the model and the prompt")
        shots = [r["tasks"][task].get("num_fewshot", 0) for r in (a, b)]
        if shots[0] != shots[1]:
            notes.append(f"{task}: A is {shots[0]}-shot and B {shots[1]}-shot, so Δ mixes the model and the shots")
        modes = [_tokenization(r, task) for r in (a, b)]
        if modes[0] != modes[1]:
            notes.append(f"{task}: A is tokenized {modes[0]} and B {modes[1]}, so Δ mixes the model and the "
                         "tokenization")
        for metric in a["tasks"][task]["metrics"]:
            if metric not in b["tasks"][task]["metrics"]:
                continue
            xa, xb = per_doc_values(metric, docs_a), per_doc_values(metric, docs_b)
            rows.append(_paired_row(task, metric, xa, xb, iters, seed, confidence))
    group_rows, group_notes = _group_rows(a, b, common, documents, iters, seed, confidence)
    rows += group_rows
    notes += group_notes
    adjusted = holm([r["p_value"] for r in rows])
    final = tuple(PairedRow(**r, p_holm=p, significant=p < alpha) for r, p in zip(rows, adjusted))
    return PairedTable(labels[0], labels[1], paths[0], paths[1], final, tuple(notes))


def _paired_row(name: str, metric: str, xa: np.ndarray, xb: np.ndarray, iters: int, seed: int, confidence: float,
                kind: str = "task") -> dict[str, Any]:
    """One row of a paired table (without its Holm p): the paired bootstrap interval of Δ, and McNemar's exact test
    for a 0/1 metric (the paired bootstrap p otherwise), over documents aligned in ``xa`` and ``xb``."""
    statistic = aggregator(metric)
    boot = paired_bootstrap(xa, xb, statistic, iters, seed, confidence)
    row = {"task": name, "metric": metric, "n": int(xa.shape[0]), "value_a": float(statistic(xa)),
           "value_b": float(statistic(xb)), "delta": boot.delta, "low": boot.low, "high": boot.high,
           "test": "paired bootstrap", "p_value": boot.p_value, "only_a": None, "only_b": None, "kind": kind}
    if has_closed_form_stderr(metric):
        exact = mcnemar_exact(xa, xb)
        row.update(test="McNemar exact", p_value=exact.p_value, only_a=exact.only_a, only_b=exact.only_b)
    return row


def _group_rows(a: dict[str, Any], b: dict[str, Any], common: list[str],
                documents: dict[str, tuple[dict[str, list], dict[str, list]]], iters: int, seed: int,
                confidence: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the aggregated groups of run a (MMLU and its categories): a micro group's value is the mean over
    its member tasks' pooled documents, so when both runs aggregated it over the same member tasks (each already
    checked to hold the same documents) it is tested as one task over those pooled documents, in the same Holm
    family as the tasks (``documents``: per task, both runs' per-document values as compared). Otherwise a note says
    why the group has no row.

    Returns:
        (rows without their Holm p, notes).
    """
    rows, notes = [], []
    groups_a = {n: g for n, g in (a.get("groups") or {}).items() if g.get("metrics")}
    groups_b = {n: g for n, g in (b.get("groups") or {}).items() if g.get("metrics")}
    only_b = [n for n in groups_b if n not in groups_a]
    if only_b:
        notes.append(f"group{'s' if len(only_b) > 1 else ''} {', '.join(only_b)}: aggregated in B only, so "
                     f"{'they have' if len(only_b) > 1 else 'it has'} no paired row")
    for name, group in groups_a.items():
        other = groups_b.get(name)
        if other is None:
            notes.append(f"group {name}: aggregated in A only, so it has no paired row")
            continue
        members = [t for t in group.get("tasks", ()) if t in a["tasks"]]
        if members != [t for t in other.get("tasks", ()) if t in b["tasks"]] or any(t not in common for t in members):
            notes.append(f"group {name}: its member tasks differ between A and B, so it has no paired row")
            continue
        if (group.get("aggregation"), other.get("aggregation")) != ("micro", "micro"):
            notes.append(f"group {name}: a {group.get('aggregation')} mean of its tasks in A and "
                         f"{other.get('aggregation')} in B; only a micro mean (over pooled documents) is tested "
                         "paired here, so it has no paired row")
            continue
        for metric in [m for m in group["metrics"] if m in other["metrics"]]:
            xa = np.concatenate([per_doc_values(metric, documents[t][0]) for t in members])
            xb = np.concatenate([per_doc_values(metric, documents[t][1]) for t in members])
            rows.append(_paired_row(name, metric, xa, xb, iters, seed, confidence, kind="group"))
    return rows, notes


def _tokenization(run: dict[str, Any], task: str) -> str:
    """A task's tokenization mode (``separate`` or ``joint``): the task's own record, or for files written before
    it was recorded per task, the run's ``--tokenization``."""
    recorded = run["tasks"][task].get("tokenization")
    if isinstance(recorded, str):
        return recorded
    extra = run.get("config", {}).get("extra")
    return str(extra.get("tokenization", "separate")) if isinstance(extra, dict) else "separate"


def _tokenizer_note(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """A note when the runs used different tokenizers (by content digest where both files record one, else by
    name): the same documents were then split into other tokens, and Δ is not the model's alone. None also when
    either side records no tokenizer (``evalkit check`` hands in a baseline shaped like results without one)."""
    ta, tb = a.get("tokenizer"), b.get("tokenizer")
    if not isinstance(ta, dict) or not isinstance(tb, dict):
        return None
    digests = ta.get("sha256"), tb.get("sha256")
    differ = digests[0] != digests[1] if all(isinstance(d, str) for d in digests) else ta["name"] != tb["name"]
    if not differ:
        return None
    shown = [f"{t['name']}, sha256 {t['sha256'][:12]}" if isinstance(t.get("sha256"), str) else t["name"]
             for t in (ta, tb)]
    return f"A and B use different tokenizers ({shown[0]} vs {shown[1]}), so Δ mixes the model and the tokenizer"
