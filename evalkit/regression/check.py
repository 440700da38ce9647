"""``evalkit check``: re-run a baseline's exact configuration and report every difference.

Exact mode (the CI regression check) fails when, for any task,

* the documents differ (other ids: a changed ``--limit`` subset or data split),
* the prompt changed (``prompt_sha256``; the first changed requests are named, context or continuation),
* a request whose text is unchanged moved its log-likelihood beyond the baseline's tolerance, or flipped its
  greedy flag,
* a generation request changed (context token ids, stop strings, ``max_new_tokens``), or an unchanged one generated
  another text or stopped for another reason (exact comparison: a greedy generation has no tolerance),
* an aggregate metric moved beyond the tolerance (a perplexity: beyond what log-likelihoods within their
  tolerance can move it), or the task's version changed.

``--statistical`` (for real model updates) fails only when a paired test finds a significant change of a
metric (McNemar's exact test for 0/1 metrics, paired bootstrap for perplexity, Holm-corrected over all tasks
and metrics; see :mod:`evalkit.reports.compare`); a row that looks otherwise than its verdict (p below alpha
alone, an interval without 0) says why (:func:`statistical_reason`). Every difference is listed; identity and
version changes that may explain them are shown as notes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalkit.data.documents import SUBSET_RULE
from evalkit.regression.baseline import Tolerance, config_from_baseline, load_baseline, read_samples, request_records
from evalkit.reports.compare import check_test_options, paired_table
from evalkit.stats.metrics import ROLLING_METRICS
from evalkit.regression.generation_freeze import GENERATION_COLUMNS, generation_diffs, run_with_generations
from evalkit.types import EvalkitError

SHOWN_PER_KIND = 5
"""Differences of one kind listed per task before the rest are counted."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of ``evalkit check``: ``passed``, the report's lines (failures, notes, summary), the new results and
    the re-run's Markdown report (None when it could not be written)."""

    passed: bool
    lines: tuple[str, ...]
    results_path: Path
    report_path: Path | None = None


def _short(text: str, width: int = 70) -> str:
    text = repr(text)
    return text if len(text) <= width else f"{text[: width // 2 - 2]} … {text[-(width // 2 - 2):]}"


def _listed(kind: str, items: list[str]) -> list[str]:
    shown = [f"  {kind}: {item}" for item in items[:SHOWN_PER_KIND]]
    if len(items) > SHOWN_PER_KIND:
        shown.append(f"  {kind}: … and {len(items) - SHOWN_PER_KIND} more")
    return shown


def _request_diffs(task: str, old: dict[str, list], new: dict[str, list], contexts: dict[int, str],
                   tolerance: Tolerance) -> list[str]:
    """Failure lines for one task whose documents match: prompt, log-likelihood and greedy differences."""
    lines = []
    old_keys = list(zip(old["doc_id"], old["choice_index"]))
    new_at = {key: i for i, key in enumerate(zip(new["doc_id"], new["choice_index"]))}
    changed, moved, flipped = [], [], []
    for i, key in enumerate(old_keys):
        j = new_at.get(key)
        where = f"doc {key[0]} choice {key[1]}"
        if j is None:
            changed.append(f"{where} no longer exists")
            continue
        parts = [name for name, col in (("context", "context_sha"), ("continuation", "continuation_sha"))
                 if old[col][i] != new[col][j]]
        if parts:
            changed.append(f"{where}: {' and '.join(parts)} changed; context now {_short(contexts[key[0]])}")
            continue
        a, b = old["loglikelihood"][i], new["loglikelihood"][j]
        if not tolerance.loglikelihood_ok(a, b):
            moved.append(f"{where}: {a:.6f} -> {b:.6f} nats (Δ {b - a:+.6f})")
        if old["greedy"][i] != new["greedy"][j]:
            flipped.append(f"{where}: {old['greedy'][i]} -> {new['greedy'][j]}")
    added = len(set(new_at) - set(old_keys))
    if added:
        changed.append(f"{added} new requests")
    if changed:
        lines.append(f"FAIL {task}: prompt changed: {len(changed)} of {len(old_keys)} requests differ")
        lines += _listed("request", changed)
    if moved:
        limit = f"{tolerance.loglikelihood_atol:g} + {tolerance.loglikelihood_rtol:g}·|ll|"
        lines.append(f"FAIL {task}: {len(moved)} log-likelihoods moved beyond {limit} nats")
        lines += _listed("log-likelihood", moved)
    if flipped:
        lines.append(f"FAIL {task}: {len(flipped)} greedy flags changed")
        lines += _listed("greedy", flipped)
    return lines


