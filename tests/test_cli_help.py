"""The command line explains itself: version, descriptions, defaults in help, verbosity, progress lines in logs,
and an included task file that replaces a built-in task."""

from __future__ import annotations

import io
import json
import logging

import pytest

import evalkit
from evalkit.scoring import hf_backend
from evalkit.cli.main import configure_logging, main
from evalkit.cli.parser import build_parser
from evalkit.tasks.registry import load_registry

from .conftest import REPO, TOKENIZER_JSON


def help_text(*command: str, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"evalkit {evalkit.__version__}\n"


def test_every_command_has_a_description():
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    assert sorted(sub.choices) == ["baseline", "check", "compare", "export", "report", "run", "tasks"]
    for name, command in sub.choices.items():
        assert command.description and command.description.endswith("."), name
    assert {a.dest: a.help for a in sub._choices_actions}["export"].startswith("write a results file")


def test_run_help_shows_defaults_and_explains_dtype(capsys):
    text = help_text("run", capsys=capsys)
    for flag, default in [("--seed SEED", "1234"), ("--batch-size BATCH_SIZE", "16"), ("--max-batch-tokens", "32768"),
                          ("--bootstrap-iters", "10000"), ("--dtype", "auto"), ("--tokenization", "separate")]:
        start = text.index(flag, text.index("options:"))
        assert f"(default: {default})" in text[start : start + 400], flag
    assert "auto is float32 on CPU and the checkpoint's own dtype on GPU" in text
    assert "when stderr is a file or a pipe it prints one line every 10 s" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_help_states_each_default_once():
    """A flag whose help names its default itself is not followed by argparse's own "(default: ...)"."""
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    for name, command in sub.choices.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if action.help and "default" in action.help:
                assert formatter._get_help_string(action) == action.help, (name, action.option_strings)


def test_repeatable_include_path_says_so(capsys):
    for command in ("run", "tasks"):
        assert "extra folder of task files (repeatable)" in help_text(command, capsys=capsys)


def test_compare_help_shows_defaults(capsys):
    text = help_text("compare", capsys=capsys)
    assert "paired bootstrap resamples (default: 10000)" in text and "(default: 0.05)" in text


def test_verbosity_levels():
    try:
        configure_logging(0, False)
        assert logging.getLogger("evalkit").getEffectiveLevel() == logging.INFO
        assert logging.getLogger("matplotlib").level == logging.WARNING  # no font-cache INFO lines
        configure_logging(0, True)
        assert logging.getLogger("evalkit").getEffectiveLevel() == logging.WARNING
        configure_logging(1, False)
        assert logging.getLogger("evalkit").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("matplotlib").level == logging.INFO
    finally:
        configure_logging(0, False)


def test_verbosity_flags_go_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-q", "tasks"]).quiet is True
    assert parser.parse_args(["tasks", "-q"]).quiet is True
    assert parser.parse_args(["tasks", "-vv"]).verbose == 2
    assert parser.parse_args(["tasks"]).verbose == 0


def test_progress_in_a_log_file_is_whole_lines(monkeypatch):
    monkeypatch.setattr(hf_backend, "LOG_INTERVAL_S", 0.0)
    log = io.StringIO()
    bar = hf_backend._progress(300, True, log)
    for _ in range(3):
        bar.update(100)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("requests:   0%") and lines[-1].startswith("requests: 100%")
    assert "300/300" in lines[-1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("enabled, stream, shown", [(True, _Terminal(), True), (False, _Terminal(), False),
                                                    (True, io.StringIO(), False)])
def test_transformers_loading_bars_follow_no_progress_and_the_terminal(enabled, stream, shown):
    """transformers' "Loading weights" and GGUF "Converting and de-quantizing" bars appear on a terminal only, and
    never under --no-progress; the settings before are restored."""
    import transformers.modeling_gguf_pytorch_utils as gguf_reader
    from transformers.utils import logging as hf_logging

    from evalkit.models import hf_loading

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        out = io.StringIO()
        with hf_loading.loading_bars(enabled, stream):
            list(gguf_reader.tqdm(range(3), desc="Converting GGUF", file=out))
            list(hf_logging.tqdm(range(3), desc="Loading weights", file=out))
        assert ("Converting GGUF" in out.getvalue()) is shown
        assert ("Loading weights" in out.getvalue()) is shown
        assert hf_logging.is_progress_bar_enabled()
        list(gguf_reader.tqdm(range(2), desc="after loading", file=out))
        assert "after loading" in out.getvalue()
    finally:
        if not was_enabled:
            hf_logging.disable_progress_bar()


def copy_of_piqa(folder):
    folder.mkdir(parents=True)
    source = (REPO / "tasks" / "piqa.py").read_text()
    (folder / "piqa.py").write_text(source.replace('f"Question: {doc', 'f"Q: {doc'))
    return folder


def test_an_included_task_replaces_the_builtin_with_a_warning(tmp_path, data_dir, capsys, caplog):
    tasks = copy_of_piqa(tmp_path / "mytasks")
    with caplog.at_level(logging.WARNING):
        registry = load_registry([str(tasks)])
    assert registry.files["piqa"] == tasks / "piqa.py"
    code = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                 "--include-path", str(tasks), "--data-dir", str(data_dir), "--limit", "2", "--bootstrap-iters", "0",
                 "--output-dir", str(tmp_path), "--log-samples", "--no-progress"])
    assert code == 0
    [samples] = (tmp_path / "results" / "random_pythia-14m").glob("*.samples.jsonl")
    assert json.loads(samples.read_text().splitlines()[0])["context"].startswith("Q: ")
    out = capsys.readouterr().out.splitlines()  # the end-of-run summary: a table, then the subset line and paths
    assert out[0] == "| task | shots | metric   |  value |   | stderr | 95% CI           | n |"
    assert out[2].startswith("| piqa |     0 | acc      | ") and out[3].startswith("| piqa |     0 | acc_norm | ")
    assert out[4] == "subset (--limit 2, seed 1234, rule v2): piqa 2 of 1,838" and out[5].startswith("results: ")


