"""The ``evalkit`` command's flags: the argument parser of every subcommand, and a run's flags turned into a
:class:`~evalkit.types.RunConfig`. No torch here: ``evalkit --help`` and ``evalkit tasks`` start fast.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from evalkit.types import EvalkitError, RunConfig


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _non_negative_int(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return int(value)


def _positive_int(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {value!r}")
    return int(value)


def split_shots(names: Sequence[str]) -> tuple[tuple[str, ...], dict[str, int]]:
    """``--tasks`` items -> (names, per-name few-shot counts): ``arc_challenge:25`` gives ``arc_challenge`` and
    ``{"arc_challenge": 25}``; a group ``name:K`` sets K for its members (resolved by the runner).

    Raises:
        EvalkitError: a count that is not a non-negative integer, or two different counts for one name.
    """
    plain, shots = [], {}
    for item in names:
        name, sep, count = item.partition(":")
        name, count = name.strip(), count.strip()
        if sep:
            if not (count.isascii() and count.isdigit()):
                raise EvalkitError(f"--tasks {item}: the few-shot count after ':' must be a non-negative integer")
            if shots.get(name, int(count)) != int(count):
                raise EvalkitError(f"--tasks: '{name}' is given two few-shot counts ({shots[name]} and {count})")
            shots[name] = int(count)
        plain.append(name)
    return tuple(plain), shots


def _yes_no(value: str) -> bool:
    """``true``/``false`` (also ``yes``/``no``, ``1``/``0``), any case."""
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _limit(value: str) -> int | float:
    """``--limit``: a whole count, or a fraction between 0 and 1 of each task's documents (as lm-eval reads it)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number or a fraction between 0 and 1, got '{value}'") from None
    if number.is_integer() and number >= 1:
        return int(number)
    return number


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number or 'auto', got '{value}'") from None


def _model_args(value: str) -> dict:
    from evalkit.models.model_args import parse_model_args

    try:
        return parse_model_args(value)
    except EvalkitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_memory(value: str) -> dict:
    from evalkit.models.placement import parse_max_memory

    try:
        return parse_max_memory(value)
    except EvalkitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after a flag's help when it has a default worth showing (not None, False or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, [], {}, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _verbosity_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0 if default is None else default,
                       help="more log lines: -v adds evalkit's debug lines and other libraries' info lines")
    group.add_argument("-q", "--quiet", action="store_true", default=False if default is None else default,
                       help="warnings and errors only")