def subset_rule_of(baseline: dict[str, Any]) -> int:
    """The ``--limit`` draw rule a baseline was made with: its config's ``subset_rule``, 1 when absent (baselines
    written before the rule was recorded drew with rule 1; :data:`evalkit.data.documents.SUBSET_RULE`)."""
    return int(baseline["config"].get("subset_rule", 1))


def _task_diffs(name: str, old: dict[str, Any], new: dict[str, Any] | None, samples: list[dict[str, Any]],
                tolerance: Tolerance, generations: dict[str, list] | None = None, old_rule: int = SUBSET_RULE,
                limited: bool = False) -> list[str]:
    """Failure lines of one task in exact mode (``generations``: a generation task's new frozen columns).
    ``old_rule`` is the baseline's ``--limit`` draw rule and ``limited`` whether it ran with ``--limit``: other
    documents under another rule are one line that says so."""
    if new is None:
        return [f"FAIL {name}: missing from the new run"]
    lines = []
    if old["version"] != new["version"]:
        lines.append(f"FAIL {name}: task version {old['version']} -> {new['version']}")
    if old["documents"]["doc_id"] != new["documents"]["doc_id"] and limited and old_rule != SUBSET_RULE:
        return lines + [f"FAIL {name}: subset draw changed (rule v{old_rule} -> v{SUBSET_RULE}): documents differ; "
                        f"the baseline predates the nested --limit draw: rebuild it with `evalkit baseline` "
                        f"(its equivalent_run flags)"]
    if old["documents"]["doc_id"] != new["documents"]["doc_id"]:
        return lines + [f"FAIL {name}: different documents ({len(old['documents']['doc_id'])} in the baseline, "
                        f"{len(new['documents']['doc_id'])} now): the data or the --limit subset changed"]
    if old["prompt_sha256"] != new["prompt_sha256"]:
        lines.append(f"FAIL {name}: prompt_sha256 {old['prompt_sha256'][:12]}… -> {new['prompt_sha256'][:12]}…")
    if old.get("output_type") == "generate_until":
        lines += generation_diffs(name, old["requests"], generations or {k: [] for k in GENERATION_COLUMNS},
                                  SHOWN_PER_KIND)
    else:
        contexts = {row["doc_id"]: row["context"] for row in samples}
        lines += _request_diffs(name, old["requests"], request_records(samples), contexts, tolerance)
    for metric, value in old["metrics"].items():
        now = new["metrics"].get(metric, {}).get("value")
        if metric == "perplexity":
            unchanged = now is not None and tolerance.perplexity_ok(value["value"], now,
                                                                    old["documents"].get("loglikelihood", []))
        elif metric in ROLLING_METRICS:
            unchanged = now is not None and tolerance.ratio_ok(metric, value["value"], now, old["documents"])
        else:
            unchanged = now is not None and tolerance.metric_ok(value["value"], now)
        if now is None:
            lines.append(f"FAIL {name} {metric}: missing from the new run")
        elif not unchanged:
            lines.append(f"FAIL {name} {metric}: {value['value']:.6g} -> {now:.6g} (Δ {now - value['value']:+.6g})")
    return lines


