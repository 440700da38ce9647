"""Export evalkit results in lm-evaluation-harness 0.4's results layout, or as a flat CSV table.

The lm-eval layout follows its documented schema (``lm_eval/result_schema.py``, ``EvalResults``, lm-eval 0.4.13):
``results[task]["<metric>,none"]`` and ``"<metric>_stderr,none"``, ``versions``, ``n-shot``, ``higher_is_better``,
``n-samples`` (``original``, ``effective``), ``configs``, ``group_subtasks`` and, for groups with their own
metrics, ``groups``; ``config`` holds the model and run settings. Per-document samples go to
``samples_<task>_<date>.jsonl`` in lm-eval's ``SampleResult`` shape, so tools written for lm-eval's output folder
(its ``make_table``, leaderboards, notebooks) read evalkit's.

Mapping choices:

* ``"<metric>_stderr,none"`` is the closed-form stderr (the one lm-eval reports for acc/acc_norm); a metric
  without one (perplexity) gets its bootstrap stderr, as lm-eval bootstraps perplexity; neither: ``"N/A"``.
* The filter is ``none`` for log-likelihood tasks (they have no answer filter) and for generation tasks without
  one (MATH); a generation task's ``metric,filter`` result (``exact_match,strict-match``) keeps its filter:
  ``"exact_match,strict-match"`` and ``"exact_match_stderr,strict-match"``. A generation task's samples are
  written once per filter, as lm-eval does (``filtered_resps`` that filter's answer, ``metrics`` its own).
* evalkit's samples do not keep the dataset row, so a sample's ``doc`` holds what evalkit logged (context,
  continuations, gold index) and ``doc_hash`` hashes that.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from evalkit.results.files import atomic_write_text, model_dir_name
from evalkit.types import EvalkitError, parse_json

log = logging.getLogger(__name__)

FILTER = "none"


def _stderr(entry: Mapping[str, Any]) -> float | str:
    for key in ("stderr", "stderr_bootstrap"):
        if entry.get(key) is not None:
            return float(entry[key])
    return "N/A"


def split_metric(metric: str) -> tuple[str, str]:
    """``(metric, filter)`` of an evalkit metric name: ``"exact_match,strict-match"`` ->
    ``("exact_match", "strict-match")``; a name without a filter gets ``none``."""
    base, comma, name = metric.partition(",")
    return (base, name) if comma else (metric, FILTER)


def _metric_block(name: str, metrics: Mapping[str, Mapping[str, Any]], n: int | None) -> dict[str, Any]:
    block: dict[str, Any] = {"alias": name}
    for metric, entry in metrics.items():
        base, filter_name = split_metric(metric)
        block[f"{base},{filter_name}"] = entry["value"]
        block[f"{base}_stderr,{filter_name}"] = _stderr(entry)
    if n is not None:
        block["sample_len"] = n
    return block


ROLLING_METRICS = {"word_perplexity", "byte_perplexity", "bits_per_byte"}


def output_type(metrics: Mapping[str, Any]) -> str:
    """lm-eval's ``output_type`` of a task from its metrics: ``multiple_choice`` (acc_norm: choices scored side by
    side), ``loglikelihood_rolling`` (document perplexities), else ``loglikelihood`` (one target, LAMBADA)."""
    if "acc_norm" in metrics:
        return "multiple_choice"
    if ROLLING_METRICS & set(metrics):
        return "loglikelihood_rolling"
    return "loglikelihood"


def _task_config(name: str, task: Mapping[str, Any], shots: int) -> dict[str, Any]:
    dataset = task.get("dataset", {})
    split = dataset.get("split")
    metrics = {split_metric(m)[0]: e.get("higher_is_better") for m, e in task.get("metrics", {}).items()}
    config = {"task": name, "dataset_path": dataset.get("hub_id"), "dataset_name": dataset.get("config"),
              "output_type": task.get("output_type") or output_type(task.get("metrics", {})), "num_fewshot": shots,
              "metric_list": [{"metric": m, "higher_is_better": h} for m, h in metrics.items()],
              "description": task.get("description", ""), "metadata": {"version": task.get("version")}}
    if config["output_type"] == "generate_until":
        lengths = task.get("max_new_tokens") or [None]
        config["generation_kwargs"] = {"until": task.get("until"), "max_gen_toks": lengths[0], "do_sample": False}
    if split in ("train", "validation", "test"):
        config[f"{split}_split"] = split
    else:
        config["test_split"] = split
    return config


def model_args_string(results: Mapping[str, Any]) -> str:
    """lm-eval's ``model_args`` for the run: ``pretrained=<name>,revision=<rev>,dtype=<dtype>`` plus any
    ``--model-args``, comma-separated ``key=value``."""
    model = results.get("model", {})
    parts = {"pretrained": model.get("name"), "revision": model.get("revision"), "dtype": model.get("dtype")}
    parts |= dict(model.get("model_args") or {})
    return ",".join(f"{k}={v}" for k, v in parts.items() if v is not None)


def to_lm_eval(results: Mapping[str, Any]) -> dict[str, Any]:
    """The lm-eval 0.4 results dict of an evalkit run (see the module docstring for the mapping).

    Raises:
        EvalkitError: a results dict without ``tasks`` or ``model``.
    """
    if "tasks" not in results or "model" not in results:
        raise EvalkitError("not an evalkit results dict (no 'tasks' or 'model')")
    tasks = results["tasks"]
    config = results.get("config", {})
    model = results["model"]
    shots = {name: int(t.get("num_fewshot", 0) or 0) for name, t in tasks.items()}
    out: dict[str, Any] = {
        "results": {name: _metric_block(name, t["metrics"], t.get("n")) for name, t in tasks.items()},
    }
    groups = {name: g for name, g in (results.get("groups") or {}).items() if g.get("metrics")}
    if groups:
        out["groups"] = {name: _metric_block(name, g["metrics"], None) for name, g in groups.items()}
    out["group_subtasks"] = {name: list(g.get("tasks", ())) for name, g in (results.get("groups") or {}).items()}
    grouped = {t for members in out["group_subtasks"].values() for t in members}
    out["group_subtasks"] |= {name: [] for name in tasks if name not in grouped}
    out["configs"] = {name: _task_config(name, t, shots[name]) for name, t in tasks.items()}
    out["versions"] = {name: t.get("version") for name, t in tasks.items()}
    out["n-shot"] = shots
    out["higher_is_better"] = {name: {split_metric(m)[0]: e.get("higher_is_better") for m, e in t["metrics"].items()}
                               for name, t in tasks.items()}
    out["n-samples"] = {name: {"original": t.get("n_split", t.get("n")), "effective": t.get("n")}
                        for name, t in tasks.items()}
    timing = results.get("timing", {})
    out["config"] = {
        "model": "hf", "model_args": model_args_string(results), "model_num_parameters": model.get("parameters"),
        "model_dtype": model.get("dtype"), "model_revision": model.get("revision"), "model_sha": model.get("revision"),
        "batch_size": config.get("batch_size"), "batch_sizes": [timing["batch_size_final"]]
        if timing.get("batch_size_final") is not None else [], "device": model.get("device"),
        "use_cache": config.get("cache_dir") if config.get("use_cache") else None, "limit": config.get("limit"),
        "bootstrap_iters": config.get("bootstrap_iters"), "gen_kwargs": None, "random_seed": config.get("seed"),
        "numpy_seed": config.get("seed"), "torch_seed": config.get("seed"), "fewshot_seed": config.get("fewshot_seed"),
    }
    out["git_hash"] = None
    created = results.get("created")
    out["date"] = datetime.fromisoformat(created).timestamp() if created else None
    out["transformers_version"] = results.get("versions", {}).get("transformers")
    out["evalkit_version"] = results.get("evalkit_version")
    out["eot_token_id"] = results.get("tokenizer", {}).get("eot_id")
    out["max_length"] = results.get("window")
    out["model_source"] = "hf"
    out["model_name"] = model.get("name")
    out["model_name_sanitized"] = model_dir_name(model.get("name", "model"))
    out["task_hashes"] = {name: t.get("prompt_sha256") for name, t in tasks.items()}
    if timing.get("wall_time_s") is not None:
        out["total_evaluation_time_seconds"] = str(timing["wall_time_s"])
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_lm_eval_sample(row: Mapping[str, Any]) -> dict[str, Any]:
    """One evalkit samples line (``task, doc_id, context, continuations, gold, loglikelihoods, greedy,
    metrics``) as an lm-eval ``SampleResult``: one request per continuation (``arguments.gen_args_<i>`` =
    ``{"arg_0": context, "arg_1": continuation}``), ``resps`` ``[[[ll, greedy]], ...]`` and ``filtered_resps``
    ``[[ll, greedy], ...]`` as strings (lm-eval stringifies them when it saves samples), and every metric."""
    conts = list(row["continuations"])
    gold = row.get("gold", 0)
    target = conts[gold] if isinstance(gold, int) and 0 <= gold < len(conts) else ""
    pairs = [[str(ll), str(g)] for ll, g in zip(row["loglikelihoods"], row["greedy"])]
    doc = {"context": row["context"], "continuations": conts, "gold": gold}
    sample: dict[str, Any] = {
        "doc_id": row["doc_id"], "doc": doc, "target": target,
        "arguments": {f"gen_args_{i}": {"arg_0": row["context"], "arg_1": c} for i, c in enumerate(conts)},
        "resps": [[pair] for pair in pairs], "filtered_resps": pairs, "filter": FILTER,
        "metrics": [m for m in row["metrics"] if m != "loglikelihood"],
        "doc_hash": _sha(json.dumps(doc, indent=2, default=str, ensure_ascii=False)),
        "prompt_hash": _sha(row["context"]), "target_hash": _sha(target),
    }
    sample |= {m: v for m, v in row["metrics"].items()}
    return sample


def to_lm_eval_samples(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The lm-eval ``SampleResult`` lines of one evalkit samples line: one (:func:`to_lm_eval_sample`) for a
    log-likelihood task; for a generation task one per filter (``arguments.gen_args_0`` = ``{"arg_0": context,
    "arg_1": {"until", "max_gen_toks"}}``, ``resps`` ``[[generation]]``, ``filtered_resps`` ``[answer]``, and that
    filter's metrics under their base names), the filter ``none`` showing the raw generation when the task has no
    filter (MATH)."""
    if "generation" not in row:
        return [to_lm_eval_sample(row)]
    references = row.get("references") or []
    target = references if len(references) > 1 else (references[0] if references else "")
    doc = {"context": row["context"], "references": references}
    by_filter: dict[str, dict[str, float]] = {}
    for metric, value in row["metrics"].items():
        base, filter_name = split_metric(metric)
        by_filter.setdefault(filter_name, {})[base] = value
    answers = row.get("answers") or {}
    gen_args = {"until": row.get("until"), "max_gen_toks": row.get("max_new_tokens")}
    out = []
    for filter_name, metrics in by_filter.items():
        answer = answers.get(filter_name, row["generation"])  # no such filter (MATH's "none"): the raw text
        sample: dict[str, Any] = {
            "doc_id": row["doc_id"], "doc": doc, "target": target,
            "arguments": {"gen_args_0": {"arg_0": row["context"], "arg_1": gen_args}},
            "resps": [[row["generation"]]], "filtered_resps": [answer], "filter": filter_name,
            "metrics": list(metrics),
            "doc_hash": _sha(json.dumps(doc, indent=2, default=str, ensure_ascii=False)),
            "prompt_hash": _sha(row["context"]), "target_hash": _sha(json.dumps(target, ensure_ascii=False)),
        }
        out.append(sample | metrics)
    return out


