"""Every kind of bad input stops the run with one clear message (file, line, field) and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from evalkit.cli.main import main
from tests.conftest import DATA_DIR, TOKENIZER_JSON

pytestmark = pytest.mark.usefixtures("one_thread")

SPLITS = {"piqa": "validation", "arc_challenge": "test", "triviaqa": "validation", "sciq": "test",
          "lambada_openai": "test"}


def real_lines(task: str, n: int = 3) -> list[bytes]:
    """The first ``n`` lines of a real split, as bytes with their newlines."""
    with open(DATA_DIR / task / f"{SPLITS[task]}.jsonl", "rb") as handle:
        return [next(handle) for _ in range(n)]


def edit(line: bytes, change: Callable[[dict], None]) -> bytes:
    doc = json.loads(line)
    change(doc)
    return json.dumps(doc).encode("utf-8") + b"\n"


def run_cli(capsys, tmp_path: Path, *flags: str, tasks: str = "piqa", data_dir: Path | None = None,
            model: str = "random:pythia-14m") -> tuple[int, list[str]]:
    """Run ``evalkit run`` in-process; returns (exit status, stderr lines); checks that nothing was written."""
    out = tmp_path / "out"
    out.mkdir()
    argv = ["run", "--model", model, "--tokenizer", str(TOKENIZER_JSON), "--tasks", tasks,
            "--data-dir", str(data_dir or DATA_DIR), "--output-dir", str(out), "--no-progress",
            "--bootstrap-iters", "0", *flags]
    status = main(argv)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert written == [], f"files written by a failed run: {written}"
    return status, capsys.readouterr().err.splitlines()


# (case id, task, lines of the data file -> bad lines, expected message with {path} for the data file)
DATA_CASES = [
    ("malformed_json", "piqa",
     lambda ls: [ls[0], b'{"goal": "x", "sol1": "a" "sol2": "b", "label": 0}\n', ls[2]],
     "{path} line 2: malformed JSON (Expecting ',' delimiter at column 27)"),
    ("missing_field", "piqa",
     lambda ls: [ls[0], ls[1], edit(ls[2], lambda d: d.pop("sol2"))],
     "{path} line 3: missing field 'sol2'"),
    ("wrongly_typed_field", "piqa",
     lambda ls: [edit(ls[0], lambda d: d.update(label="1")), ls[1], ls[2]],
     "{path} line 1: field 'label' should be int, got str ('1')"),
    ("wrongly_typed_nested_field", "triviaqa",
     lambda ls: [ls[0], edit(ls[1], lambda d: d["answer"].update(aliases="Scorpio")), ls[2]],
     "{path} line 2: field 'answer.aliases' should be list, got str ('Scorpio')"),
    ("empty_split", "piqa", lambda ls: [b"\n", b"  \n"],
     "{path}: empty split, no documents for task 'piqa'"),
    ("gold_label_out_of_range", "piqa",
     lambda ls: [ls[0], edit(ls[1], lambda d: d.update(label=2)), ls[2]],
     "{path} line 2: field 'label': 2 is not 0 or 1"),
    ("arc_answer_key_not_a_label", "arc_challenge",
     lambda ls: [edit(ls[0], lambda d: d.update(answerKey="E")), ls[1], ls[2]],
     "{path} line 1: field 'answerKey': 'E' is not among choices.label ['A', 'B', 'C', 'D']"),
    ("empty_choices", "arc_challenge",
     lambda ls: [ls[0], ls[1], edit(ls[2], lambda d: d.update(choices={"text": [], "label": []}, answerKey="A"))],
     "{path} line 3: field 'choices.text': no choices"),
    ("blank_choice", "sciq",
     lambda ls: [ls[0], ls[1], edit(ls[2], lambda d: d.update(distractor2="  "))],
     "{path} line 3: field 'distractor2': blank choice"),
    ("empty_alias_list", "triviaqa",
     lambda ls: [ls[0], edit(ls[1], lambda d: d["answer"].update(aliases=[])), ls[2]],
     "{path} line 2: field 'answer.aliases': empty alias list"),
    ("not_utf8", "piqa",
     lambda ls: [ls[0], b'{"goal": "caf\xe9", "sol1": "a", "sol2": "b", "label": 0}\n', ls[2]],
     "{path} line 2: not UTF-8 (invalid continuation byte at byte 13)"),
    ("blank_lines_do_not_shift_line_numbers", "piqa",
     lambda ls: [ls[0], b"\n", ls[1], edit(ls[2], lambda d: d.update(label=-1))],
     "{path} line 4: field 'label': -1 is not 0 or 1"),
]


@pytest.mark.parametrize("task, make_lines, message", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(capsys, tmp_path, task, make_lines, message):
    data = tmp_path / "data"
    path = data / task / f"{SPLITS[task]}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(make_lines(real_lines(task))))
    status, err = run_cli(capsys, tmp_path, tasks=task, data_dir=data)
    assert status == 2
    assert f"evalkit: error: {message.format(path=path)}" in err


def test_missing_data_file(capsys, tmp_path):
    data = tmp_path / "data"
    (data / "piqa").mkdir(parents=True)
    status, err = run_cli(capsys, tmp_path, data_dir=data)
    assert status == 2
    assert (f"evalkit: error: 1 of 1 selected tasks has no local data file under {data}: "
            f"piqa: {data / 'piqa' / 'validation.jsonl'}") in err


def test_missing_data_folder(capsys, tmp_path):
    status, err = run_cli(capsys, tmp_path, data_dir=tmp_path / "nowhere")
    assert status == 2
    message = f"data folder not found: {tmp_path / 'nowhere'} (from --data-dir or $EVALKIT_DATA_DIR)"
    assert f"evalkit: error: {message}" in err


@pytest.mark.parametrize("tasks, message", [
    ("piqaa", "unknown task 'piqaa'; did you mean piqa, logiqa? (`evalkit tasks` lists them)"),
    ("sciq,lambda", "unknown task 'lambda'; did you mean lambada, lambada_openai, headqa? (`evalkit tasks` lists them)"),
], ids=["unknown_task", "unknown_alias"])
def test_unknown_task_or_alias_suggests_the_closest_names(capsys, tmp_path, tasks, message):
    status, err = run_cli(capsys, tmp_path, tasks=tasks)
    assert status == 2
    assert f"evalkit: error: {message}" in err


ALIASES = ("pythia-14m, pythia-70m, pythia-160m, pythia-410m, pythia-1b, pythia-1.4b, pythia-2.8b, pythia-6.9b, "
           "pythia-12b, neox-20b, gpt-j-6b")


@pytest.mark.parametrize("model, message", [
    ("neox20b", f"unknown model 'neox20b'; did you mean neox-20b? (aliases: {ALIASES}; or a hub id like "
                "EleutherAI/pythia-70m, or a folder)"),
    ("random:pythia-14", "unknown model alias 'pythia-14' in 'random:pythia-14'; did you mean random:pythia-14m, "
                         f"random:pythia-1.4b, random:pythia-1b?; known: {ALIASES}"),
    ("./checkpoints/missing", "model folder not found: ./checkpoints/missing"),
], ids=["mistyped_alias", "unknown_random_alias", "missing_model_folder"])
def test_unknown_model(capsys, tmp_path, model, message):
    status, err = run_cli(capsys, tmp_path, model=model)
    assert status == 2
    assert f"evalkit: error: {message}" in err


def test_tokenizer_vocabulary_larger_than_the_model_embedding(capsys, tmp_path):
    from tests.conftest import make_tiny_model

    folder = tmp_path / "small-vocab-model"
    make_tiny_model(0, vocab_size=1000).save_pretrained(folder)
    status, err = run_cli(capsys, tmp_path, "--limit", "2", model=str(folder))
    assert status == 2
    assert (f"evalkit: error: tokenizer {TOKENIZER_JSON} has 50277 tokens but the model's embedding has 1000 rows: "
            "wrong tokenizer for this model?") in err


def test_a_continuation_longer_than_the_window(capsys, tmp_path):
    # the seeded subset is documents 784, 1029 and 1161; " " + sol1 of document 784 is 17 tokens
    status, err = run_cli(capsys, tmp_path, "--limit", "3", "--max-length", "16")
    assert status == 2
    assert "evalkit: error: task piqa doc 784 choice 0: continuation of 17 tokens does not fit the model window of 16" \
        in err


def test_contexts_longer_than_the_window_are_truncated_counted_and_reported(tmp_path, caplog):
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    config = RunConfig(model="random:pythia-14m", tasks=("sciq",), tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(DATA_DIR), limit=4, max_length=128, bootstrap_iters=0,
                       output_dir=str(tmp_path), use_cache=False)
    out = run(config, progress=False)
    task = out.results["tasks"]["sciq"]
    # documents 43, 314, 539, 767: counted by encoding each context and choice on its own (a request keeps its
    # last 129 tokens: the window plus the one predicted token)
    warning = ("sciq: 8 of 16 requests were longer than the window of 128 tokens; their contexts were truncated "
               "on the left (677 tokens dropped, at most 163 from one request)")
    assert task["truncated_requests"] == 8
    assert task["warnings"] == [warning]
    assert warning in caplog.messages
    report = out.report_path.read_text(encoding="utf-8")
    assert f"> **Warning:** {warning}" in report
    assert "| sciq v1.0 | 0-shot | acc | " in report and report.count(" | higher | 8 |") == 2


def test_report_of_bad_results_files_names_the_file(tmp_path, capsys):
    from evalkit.cli.main import main

    missing = tmp_path / "missing.json"
    assert main(["report", str(missing)]) == 2
    assert f"results file not found: {missing}" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"tasks": ', encoding="utf-8")
    assert main(["report", str(broken)]) == 2
    assert f"{broken}: not a valid results JSON" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text('{"something": 1}', encoding="utf-8")
    assert main(["report", str(other)]) == 2
    assert f"{other}: not an evalkit results file (no 'tasks' or 'model')" in capsys.readouterr().err
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    assert main(["report", str(listed)]) == 2
    assert f"{listed}: a results file holds a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
