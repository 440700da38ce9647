"""How long keying a local checkpoint by content takes: sampled digest, memo hit, full sha256.

Writes one ``.safetensors`` file of ``--size-gb`` gigabytes of random bytes (a real header, one tensor) into a
temporary folder, then times :func:`evalkit.models.weights_hash.folder_digest` three ways and prints the figures:

    python3 benchmarks/weight_hash.py --size-gb 2

The sampled digest reads the header and 64 x 64 KiB per weight file whatever its size; the memo hit only stats
the files; the full hash reads every byte (``--full-weight-hash``). The file was just written, so reads may come
from the page cache: a cold full read of a 40 GB checkpoint is bound by the disk instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalkit.models.weights_hash import folder_digest  # noqa: E402


def write_checkpoint(folder: Path, size: int) -> Path:
    """One safetensors file holding a uint8 tensor of ``size`` random bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    path = folder / "model.safetensors"
    block = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)
    (folder / "config.json").write_text('{"model_type": "gpt_neox"}\n', encoding="utf-8")
    return path


def timed(label: str, call) -> str:
    start = time.perf_counter()
    value = call()
    print(f"{label:34s} {time.perf_counter() - start:8.3f} s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="checkpoint size in GB (10^9 bytes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalkit-hash-bench-") as tmp:
        folder, memo = Path(tmp) / "model", Path(tmp) / "cache"
        folder.mkdir()
        write_checkpoint(folder, int(args.size_gb * 1e9))
        print(f"checkpoint: {args.size_gb:g} GB in one safetensors file")
        sampled = timed("sampled digest (first run)", lambda: folder_digest(folder, memo_dir=memo))
        again = timed("sampled digest (memo hit)", lambda: folder_digest(folder, memo_dir=memo))
        assert again == sampled
        timed("full sha256 (--full-weight-hash)", lambda: folder_digest(folder, full=True))


if __name__ == "__main__":
    main()
