"""Command line: ``evalkit run``, ``report``, ``tasks``, ``compare``, ``export``, ``baseline`` and ``check``.

Each subcommand parses its flags (:mod:`evalkit.cli.main.parser`), builds its inputs and calls one function; errors
that are the user's (:class:`~evalkit.types.EvalkitError`) are printed as one line without a traceback, exit
status 2.
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

from evalkit.cli.parser import build_parser, config_from_args
from evalkit.types import EvalkitError


def resume_command(argv: Sequence[str]) -> str:
    """The command line that repeats this one: ``python -m evalkit ...`` when started as a module, else
    ``evalkit ...``."""
    as_module = Path(sys.argv[0]).resolve() == Path(__file__).parent.parent.joinpath("__main__.py").resolve()
    prog = "python -m evalkit" if as_module else "evalkit"
    return f"{prog} {shlex.join(argv)}"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def close_progress_bars() -> None:
    """Close every progress bar still open (an interrupted scoring loop never reached its ``close``), so each prints
    its last line before the interrupt message instead of after it, when the interrupted frames are freed at exit.
    Reads tqdm's registry of live bars (``tqdm._instances``); without tqdm, or without that registry, nothing is
    done."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot draw its last line must not hide the interrupt message
            pass


def cmd_run(args: argparse.Namespace) -> int:
    """``evalkit run``: prints the results and report paths.

    Ctrl-C (SIGINT) or SIGTERM stops the run; results are only ever written whole (temporary file + rename),
    every scored batch stays in the request cache, and the command that resumes the run is printed. Exit
    status 130 (SIGINT) or 143 (SIGTERM). A signal that arrives once the results file is written (while the
    report is rendered) stops a finished run: its results path is printed with how to re-render the report, exit
    status 1 (as for a report that could not be written).
    """
    from evalkit.scoring.cache import resolve_cache_dir
    from evalkit.run.pipeline import run

    config = config_from_args(args)
    catch_term = threading.current_thread() is threading.main_thread()  # signal handlers: main thread only
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if catch_term else None
    try:
        output = run(config, progress=not args.no_progress)
    except KeyboardInterrupt as exc:
        by_term = str(exc) == "SIGTERM"
        written = getattr(exc, "results_path", None)
        if written is not None:  # the results are complete; only the report is missing
            print(f"results: {written}")
            if getattr(exc, "samples_path", None):
                print(f"samples: {exc.samples_path}")  # type: ignore[attr-defined]
            print(f"evalkit: error: {'SIGTERM' if by_term else 'an interrupt (Ctrl-C)'} arrived while the report was "
                  f"written; the results are complete in {written}; re-render the report with: evalkit report "
                  f"{written} --output REPORT.md", file=sys.stderr)
            return 1
        close_progress_bars()  # their last line now, not after the message (when the traceback's frames are freed)
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
    from evalkit.results.summary import folded_rows, format_summary, subset_banner

    rows, folded = folded_rows(output.results)  # a group's members are in the report, not on the terminal
    print(format_summary(rows))
    for note in folded:
        print(note)
    banner = subset_banner(output.results)
    if banner:
        print(banner)
    print(f"results: {output.results_path}")
    if output.samples_path:
        print(f"samples: {output.samples_path}")
    if getattr(args, "lm_eval_output_path", None):
        from evalkit.cli.lmeval_flags import write_lm_eval_output

        for written in write_lm_eval_output(args.lm_eval_output_path, config.model, output.results,
                                            output.results_path):
            print(f"lm-eval: {written}")
    if output.report_error:
        print(f"evalkit: error: {output.report_error}", file=sys.stderr)
        return 1
    print(f"report: {output.report_path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``evalkit report``: re-renders a report (and its figure) from results files."""
    from evalkit.reports.report import write_report_file
    from evalkit.results.files import default_reports_dir, load_results, report_stem

    runs = [load_results(p) for p in args.results]
    first = Path(args.results[0])
    path = Path(args.output) if args.output else default_reports_dir(first) / f"{report_stem(first)}.md"
    replaced = path.exists()
    try:
        written = write_report_file(runs, path, source_paths=args.results)
    except OSError as exc:
        raise EvalkitError(f"cannot write the report {exc.filename or path}: {exc.strerror or exc}") from None
    print(f"report: {written}" + (" (replaced the report that was there)" if replaced else ""))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``evalkit compare``: prints one line per paired difference (an aggregated group's member rows folded into one
    line, :func:`evalkit.reports.compare.fold_group_rows`) and the report's path."""
    from evalkit.reports.compare import compare, fold_group_rows
    from evalkit.results.files import load_results
    from evalkit.results.summary import format_signed

    try:
        output = compare(args.results, args.output, args.bootstrap_iters, args.seed, args.alpha,
                         args.published and not args.no_references)
    except OSError as exc:
        raise EvalkitError(f"cannot write the comparison {exc.filename or args.output}: {exc.strerror or exc}") \
            from None
    first = load_results(args.results[0])  # its groups fold their members' rows on the terminal
    for table in output.paired:
        print(f"{table.label_b} vs {table.label_a}:")
        for note in table.notes:
            print(f"  note: {note}")
        rows, folded = fold_group_rows(table.rows, first)
        for r in rows:
            verdict = "significant" if r.significant else "not significant"
            delta, low, high = (format_signed(x, r.metric) for x in (r.delta, r.low, r.high))
            print(f"  {r.name:16s} {r.metric:10s} Δ {delta} [{low}, {high}] "
                  f"{r.test} p={r.p_value:.3g} Holm p={r.p_holm:.3g} {verdict}")
        for line in folded:
            print(f"  {line}")
    print(f"report: {output.report_path}")
    if output.figure_path:
        print(f"figure: {output.figure_path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``evalkit export``: prints the paths written."""
    from evalkit.results.files import check_output_path, load_results

    runs = [(Path(p), load_results(p)) for p in args.results]  # every file is checked before anything is written
    if args.format == "csv":
        from evalkit.results.frames import write_csv

        first = runs[0][0]
        path = Path(args.output) if args.output else first.with_suffix(".csv")
        check_output_path(path, folder=False, flag=f"--output {path}" if args.output else str(path))
        print(f"csv: {write_csv([p for p, _ in runs], path)}")
        return 0
    from evalkit.results.export import write_lm_eval

    if args.output and len(runs) > 1:
        raise EvalkitError("--output names one folder: export one results file at a time with --format lm-eval")
    folders = [Path(args.output) if args.output else path.with_name(f"{path.stem}_lm-eval") for path, _ in runs]
    for folder in folders:  # every output is checked before anything is written
        check_output_path(folder, folder=True, flag=f"--output {folder}" if args.output else str(folder))
    for (path, results), folder in zip(runs, folders):
        for written in write_lm_eval(results, path, folder):
            print(f"lm-eval: {written}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """``evalkit baseline``: runs the configuration with samples and writes the baseline file."""
    from evalkit.regression.baseline import Tolerance, create_baseline

    done = create_baseline(config_from_args(args), Path(args.output), Tolerance(args.atol, args.rtol))
    print(f"baseline: {done.path} ({done.requests} requests)")
    print(f"results: {done.results_path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``evalkit check``: prints every difference; exit status 0 when the check passes, 1 when it fails."""
    from evalkit.regression.check import run_check
    from evalkit.data.documents import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    result = run_check(args.baseline, str(data_dir) if data_dir else None, args.output_dir, args.statistical,
                       args.alpha, args.bootstrap_iters, args.model, args.tokenizer, args.include_path)
    for line in result.lines:
        print(line)
    print(f"results: {result.results_path}")
    if result.report_path:
        print(f"report: {result.report_path}")
    return 0 if result.passed else 1


def cmd_tasks(args: argparse.Namespace) -> int:
    """``evalkit tasks``: one line per task and group, then every YAML file that was refused and why."""
    from evalkit.tasks.registry import load_registry

    folders = list(args.include_path)
    if getattr(args, "lm_eval", False):
        from evalkit.tasks.lmeval_locate import INSTALL_HINT, lm_eval_task_dir

        root = lm_eval_task_dir()
        if root is None:
            raise EvalkitError(f"--lm-eval: lm-eval is not installed ({INSTALL_HINT})")
        folders.append(str(root))
    registry = load_registry(folders)
    for name, task in sorted(registry.tasks.items()):
        aliases = f" (aliases: {', '.join(task.aliases)})" if task.aliases else ""
        ds = task.dataset
        same = " without the document" if task.fewshot_split == ds.split else ""
        shots = f"; few-shot from {task.fewshot_split}{same}" if task.fewshot_split else "; zero-shot only"
        n = f"n={ds.n}" if ds.n is not None else "n not declared"
        file = registry.files[name]
        origin = f" [{file}]" if file.suffix in (".yaml", ".yml") else ""
        where = " ".join(part for part in (ds.hub_id, ds.config, ds.split, n) if part)  # no config: no double space
        print(f"{name}{aliases}: {where}; {', '.join(task.metrics)}{shots}{origin}")
    for name, group in sorted(registry.groups.items()):
        unknown = registry.unknown_members(name)
        note = f" [not selectable: {len(unknown)} of its tasks are not defined]" if unknown else ""
        how = f", {group.aggregation} average" if group.aggregation else ""
        print(f"{name} (group{how}): {', '.join(group.tasks)}{note}")
    if registry.refused:
        count = len(registry.refused)
        print(f"refused ({count} file{'s' if count != 1 else ''}):")
        for path, reason in sorted(registry.refused.items()):
            print(f"  {reason}" if reason.startswith(path) else f"  {path}: {reason}")
    return 0


NOISY_LIBRARIES = ("matplotlib", "PIL", "httpx", "httpcore", "urllib3", "filelock", "fsspec", "datasets",
                   "huggingface_hub", "transformers", "accelerate", "torch")
"""Libraries whose info lines (matplotlib's font cache, hub requests) are hidden unless -v is given."""


OWN_HANDLER_LIBRARIES = ("huggingface_hub", "datasets", "transformers")
"""Libraries that attach their own stderr handler to their root logger. Some still propagate to the root logger
(huggingface_hub, datasets; transformers too when the ``CI`` environment variable is set, which it decides when
it is first imported, after :func:`configure_logging` ran), so the root handler drops their records."""


class _NotOwnHandlerLibraries(logging.Filter):
    """Drops records of :data:`OWN_HANDLER_LIBRARIES`: their own handler already printed them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.name == lib or record.name.startswith(lib + ".") for lib in OWN_HANDLER_LIBRARIES)


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log format and levels: evalkit's info lines by default, warnings only with ``-q``, evalkit's debug lines
    and other libraries' info lines with ``-v`` (``-vv``: their debug lines too). Every warning prints once."""
    own = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    others = logging.WARNING if quiet or not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=own, format="%(levelname)s %(name)s: %(message)s")  # no-op when configured
    root = logging.getLogger()
    root.setLevel(own)
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(others)
    for handler in root.handlers:  # their lines reach stderr through their own handler only: once, not twice
        if not any(isinstance(f, _NotOwnHandlerLibraries) for f in handler.filters):
            handler.addFilter(_NotOwnHandlerLibraries())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``evalkit`` console script; returns the exit status.

    Called without ``argv`` (as the program: ``evalkit``, ``python -m evalkit``) it pauses the garbage collector
    while torch, transformers and matplotlib import (:mod:`evalkit.import_gc`) and freezes it on its way out
    (:func:`gc.freeze`), since the process ends next.
    """
    if argv is None:  # the program itself: its one-time imports run without garbage collection
        from evalkit.import_gc import enter_program

        enter_program()
    commands = {"run": cmd_run, "report": cmd_report, "tasks": cmd_tasks, "compare": cmd_compare,
                "baseline": cmd_baseline, "export": cmd_export, "check": cmd_check}
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, notes = parse_command_line(parser, given, commands)
    except EvalkitError as exc:
        print(f"evalkit: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.verbose, args.quiet)
    for note in notes:
        logging.getLogger("evalkit.cli").info(note)
    args.argv = given
    where = _rank_label()
    try:
        status = commands[args.command](args)
        if argv is None:  # the program: a closed pipe shows at this flush when the output fit in the buffer
            sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _closed_pipe(argv is None)
    except EvalkitError as exc:
        print(f"evalkit: error{where}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if where:  # name the rank before the traceback; torchrun then stops the other ranks
            print(f"evalkit: error{where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
    finally:
        if argv is None:  # the program itself, which exits next (a caller passing argv goes on living)
            import gc

            # The interpreter's last garbage collections walk every object torch and transformers created:
            # about 1.5 s of a small run's exit. Frozen objects are skipped; files are closed and atexit
            # handlers still run.
            gc.freeze()


CLOSED_PIPE_STATUS = 141
"""Exit status when stdout's reader went away (128 + SIGPIPE, as for a program the closed pipe stopped)."""


def _closed_pipe(program: bool) -> int:
    """Stop quietly when the reader of stdout has gone (``evalkit tasks | head -3``): no traceback, and, for the
    program itself, stdout pointed at the null device so the interpreter's last flush does not fail again."""
    if program:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return CLOSED_PIPE_STATUS


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str],
                       commands: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv``, read in lm-eval's spelling where it uses it (:mod:`evalkit.cli.lmeval_flags`).

    Returns:
        the parsed flags (``lm_eval_output_path``: lm-eval's ``--output_path`` or None) and one info line per
        flag read in another spelling.

    Raises:
        EvalkitError: an lm-eval flag evalkit lacks, or a flag the command does not know (one line, with the
            closest known flag).
    """
    from evalkit.cli.lmeval_flags import translate, unknown_flag_message

    translation = translate(argv, commands)
    args, extras = parser.parse_known_args(translation.argv)
    if extras:
        sub = _subparser(parser, args.command)
        flags = [e for e in extras if e.startswith("-")]
        if flags:
            raise EvalkitError(unknown_flag_message(flags[0], list(sub._option_string_actions), args.command))
        raise EvalkitError(f"evalkit {args.command}: unexpected argument {extras[0]!r} "
                           f"(`evalkit {args.command} --help` lists the flags)")
    args.lm_eval_output_path = translation.output_path
    return args, translation.notes


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of one subcommand."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _rank_label() -> str:
    """`` (rank R of N)`` when this process is one rank of a torchrun job, else empty."""
    from evalkit.models.placement import RankInfo

    try:
        info = RankInfo.from_env()
    except EvalkitError:
        return ""
    return f" ({info.label})" if info.is_distributed else ""


if __name__ == "__main__":
    sys.exit(main())