def _notes(baseline: dict[str, Any], results: dict[str, Any]) -> list[str]:
    notes = []
    for key in ("name", "config_sha256", "dtype", "device"):
        if baseline["model"].get(key) != results["model"].get(key):
            notes.append(f"note: model {key} {baseline['model'].get(key)} -> {results['model'].get(key)}")
    if baseline.get("tokenizer", {}).get("sha256") != results["tokenizer"].get("sha256"):
        notes.append("note: the tokenizer file differs from the baseline's (sha256)")
    for lib, version in baseline["versions"].items():
        if results["versions"].get(lib) != version:
            notes.append(f"note: {lib} {version} -> {results['versions'].get(lib)}")
    return notes


def mcnemar_floor(discordant: int) -> float:
    """The smallest two-sided p-value McNemar's exact test can give on ``discordant`` documents (every one on the
    same side): 2·0.5^d, at most 1. With 5 or fewer discordant documents it is at least 0.0625, so no change can
    be significant at alpha 0.05, whatever its size."""
    return min(1.0, 2.0 * 0.5 ** discordant)


def statistical_reason(row: Any, alpha: float, rows: int) -> str:
    """Why ``check --statistical`` calls a row what it does when the row looks otherwise, or an empty string.

    A row looks significant when its own p-value is below ``alpha`` or its 95% interval leaves out 0; the check
    decides on the Holm-corrected p over all ``rows`` (:func:`evalkit.stats.significance.holm`). Reasons, first
    match: an ok row whose McNemar test had too few discordant documents to reach ``alpha``
    (:func:`mcnemar_floor`); an ok row whose p is below ``alpha`` alone but not after Holm's correction; an ok row
    whose interval leaves out 0 while its test does not reject (the bootstrap interval and the test disagree near
    the boundary); a failing row whose interval holds 0 (the test rejects, the percentile interval does not).

    Args:
        row: a :class:`evalkit.reports.compare.PairedRow`.
        alpha: the family-wise level.
        rows: how many rows the correction ran over.
    """
    excludes_zero = row.low > 0 or row.high < 0
    if row.significant:
        if not excludes_zero:
            return (f"; fails though its 95% interval holds 0: {row.test} rejects (Holm p {row.p_holm:.3g} < "
                    f"{alpha:g}) while the bootstrap percentile interval is wider")
        return f"; significant after Holm's correction over {rows} rows ({row.p_holm:.3g} < {alpha:g})"
    if not (row.p_value < alpha or excludes_zero):
        return ""
    if row.only_a is not None and mcnemar_floor(row.only_a + row.only_b) >= alpha:
        discordant = row.only_a + row.only_b
        return (f"; ok because too few documents differ: {discordant} discordant, so McNemar's p cannot go below "
                f"{mcnemar_floor(discordant):.3g} ≥ {alpha:g}")
    if row.p_value < alpha:
        return (f"; ok because of Holm's correction over {rows} rows: p {row.p_value:.3g} < {alpha:g} alone, "
                f"Holm p {row.p_holm:.3g} ≥ {alpha:g}")
    return (f"; ok because {row.test} does not reject (p {row.p_value:.3g} ≥ {alpha:g}) though the bootstrap "
            f"interval leaves out 0: the two disagree near the boundary")


def _statistical(baseline: dict[str, Any], results: dict[str, Any], path: str, new_path: str, alpha: float,
                 iters: int, seed: int) -> tuple[bool, list[str]]:
    shaped = {"tasks": baseline["tasks"]}
    try:
        table = paired_table(shaped, results, ("baseline", "new run"), (path, new_path), iters, seed, alpha,
                             nested=False)
    except EvalkitError as exc:
        return False, [f"FAIL {exc}"]
    lines = [f"note: {n}" for n in table.notes]
    for r in table.rows:
        verdict = "FAIL" if r.significant else "ok"
        lines.append(f"{verdict} {r.task} {r.metric}: {r.value_a:.6g} -> {r.value_b:.6g} (Δ {r.delta:+.4g}, "
                     f"95% CI [{r.low:+.4g}, {r.high:+.4g}]); {r.test} p = {r.p_value:.3g}, Holm p = {r.p_holm:.3g}"
                     f"{statistical_reason(r, alpha, len(table.rows))}")
    return not any(r.significant for r in table.rows), lines


