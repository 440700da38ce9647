"""Where a process sits in a distributed run, and which devices and memory it may use.

Pure functions over the environment variables that ``torchrun`` sets for each worker (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``; see the torchrun documentation, "Environment
Variables") and over the ``--max-memory`` text. No torch here: the CLI parses flags with it before torch loads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from evalkit.types import EvalkitError

MemoryKey = int | str
"""A device in a max-memory map: a GPU index (int) or ``"cpu"``, ``"disk"``, ``"mps"``."""

_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|B)?$", re.IGNORECASE)
_NAMED_DEVICES = ("cpu", "disk", "mps")


@dataclass(frozen=True)
class RankInfo:
    """This process's place among the ranks of a run.

    Attributes:
        rank: global rank, 0 .. world_size - 1 (rank 0 writes results).
        world_size: number of ranks in the run (1: not distributed).
        local_rank: rank among the processes of this machine.
        local_world_size: processes on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        """True when more than one rank takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that gathers responses and writes results."""
        return self.rank == 0

    @property
    def label(self) -> str:
        """``"rank R of N"``, used in every message about a rank."""
        return f"rank {self.rank} of {self.world_size}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RankInfo":
        """Read torchrun's variables; a process without ``WORLD_SIZE`` is the single rank of its run.

        Raises:
            EvalkitError: a variable that is not an integer, or ranks out of range.
        """
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()

        def read(name: str, default: str | None = None) -> int:
            raw = env.get(name, default)
            if raw is None:
                raise EvalkitError(f"environment variable {name} is missing (WORLD_SIZE is set): launch with torchrun")
            try:
                return int(raw)
            except ValueError:
                raise EvalkitError(f"environment variable {name}={raw!r} is not an integer") from None

        info = cls(read("RANK"), read("WORLD_SIZE"), read("LOCAL_RANK", "0"),
                   read("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
        if not (info.world_size >= 1 and 0 <= info.rank < info.world_size
                and 0 <= info.local_rank < info.local_world_size <= info.world_size):
            raise EvalkitError(
                f"inconsistent rank variables: RANK={info.rank} WORLD_SIZE={info.world_size} "
                f"LOCAL_RANK={info.local_rank} LOCAL_WORLD_SIZE={info.local_world_size}"
            )
        return info


def parse_max_memory(text: str) -> dict[MemoryKey, str]:
    """Parse ``--max-memory``: comma-separated ``DEVICE=SIZE``, e.g. ``0=20GiB,1=20GiB,cpu=64GiB``.

    DEVICE is a GPU index or cpu/disk/mps; SIZE is a byte count with an optional unit (B, KB, MB, GB, TB
    in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024), as accelerate's ``max_memory`` accepts.

    Returns:
        device -> size text, GPU indices as int, in the order given.

    Raises:
        EvalkitError: an empty list, an entry without ``=``, an unknown device, a bad size, or a repeat.
    """
    out: dict[MemoryKey, str] = {}
    entries = [part.strip() for part in text.split(",") if part.strip()]
    if not entries:
        raise EvalkitError("--max-memory is empty; expected e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    for entry in entries:
        device, sep, size = (s.strip() for s in entry.partition("="))
        if not sep or not device or not size:
            raise EvalkitError(f"--max-memory entry '{entry}' is not DEVICE=SIZE (e.g. 0=20GiB)")
        key: MemoryKey
        if device.isdigit():
            key = int(device)
        elif device.lower() in _NAMED_DEVICES:
            key = device.lower()
        else:
            raise EvalkitError(f"--max-memory entry '{entry}': device '{device}' is not a GPU index or cpu/disk/mps")
        if not _SIZE.match(size):
            raise EvalkitError(f"--max-memory entry '{entry}': size '{size}' is not a number with a unit like 20GiB")
        if key in out:
            raise EvalkitError(f"--max-memory names device '{device}' twice")
        out[key] = size.replace(" ", "")
    return out


def gpu_share(local_rank: int, local_world_size: int, n_gpus: int) -> list[int]:
    """The GPUs of one rank when each of the machine's ranks shards its model over its own G/N GPUs.

    Rank ``r`` gets GPUs ``r*G/N .. (r+1)*G/N - 1`` of the ``G`` visible ones.

    Raises:
        EvalkitError: fewer GPUs than ranks, or a count the ranks cannot share evenly.
    """
    if n_gpus < local_world_size or n_gpus % local_world_size:
        raise EvalkitError(
            f"{n_gpus} visible GPU(s) cannot be shared evenly by {local_world_size} ranks on this machine; "
            f"use a --nproc-per-node that divides {n_gpus}"
        )
    per = n_gpus // local_world_size
    return list(range(local_rank * per, (local_rank + 1) * per))


def rank_max_memory(
    user: Mapping[MemoryKey, str | int] | None, share: Sequence[int], free: Mapping[int, int]
) -> dict[MemoryKey, str | int]:
    """The ``max_memory`` map of one rank: its own GPUs only, so accelerate places layers on nothing else.

    Args:
        user: the parsed ``--max-memory`` (GPU entries of other ranks are ignored), or None.
        share: this rank's GPU indices (see :func:`gpu_share`).
        free: free bytes per GPU of the share, used where ``user`` gives no size.

    Returns:
        GPU index -> size for each GPU of the share, then any cpu/disk/mps entries of ``user``.
    """
    user = user or {}
    out: dict[MemoryKey, str | int] = {g: user.get(g, free[g]) for g in share}
    out.update({k: v for k, v in user.items() if isinstance(k, str)})
    return out
