"""Command line: ``evalkit run``, ``report``, ``tasks``, ``compare``, ``baseline`` and ``check``.

Each subcommand parses its flags, builds its inputs and calls one function; errors that are the user's
(:class:`~evalkit.types.EvalkitError`) are printed as one line without a traceback, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from evalkit.types import EvalkitError, RunConfig


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _max_memory(value: str) -> dict:
    from evalkit.placement import parse_max_memory

    try:
        return parse_max_memory(value)
    except EvalkitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``evalkit`` command."""
    parser = argparse.ArgumentParser(prog="evalkit", description="Evaluate causal LMs by log-likelihood.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a model on tasks; writes results/ and reports/")
    add_run_flags(run)
    run.add_argument("--log-samples", action="store_true", help="also write one JSON line per document")
    run.add_argument("--no-figure", action="store_true", help="write the report without its PNG figure (faster)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    report = sub.add_parser("report", help="re-render a Markdown report (and its figure) from saved results")
    report.add_argument("results", nargs="+", help="results JSON files")
    report.add_argument("--output", help="report path ending in .md (default: reports/<first results stem>.md)")

    tasks = sub.add_parser("tasks", help="list tasks, aliases and groups")
    tasks.add_argument("--include-path", action="append", default=[], help="extra folder of task files")

    compare = sub.add_parser("compare", help="paired comparison of runs over the same documents, and against "
                                             "published rows; writes a Markdown report and a figure")
    compare.add_argument("results", nargs="+", help="two or more results JSON files; each is compared with the first")
    compare.add_argument("--output", help="report path (default: <A stem>_vs_<B stem>.md in the reports/ folder beside A's results/); figure beside it")
    compare.add_argument("--bootstrap-iters", type=int, default=10000, help="paired bootstrap resamples")
    compare.add_argument("--seed", type=int, default=1234, help="bootstrap seed")
    compare.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (Holm)")
    compare.add_argument("--no-references", action="store_true", help="leave out the published tables")

    baseline = sub.add_parser("baseline", help="run a configuration and freeze it as a baseline for `evalkit check`")
    add_run_flags(baseline)
    baseline.add_argument("--output", required=True, help="baseline JSON to write")
    baseline.add_argument("--atol", type=float, default=1e-4, help="log-likelihood tolerance, nats (absolute)")
    baseline.add_argument("--rtol", type=float, default=1e-5, help="log-likelihood tolerance (relative)")

    check = sub.add_parser("check", help="re-run a baseline exactly; exit 1 on any difference")
    check.add_argument("--baseline", required=True, help="baseline JSON written by `evalkit baseline`")
    check.add_argument("--data-dir", help="data folder; resolves the baseline's {data_dir} paths ($EVALKIT_DATA_DIR)")
    check.add_argument("--output-dir", default=".", help="the new run's results/ and reports/ go here")
    check.add_argument("--statistical", action="store_true",
                       help="fail only when a paired test finds a significant change (for real model updates)")
    check.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (--statistical)")
    check.add_argument("--bootstrap-iters", type=int, default=10000, help="paired bootstrap resamples (--statistical)")
    check.add_argument("--model", help="test another model spec against the baseline (with --statistical)")
    return parser


def add_run_flags(run: argparse.ArgumentParser) -> None:
    """The flags that define a run (shared by ``evalkit run`` and ``evalkit baseline``)."""
    run.add_argument("--model", required=True,
                     help="alias (neox-20b, pythia-70m, ...), hub id, local folder, file.gguf, or random:<alias>")
    run.add_argument("--gguf-file", metavar="NAME", help="with --model FOLDER: load FOLDER/NAME, a GGUF checkpoint")
    run.add_argument("--tasks", required=True, type=_csv, help="comma-separated task, alias or group names")
    run.add_argument("--tokenizer", help="hub id, folder, or tokenizer.json (default: the model's)")
    run.add_argument("--data-dir", help="read DIR/<task>/<split>.jsonl instead of the hub ($EVALKIT_DATA_DIR)")
    run.add_argument("--include-path", action="append", default=[], help="extra folder of task files")
    run.add_argument("--limit", type=int, help="seeded random subset of N documents per task")
    run.add_argument("--seed", type=int, default=1234, help="seed for subsets, random weights, bootstrap")
    run.add_argument("--batch-size", type=int, default=16, help="packed sequences per forward pass")
    run.add_argument("--max-batch-tokens", type=int, default=32768, help="padded tokens per forward pass")
    run.add_argument("--max-length", type=int, help="model window in tokens (default: from the model config)")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
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
    run.add_argument("--no-shared-context", action="store_true",
                     help="score each request as its own sequence (slower; for models without custom masks)")
    run.add_argument("--output-dir", default=".", help="results go to DIR/results, reports to DIR/reports")
    run.add_argument("--cache-dir", help="request cache folder (default: $EVALKIT_CACHE_DIR or ~/.cache/evalkit)")
    run.add_argument("--no-cache", action="store_true", help="score every request, read and store nothing")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig described by ``evalkit run`` flags."""
    extra = {
        "max_batch_tokens": args.max_batch_tokens,
        "tokenization": args.tokenization,
        "share_context": not args.no_shared_context,
    }
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
    if getattr(args, "no_figure", False):
        extra["figure"] = False
    return RunConfig(
        model=model, tasks=args.tasks, tokenizer=args.tokenizer, data_dir=args.data_dir,
        include_paths=tuple(args.include_path), limit=args.limit, seed=args.seed, batch_size=args.batch_size,
        max_length=args.max_length, dtype=args.dtype, device=args.device, bootstrap_iters=args.bootstrap_iters,
        output_dir=args.output_dir, log_samples=getattr(args, "log_samples", False), cache_dir=args.cache_dir,
        use_cache=not args.no_cache, extra=extra,
    )


def resume_command(argv: Sequence[str]) -> str:
    """The command line that repeats this one: ``python -m evalkit ...`` when started as a module, else
    ``evalkit ...``."""
    as_module = Path(sys.argv[0]).resolve() == Path(__file__).with_name("__main__.py").resolve()
    prog = "python -m evalkit" if as_module else "evalkit"
    return f"{prog} {shlex.join(argv)}"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_run(args: argparse.Namespace) -> int:
    """``evalkit run``: prints the results and report paths.

    Ctrl-C (SIGINT) or SIGTERM stops the run; results are only ever written whole (temporary file + rename),
    every scored batch stays in the request cache, and the command that resumes the run is printed. Exit
    status 130 (SIGINT) or 143 (SIGTERM).
    """
    from evalkit.cache import resolve_cache_dir
    from evalkit.runner import run

    config = config_from_args(args)
    catch_term = threading.current_thread() is threading.main_thread()  # signal handlers: main thread only
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if catch_term else None
    try:
        output = run(config, progress=not args.no_progress)
    except KeyboardInterrupt as exc:
        by_term = str(exc) == "SIGTERM"
        command = resume_command(args.argv)
        if config.use_cache:
            print(f"evalkit: interrupted; every scored batch is kept in the request cache "
                  f"{resolve_cache_dir(config.cache_dir)}\nevalkit: resume with: {command}", file=sys.stderr)
        else:
            print(f"evalkit: interrupted; nothing was cached (--no-cache)\n"
                  f"evalkit: run again with: {command}", file=sys.stderr)
        return 143 if by_term else 130
    finally:
        if catch_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if output is None:  # a data-parallel rank other than 0
        return 0
    for name, task in output.results["tasks"].items():
        parts = [f"{m}={v['value']:.4f}" for m, v in task["metrics"].items()]
        print(f"{name:16s} n={task['n']:<6d} " + " ".join(parts))
    print(f"results: {output.results_path}")
    if output.samples_path:
        print(f"samples: {output.samples_path}")
    print(f"report: {output.report_path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``evalkit report``: re-renders a report (and its figure) from results files."""
    from evalkit.report import write_report
    from evalkit.results_io import default_reports_dir, load_results

    runs = [load_results(p) for p in args.results]
    first = Path(args.results[0])
    default = default_reports_dir(first) / f"{first.stem}.md"
    path = Path(args.output) if args.output else default
    written = write_report(runs, path.parent, path.stem, source_paths=args.results)
    print(f"report: {written}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``evalkit compare``: prints one line per paired difference and the report's path."""
    from evalkit.compare import compare

    output = compare(args.results, args.output, args.bootstrap_iters, args.seed, args.alpha, not args.no_references)
    for table in output.paired:
        print(f"{table.label_b} vs {table.label_a}:")
        for r in table.rows:
            verdict = "significant" if r.significant else "not significant"
            print(f"  {r.task:16s} {r.metric:10s} Δ {r.delta:+.4f} [{r.low:+.4f}, {r.high:+.4f}] "
                  f"{r.test} p={r.p_value:.3g} Holm p={r.p_holm:.3g} {verdict}")
    print(f"report: {output.report_path}")
    if output.figure_path:
        print(f"figure: {output.figure_path}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """``evalkit baseline``: runs the configuration with samples and writes the baseline file."""
    from evalkit.baseline import Tolerance, create_baseline

    done = create_baseline(config_from_args(args), Path(args.output), Tolerance(args.atol, args.rtol))
    print(f"baseline: {done.path} ({done.requests} requests)")
    print(f"results: {done.results_path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``evalkit check``: prints every difference; exit status 0 when the check passes, 1 when it fails."""
    from evalkit.check import run_check
    from evalkit.data import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    result = run_check(args.baseline, str(data_dir) if data_dir else None, args.output_dir, args.statistical,
                       args.alpha, args.bootstrap_iters, args.model)
    for line in result.lines:
        print(line)
    print(f"results: {result.results_path}")
    return 0 if result.passed else 1


def cmd_tasks(args: argparse.Namespace) -> int:
    """``evalkit tasks``: one line per task and group."""
    from evalkit.registry import load_registry

    registry = load_registry(args.include_path)
    for name, task in sorted(registry.tasks.items()):
        aliases = f" (aliases: {', '.join(task.aliases)})" if task.aliases else ""
        ds = task.dataset
        print(f"{name}{aliases}: {ds.hub_id} {ds.config or ''} {ds.split} n={ds.n}; {', '.join(task.metrics)}")
    for name, group in sorted(registry.groups.items()):
        print(f"{name} (group): {', '.join(group.tasks)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``evalkit`` console script; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"run": cmd_run, "report": cmd_report, "tasks": cmd_tasks, "compare": cmd_compare,
                "baseline": cmd_baseline, "check": cmd_check}
    where = _rank_label()
    try:
        return commands[args.command](args)
    except EvalkitError as exc:
        print(f"evalkit: error{where}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if where:  # name the rank before the traceback; torchrun then stops the other ranks
            print(f"evalkit: error{where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise


def _rank_label() -> str:
    """`` (rank R of N)`` when this process is one rank of a torchrun job, else empty."""
    from evalkit.placement import RankInfo

    try:
        info = RankInfo.from_env()
    except EvalkitError:
        return ""
    return f" ({info.label})" if info.is_distributed else ""


if __name__ == "__main__":
    sys.exit(main())
