"""evalkit's reading of lm-eval 0.4 ``generate_until`` task YAMLs against lm-eval's own code: every context, stop
list and length, and the per-document metrics of given generations, for lm-eval 0.4.13's gsm8k, gsm8k-cot and
triviaqa YAMLs (as kept in tests/task_yaml/lmeval_0413).

lm-eval (0.4.x, importable as ``lm_eval``) builds its requests with ``ConfigurableTask.build_all_requests`` from the
same YAML, its dataset redirected to local JSON-lines files (``dataset_path: json``); evalkit prepares the same task
with :func:`evalkit.run.prepare.prepare_task`. Metrics: lm-eval's filters (``apply_filters``) and
``process_results`` on each generation, against evalkit's ``Task.score_generation``. No model is involved.

Usage (GSM8K documents are written by the script; TriviaQA reads DIR/triviaqa/validation.jsonl)::

    python benchmarks/generate_vs_lm_eval.py --data-dir ../shared/data [--triviaqa-limit 2000]

Prints one line per task and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evalkit.run.prepare import prepare_task  # noqa: E402
from evalkit.tasks.registry import load_registry  # noqa: E402

YAMLS = REPO / "tests" / "task_yaml" / "lmeval_0413"
GSM8K_TEST = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "A bike costs $1,000 and a helmet $234. What do both cost?",
     "answer": "Together 1000+234 = <<1000+234=1234>>1234 dollars.\n#### 1,234"},
    {"question": "Tom has 3 apples and gets 5 more. How many apples has he?", "answer": "3+5 = <<3+5=8>>8.\n#### 8"},
    {"question": "A train goes 60 km in 1.5 hours. What is its speed?", "answer": "60/1.5 = 40.\n#### 40"},
]
GSM8K_TRAIN = [{"question": f"Train question {i}: what is {i} + {i}?", "answer": f"{i}+{i} = {2 * i}.\n#### {2 * i}"}
               for i in range(12)]
GSM8K_GENERATIONS = [" The answer is 72.\n#### 72", " The total is $1,234.", " He has 5 apples\n#### 7",
                     " So 40 km/h. The answer is 40.", " ####72", ""]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def lm_eval_task(yaml_path: Path, data_files: dict[str, str]):
    """lm-eval's ConfigurableTask of a YAML with its dataset read from local JSON-lines files."""
    from lm_eval.api.task import ConfigurableTask

    config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    config |= {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": data_files}}
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=None, rank=0, world_size=1)
    return task


def lm_eval_metrics(task, instance, generation: str) -> dict[str, float]:
    """lm-eval's ``metric,filter`` values of one document for one generation."""
    instance.resps = [generation]
    instance.filtered_resps = {}
    for ensemble in task._filters:  # noqa: SLF001 - lm-eval's own filter objects, applied to this instance alone
        ensemble.apply([instance])
    out = {}
    for key, filtered in instance.filtered_resps.items():
        for metric, value in task.process_results(instance.doc, [filtered]).items():
            out[f"{metric},{key}"] = float(value)
    return out


def compare(name: str, yaml_path: Path, data_files: dict[str, str], evalkit_dir: Path, shots: int,
            generations: list[str], limit: int | None = None) -> list[str]:
    """Differences between lm-eval and evalkit for one task (empty when they agree)."""
    theirs = lm_eval_task(yaml_path, data_files)
    instances = sorted(theirs.instances, key=lambda i: i.doc_id)[: limit or None]
    registry = load_registry([str(yaml_path.parent)])
    task = registry.get(f"lm_eval.{name}")
    ours = prepare_task(task, evalkit_dir, None, 1234, num_fewshot=shots)
    problems = []
    for inst, request, doc in zip(instances, ours.requests, ours.docs):
        context, kwargs = inst.args
        if context != request.context:
            problems.append(f"{name} doc {inst.doc_id}: context differs: lm-eval {context[-80:]!r}, evalkit "
                            f"{request.context[-80:]!r}")
        until = kwargs.get("until")
        if list(request.until) != list(until):
            problems.append(f"{name} doc {inst.doc_id}: until lm-eval {until!r}, evalkit {list(request.until)!r}")
        length = next((kwargs[k] for k in ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
                       if kwargs.get(k) is not None), 256)  # HFLM's default
        if int(length) != request.max_new_tokens:
            problems.append(f"{name} doc {inst.doc_id}: length lm-eval {length}, evalkit {request.max_new_tokens}")
        own = [" " + a for a in doc.get("answer", {}).get("aliases", [])[:2]] if name == "triviaqa" else []
        for generation in generations + own:
            expected = lm_eval_metrics(theirs, inst, generation)
            got = task.score_generation(doc, generation)
            if expected != got:
                problems.append(f"{name} doc {inst.doc_id} generation {generation!r}: lm-eval {expected}, "
                                f"evalkit {got}")
    checked = min(len(instances), len(ours.requests))
    print(f"{name}: {checked} documents, {shots}-shot, {len(generations)}+ generations each: "
          f"{'identical contexts, stops, lengths and metrics' if not problems else f'{len(problems)} differences'}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding triviaqa/validation.jsonl")
    parser.add_argument("--triviaqa-limit", type=int, default=500, help="TriviaQA documents compared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {split: str(write_jsonl(root / name / f"{split}.jsonl", rows))
                 for name in ("gsm8k", "gsm8k_cot") for split, rows in (("test", GSM8K_TEST), ("train", GSM8K_TRAIN))}
        gsm = {"test": files["test"], "train": files["train"]}
        (root / "triviaqa").symlink_to(Path(args.data_dir).resolve() / "triviaqa")
        validation = str(root / "triviaqa" / "validation.jsonl")
        problems = compare("gsm8k", YAMLS / "gsm8k.yaml", gsm, root, 5, GSM8K_GENERATIONS)
        problems += compare("gsm8k_cot", YAMLS / "gsm8k-cot.yaml", {"test": gsm["test"]}, root, 8, GSM8K_GENERATIONS)
        problems += compare("triviaqa", YAMLS / "triviaqa.yaml", {"train": validation, "validation": validation},
                            root, 0, [" nothing", "  Paris, France", ""], args.triviaqa_limit)
    for line in problems[:30]:
        print("  " + line)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
