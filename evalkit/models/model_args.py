"""``--model-args key=value,...``: keyword arguments for ``from_pretrained`` that have no flag of their own, and
the hub options of a run (:func:`hub_options`: ``--revision``, ``--trust-remote-code``, ``--model-args``).

Values are read as lm-evaluation-harness reads its ``--model_args``: ``true``/``false`` (any case) are booleans,
``none`` is None, whole numbers are ints, other numbers floats, anything else a string.
"""

from __future__ import annotations

from typing import Any

from evalkit.types import EvalkitError, RunConfig

OWN_FLAGS = {"pretrained": "--model", "revision": "--revision", "trust_remote_code": "--trust-remote-code",
             "dtype": "--dtype", "torch_dtype": "--dtype", "device_map": "--parallelize", "max_memory": "--max-memory",
             "device": "--device", "max_length": "--max-length", "batch_size": "--batch-size",
             "tokenizer": "--tokenizer"}
"""Keys refused in ``--model-args`` because a flag sets them (the results record the flag)."""

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
"""``attn_implementation`` values evalkit scores with: transformers' own eager and torch's scaled-dot-product
attention, on every device. ``flash_attention_2`` / ``flash_attention_3`` are accepted too where their package
is installed (they run on CUDA GPUs only). ``flex_attention`` is refused: its compiled mask crashes the process
(a double free) in the packed-batch mask check of :mod:`evalkit.scoring.hf_backend`."""

FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}

HUB_LOCATION_KEYS = ("cache_dir", "subfolder", "local_files_only", "token", "force_download", "proxies")
"""Keys that say where files come from: passed to the config's and the tokenizer's ``from_pretrained`` as well."""


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``"attn_implementation=eager,low_cpu_mem_usage=true"`` -> ``{"attn_implementation": "eager",
    "low_cpu_mem_usage": True}``; empty or None -> ``{}``.

    Raises:
        EvalkitError: an item without ``=``, an empty or repeated key, or a key that has its own flag.
    """
    out: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise EvalkitError(f"--model-args: '{item}' is not key=value (e.g. attn_implementation=eager)")
        if key in out:
            raise EvalkitError(f"--model-args: '{key}' is given twice")
        check_key(key)
        out[key] = _value(value.strip())
    return out


def check_key(key: str) -> None:
    """Refuse a model argument that has its own flag.

    Raises:
        EvalkitError: naming the flag to use instead.
    """
    if key in OWN_FLAGS:
        raise EvalkitError(f"--model-args: use {OWN_FLAGS[key]} instead of '{key}' (the results record the flag)")


def check_attention(value: Any) -> None:
    """Refuse an ``attn_implementation`` evalkit cannot score with, before anything loads.

    Raises:
        EvalkitError: naming the value, why, and the accepted ones (:data:`ATTENTION_IMPLEMENTATIONS`).
    """
    import importlib.util

    if value in ATTENTION_IMPLEMENTATIONS or value is None:
        return
    package = FLASH_PACKAGES.get(value) if isinstance(value, str) else None
    if package is not None and importlib.util.find_spec(package) is not None:
        return
    if package is not None:
        why = f"it needs the {package} package (not installed) and a CUDA GPU"
    elif value == "flex_attention":
        why = "flex attention crashes the process in the packed-batch mask check"
    else:
        why = "transformers does not know it, or it needs a kernel from the hub"
    raise EvalkitError(f"--model-args attn_implementation={value} is not supported here; accepted: "
                       f"{', '.join(ATTENTION_IMPLEMENTATIONS)} ({why})")


def hub_options(config: RunConfig) -> dict[str, Any]:
    """``revision``, ``trust_remote_code`` (bool), ``model_args`` (dict) and the ``hub_kwargs`` among them
    (where files come from) of a run, from ``config.extra``; ``model_args`` may be a dict or ``key=value,...``.

    Raises:
        EvalkitError: a model argument that has its own flag, one that is not key=value, or an
            ``attn_implementation`` that is not supported (:func:`check_attention`).
    """
    raw = config.extra.get("model_args") or {}
    model_args = parse_model_args(raw) if isinstance(raw, str) else dict(raw)
    for key in model_args:
        check_key(key)
    if "attn_implementation" in model_args:
        check_attention(model_args["attn_implementation"])
    return {"revision": config.extra.get("revision"), "trust_remote_code": bool(config.extra.get("trust_remote_code")),
            "model_args": model_args, "hub_kwargs": {k: v for k, v in model_args.items() if k in HUB_LOCATION_KEYS}}
