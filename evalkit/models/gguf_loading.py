"""A GGUF checkpoint loaded for scoring: transformers reads the file and dequantizes its tensors.

:mod:`evalkit.models.gguf_file` checks and describes the file before anything loads (no torch there); this module is the
torch side, called by :func:`evalkit.models.hf_loading.load_model` for a ``gguf`` model.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from pathlib import Path
from typing import Any, Iterator

import torch

from evalkit.models.gguf_file import describe_gguf, forget_parsed_gguf, parse_gguf, require_gguf
from evalkit.models.weights_hash import file_sha256, stat_key
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


@contextlib.contextmanager
def parsed_once() -> Iterator[None]:
    """While the tokenizer, the config and the weights of a GGUF model load, parse the file once.

    transformers 5 reads a GGUF file three times to load it (the config, the tokenizer, the weights; each builds a
    ``gguf.GGUFReader`` and walks the metadata), and maps tensor names by building ``gguf.get_tensor_name_map`` once
    per submodule (397 times for SmolLM2-135M, 20 ms each). Inside this context: ``GGUFReader(path)`` in read mode
    returns :func:`evalkit.models.gguf_file.parse_gguf`'s shared reader (the one that described the file before the
    load, when it is still the same version of the file); ``get_tensor_name_map`` is remembered per (architecture,
    block count); transformers' metadata-only ``load_gguf_checkpoint(path)`` (no tensors) is computed once per file
    and each caller gets its own deep copy. What transformers reads is the same: only repeated work is skipped.
    On this project's 2-core machine, loading SmolLM2-135M (Q4_1) took 31 s of a 75 s MMLU run before.

    Everything patched is restored on exit, and the shared reader is dropped (:func:`forget_parsed_gguf`). Where
    transformers' private GGUF module is missing or changed, its part is left as it is.
    """
    gguf = require_gguf()
    try:
        import transformers.modeling_gguf_pytorch_utils as hf_gguf
    except ImportError:
        hf_gguf = None
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    checkpoint = getattr(hf_gguf, "load_gguf_checkpoint", None)
    metadata: dict[str, Any] = {}

    def shared_reader(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode != "r" or args or kwargs:
            return reader_class(path, mode, *args, **kwargs)
        return parse_gguf(path)

    def metadata_once(path: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = inspect.signature(checkpoint).bind(path, *args, **kwargs)
        except TypeError:
            return checkpoint(path, *args, **kwargs)
        bound.apply_defaults()
        if bound.arguments.get("return_tensors", True):
            return checkpoint(path, *args, **kwargs)
        key = stat_key(Path(path))
        if key not in metadata:
            metadata[key] = checkpoint(path, *args, **kwargs)
        return copy.deepcopy(metadata[key])

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, functools.lru_cache(maxsize=None)(name_map)
    if checkpoint is not None:
        hf_gguf.load_gguf_checkpoint = metadata_once
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map
        if checkpoint is not None:
            hf_gguf.load_gguf_checkpoint = checkpoint
        forget_parsed_gguf()
