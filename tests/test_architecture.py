"""Imports run one way between evalkit's sub-packages: no cycles, a declared direction, pure packages stay pure,
torch stays in models/ and scoring/."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "evalkit"

# Each unit (a sub-package, or a module directly in evalkit/) and the units it may import. The order is the
# pipeline's: types <- pure packages <- models/scoring/reports <- run <- regression/cli/api.
ALLOWED: dict[str, set[str]] = {
    "types": set(),
    "import_gc": set(),
    "stats": {"types"},
    "fewshot": {"types"},
    "data": {"types"},
    "tasks": {"types", "stats", "fewshot"},
    "results": {"types", "stats"},
    "models": {"types", "import_gc"},
    "scoring": {"types", "models"},
    "reports": {"types", "stats", "results", "import_gc"},
    "run": {"types", "import_gc", "stats", "fewshot", "data", "tasks", "results", "models", "scoring", "reports"},
    "regression": {"types", "stats", "data", "tasks", "results", "models", "reports", "run"},
    "cli": {"types", "import_gc", "stats", "data", "tasks", "results", "models", "scoring", "reports", "run",
            "regression"},
    "api": {"types", "results", "models", "run"},
    "__main__": {"cli"},
}
PURE = {"types", "stats", "fewshot", "data", "tasks", "results", "reports"}
TORCH_UNITS = {"models", "scoring"}
TOP_LEVEL_MODULES = {"__init__", "__main__", "api", "types", "import_gc"}


def unit_of(path: Path) -> str:
    """The unit a source file belongs to: its sub-package, or its own name directly in evalkit/."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(evalkit units imported anywhere in the file, top-level packages imported anywhere)."""
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "evalkit":
                internal |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name != "__version__"}
            external.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "evalkit" and len(parts) > 1:
                    internal.add(parts[1])
                external.add(parts[0])
    return internal, external


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def unit_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sources():
        unit = unit_of(path)
        if unit == "__init__":
            continue
        edges.setdefault(unit, set()).update(imports_of(path)[0] - {unit})
    return edges


def test_every_unit_is_declared():
    assert set(unit_graph()) <= set(ALLOWED), set(unit_graph()) - set(ALLOWED)


def test_imports_follow_the_declared_direction():
    wrong = {(unit, dep) for unit, deps in unit_graph().items() for dep in deps if dep not in ALLOWED[unit]}
    assert not wrong, sorted(wrong)


def test_no_import_cycles_between_units():
    edges = unit_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in edges.get(node, ()):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path + [dep])}"
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for unit in edges:
        if unit not in state:
            visit(unit, [unit])


def test_pure_packages_import_no_torch():
    for path in sources():
        if unit_of(path) in PURE:
            _, external = imports_of(path)
            assert not external & {"torch", "transformers"}, path.relative_to(REPO)


def test_torch_lives_in_models_and_scoring_only():
    for path in sources():
        unit = unit_of(path)
        if unit not in TORCH_UNITS and unit != "__main__":  # __main__: only under torchrun
            _, external = imports_of(path)
            assert "torch" not in external, path.relative_to(REPO)


def test_few_modules_directly_in_the_package_and_each_subpackage_says_its_job():
    assert {p.stem for p in PACKAGE.glob("*.py")} == TOP_LEVEL_MODULES
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "Imports:" in doc and len(doc.splitlines()[0]) > 20, folder.name


def test_task_files_import_only_the_shared_vocabulary():
    """Task files use the shared vocabulary, and, for a generation task's scoring rule, the pure metric helpers
    of evalkit.stats (MATH's answer equivalence); nothing that loads a model or runs a pipeline."""
    for path in (REPO / "tasks").glob("*.py"):
        internal, _ = imports_of(path)
        assert internal <= {"types", "stats"}, (path.name, internal)


def test_listing_tasks_does_not_load_torch():
    code = "import sys; from evalkit.cli.main import main; main(['tasks']); print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
