"""An installed wheel carries the built-in tasks, presets, references and the report template."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from .conftest import REPO


def test_wheel_carries_tasks_and_runs_from_outside_the_checkout(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    [wheel] = tmp_path.glob("evalkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for task in ("lambada_openai", "sciq", "piqa", "arc_challenge", "triviaqa", "neox20b_card"):
        assert f"evalkit/builtin_tasks/{task}.py" in names
    assert {"evalkit/model_presets.json", "evalkit/references/neox20b_card.json",
            "evalkit/reports/templates/report.md.j2", "evalkit/reports/templates/compare.md.j2"} <= names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-m", "evalkit", "tasks"], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert "triviaqa: mandarjoshi/trivia_qa unfiltered.nocontext validation n=11313; acc" in out
    check = "import evalkit.tasks.registry as r; print(r.builtin_task_dir())"
    where = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    assert where == str(site / "evalkit" / "builtin_tasks")
