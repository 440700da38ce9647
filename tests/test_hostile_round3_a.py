"""Hostile inputs, third round: each used to give a silent wrong number or a traceback; each now gives the right
number, a loud warning, or one clear message naming the file, row and field (or flag) before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.types import EvalkitError, RunConfig
from tests.conftest import DATA_DIR, TOKENIZER_JSON
from tests.test_bad_input import edit, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def first_lines(task: str, split: str, n: int = 3) -> list[bytes]:
    """The first ``n`` lines of a real split, as bytes with their newlines."""
    with open(DATA_DIR / task / f"{split}.jsonl", "rb") as handle:
        return [next(handle) for _ in range(n)]


# --- case 2: duplicate or reordered choice labels make the gold position ambiguous --------------------------------

def _labels(labels, key):
    def change(doc):
        doc["choices"]["label"] = labels
        doc["answerKey"] = key
    return change


LABEL_CASES = [
    ("arc_challenge_duplicate", "arc_challenge", _labels(["A", "A", "B", "C"], "A"),
     "field 'choices.label': label 'A' is given to choices 0 and 1; the answer key would be ambiguous"),
    ("arc_easy_duplicate", "arc_easy", _labels(["A", "A", "B", "C"], "B"),
     "field 'choices.label': label 'A' is given to choices 0 and 1; the answer key would be ambiguous"),
    ("openbookqa_duplicate", "openbookqa", _labels(["A", "A", "B", "C"], "C"),
     "field 'choices.label': label 'A' is given to choices 0 and 1; the answer key would be ambiguous"),
    ("arc_easy_reordered", "arc_easy", _labels(["B", "A", "C", "D"], "A"),
     "field 'choices.label': ['B', 'A', 'C', 'D'] is not A, B, C, ... (or 1, 2, 3, ...) in order; the gold position "
     "is taken from the key's letter, so it would not be the labelled choice"),
    ("openbookqa_reordered", "openbookqa", _labels(["B", "A", "C", "D"], "A"),
     "field 'choices.label': ['B', 'A', 'C', 'D'] is not A, B, C, D in order; the gold position is taken from the "
     "key's letter, so it would not be the labelled choice"),
]


@pytest.mark.parametrize("task, change, message", [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_duplicate_or_reordered_choice_labels_are_refused_naming_file_row_and_field(capsys, tmp_path, task, change,
                                                                                     message):
    data = tmp_path / "data"
    path = data / task / "test.jsonl"
    path.parent.mkdir(parents=True)
    lines = first_lines(task, "test")
    path.write_bytes(b"".join([lines[0], edit(lines[1], change), lines[2]]))
    status, err = run_cli(capsys, tmp_path, "--limit", "3", tasks=task, data_dir=data)
    assert status == 2
    assert err == [f"evalkit: error: {path} line 2: {message}"]


def test_a_winogrande_sentence_with_two_blanks_is_refused(capsys, tmp_path):
    data = tmp_path / "data"
    path = data / "winogrande" / "validation.jsonl"
    path.parent.mkdir(parents=True)
    lines = first_lines("winogrande", "validation")
    bad = edit(lines[2], lambda d: d.update(sentence=d["sentence"].replace("_", "_ or _", 1)))
    path.write_bytes(b"".join([lines[0], lines[1], bad]))
    status, err = run_cli(capsys, tmp_path, "--limit", "3", tasks="winogrande", data_dir=data)
    assert status == 2
    assert err == [f"evalkit: error: {path} line 3: field 'sentence': 2 blanks '_'; which one the options fill "
                   f"would be a guess"]
