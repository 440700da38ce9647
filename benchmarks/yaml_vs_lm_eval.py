"""lm-eval 0.4's own shipped task YAMLs read by evalkit, against lm-eval's own requests and log-likelihoods.

Usage (in an environment with lm-eval installed, e.g. after ``pip install -e '.[bench]'``)::

    python benchmarks/yaml_vs_lm_eval.py                       # 50 documents per task, zero-shot and 2-shot
    python benchmarks/yaml_vs_lm_eval.py --limit 200 --shots 0

evalkit loads the YAMLs exactly as lm-eval ships them (``--include-path <lm_eval>/tasks/<folder>``) with
``--data-dir`` on links to the shared data. lm-eval itself cannot reach the hub here, so it runs YAMLs
``local_<task>`` that include the shipped file unchanged and only set ``dataset_path: json`` and
``dataset_kwargs.data_files`` to the same files. Both score one tiny seeded random GPT-NeoX saved with
transformers (``--model hf``) on lm-eval's ``--limit`` documents (the first N), lm-eval with ``log_samples``.
Printed per task and number of shots: the fraction of requests whose (context, continuation) equal lm-eval's
arguments, the fraction with equal greedy flags, the largest |delta log-likelihood| in nats, and the documents
whose highest-scoring continuation is the same on both sides.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# task -> (its shipped YAML under lm_eval/tasks, {split name in the YAML: file under the data folder})
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", {"test": "arc_easy/test.jsonl", "train": "arc_easy/train.jsonl"}),
    "arc_challenge": ("arc/arc_challenge.yaml",
                      {"test": "arc_challenge/test.jsonl", "train": "arc_challenge/train.jsonl"}),
    "piqa": ("piqa/piqa.yaml", {"validation": "piqa/validation.jsonl"}),
    "sciq": ("sciq/sciq.yaml", {"test": "sciq/test.jsonl", "train": "sciq/train.jsonl"}),
    "openbookqa": ("openbookqa/openbookqa.yaml",
                   {"test": "openbookqa/test.jsonl", "train": "openbookqa/train.jsonl"}),
    "winogrande": ("winogrande/default.yaml",
                   {"validation": "winogrande/validation.jsonl", "train": "winogrande/train_l.jsonl"}),
    "mmlu_anatomy": ("mmlu/default/mmlu_anatomy.yaml", {"test": "mmlu/anatomy/test.jsonl",
                                                        "dev": "mmlu/anatomy/dev.jsonl"}),
}
SPLIT_KEYS = {"train": "training_split", "validation": "validation_split", "test": "test_split"}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared/data"))
    p.add_argument("--tokenizer", default=str(REPO.parent / "shared/data/tokenizers/20B_tokenizer.json"))
    p.add_argument("--limit", type=int, default=50, help="first N documents per task (lm-eval's --limit)")
    p.add_argument("--shots", default="0,2", help="comma-separated few-shot counts to compare")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workdir", help="keep the model, YAML copies and data links here (default: a temporary folder)")
    return p.parse_args(argv)


def save_tiny_model(folder: Path, tokenizer_json: str) -> None:
    """A seeded random 2-layer GPT-NeoX and the 20B tokenizer, saved with transformers for ``--model hf``."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                           vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25,
                           use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    GPTNeoXForCausalLM(config).eval().save_pretrained(folder)
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, eos_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(folder)


def local_data(data_dir: Path, root: Path) -> Path:
    """``root/<task>/<split>.jsonl`` links to the shared files (WinoGrande's train split is its ``train_l`` file)."""
    for task, (_, files) in TASKS.items():
        (root / task).mkdir(parents=True, exist_ok=True)
        for split, rel in files.items():
            link = root / task / f"{split}.jsonl"
            if not link.exists():
                link.symlink_to(data_dir / rel)
    return root


def lm_eval_copies(tasks_root: Path, data_root: Path, out: Path) -> None:
    """For each task a YAML lm-eval can run offline: ``local_<task>`` includes the shipped file unchanged and only
    replaces the dataset by JSON files (and clears the splits that have no file here)."""
    out.mkdir(parents=True, exist_ok=True)
    for task, (shipped, files) in TASKS.items():
        lines = [f"include: {tasks_root / shipped}", f"task: local_{task}", "tag: []", "dataset_path: json",
                 "dataset_name: null", "dataset_kwargs:", "  data_files:"]
        lines += [f"    {split}: {data_root / task / (split + '.jsonl')}" for split in files]
        lines += [f"{key}: null" for split, key in SPLIT_KEYS.items() if split not in files]
        (out / f"local_{task}.yaml").write_text("\n".join(lines) + "\n")


def run_lm_eval(model_dir: Path, include: Path, tasks: list[str], limit: int, shots: int, batch: int) -> dict:
    """lm-eval's per-document samples: local task name -> list of log_samples entries."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include))
    result = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", device="cpu",
                             tasks=[f"local_{t}" for t in tasks], num_fewshot=shots, limit=limit,
                             batch_size=batch, log_samples=True, task_manager=manager, bootstrap_iters=0)
    return result["samples"]


def evalkit_requests(tasks_root: Path, data_root: Path, tasks: list[str], limit: int, shots: int) -> dict:
    """evalkit's requests from the shipped YAMLs for the first ``limit`` documents: task -> (prepared, requests)."""
    from evalkit.tasks.registry import load_registry
    from evalkit.run.prepare import prepare_task

    folders = sorted({str((tasks_root / TASKS[t][0]).parent) for t in tasks})
    registry = load_registry(folders)
    out = {}
    for task in tasks:
        prepared = prepare_task(registry.get(f"lm_eval.{task}"), data_root, None, 1234, shots)
        keep = [r for r in prepared.requests if r.doc_id < limit]
        out[task] = (prepared, keep)
    return out