def date_id(results: Mapping[str, Any]) -> str:
    """lm-eval's file date: the run's ISO creation time with ``:`` replaced by ``-``."""
    created = results.get("created") or datetime.now().isoformat(timespec="seconds")
    return datetime.fromisoformat(created).replace(tzinfo=None).isoformat().replace(":", "-")


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The lines of an evalkit samples file (``<results>.samples.jsonl``).

    Raises:
        EvalkitError: a missing file or a line that is not a JSON object, naming the file and line.
    """
    if not path.is_file():
        raise EvalkitError(f"samples file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = parse_json(line)
        except ValueError as exc:  # not JSON, too deep, or an integer no float holds
            raise EvalkitError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or "task" not in row:
            raise EvalkitError(f"{path}:{number}: not an evalkit samples line (no 'task')")
        rows.append(row)
    return rows


def samples_path_of(results: Mapping[str, Any], results_path: Path) -> Path | None:
    """The samples file named in ``results`` (``samples_file``, beside the results file), or None."""
    name = results.get("samples_file")
    return results_path.parent / name if name else None


def write_lm_eval(results: Mapping[str, Any], results_path: Path, out_dir: Path) -> list[Path]:
    """Write ``out_dir/results_<date>.json`` and, when the run logged samples, ``samples_<task>_<date>.jsonl``
    per task (lm-eval's output folder for one model). A samples file named by the results but missing is
    warned about and left out.

    Returns:
        the written paths, the results file first.
    """
    stamp = date_id(results)
    written = [out_dir / f"results_{stamp}.json"]
    atomic_write_text(written[0], json.dumps(to_lm_eval(results), indent=2, ensure_ascii=False) + "\n")
    samples = samples_path_of(results, results_path)
    if samples is not None and not samples.is_file():
        log.warning("%s names the samples file %s, which is not there: exported the results without samples",
                    results_path, samples)
    elif samples is not None:
        by_task: dict[str, list[str]] = {}
        for row in read_samples(samples):
            by_task.setdefault(row["task"], []).extend(json.dumps(sample, ensure_ascii=False)
                                                        for sample in to_lm_eval_samples(row))
        for task, lines in by_task.items():
            path = out_dir / f"samples_{task}_{stamp}.jsonl"
            atomic_write_text(path, "\n".join(lines) + "\n")
            written.append(path)
    return written