def _subcommand(sub: Any, name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=summary, description=description or summary[:1].upper() + summary[1:] + ".",
                            formatter_class=HelpFormatter)
    _verbosity_flags(parser, argparse.SUPPRESS)  # also after the command; the top-level value stays otherwise
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``evalkit`` command."""
    from evalkit import __version__

    parser = argparse.ArgumentParser(
        prog="evalkit", formatter_class=HelpFormatter,
        description="Evaluate causal language models by log-likelihood (lm-evaluation-harness v0.2.0 semantics), "
                    "with standard errors and published reference rows.",
        epilog="`evalkit <command> --help` shows each command's flags and their defaults.")
    parser.add_argument("--version", action="version", version=f"evalkit {__version__}")
    _verbosity_flags(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _subcommand(sub, "run", "evaluate a model on tasks; writes results/ and reports/",
                      "Evaluate a model on tasks. Prints a summary table (value ± stderr, Wilson 95% interval, n, "
                      "shots) and writes DIR/results/<model>/<time>.json and DIR/reports/<model>-<time>.md.")
    add_run_flags(run)
    run.add_argument("--log-samples", action="store_true", help="also write one JSON line per document")
    run.add_argument("--no-figure", action="store_true", help="write the report without its PNG figure (faster)")
    run.add_argument("--no-progress", action="store_true",
                     help="hide the progress bar (on a terminal it redraws in place; when stderr is a file or a "
                          "pipe it prints one line every 10 s)")

    report = _subcommand(sub, "report", "re-render a Markdown report (and its figure) from saved results")
    report.add_argument("results", nargs="+", help="results JSON files")
    report.add_argument("--output", help="report path, written as named (default: reports/<model>-<first results "
                                         "stem>.md, which replaces the run's own report); the figure goes beside "
                                         "it as .png")

    tasks = _subcommand(sub, "tasks", "list tasks, aliases and groups")
    tasks.add_argument("--include-path", action="append", default=[], help="extra folder of task files (repeatable)")
    tasks.add_argument("--lm-eval", action="store_true",
                       help="also list every task of the installed lm-eval's task folder (lm_eval.<name>; reads "
                            "about 14,000 files)")

    compare = _subcommand(sub, "compare", "paired comparison of runs over the same documents (and, with "
                                          "--published, against published rows); writes a Markdown report and a "
                                          "figure")
    compare.add_argument("results", nargs="+", help="two or more results JSON files; each is compared with the first")
    compare.add_argument("--output", help="report path (default: <A stem>_vs_<B stem>.md in the reports/ folder beside A's results/); figure beside it")
    compare.add_argument("--bootstrap-iters", type=int, default=10000, help="paired bootstrap resamples")
    compare.add_argument("--seed", type=int, default=1234, help="bootstrap seed")
    compare.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (Holm)")
    compare.add_argument("--published", action="store_true",
                         help="also compare each run with the published rows (unpaired z-tests: other documents, "
                              "other code; off by default)")
    compare.add_argument("--no-references", action="store_true",
                         help="leave out the published tables (the default unless --published; wins over it)")

    export = _subcommand(sub, "export", "write a results file in lm-evaluation-harness 0.4's layout or as CSV")
    export.add_argument("results", nargs="+", help="results JSON files (csv: one table over all of them)")
    export.add_argument("--format", choices=["lm-eval", "csv"], default="lm-eval",
                        help="lm-eval: a folder with results_<date>.json (and samples_<task>_<date>.jsonl when the "
                             "run logged samples); csv: one row per run, task and metric")
    export.add_argument("--output", help="lm-eval: folder (default: <results stem>_lm-eval/ beside the file); "
                                         "csv: file (default: <first results stem>.csv beside it)")

    baseline = _subcommand(sub, "baseline", "run a configuration and freeze it as a baseline for `evalkit check`")
    add_run_flags(baseline)
    baseline.add_argument("--output", required=True, help="baseline JSON to write")
    baseline.add_argument("--atol", type=float, default=1e-4, help="log-likelihood tolerance, nats (absolute)")
    baseline.add_argument("--rtol", type=float, default=1e-5, help="log-likelihood tolerance (relative)")

    check = _subcommand(sub, "check", "re-run a baseline exactly; exit 1 on any difference")
    check.add_argument("--baseline", required=True, help="baseline JSON written by `evalkit baseline`")
    check.add_argument("--data-dir", help="data folder; resolves the baseline's {data_dir} paths ($EVALKIT_DATA_DIR)")
    check.add_argument("--output-dir", default=".", help="the new run's results/ and reports/ go here")
    check.add_argument("--statistical", action="store_true",
                       help="fail only when a paired test finds a significant change (for real model updates)")
    check.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (--statistical)")
    check.add_argument("--bootstrap-iters", type=int, default=10000, help="paired bootstrap resamples (--statistical)")
    check.add_argument("--model", help="test another model spec against the baseline (with --statistical)")
    check.add_argument("--tokenizer", help="the tokenizer to use instead of the baseline's (a path outside its "
                                           "data folder, stored as written, may not exist here)")
    check.add_argument("--include-path", action="append", default=None,
                       help="task folders to use instead of the baseline's (repeatable)")
    return parser


def add_run_flags(run: argparse.ArgumentParser) -> None:
    """The flags that define a run (shared by ``evalkit run`` and ``evalkit baseline``)."""
    run.add_argument("--model", required=True,
                     help="alias (neox-20b, pythia-70m, ...), hub id, local folder, file.gguf, or random:<alias>")
    run.add_argument("--gguf-file", metavar="NAME", help="with --model FOLDER: load FOLDER/NAME, a GGUF checkpoint")
    run.add_argument("--tasks", required=True, type=_csv,
                     help="comma-separated task, alias or group names; name:K sets K few-shot examples for it")
    run.add_argument("--num-fewshot", type=_non_negative_int, default=0, metavar="K",
                     help="few-shot examples per document for every task (default 0: zero-shot)")
    run.add_argument("--fewshot-seed", type=_non_negative_int, default=42,
                     help="seed of the generator that draws few-shot examples (default: %(default)s, as lm-eval v0.2.0)")
    run.add_argument("--revision", help="hub branch, tag or commit of the model (recorded; default: main)")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="allow the model's own Python code from the hub (off unless given; recorded)")
    run.add_argument("--model-args", metavar="KEY=VALUE,...", type=_model_args, default={},
                     help="more from_pretrained keywords, e.g. attn_implementation=eager,cache_dir=/data/hf "
                          "(recorded, part of the cache key)")
    run.add_argument("--tokenizer", help="hub id, folder, or tokenizer.json (default: the model's)")
    run.add_argument("--data-dir", help="read DIR/<task>/<split>.jsonl instead of the hub ($EVALKIT_DATA_DIR)")
    run.add_argument("--include-path", action="append", default=[], help="extra folder of task files (repeatable)")
    run.add_argument("--skip-missing-data", action="store_true",
                     help="with --data-dir: leave out (and name) the tasks whose local files are missing")
    run.add_argument("--limit", type=_limit, metavar="N",
                     help="seeded random subset of N documents per task, or of a fraction 0 < N < 1 of each task's "
                          "documents (rounded up); smaller subsets are nested in larger ones (default: all)")
    run.add_argument("--seed", type=int, default=1234, help="seed for subsets, random weights, bootstrap")
    run.add_argument("--batch-size", type=_batch_size, default=16,
                     help="packed sequences per forward pass, or 'auto': on CUDA the largest that fits (within "
                          "--max-batch-tokens), probed on each task's longest batch; on CPU 16")
    run.add_argument("--max-batch-tokens", type=int, default=32768,
                     help="padded tokens per forward pass (bounds a batch's memory)")
    run.add_argument("--max-length", type=int, help="model window in tokens (default: from the model config)")
    run.add_argument("--max-gen-toks", type=_positive_int, metavar="N",
                     help="generation tasks: most tokens generated per document, for every such task (default: the "
                          "task's own, e.g. MATH 256 as lm-eval v0.2.0; the gpt-neox adapter used 128); must be "
                          "below the model window")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="weights and activations: auto is float32 on CPU and the checkpoint's own dtype on GPU "
                          "(bfloat16 when it names none); bfloat16/float16 halve the memory")
    run.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--parallelize", action="store_true",
                     help="spread layers over the visible GPUs (device_map=auto); under torchrun, over the rank's share")
    run.add_argument("--max-memory", type=_max_memory, metavar="DEV=SIZE,...",
                     help="with --parallelize: memory per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    run.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                     help="under torchrun: longest wait for the other ranks (joining, gathering; default 3600)")
    run.add_argument("--bootstrap-iters", type=int, default=10000, help="bootstrap resamples (0 disables)")
    run.add_argument("--tokenization", default="separate", choices=["separate", "joint"],
                     help="separate: lm-eval v0.2 (the card); joint: lm-eval 0.4")
    run.add_argument("--apply-chat-template", action="store_true",
                     help="render each prompt with the model's chat template as lm-eval 0.4.13 does (system: "
                          "instruction and description; examples as turns; choices without the space delimiter)")
    run.add_argument("--system-instruction", metavar="TEXT",
                     help="system message text, before the task description (without a chat template: put directly "
                          "before the prompt, as lm-eval does)")
    run.add_argument("--fewshot-as-multiturn", nargs="?", const=True, default=None, type=_yes_no, metavar="BOOL",
                     help="with --apply-chat-template: few-shot examples as separate user/assistant turns (default: "
                          "true, as lm-eval 0.4.13); 'false' puts the examples and the question in one user turn")
    run.add_argument("--no-shared-context", action="store_true",
                     help="score each request as its own sequence (slower; for models without custom masks)")
    run.add_argument("--prefix-cache", action="store_true",
                     help="experimental: forward prefixes shared by several requests (few-shot examples) once and "
                          "score the rest on their keys and values (same numbers; fewer tokens, but slower on CPU "
                          "so far: docs/performance.md)")
    run.add_argument("--output-dir", default=".", help="results go to DIR/results, reports to DIR/reports")
    run.add_argument("--cache-dir", help="request cache folder (default: $EVALKIT_CACHE_DIR or ~/.cache/evalkit)")
    run.add_argument("--no-cache", action="store_true", help="score every request, read and store nothing")
    run.add_argument("--allow-non-finite", action="store_true",
                     help="count NaN/inf log-likelihoods and leave their documents out of the metrics, instead of "
                          "stopping the run")
    run.add_argument("--full-weight-hash", action="store_true",
                     help="key a local model folder by the sha256 of every weight byte (default: headers and samples)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig described by ``evalkit run`` flags."""
    extra = {
        "max_batch_tokens": args.max_batch_tokens,
        "tokenization": args.tokenization,
        "share_context": not args.no_shared_context,
    }
    if args.revision is not None:
        extra["revision"] = args.revision
    if args.trust_remote_code:
        extra["trust_remote_code"] = True
    if args.model_args:
        extra["model_args"] = dict(args.model_args)
    model = args.model
    if getattr(args, "gguf_file", None):
        if model.lower().endswith(".gguf") or model.startswith("random:"):
            raise EvalkitError(f"--gguf-file names a file inside the --model folder; --model {model} is not a folder")
        model = f"{model.rstrip('/')}/{args.gguf_file}"
    if args.max_memory and not args.parallelize:
        raise EvalkitError("--max-memory applies to a sharded model: add --parallelize")
    if args.parallelize:
        extra["load_kwargs"] = {"device_map": "auto"} | ({"max_memory": args.max_memory} if args.max_memory else {})
    if args.dist_timeout is not None:
        extra["dist_timeout_s"] = args.dist_timeout
    if getattr(args, "apply_chat_template", False):
        extra["apply_chat_template"] = True
    if getattr(args, "system_instruction", None) is not None:
        extra["system_instruction"] = args.system_instruction
    if getattr(args, "fewshot_as_multiturn", None) is not None:
        extra["fewshot_as_multiturn"] = args.fewshot_as_multiturn
    if args.allow_non_finite:
        extra["allow_non_finite"] = True
    if args.full_weight_hash:
        extra["full_weight_hash"] = True
    if getattr(args, "prefix_cache", False):
        extra["prefix_cache"] = True
    if getattr(args, "no_figure", False):
        extra["figure"] = False
    tasks, shots = split_shots(args.tasks)
    return RunConfig(
        model=model, tasks=tasks, tokenizer=args.tokenizer, data_dir=args.data_dir,
        include_paths=tuple(args.include_path), limit=args.limit, seed=args.seed, batch_size=args.batch_size,
        max_length=args.max_length, dtype=args.dtype, device=args.device, bootstrap_iters=args.bootstrap_iters,
        output_dir=args.output_dir, log_samples=getattr(args, "log_samples", False), cache_dir=args.cache_dir,
        use_cache=not args.no_cache, num_fewshot=args.num_fewshot, fewshot_overrides=shots,
        fewshot_seed=args.fewshot_seed, extra=extra, skip_missing_data=args.skip_missing_data,
        max_gen_toks=getattr(args, "max_gen_toks", None),
    )
