"""Groups whose members were scored at different few-shot counts: the group's row pools documents of different
prompts, so the run says so (log and results warnings) before the model loads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from evalkit.types import RunConfig
from tests.conftest import DATA_DIR, TOKENIZER_JSON

pytestmark = pytest.mark.usefixtures("one_thread")
FAMILY = Path(__file__).parent / "task_yaml" / "evalkit"


def _run(tmp_path: Path, tasks: tuple[str, ...], overrides: dict[str, int]):
    from evalkit.run.pipeline import run

    config = RunConfig(model="random:pythia-14m", tasks=tasks, tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(DATA_DIR), include_paths=(str(FAMILY),), limit=3, bootstrap_iters=0,
                       fewshot_overrides=overrides, output_dir=str(tmp_path / "out"), use_cache=False)
    return run(config, progress=False, write=False).results


def test_a_group_with_members_at_different_shots_is_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        results = _run(tmp_path, ("arc_yaml", "arc_easy_yaml"), {"arc_easy_yaml": 2})
    assert results["tasks"]["arc_easy_yaml"]["num_fewshot"] == 2
    assert results["tasks"]["arc_challenge_yaml"]["num_fewshot"] == 0
    expected = ("group arc_yaml pools tasks scored at different few-shot counts (arc_challenge_yaml 0-shot, "
                "arc_easy_yaml 2-shot): its row mixes prompts; give the group one count (--tasks arc_yaml:K)")
    assert expected in results["warnings"]
    assert expected in caplog.messages
    assert "arc_yaml" in results["groups"]


def test_a_group_at_one_count_has_no_such_warning(tmp_path):
    results = _run(tmp_path, ("arc_yaml",), {"arc_yaml": 1})
    assert {t["num_fewshot"] for t in results["tasks"].values()} == {1}
    assert not [w for w in results["warnings"] if "few-shot counts" in w]
