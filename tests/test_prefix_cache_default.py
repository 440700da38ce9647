"""Shared-prefix reuse is on by default: a run's config records only ``--no-prefix-cache``, a baseline's command
line says so, and older baselines (without the setting, or with ``--prefix-cache``) read as reuse on."""

from __future__ import annotations

import json
from pathlib import Path

from evalkit.cli.main import build_parser
from evalkit.cli.parser import config_from_args
from evalkit.regression.baseline import run_command

REPO = Path(__file__).resolve().parents[1]


def _command(extra_flags: list[str]) -> str:
    args = build_parser().parse_args(["run", "--model", "random:pythia-14m", "--tasks", "piqa", *extra_flags])
    config = config_from_args(args)
    fields = {"model": config.model, "tasks": list(config.tasks), "tokenizer": None, "include_paths": [],
              "limit": None, "seed": 1234, "dtype": "float32", "batch_size": 16, "bootstrap_iters": 0,
              "device": None, "max_length": None, "data_dir": None, "extra": dict(config.extra)}
    return run_command(fields)


def test_a_baseline_command_names_the_setting_only_when_reuse_is_off():
    assert "prefix-cache" not in _command([])
    assert "prefix-cache" not in _command(["--prefix-cache"])
    assert "--no-prefix-cache" in _command(["--no-prefix-cache"]).split()


def test_the_shipped_baselines_were_made_with_the_setting_unrecorded():
    for name in ("random-pythia-70m.json", "smollm2-135m.json"):
        extra = json.loads((REPO / "baselines" / name).read_text(encoding="utf-8"))["config"]["extra"]
        assert "prefix_cache" not in extra  # read as reuse on: same numbers within 1e-4 nats (checked by `check`)
