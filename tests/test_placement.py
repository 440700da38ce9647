"""Rank variables, GPU shares and --max-memory: pure functions, hand-worked cases."""

from __future__ import annotations

import pytest

from evalkit.cli.main import _rank_label
from evalkit.cli.parser import build_parser, config_from_args
from evalkit.models.placement import RankInfo, gpu_share, parse_max_memory, rank_max_memory
from evalkit.types import EvalkitError

TORCHRUN_ENV = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}


def test_rank_info_single_process_without_torchrun_variables():
    info = RankInfo.from_env({})
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (0, 1, 0, 1)
    assert not info.is_distributed and info.is_main


def test_rank_info_reads_torchrun_variables():
    info = RankInfo.from_env(TORCHRUN_ENV)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (5, 8, 1, 4)
    assert info.is_distributed and not info.is_main
    assert info.label == "rank 5 of 8"


def test_rank_info_defaults_local_world_to_world_size():
    info = RankInfo.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert info.local_world_size == 2


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "environment variable RANK is missing (WORLD_SIZE is set): launch with torchrun"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "environment variable RANK='x' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "inconsistent rank variables: RANK=2 WORLD_SIZE=2 LOCAL_RANK=0 "
                                       "LOCAL_WORLD_SIZE=2"),
])
def test_rank_info_rejects_bad_variables(env, message):
    with pytest.raises(EvalkitError) as err:
        RankInfo.from_env(env)
    assert str(err.value) == message


def test_parse_max_memory_keeps_gpu_indices_as_int():
    assert parse_max_memory("0=20GiB, 1=20GiB,cpu=64GiB") == {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}
    assert parse_max_memory("disk=1TB,0=12345") == {"disk": "1TB", 0: "12345"}


@pytest.mark.parametrize("text, message", [
    ("", "--max-memory is empty; expected e.g. 0=20GiB,1=20GiB,cpu=64GiB"),
    ("0:20GiB", "--max-memory entry '0:20GiB' is not DEVICE=SIZE (e.g. 0=20GiB)"),
    ("gpu0=20GiB", "--max-memory entry 'gpu0=20GiB': device 'gpu0' is not a GPU index or cpu/disk/mps"),
    ("0=lots", "--max-memory entry '0=lots': size 'lots' is not a number with a unit like 20GiB"),
    ("0=1GiB,0=2GiB", "--max-memory names device '0' twice"),
])
def test_parse_max_memory_rejects_bad_entries(text, message):
    with pytest.raises(EvalkitError) as err:
        parse_max_memory(text)
    assert str(err.value) == message


def test_gpu_share_gives_each_rank_its_own_block():
    assert [gpu_share(r, 2, 4) for r in range(2)] == [[0, 1], [2, 3]]
    assert [gpu_share(r, 4, 4) for r in range(4)] == [[0], [1], [2], [3]]
    assert gpu_share(0, 1, 8) == list(range(8))


@pytest.mark.parametrize("ranks, gpus", [(3, 8), (4, 2)])
def test_gpu_share_refuses_uneven_shares(ranks, gpus):
    with pytest.raises(EvalkitError) as err:
        gpu_share(0, ranks, gpus)
    assert str(err.value) == (f"{gpus} visible GPU(s) cannot be shared evenly by {ranks} ranks on this machine; "
                              f"use a --nproc-per-node that divides {gpus}")


def test_rank_max_memory_keeps_only_the_ranks_gpus():
    user = {0: "20GiB", 1: "20GiB", 2: "10GiB", 3: "10GiB", "cpu": "64GiB"}
    assert rank_max_memory(user, [2, 3], {2: 1, 3: 2}) == {2: "10GiB", 3: "10GiB", "cpu": "64GiB"}
    assert rank_max_memory({0: "5GiB"}, [0, 1], {0: 100, 1: 200}) == {0: "5GiB", 1: 200}
    assert rank_max_memory(None, [1], {1: 7}) == {1: 7}


def _run_args(*extra: str):
    return build_parser().parse_args(["run", "--model", "random:pythia-14m", "--tasks", "piqa", *extra])


def test_cli_max_memory_goes_to_the_device_map():
    config = config_from_args(_run_args("--parallelize", "--max-memory", "0=20GiB,cpu=64GiB", "--dist-timeout", "60"))
    assert config.extra["load_kwargs"] == {"device_map": "auto", "max_memory": {0: "20GiB", "cpu": "64GiB"}}
    assert config.extra["dist_timeout_s"] == 60


def test_cli_parallelize_alone_uses_all_free_memory():
    config = config_from_args(_run_args("--parallelize"))
    assert config.extra["load_kwargs"] == {"device_map": "auto"}
    assert "dist_timeout_s" not in config.extra  # the default (distributed.DEFAULT_TIMEOUT_S) applies


def test_cli_max_memory_needs_parallelize():
    with pytest.raises(EvalkitError) as err:
        config_from_args(_run_args("--max-memory", "0=20GiB"))
    assert str(err.value) == "--max-memory applies to a sharded model: add --parallelize"


def test_cli_rejects_a_bad_max_memory(capsys):
    with pytest.raises(SystemExit) as exit_:
        _run_args("--parallelize", "--max-memory", "0=lots")
    assert exit_.value.code == 2
    assert "size 'lots' is not a number with a unit like 20GiB" in capsys.readouterr().err


def test_cli_names_the_rank_in_errors(monkeypatch):
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    assert _rank_label() == " (rank 5 of 8)"
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert _rank_label() == ""
