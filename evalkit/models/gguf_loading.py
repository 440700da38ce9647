"""A GGUF checkpoint loaded for scoring: transformers reads the file and dequantizes its tensors.

:mod:`evalkit.models.gguf_file` checks and describes the file before anything loads (no torch there); this module is the
torch side, called by :func:`evalkit.models.hf_loading.load_model` for a ``gguf`` model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evalkit.models.weights_hash import file_sha256
from evalkit.models.gguf_file import describe_gguf, require_gguf
from evalkit.types import EvalkitError


def load_gguf(
    resolved: dict[str, Any], torch_dtype: torch.dtype, target: torch.device, placement: dict[str, Any]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Read a GGUF checkpoint with transformers (``from_pretrained(folder, gguf_file=NAME)``), dequantized to
    ``torch_dtype``, on ``target`` unless ``placement`` (``device_map``, ``max_memory``, ``offload_folder``
    keywords of ``from_pretrained``) spreads it. Returns (model, identity fields: revision, path, quantization).

    Raises:
        EvalkitError: the gguf package is missing, or transformers cannot read this file or its architecture.
    """
    from transformers import AutoModelForCausalLM

    require_gguf()
    path = Path(resolved["path"])
    described = resolved.get("gguf") or describe_gguf(path)
    digest = resolved.get("sha256") or file_sha256(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch_dtype,
                                                     **placement)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise EvalkitError(f"could not load GGUF model {path}: {type(exc).__name__}: {exc}") from None
    if not placement:
        model.to(target)
    quantization = {"file_type": described["file_type"], "tensor_types": described["tensor_types"],
                    "dequantized_dtype": str(torch_dtype).replace("torch.", "")}
    return model, {"revision": f"sha256:{digest}", "path": str(path), "quantization": quantization}