def run_check(
    baseline_path: str | Path, data_dir: str | None, output_dir: str = ".", statistical: bool = False,
    alpha: float = 0.05, bootstrap_iters: int = 10000, model: str | None = None, tokenizer: str | None = None,
    include_paths: list[str] | None = None,
) -> CheckResult:
    """Re-run a baseline's configuration and compare the new run with it.

    Args:
        baseline_path: the baseline JSON (see :mod:`evalkit.regression.baseline`).
        data_dir: folder resolving the baseline's ``{data_dir}`` paths and holding the task data.
        output_dir: where the new run's results, samples and report go (kept for inspection).
        statistical: fail only on significant paired changes instead of any difference.
        alpha: family-wise significance level (``statistical`` only).
        bootstrap_iters: paired bootstrap resamples (``statistical`` only).
        model: another model spec to test against the baseline (``statistical`` use).
        tokenizer, include_paths: replace the baseline's tokenizer and task folders (paths outside its data folder
            are stored as written and may not exist in another checkout).

    Raises:
        EvalkitError: an unreadable baseline, missing data, ``--alpha`` or ``--bootstrap-iters`` out of range
            (``statistical``), or any error of the run itself.
    """
    path = Path(baseline_path)
    if statistical:  # before the run; the bootstrap seed is the baseline's, which the run itself checks
        check_test_options(bootstrap_iters, 0, alpha)
    baseline = load_baseline(path)
    tolerance = Tolerance(**baseline["tolerance"])
    config = config_from_baseline(baseline, path, data_dir, output_dir, model, tokenizer, include_paths)
    config = replace(config, extra={**config.extra, "figure": False})  # a check's report is read as text
    frozen = run_with_generations(config)
    done = frozen.output
    results = done.results
    notes = _notes(baseline, results)
    if statistical:
        passed, lines = _statistical(baseline, results, str(path), str(done.results_path), alpha, bootstrap_iters,
                                     config.seed)
        summary = ("check passed: no significant change" if passed else "check failed: significant change")
        return CheckResult(passed, tuple(lines + notes + [f"{summary} (Holm, alpha {alpha}) against {path}"]),
                           done.results_path, done.report_path)
    samples = read_samples(done.samples_path)
    failures: list[str] = []
    failed_tasks = 0
    for name, old in baseline["tasks"].items():
        lines = _task_diffs(name, old, results["tasks"].get(name), samples.get(name, []), tolerance,
                            frozen.generations.get(name), subset_rule_of(baseline), config.limit is not None)
        failures += lines
        failed_tasks += bool(lines)
    unbaselined = [name for name in results["tasks"] if name not in baseline["tasks"]]
    for name in unbaselined:  # the config still runs it: a task deleted from the file must not pass unchecked
        failures.append(f"FAIL {name}: run by the baseline's config but missing from its tasks (an edited baseline?)")
    failed_tasks += len(unbaselined)
    n_requests = sum(len(t["requests"]["doc_id"]) for t in baseline["tasks"].values())
    if failures:
        summary = (f"check failed: {failed_tasks} of {len(baseline['tasks']) + len(unbaselined)} tasks differ from "
                   f"{path}")
        return CheckResult(False, tuple(failures + notes + [summary]), done.results_path, done.report_path)
    summary = (f"check passed: {len(baseline['tasks'])} tasks, {n_requests} requests match {path} "
               f"(log-likelihoods within {tolerance.loglikelihood_atol:g} + {tolerance.loglikelihood_rtol:g}·|ll| "
               f"nats; greedy flags, {'generated texts, ' if frozen.generations else ''}prompts and metrics "
               f"unchanged)")
    return CheckResult(True, tuple(notes + [summary]), done.results_path, done.report_path)
