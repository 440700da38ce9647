"""Imports run one way: no cycles, pure modules stay pure, torch stays in the backend."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

PURE = {"types", "data", "tokenization", "batching", "metrics", "stats", "fewshot", "fewshot_lmeval"}
TORCH_ALLOWED = {"hf_loading", "gguf_loading", "hf_backend", "distributed", "__main__"}  # __main__: only under torchrun


def evalkit_imports(path: Path) -> tuple[set[str], set[str]]:
    """(evalkit modules imported anywhere in the file, top-level packages imported anywhere)."""
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "evalkit":
                internal |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            external.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "evalkit" and len(parts) > 1:
                    internal.add(parts[1])
                external.add(parts[0])
    return internal - {path.stem}, external


def graph() -> dict[str, set[str]]:
    return {p.stem: evalkit_imports(p)[0] for p in (REPO / "evalkit").glob("*.py") if p.stem != "__init__"}


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in edges.get(node, ()):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path + [dep])}"
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in edges:
        if module not in state:
            visit(module, [module])


def test_pure_modules_import_only_types_and_no_torch():
    edges = graph()
    for module in PURE:
        assert edges[module] <= {"types"}, (module, edges[module])
        _, external = evalkit_imports(REPO / "evalkit" / f"{module}.py")
        assert not external & {"torch", "transformers"}, module


def test_torch_lives_in_the_backend_only():
    for path in (REPO / "evalkit").glob("*.py"):
        _, external = evalkit_imports(path)
        if path.stem not in TORCH_ALLOWED:
            assert "torch" not in external, path.name


def test_task_files_import_only_the_shared_vocabulary():
    for path in (REPO / "tasks").glob("*.py"):
        internal, _ = evalkit_imports(path)
        assert internal <= {"types"}, (path.name, internal)


def test_listing_tasks_does_not_load_torch():
    code = "import sys; from evalkit.cli import main; main(['tasks']); print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
