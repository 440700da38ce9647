"""Where results live and how they are written: atomically, so a crash never leaves half a file."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.results.schema import validate_results
from evalkit.types import EvalkitError, parse_json


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (never half a file).

    The file gets the permissions of an ordinary new file (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def model_dir_name(model_name: str) -> str:
    """A folder name for a model: ``EleutherAI/gpt-neox-20b`` -> ``EleutherAI__gpt-neox-20b``."""
    name = model_name.replace("/", "__").replace(":", "_")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "model"


def results_path(output_dir: Path, model_name: str) -> Path:
    """``output_dir/results/<model>/<UTC timestamp>.json`` (``<timestamp>-N.json`` when taken), reserved.

    The name is taken by creating the file empty with an exclusive create, so two runs of one model that finish in
    the same second into one folder get two names (each then replaces its own empty file atomically) instead of
    the second overwriting the first's results. A caller that then fails to write should remove the empty file.
    """
    folder = output_dir / "results" / model_dir_name(model_name)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return reserve_path(folder, stamp, ".json")


def reserve_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/<stem><suffix>``, or ``folder/<stem>-N<suffix>`` with the smallest N free, created empty with an
    exclusive create (the folder too), so concurrent writers never pick one name.

    Raises:
        OSError: the folder cannot be created or written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{suffix}"
    n = 1
    while True:
        try:
            with open(path, "x", encoding="utf-8"):
                return path
        except FileExistsError:
            path = folder / f"{stem}-{n}{suffix}"
            n += 1


def _non_finite_path(value: Any, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)"
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, item in items:
        found = _non_finite_path(item, sub)
        if found:
            return found
    return None


def strict_json(value: Any, where: str, indent: int | None = None) -> str:
    """``json.dumps`` that refuses NaN and Infinity (not JSON, RFC 8259 section 6; strict parsers reject them).

    Raises:
        EvalkitError: naming ``where`` and the key path of the first non-finite number.
    """
    try:
        return json.dumps(value, indent=indent, allow_nan=False)
    except ValueError:
        found = _non_finite_path(value, "")
        if found is None:
            raise
        raise EvalkitError(f"{where}: refusing to write a non-finite number at '{found}' (strict JSON)") from None


def report_stem(results_file: str | Path) -> str:
    """The name (without suffix) of a results file's report and figure: ``<model>-<stem>`` for
    ``<root>/results/<model>/<stem>.json`` (the layout ``evalkit run`` writes: ``random_pythia-70m-20261206T001500Z``),
    so a folder of reports says which model each is; else the file's own stem."""
    path = Path(results_file)
    if path.parent.parent.name == "results":
        return f"{path.parent.name}-{path.stem}"
    return path.stem


def default_reports_dir(results_file: str | Path) -> Path:
    """Where reports of a results file go by default: ``<root>/reports`` for ``<root>/results/<model>/<stem>.json``
    (the layout ``evalkit run`` writes), else a ``reports`` folder beside the file."""
    path = Path(results_file)
    if path.parent.parent.name == "results":
        return path.parent.parent.parent / "reports"
    return path.parent / "reports"


def check_output_path(path: Path, folder: bool, flag: str) -> None:
    """Refuse an output path that cannot be written before anything is: a folder's path that is an existing file,
    a file's path that is an existing folder, or a path under an existing file. ``flag`` names it in the message
    (``"--output out.json"``).

    Raises:
        EvalkitError: naming ``flag`` and what is in the way.
    """
    if folder and path.exists() and not path.is_dir():
        raise EvalkitError(f"{flag}: an existing file; the lm-eval layout is a folder (results_<date>.json and "
                           f"samples_<task>_<date>.jsonl), so name a folder")
    if not folder and path.is_dir():
        raise EvalkitError(f"{flag}: an existing folder; the csv export is one file, so name a file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise EvalkitError(f"{flag}: {parent} is a file, not a folder")
            break


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259 section 6)")


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """Parse a JSON file that must hold one object; ``what`` names the kind of file in messages.

    Raises:
        EvalkitError: missing file, invalid JSON or UTF-8, or a value that is not an object.
    """
    p = Path(path)
    if not p.is_file():
        raise EvalkitError(f"{what} file not found: {p}")
    try:
        data = parse_json(p.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{p}: not a valid {what} JSON ({exc})") from None
    except ValueError as exc:
        raise EvalkitError(f"{p}: not a valid {what} JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EvalkitError(f"{p}: a {what} file holds a JSON object")
    return data


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results JSON written by ``evalkit run``.

    Raises:
        EvalkitError: missing file, invalid JSON, a file that is not evalkit results, or one that does not match
            :data:`evalkit.results.schema.SCHEMA` (names the file and the key path).
    """
    data = read_json_object(path, "results")
    if "tasks" not in data or "model" not in data:
        raise EvalkitError(f"{path}: not an evalkit results file (no 'tasks' or 'model')")
    validate_results(data, str(path))
    return data
