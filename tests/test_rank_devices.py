"""Which device each rank takes: the CPU cases run for real, the GPU cases with torch.cuda's answers replaced
(a machine of 4 GPUs with 30, 31, 32 and 33 GB free), since no GPU is needed to check the arithmetic."""

from __future__ import annotations

import pytest
import torch

from evalkit.scoring import distributed
from evalkit.models.placement import RankInfo
from evalkit.types import EvalkitError, RunConfig

FREE = {0: 30_000_000_000, 1: 31_000_000_000, 2: 32_000_000_000, 3: 33_000_000_000}


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (FREE[i], 80_000_000_000))


def _rank(local_rank: int, local_world: int) -> RankInfo:
    return RankInfo(local_rank, local_world, local_rank, local_world)


def test_single_process_passes_device_and_load_arguments_through():
    config = RunConfig(model="random:pythia-14m", tasks=("piqa",), device="cpu",
                       extra={"load_kwargs": {"device_map": "auto"}})
    ranks = distributed.start(config, environ={})
    assert (ranks.device, ranks.load_kwargs, ranks.backend) == ("cpu", {"device_map": "auto"}, None)
    assert not ranks.info.is_distributed


def test_cpu_ranks_use_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed._rank_device(_rank(1, 2), None, {}) == "cpu"
    with pytest.raises(EvalkitError, match="--device cuda but no CUDA GPU is visible to rank 1 of 2"):
        distributed._rank_device(_rank(1, 2), "cuda", {})


def test_each_rank_takes_the_gpu_of_its_local_rank(four_gpus):
    assert [distributed._rank_device(_rank(r, 4), None, {}) for r in range(4)] == [f"cuda:{r}" for r in range(4)]
    assert distributed._rank_device(_rank(1, 4), "cuda", {}) == "cuda:1"
    assert distributed._rank_device(_rank(1, 4), "cpu", {}) == "cpu"
    with pytest.raises(EvalkitError) as err:
        distributed._rank_device(_rank(5, 6), None, {})
    assert str(err.value) == ("rank 5 of 6 has local rank 5 but only 4 GPU(s) are visible; "
                              "use --nproc-per-node 4 or fewer")


def test_sharding_ranks_get_their_own_block_of_gpus(four_gpus):
    user = {0: "10GiB", 2: "20GiB", "cpu": "64GiB"}
    kwargs0 = {"device_map": "auto", "max_memory": dict(user)}
    kwargs1 = {"device_map": "auto", "max_memory": dict(user)}
    assert distributed._rank_device(_rank(0, 2), None, kwargs0) == "cuda:0"
    assert distributed._rank_device(_rank(1, 2), None, kwargs1) == "cuda:2"
    assert kwargs0["max_memory"] == {0: "10GiB", 1: FREE[1], "cpu": "64GiB"}
    assert kwargs1["max_memory"] == {2: "20GiB", 3: FREE[3], "cpu": "64GiB"}
    alone = {"device_map": "auto"}
    assert distributed._rank_device(_rank(3, 4), None, alone) == "cuda:3"
    assert alone["max_memory"] == {3: FREE[3]}
