"""Where the seconds of a small run go: imports, tokenizer, model build, scoring, report, figure.

Runs ``evalkit run`` N times, each in a fresh Python process with an empty request cache (every request is
scored), and prints the median of each part:

    python3 benchmarks/startup.py --runs 5
    python3 benchmarks/startup.py --runs 5 --no-figure --tasks piqa,sciq --limit 50

Inside each process every import statement and ``importlib.import_module`` call is timed (the outermost one
only, so nested imports are not counted twice), and so are the run's phases: ``load_tokenizer``; model build
(``load_config`` and ``load_model``: config, weight initialisation or loading); ``tokenize_tasks``; scoring
(``Ranks.loglikelihood``: forward passes and the request cache); ``write_report`` (the Markdown report) and
``draw_intervals`` (the figure, inside the report). A phase's figure leaves out the imports made inside it (the
lazy ``transformers`` model classes, matplotlib), which are counted under ``import`` and, split by top-level
package, listed below the table; ``other`` is the rest of the run (reading and validating data, results JSON,
summary); ``interpreter`` is Python's own start and exit (the parent's wall time minus the child's). The seconds
the garbage collector ran during the run, within those parts, are printed too.

Timings on a shared machine are noisy: compare medians of several runs taken one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import builtins, gc, importlib, json, sys, time

t_start = time.perf_counter()
imports, roots = [], {}
depth = [0, 0]  # open imports; open imports of a package other than evalkit
real_import, real_import_module = builtins.__import__, importlib.import_module

def _timed(load, name, package):
    root = (package if package else name).split(".")[0] or "?"
    outer, foreign = depth[0] == 0, root != "evalkit" and depth[1] == 0
    depth[0] += 1
    depth[1] += root != "evalkit"
    t0 = time.perf_counter()
    try:
        return load()
    finally:
        t1 = time.perf_counter()
        depth[0] -= 1
        depth[1] -= root != "evalkit"
        if outer:
            imports.append((t0, t1))
        if foreign:
            roots[root] = roots.get(root, 0.0) + t1 - t0
        if root == "evalkit":
            patch_loaded()

def timed_import(name, globals=None, locals=None, fromlist=(), level=0):
    package = (globals or {}).get("__package__") or "" if level else ""  # relative: the importer's package
    return _timed(lambda: real_import(name, globals, locals, fromlist, level), name, package)

def timed_import_module(name, package=None):
    return _timed(lambda: real_import_module(name, package), name, package if name.startswith(".") else "")

builtins.__import__, importlib.import_module = timed_import, timed_import_module

collecting = [0.0, 0.0]  # start of the collection under way, seconds spent collecting

def on_collection(phase, info):
    now = time.perf_counter()
    if phase == "start":
        collecting[0] = now
    else:
        collecting[1] += now - collecting[0]

gc.callbacks.append(on_collection)
phases = {}

def wrap(owner, attribute, phase):
    original = getattr(owner, attribute)
    active = [0]

    def timed(*args, **kwargs):
        if active[0]:
            return original(*args, **kwargs)
        active[0] = 1
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            active[0] = 0
            phases.setdefault(phase, []).append((t0, time.perf_counter()))

    setattr(owner, attribute, timed)

TIMED = {  # module: (object, function, phase); patched when the run first imports the module, as it does
    "evalkit.models.tokenizer_loading": [(None, "load_tokenizer", "tokenizer")],
    "evalkit.models.hf_loading": [(None, "load_config", "model"), (None, "load_model", "model")],
    "evalkit.run.model": [(None, "tokenize_tasks", "tokenize")],
    "evalkit.scoring.distributed": [("Ranks", "loglikelihood", "scoring")],
    "evalkit.reports.report": [(None, "write_report", "report"), (None, "draw_intervals", "figure")],
}

def patch_loaded():
    for module in [m for m in TIMED if m in sys.modules and hasattr(sys.modules[m], "__spec__")]:
        loaded = sys.modules[module]
        if not all(hasattr(loaded, owner or function) for owner, function, _ in TIMED[module]):
            continue  # still being imported
        for owner, function, phase in TIMED.pop(module):
            wrap(getattr(loaded, owner) if owner else loaded, function, phase)

from evalkit import cli  # light: torch, transformers and matplotlib import inside the run, as in the program

record_path = sys.argv[1]
sys.argv = ["evalkit", *sys.argv[2:]]
code = cli.main()  # as the program does: main() reads sys.argv
t_end = time.perf_counter()
with open(record_path, "w") as handle:
    json.dump({"code": code, "start": t_start, "end": t_end, "imports": imports, "phases": phases,
               "roots": roots, "gc": collecting[1]}, handle)
'''

PHASES = ("import", "tokenizer", "model", "tokenize", "scoring", "report", "figure", "other", "interpreter",
          "total")


def _overlap(spans: list[list[float]], others: list[list[float]]) -> float:
    """Seconds of ``spans`` covered by ``others`` (each a list of disjoint [start, end] pairs)."""
    return sum(max(0.0, min(e, oe) - max(s, os_)) for s, e in spans for os_, oe in others)


def breakdown(record: dict, wall: float) -> dict[str, float]:
    """Exclusive seconds per part of one run: a phase without the imports and the phases nested in it."""
    imports = record["imports"]
    phases = record["phases"]
    missing = [p for p in ("tokenizer", "model", "tokenize", "scoring", "report") if p not in phases]
    if missing:
        raise SystemExit(f"startup.py: the run never entered {', '.join(missing)}: a timed function moved?")
    out = {"import": sum(e - s for s, e in imports)}
    for name in ("tokenizer", "model", "tokenize", "scoring", "report", "figure"):
        spans = phases.get(name, [])
        seconds = sum(e - s for s, e in spans) - _overlap(spans, imports)
        if name == "report":  # the figure is drawn inside the report
            figure = phases.get("figure", [])
            seconds -= _overlap(spans, figure) - _overlap(figure, imports)
        out[name] = seconds
    child = record["end"] - record["start"]
    out["other"] = child - sum(out.values())
    out["interpreter"] = wall - child
    out["total"] = wall
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="random:pythia-14m")
    parser.add_argument("--tokenizer", default=str(REPO.parent / "shared/data/tokenizers/20B_tokenizer.json"))
    parser.add_argument("--tasks", default="piqa,lambada_openai,sciq,arc_challenge")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared/data"))
    parser.add_argument("--no-figure", action="store_true", help="pass --no-figure to the run")
    parser.add_argument("--extra", default="", help="more evalkit run flags, e.g. '--batch-size 8'")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.setdefault("OMP_NUM_THREADS", "1")
    rows, roots, collected = [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="evalkit-startup-") as tmp:
            command = ["run", "--model", args.model, "--tokenizer", args.tokenizer, "--tasks", args.tasks,
                       "--limit", str(args.limit), "--data-dir", args.data_dir, "--output-dir", tmp,
                       "--cache-dir", str(Path(tmp) / "cache"), "--no-progress", "-q", *args.extra.split()]
            if args.no_figure:
                command.append("--no-figure")
            record_path = Path(tmp) / "timing.json"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", CHILD, str(record_path), *command], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            record = json.loads(record_path.read_text())
        if record["code"] != 0:
            raise SystemExit(f"startup.py: evalkit run exited with {record['code']}")
        rows.append(breakdown(record, wall))
        roots.append(record["roots"])
        collected.append(record["gc"])
        print(f"run {i + 1}: " + "  ".join(f"{p} {rows[-1][p]:.2f}" for p in PHASES), file=sys.stderr)

    print(f"evalkit run {args.model} --tasks {args.tasks} --limit {args.limit}"
          f"{' --no-figure' if args.no_figure else ''}: median seconds of {args.runs} fresh processes")
    print(" | ".join(f"{p:>11}" for p in PHASES))
    print(" | ".join(f"{statistics.median(r[p] for r in rows):11.2f}" for p in PHASES))
    packages = sorted({k for r in roots for k in r}, key=lambda k: -statistics.median(r.get(k, 0.0) for r in roots))
    shown = [(k, statistics.median(r.get(k, 0.0) for r in roots)) for k in packages]
    print("imports by top-level package (median s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in shown if v >= 0.01))
    print(f"garbage collection during the run (inside the parts above, median s): {statistics.median(collected):.2f}")


if __name__ == "__main__":
    main()
