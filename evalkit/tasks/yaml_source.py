"""Read one YAML task file: its mapping, the line of each top-level key, and ``!function`` references.

PyYAML's safe loader (no arbitrary Python objects), plus lm-eval 0.4's one tag: ``!function module.fn`` names a
function in ``module.py`` beside the YAML file; it is kept as a :class:`FunctionRef` and imported only when a
loader resolves it (:func:`resolve_function`).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from evalkit.tasks.user_files import failure, symlink_loop  # noqa: F401 - re-exported
from evalkit.types import EvalkitError


@dataclass(frozen=True)
class FunctionRef:
    """``!function module.fn`` as written in ``file`` at ``line`` (1-based)."""

    target: str
    file: Path
    line: int


@dataclass(frozen=True)
class YamlFile:
    """A parsed YAML task file.

    Attributes:
        path: the file.
        data: the top-level value (a dict for a task file).
        lines: top-level key -> 1-based line where the key is written.
    """

    path: Path
    data: Any
    lines: dict[str, int]

    def where(self, key: str) -> str:
        """``"<file> line <n>, key '<key>'"`` (without the line when the key is not written in this file)."""
        line = self.lines.get(key)
        return f"{self.path} line {line}, key '{key}'" if line else f"{self.path}, key '{key}'"


def _loader_for(path: Path) -> type:
    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when installed: 4x faster
        pass

    def function(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
        return FunctionRef(str(loader.construct_scalar(node)).strip(), path, node.start_mark.line + 1)

    Loader.add_constructor("!function", function)
    return Loader


def load_yaml(path: Path) -> YamlFile:
    """Parse ``path`` (UTF-8).

    Raises:
        EvalkitError: unreadable file or YAML syntax error, naming the file and the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{path}: cannot read: {exc}") from None
    loader = _loader_for(path)(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise EvalkitError(f"{path}{where}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise EvalkitError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return YamlFile(path, data, lines)


def resolve_function(ref: FunctionRef, key: str) -> Callable[..., Any]:
    """Import ``module.fn`` from ``module.py`` in the folder of the file that wrote the reference.

    Raises:
        EvalkitError: a malformed reference, a missing module or function, or a module that fails to import, naming
            the YAML file, line and key.
    """
    where = f"{ref.file} line {ref.line}, key '{key}'"
    module_name, _, fn_name = ref.target.rpartition(".")
    if not module_name or not fn_name:
        raise EvalkitError(f"{where}: '!function {ref.target}' should be written module.function")
    source = ref.file.parent / (module_name.replace(".", "/") + ".py")
    if not source.is_file():
        raise EvalkitError(f"{where}: '!function {ref.target}': {source} not found")
    unique = f"evalkit_yaml_fn_{abs(hash(str(source)))}_{source.stem}"
    module = sys.modules.get(unique)
    if module is None:
        spec = importlib.util.spec_from_file_location(unique, source)
        if spec is None or spec.loader is None:
            raise EvalkitError(f"{where}: cannot import {source}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code may fail in any way; name the file
            raise EvalkitError(f"{where}: {source} failed to import: {failure(exc, 'module')}") from None
        sys.modules[unique] = module
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise EvalkitError(f"{where}: {source} has no function '{fn_name}'")
    return fn