def score(model_dir: Path, prepared_by_task: dict, batch: int) -> dict:
    """evalkit's responses for each task's kept requests (its backend, joint tokenization from the task)."""
    from evalkit.scoring.hf_backend import HFBackend
    from evalkit.models.hf_loading import load_model, model_window
    from evalkit.models.tokenizer_loading import load_tokenizer
    from evalkit.run.prepare import PreparedTask
    from evalkit.run.model import tokenize_tasks

    tokenizer = load_tokenizer(str(model_dir), None)
    model, _ = load_model({"kind": "pretrained", "path": str(model_dir), "alias": None}, "float32", "cpu", 0)
    window = model_window(model, None)
    out = {}
    for task, (prepared, keep) in prepared_by_task.items():
        sub = PreparedTask(prepared.task, prepared.n_split, [], [], keep, [])
        tokenized = tokenize_tasks([sub], tokenizer.encode_batch, tokenizer.eot_id, window, "separate")
        backend = HFBackend(model, window, batch_size=batch, pad_id=tokenizer.eot_id, progress=False)
        out[task] = backend.loglikelihood(tokenized)
    return out


def _args(sample: dict) -> list[tuple[str, str]]:
    pairs = []
    for arg in sample["arguments"]:
        if isinstance(arg, dict):  # the JSON form of --log_samples: {"arg_0": context, "arg_1": continuation}
            arg = (arg["arg_0"], arg["arg_1"])
        pairs.append((arg[0], arg[1]))
    return pairs


def compare(task: str, samples: list[dict], requests: list, responses: list) -> dict:
    """Agreement figures of one task (see module docstring)."""
    ours = {}
    for request, response in zip(requests, responses):
        ours.setdefault(request.doc_id, []).append((request, response))
    same_text = same_greedy = total = 0
    worst = 0.0
    docs_same_acc = docs = 0
    for sample in samples:
        doc_id = sample["doc_id"]
        theirs = _args(sample)
        mine = ours.get(doc_id, [])
        resps = [r[0] if isinstance(r, (list, tuple)) and isinstance(r[0], (list, tuple)) else r
                 for r in sample["resps"]]
        docs += 1
        for k, (ctx, cont) in enumerate(theirs):
            total += 1
            if k >= len(mine):
                continue
            request, response = mine[k]
            same_text += (request.context, request.continuation) == (ctx, cont)
            ll, greedy = float(resps[k][0]), bool(resps[k][1])
            same_greedy += response.greedy == greedy
            worst = max(worst, abs(response.loglikelihood - ll))
        if len(mine) == len(theirs):  # the chosen continuation (first of the highest, as numpy.argmax)
            lls = [m[1].loglikelihood for m in mine]
            their_lls = [float(r[0]) for r in resps]
            docs_same_acc += lls.index(max(lls)) == their_lls.index(max(their_lls))
    return {"requests": total, "same_text": same_text, "same_greedy": same_greedy, "max_abs_dll": worst,
            "docs": docs, "same_argmax": docs_same_acc}


def main(argv=None) -> int:
    """Run both sides and print the agreement table."""
    args = parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval

    tasks_root = Path(lm_eval.__file__).parent / "tasks"
    tasks = [t for t in args.tasks.split(",") if t]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="yaml_vs_lm_eval_"))
    model_dir = work / "tiny-neox"
    if not (model_dir / "config.json").exists():
        save_tiny_model(model_dir, args.tokenizer)
    data_root = local_data(Path(args.data_dir), work / "data")
    lm_eval_copies(tasks_root, data_root, work / "lm_eval_tasks")
    print(f"lm-eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else ''} shipped YAMLs: {tasks_root}")
    print(f"model: {model_dir} (random GPT-NeoX, 2 layers, width 64, fp32, CPU); first {args.limit} documents")
    print("| task | shots | requests | same context+continuation | same greedy | max abs dLL (nats) | same argmax |")
    print("| --- | --: | --: | --: | --: | --: | --: |")
    for shots in [int(s) for s in args.shots.split(",")]:
        chosen = [t for t in tasks if shots == 0 or t != "piqa"]  # no PIQA training split offline
        samples = run_lm_eval(model_dir, work / "lm_eval_tasks", chosen, args.limit, shots, args.batch_size)
        ours = evalkit_requests(tasks_root, data_root, chosen, args.limit, shots)
        responses = score(model_dir, ours, args.batch_size)
        for task in chosen:
            figures = compare(task, samples[f"local_{task}"], ours[task][1], responses[task])
            n = figures["requests"]
            print(f"| {task} | {shots} | {n} | {figures['same_text'] / n:.1%} | {figures['same_greedy'] / n:.1%} | "
                  f"{figures['max_abs_dll']:.2e} | {figures['same_argmax']}/{figures['docs']} |", flush=True)
    if shots and "piqa" in tasks:
        print("piqa is compared zero-shot only: its training split is not in the offline data")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
