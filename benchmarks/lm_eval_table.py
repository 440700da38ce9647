"""Render an evalkit run, exported with ``evalkit export --format lm-eval``, with lm-evaluation-harness's own
table printer (``lm_eval.utils.make_table``), and check that it shows evalkit's values and stderrs.

Needs lm-eval 0.4.13 (``pip install -e '.[bench]'``); the test suite does not. Usage::

    python benchmarks/lm_eval_table.py RESULTS.json      # an evalkit results file
    python benchmarks/lm_eval_table.py                   # runs random:pythia-14m on 3 tasks first (~15 s, CPU)

Prints lm-eval's table of the exported file, then one line per (task, metric) comparing the table's cells with
the results file (value and stderr, both at make_table's 4 decimals); exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def fresh_run(folder: Path) -> Path:
    """A small evalkit run (random:pythia-14m, lambada_openai, piqa, arc_challenge, 50 documents each)."""
    subprocess.run([sys.executable, "-m", "evalkit", "run", "--model", "random:pythia-14m", "--tokenizer",
                    str(DATA / "tokenizers" / "20B_tokenizer.json"), "--tasks", "lambada,piqa,arc", "--data-dir",
                    str(DATA), "--limit", "50", "--bootstrap-iters", "500", "--output-dir", str(folder),
                    "--cache-dir", str(folder / "cache"), "--log-samples", "--no-progress"],
                   check=True, cwd=REPO)
    return next((folder / "results").glob("*/*[0-9]Z.json"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", help="evalkit results JSON (default: a fresh small run)")
    args = parser.parse_args()
    from lm_eval.utils import make_table

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.results) if args.results else fresh_run(Path(tmp))
        out = Path(tmp) / "lm-eval"
        subprocess.run([sys.executable, "-m", "evalkit", "export", str(path), "--format", "lm-eval",
                        "--output", str(out)], check=True, cwd=REPO)
        exported = json.loads(next(out.glob("results_*.json")).read_text())
        table = make_table(exported)
        print(table)
        evalkit = json.loads(path.read_text())
    rows = {}
    task = None
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        task = cells[0] or task
        rows[(task, cells[4])] = cells
    bad = 0
    for name, entry in evalkit["tasks"].items():
        for metric, m in entry["metrics"].items():
            cells = rows.get((name, metric))
            stderr = m["stderr"] if m["stderr"] is not None else m["stderr_bootstrap"]
            want = (f"{m['value']:.4f}", f"{stderr:.4f}", str(entry.get("num_fewshot", 0)))
            got = (cells[6], cells[8], cells[3]) if cells else None
            same = got == want
            bad += not same
            print(f"{'same' if same else 'DIFFERENT'}: {name} {metric}: evalkit value, stderr, shots {want}; "
                  f"lm-eval table {got}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
