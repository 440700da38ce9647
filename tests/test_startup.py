"""Start-up cost: a run imports neither scipy nor (without its figure) matplotlib nor (with local data) datasets;
the stdlib normal quantiles and tail probabilities that replace scipy's at run time agree with scipy's; only the
program itself pauses the garbage collector around its imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evalkit.stats.significance import unpaired_z_test, z_value

from .conftest import REPO, TOKENIZER_JSON


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_normal_quantiles_agree_with_scipy(confidence):
    from scipy import stats

    assert z_value(confidence) == pytest.approx(float(stats.norm.ppf(0.5 + confidence / 2)), rel=1e-14)


@pytest.mark.parametrize("z", [0.0, 0.3, 1.96, 4.0, 12.0, 35.0])
def test_two_sided_normal_p_values_agree_with_scipy(z):
    from scipy import stats

    assert unpaired_z_test(0.0, 1.0, z, 0.0).p_value == pytest.approx(float(2 * stats.norm.sf(z)), rel=1e-12)


def test_a_run_without_its_figure_imports_neither_scipy_nor_matplotlib_nor_datasets(tmp_path, data_dir):
    code = (
        "import sys\nfrom evalkit.cli.main import main\n"
        f"code = main(['run', '--model', 'random:pythia-14m', '--tokenizer', {str(TOKENIZER_JSON)!r}, "
        f"'--tasks', 'piqa,lambada', '--data-dir', {str(data_dir)!r}, '--limit', '3', '--bootstrap-iters', '20', "
        f"'--no-progress', '--no-figure', '--output-dir', {str(tmp_path)!r}])\n"
        "print(code, 'scipy.stats' in sys.modules, 'matplotlib' in sys.modules, 'datasets' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False False False"  # local data: no datasets either
    [report] = (tmp_path / "reports").glob("*.md")
    assert not list((tmp_path / "reports").glob("*.png")) and ".png" not in report.read_text()
    [results] = (tmp_path / "results").glob("*/*[0-9]Z.json")
    timing = json.loads(results.read_text())["timing"]
    assert timing["load_tokenizer_s"] > 0 and timing["load_model_s"] > 0
    assert timing["shared_context"] is True


def test_the_collector_pauses_around_imports_only_in_the_program(monkeypatch):
    import gc

    from evalkit import import_gc

    frozen = gc.get_freeze_count()
    with import_gc.paused_collection():  # a library caller (this test process): nothing changes
        assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
    monkeypatch.setattr(import_gc, "_program", True)
    made = []
    try:
        with import_gc.paused_collection():
            assert not gc.isenabled()
            made.append([made])  # a new object in a cycle, frozen with the rest when the block ends
        assert gc.isenabled() and gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_program_marks_itself_and_callers_passing_argv_do_not(tmp_path):
    code = ("import gc, sys\nfrom evalkit import import_gc\nfrom evalkit.cli.main import main\n"
            "main(['tasks'])\nprint('gc:', import_gc.in_program(), gc.get_freeze_count())\n"
            "sys.argv = ['evalkit', 'tasks']\nmain()\nprint('gc:', import_gc.in_program(), gc.get_freeze_count() > 0)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert [line for line in out.stdout.splitlines() if line.startswith("gc:")] == ["gc: False 0", "gc: True True"]
