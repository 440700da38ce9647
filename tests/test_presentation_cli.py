"""What the command line says around a verdict or an interrupt: ``check --statistical`` explains a difference that
looks otherwise than its verdict, and an interrupted run prints no progress line after its message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evalkit.cli.main import close_progress_bars, main
from evalkit.regression.check import mcnemar_floor, statistical_reason
from evalkit.reports.compare import PairedRow
from tests.conftest import REPO, TOKENIZER_JSON
from tests.test_check import checked  # noqa: F401 - the fixture: a PIQA copy and a baseline of 6 documents


def _row(p: float, p_holm: float, low: float, high: float, only_a: int | None = 0, only_b: int | None = 0,
         test: str = "McNemar exact") -> PairedRow:
    return PairedRow("piqa", "acc", 100, 0.5, 0.6, 0.1, low, high, test, p, p_holm, p_holm < 0.05, only_a, only_b)


def test_mcnemar_floor_is_two_halves_to_the_discordant_count():
    assert [mcnemar_floor(d) for d in (0, 1, 5, 6)] == [1.0, 1.0, 0.0625, 0.03125]


def test_statistical_reasons():
    # p below alpha alone, not after Holm over 8 rows (20 discordant documents: the test could have rejected)
    assert statistical_reason(_row(0.02, 0.16, 0.01, 0.2, 4, 16), 0.05, 8) == (
        "; ok because of Holm's correction over 8 rows: p 0.02 < 0.05 alone, Holm p 0.16 ≥ 0.05")
    # every one of 4 discordant documents one way: the interval leaves out 0, McNemar cannot reach 0.05
    assert statistical_reason(_row(0.125, 0.125, 0.01, 0.08, 0, 4), 0.05, 1) == (
        "; ok because too few documents differ: 4 discordant, so McNemar's p cannot go below 0.125 ≥ 0.05")
    # a perplexity row (no discordant counts) whose bootstrap interval leaves out 0 while its test does not reject
    assert statistical_reason(_row(0.06, 0.06, 0.5, 3.0, None, None, "paired bootstrap"), 0.05, 1) == (
        "; ok because paired bootstrap does not reject (p 0.06 ≥ 0.05) though the bootstrap interval leaves out 0: "
        "the two disagree near the boundary")
    # nothing looks significant: nothing to explain
    assert statistical_reason(_row(0.4, 0.8, -0.1, 0.2, 5, 7), 0.05, 2) == ""
    # failing rows say they passed Holm, or why they fail with 0 inside the interval
    assert statistical_reason(_row(0.001, 0.002, 0.05, 0.2, 1, 12), 0.05, 2) == (
        "; significant after Holm's correction over 2 rows (0.002 < 0.05)")
    assert statistical_reason(_row(0.01, 0.02, -0.01, 0.2, 1, 12), 0.05, 2) == (
        "; fails though its 95% interval holds 0: McNemar exact rejects (Holm p 0.02 < 0.05) while the bootstrap "
        "percentile interval is wider")


def test_check_line_says_why_a_change_below_alpha_is_ok(checked, tmp_path, capsys):  # noqa: F811
    """A baseline claiming every document right against a random model that misses some: McNemar's p on the
    ``wrong`` discordant documents is 2/2^wrong; with alpha between p and Holm's 2p (two rows: acc and the unchanged
    acc_norm) the row is below alpha alone and ok after the correction, and its line says so."""
    baseline = json.loads((checked / "baseline.json").read_text(encoding="utf-8"))
    task = baseline["tasks"]["piqa_copy"]
    wrong = task["documents"]["acc"].count(0.0)
    assert 1 <= wrong <= 6
    task["documents"]["acc"] = [1.0] * 6
    tampered = tmp_path / "all-right.json"
    tampered.write_text(json.dumps(baseline), encoding="utf-8")
    p = 2 / 2**wrong
    holm = min(1.0, 2 * p)
    alpha = round((p + holm) / 2, 6)
    status = main(["check", "--baseline", str(tampered), "--data-dir", str(checked / "data"), "--output-dir",
                   str(checked / "out"), "--statistical", "--bootstrap-iters", "200", "--alpha", str(alpha)])
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("ok piqa_copy acc: ")]
    assert status == 0
    assert line.endswith(f"McNemar exact p = {p:.3g}, Holm p = {holm:.3g}; ok because of Holm's correction over 2 "
                         f"rows: p {p:.3g} < {alpha:g} alone, Holm p {holm:.3g} ≥ {alpha:g}")


def test_close_progress_bars_closes_a_bar_left_open():
    import io

    from tqdm import tqdm

    stream = io.StringIO()
    bar = tqdm(total=10, file=stream, ascii=True, ncols=60, desc="requests")
    bar.update(3)
    close_progress_bars()
    closed = stream.getvalue()
    assert bar.disable and "3/10" in closed  # closed: its last state drawn now
    bar.close()  # a second close (the traceback's frames freed at exit) draws nothing
    assert stream.getvalue() == closed


def test_interrupted_run_prints_no_progress_after_its_message(tmp_path, data_dir):
    """Ctrl-C while scoring: the run stops with status 130 and the message is the last thing on stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-m", "evalkit", "run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON),
         "--tasks", "piqa,sciq", "--limit", "400", "--no-cache", "--data-dir", str(data_dir), "--output-dir",
         str(tmp_path), "--dtype", "float32", "--device", "cpu"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # the bar's first line says scoring has begun
        line = child.stderr.readline()
        lines.append(line)
        if line.startswith("requests:") or not line:
            break
    assert lines[-1].startswith("requests:"), lines
    time.sleep(3)  # a bar whose elapsed time has moved has a new last line to draw when it is closed
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=120)
    assert child.returncode == 130
    after = rest.split("evalkit: interrupted", 1)
    assert len(after) == 2, rest
    assert "requests:" not in after[1], rest
    assert after[1].splitlines()[1].startswith("evalkit: run again with: ")


def test_compare_folds_a_groups_member_rows_but_never_a_significant_one():
    from evalkit.reports.compare import fold_group_rows

    results = {"tasks": {"a": {}, "b": {}, "c": {}, "piqa": {}},
               "groups": {"fam": {"tasks": ["a", "b", "c"], "metrics": {"acc": {}}},
                          "fam_part": {"tasks": ["a", "b"], "metrics": {"acc": {}}},
                          "listed_only": {"tasks": ["piqa"]}}}  # a group without rows of its own folds nothing

    def row(task: str, metric: str, p_holm: float) -> PairedRow:
        return PairedRow(task, metric, 10, 0.5, 0.5, 0.0, -0.1, 0.1, "McNemar exact", p_holm, p_holm, p_holm < 0.05,
                         1, 1)

    rows = [row("a", "acc", 1.0), row("a", "acc_norm", 0.5), row("b", "acc", 0.01), row("c", "acc", 0.8),
            row("piqa", "acc", 1.0)]
    shown, notes = fold_group_rows(rows, results)
    assert [(r.task, r.metric) for r in shown] == [("b", "acc"), ("piqa", "acc")]
    assert notes == ["fam: 3 of 4 rows of 3 member tasks folded, the 1 significant shown above (smallest Holm p 0.01; "
                     "every row is in the report)"]
    shown, notes = fold_group_rows(rows[:2] + rows[3:], results)
    assert notes == ["fam: 3 rows of 2 member tasks folded, none significant (smallest Holm p 0.5; every row is in the "
                     "report)"]