def test_the_override_warning_names_both_files(tmp_path, caplog):
    from evalkit.tasks.registry import _scan, builtin_task_dir

    tasks = copy_of_piqa(tmp_path / "t")
    with caplog.at_level(logging.WARNING, logger="evalkit.tasks.registry"):
        _scan.__wrapped__((str(builtin_task_dir()), str(tasks)))
    assert f"piqa from {tasks / 'piqa.py'} replaces the built-in one ({builtin_task_dir() / 'piqa.py'})" in caplog.text


def test_two_included_folders_defining_one_name_is_an_error(tmp_path):
    from evalkit.types import EvalkitError

    a, b = copy_of_piqa(tmp_path / "a"), copy_of_piqa(tmp_path / "b")
    with pytest.raises(EvalkitError, match="task name 'piqa' defined twice"):
        load_registry([str(a), str(b)])


@pytest.mark.parametrize("ci", [None, "true"])
def test_hub_library_warnings_print_once(ci):
    """transformers propagates its records to the root logger when ``CI`` is set (as on CI machines)."""
    import os
    import subprocess
    import sys

    code = ("from evalkit.cli.main import configure_logging; configure_logging(0, False)\n"
            "import huggingface_hub.utils.logging as h, datasets.utils.logging as d, transformers.utils.logging as t\n"
            "h.get_logger('huggingface_hub.x').warning('hub warning')\n"
            "d.get_logger('datasets.x').warning('datasets warning')\n"
            "t.get_logger('transformers.x').warning('transformers warning')\n")
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update({"PYTHONPATH": str(REPO)}, **({"CI": ci} if ci else {}))
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env=env).stderr
    for text in ("hub warning", "datasets warning", "transformers warning"):
        assert err.count(text) == 1, err
