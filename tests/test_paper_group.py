"""The ``neox20b_paper`` group: its list equals SPEC-suite B.0's registry names and the card's five; groups naming
unknown tasks are refused when selected."""

from __future__ import annotations

import re

import pytest

from evalkit.tasks.registry import load_registry
from evalkit.types import EvalkitError
from tasks import neox20b_paper
from tests.conftest import DATA_DIR

SPEC_SUITE = DATA_DIR.parent / "SPEC-suite.md"


def spec_b0_names() -> set[str]:
    """Registry names of SPEC-suite B.0's table, brace and ``_suffix`` shorthands expanded, MMLU from Part C."""
    text = SPEC_SUITE.read_text(encoding="utf-8")
    b0 = text.split("## B.0 Summary", 1)[1].split("\n## ", 1)[0]
    part_c = text.split("# Part C", 1)[1].split("### C.1", 1)[0]
    subjects = [m.group(1) for m in re.finditer(r"^\| `([a-z_]+)` \| \d+ \|", part_c, re.M)]
    assert len(subjects) == 57
    names: set[str] = set()
    for line in b0.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1].split(" (")[0]  # "(`headqa` = Spanish, deprecated; ...)" is not evaluated
        cell_names = re.findall(r"`([^`]+)`", first_cell)
        for name in cell_names:
            if name.startswith("_"):  # "`qa4mre_2011`, `_2012`": the first name's prefix
                name = cell_names[0].rsplit("_", 1)[0] + name
            brace = re.fullmatch(r"(.*)\{(.*)\}(.*)", name)
            if brace and brace.group(2) == "subject":
                names |= {f"{brace.group(1)}{s}{brace.group(3)}" for s in subjects}
            elif brace:
                names |= {f"{brace.group(1)}{part}{brace.group(3)}" for part in brace.group(2).split(",")}
            else:
                names.add(name)
    return names


def test_paper_list_is_spec_b0_plus_the_card_with_lambada_as_lambada_openai():
    b0 = spec_b0_names()
    assert len(b0) == 92 and "lambada" in b0 and "headqa_es" not in b0 and "qa4mre_2013" in b0
    card = set(load_registry().groups["neox20b_card"].tasks)  # SPEC.md's five; B.0 restates only lambada
    expected = (b0 - {"lambada"}) | card  # v0.2.0's lambada is OpenAI's LAMBADA, evalkit's lambada_openai
    tasks = neox20b_paper.PAPER_TASKS
    assert len(tasks) == len(set(tasks)) == 103
    assert set(tasks) == expected | set(neox20b_paper.MATH_TASKS)  # MATH: generation, outside B.0's table
    assert tasks[:5] == ("lambada_openai", "sciq", "piqa", "triviaqa", "arc_challenge")


def test_paper_group_members_exist_or_belong_to_the_multiple_choice_and_mmlu_files():
    registry = load_registry()
    group = registry.groups["neox20b_paper"]
    assert group.tasks == neox20b_paper.PAPER_TASKS and group.aggregation is None
    defined_elsewhere = set(neox20b_paper.MULTIPLE_CHOICE_TASKS) | {
        f"hendrycksTest-{s}" for s in neox20b_paper.MMLU_SUBJECTS}
    assert set(registry.unknown_members("neox20b_paper")) <= defined_elsewhere
    here = neox20b_paper.CARD_TASKS + neox20b_paper.ARITHMETIC_TASKS + ("wikitext",) + neox20b_paper.MATH_TASKS
    assert [t.name for t in registry.expand(here)] == list(here)


def test_a_group_naming_unknown_tasks_is_refused_when_selected_only(tmp_path):
    (tmp_path / "broken_group.py").write_text(
        "from evalkit.types import TaskGroup\n"
        "GROUP = TaskGroup('broken', ('piqa', 'no_such_task', 'arithmetic_2da', 'nor_this'))\n", encoding="utf-8")
    registry = load_registry([str(tmp_path)])
    assert [t.name for t in registry.expand(["piqa", "arithmetic"])][:2] == ["piqa", "arithmetic_2da"]
    assert registry.unknown_members("broken") == ["no_such_task", "nor_this"]
    with pytest.raises(EvalkitError) as caught:
        registry.expand(["sciq", "broken"])
    assert str(caught.value) == (f"group 'broken' ({tmp_path / 'broken_group.py'}) names 2 unknown tasks: "
                                 f"no_such_task, nor_this")


def test_tasks_command_marks_a_group_that_cannot_be_selected(tmp_path, capsys):
    from evalkit.cli.main import main

    (tmp_path / "broken_group.py").write_text(
        "from evalkit.types import TaskGroup\nGROUP = TaskGroup('broken', ('piqa', 'no_such_task'))\n", encoding="utf-8")
    assert main(["tasks", "--include-path", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "broken (group): piqa, no_such_task [not selectable: 1 of its tasks are not defined]" in lines
    assert "neox20b_card (group): lambada_openai, sciq, piqa, triviaqa, arc_challenge" in lines
