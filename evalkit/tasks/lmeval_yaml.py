"""lm-evaluation-harness 0.4 task YAMLs, read as they are, with lm-eval 0.4's semantics.

Each task is named ``lm_eval.<its task name>`` (``lm_eval.arc_easy``), so it is never confused with the built-in
v0.2.0 task of the same dataset; its data folder under ``--data-dir`` is the lm-eval name (``DIR/arc_easy/``).
Semantics follow ``ConfigurableTask`` in lm-eval 0.4's ``lm_eval/api/task.py``:

* documents: ``test_split`` if set, else ``validation_split``; ``process_docs`` is applied to every split;
* ``doc_to_text`` / ``doc_to_target`` / ``doc_to_choice``: a field name (when the document has that field), a
  jinja2 template (a rendered ``doc_to_text``/``doc_to_target`` of digits is an index when ``doc_to_choice`` is
  set; a rendered ``doc_to_choice`` is read as a Python literal list), an int, a list, or ``!function module.fn``;
* ``multiple_choice``: one request per choice, context = description + few-shot examples + ``doc_to_text``,
  continuation = ``target_delimiter + choice``; gold = ``doc_to_target`` (an index, or a choice's text). When
  ``doc_to_text`` gives an int (WinoGrande), that is the gold index and ``doc_to_choice`` gives one context per
  choice, each followed by the common continuation ``target_delimiter + doc_to_target``;
* ``loglikelihood``: context = description + examples + ``doc_to_text``, continuation = ``doc_to_target`` (no
  delimiter), metrics ``acc`` (greedy) and ``perplexity``;
* ``loglikelihood_rolling``: the whole ``doc_to_target`` scored from the start of text (evalkit's
  ``scoring="rolling"``), words and bytes counted on the same text;
* ``generate_until``: one greedy generation per document after description + examples + ``doc_to_text`` (no
  delimiter after it), cut at ``generation_kwargs.until``; filters then ``exact_match``, each result named
  ``metric,filter`` (:mod:`evalkit.tasks.lmeval_generate`);
* ``fewshot_config.samples``: few-shot examples written in the file (gsm8k-cot), used instead of a split;
* tokenization ``joint`` (lm-eval 0.4's) and lm-eval 0.4's few-shot sampler (:mod:`evalkit.fewshot.lmeval`).

Anything else (sampling, filters or metrics evalkit lacks, ``!function`` metrics, prompts from promptsource,
unknown keys) is refused with an :class:`EvalkitError` naming the file, the key and what is supported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from evalkit.fewshot import lmeval as fewshot_lmeval
from evalkit.tasks import lmeval_generate
from evalkit.fewshot.chat import PromptParts
from evalkit.tasks.templating import compile_template
from evalkit.types import DatasetSpec, Doc, EvalkitError, Task, TaskGroup
from evalkit.tasks.user_files import failure, symlink_loop
from evalkit.tasks.yaml_source import FunctionRef, YamlFile, load_yaml, resolve_function

PREFIX = "lm_eval."
"""Prefix of every lm-eval 0.4 task and tag name in evalkit."""

TASK_KEYS = {
    "task", "task_alias", "tag", "group", "include", "dataset_path", "dataset_name", "dataset_kwargs",
    "training_split", "validation_split", "test_split", "fewshot_split", "process_docs", "doc_to_text",
    "doc_to_target", "doc_to_choice", "target_delimiter", "fewshot_delimiter", "description", "num_fewshot",
    "fewshot_config", "output_type", "metric_list", "metadata", "should_decontaminate",
    "doc_to_decontamination_query", "repeats", "gen_prefix", "generation_kwargs", "filter_list",
}
GROUP_KEYS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata"}
OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until")
SCORING = {"multiple_choice": "multiple_choice", "loglikelihood": "target", "loglikelihood_rolling": "rolling",
           "generate_until": "generate_until"}
METRICS = {  # lm-eval 0.4 metric -> (its default aggregation, higher_is_better)
    "acc": ("mean", True), "acc_norm": ("mean", True), "perplexity": ("perplexity", False),
    "word_perplexity": ("weighted_perplexity", False), "byte_perplexity": ("weighted_perplexity", False),
    "bits_per_byte": ("bits_per_byte", False),
}
OUTPUT_METRICS = {
    "multiple_choice": ("acc", "acc_norm"), "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
"""Metrics each output type can give; without ``metric_list`` all of them (lm-eval's defaults)."""
FEWSHOT_KEYS = {"sampler", "split", "fewshot_delimiter", "target_delimiter", "samples"}
GENERATION_ONLY = ("generation_kwargs", "filter_list")
WHY = {
    "process_results": "custom process_results is not supported (metrics must be one of "
                       + ", ".join(METRICS) + ")",
    "use_prompt": "promptsource prompts are not supported (write doc_to_text/doc_to_choice)",
    "doc_to_image": "multimodal inputs are not supported", "doc_to_audio": "multimodal inputs are not supported",
    "custom_dataset": "custom dataset functions are not supported (use dataset_path and dataset_kwargs.data_files)",
}


@dataclass
class Config:
    """A task YAML after ``include`` merging: the values, and the file each top-level key was written in."""

    values: dict[str, Any]
    origin: dict[str, YamlFile]
    path: Path

    def where(self, key: str) -> str:
        """``"<file> line <n>, key '<key>'"`` for the file that wrote the key."""
        return self.origin[key].where(key) if key in self.origin else f"{self.path}, key '{key}'"

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def is_lmeval_file(data: Any) -> bool:
    """True for a mapping in lm-eval's schema (a ``task``, ``tag`` or ``include`` key, or ``group`` naming a group)."""
    return isinstance(data, dict) and (bool({"task", "tag", "include"} & set(data))
                                       or isinstance(data.get("group"), str))


def read_config(source: YamlFile, seen: tuple[Path, ...] = ()) -> Config:
    """Merge ``include`` chains (the including file's keys win), as lm-eval's ``load_yaml_config`` does.

    ``include`` is a path relative to the including file's folder (or absolute).

    Raises:
        EvalkitError: a missing or circular include, or an included file that is not a mapping.
    """
    values: dict[str, Any] = {}
    origin: dict[str, YamlFile] = {}
    include = source.data.get("include")
    if include is not None:
        if not isinstance(include, str):
            raise EvalkitError(f"{source.where('include')}: expected one file name")
        if symlink_loop(source.path.parent / include):
            raise EvalkitError(f"{source.where('include')}: {source.path.parent / include} is a symbolic link that "
                               f"loops")
        path = (source.path.parent / include).resolve()
        if path in seen or path == source.path.resolve():
            raise EvalkitError(f"{source.where('include')}: circular include of {path}")
        if not path.is_file():
            raise EvalkitError(f"{source.where('include')}: included file {path} not found")
        included = load_yaml(path)
        if not isinstance(included.data, dict):
            raise EvalkitError(f"{path} (included by {source.path}): not a YAML mapping")
        parent = read_config(included, (*seen, source.path.resolve()))
        values.update(parent.values)
        origin.update(parent.origin)
    for key, value in source.data.items():
        if key == "include":
            continue
        values[key] = value
        origin[key] = source
    return Config(values, origin, source.path)


def load_file(source: YamlFile) -> tuple[list[Task | TaskGroup], dict[str, list[str]]]:
    """The task (or group) one lm-eval YAML file defines, and the tags its task joins (tag name -> [task name]).

    Tags (``tag``, or a task file's old-style ``group``) are groups whose members are gathered over all files.

    Raises:
        EvalkitError: anything outside the supported subset, naming the file, the key and what is supported.
    """
    if isinstance(source.data.get("task"), list) or ("group" in source.data and "task" in source.data
                                                     and not isinstance(source.data["task"], str)):
        return [_group(source)], {}
    config = read_config(source)
    if "task" not in config.values:
        raise EvalkitError(f"{source.path}: not a task file: no 'task' key (an lm-eval file meant to be included?)")
    task = _task(config)
    tags = config.get("tag", config.get("group"))
    tags = [tags] if isinstance(tags, str) else (tags or [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise EvalkitError(f"{config.where('tag' if 'tag' in config.values else 'group')}: expected a name or a "
                           f"list of names")
    return [task], {PREFIX + t: [task.name] for t in tags}


def _group(source: YamlFile) -> TaskGroup:
    data = source.data
    unknown = sorted(set(data) - GROUP_KEYS)
    if unknown:
        raise EvalkitError(f"{source.where(unknown[0])}: unknown key in an lm-eval group file; supported: "
                           f"{', '.join(sorted(GROUP_KEYS))}")
    members = data["task"]
    if not isinstance(data.get("group"), str) or not isinstance(members, list) \
            or not all(isinstance(m, str) for m in members):
        raise EvalkitError(f"{source.where('task')}: a group file needs 'group' (a name) and 'task' (a list of task "
                           f"names); inline task definitions are not supported")
    aggregation = None
    metrics = data.get("aggregate_metric_list")
    if metrics is not None:
        weights = {bool(m.get("weight_by_size", True)) for m in metrics if isinstance(m, dict)}
        if len(weights) != 1 or any(not isinstance(m, dict) or m.get("aggregation", "mean") != "mean"
                                    for m in metrics):
            raise EvalkitError(f"{source.where('aggregate_metric_list')}: supported: aggregation mean, one "
                               f"weight_by_size for all metrics")
        aggregation = "micro" if weights.pop() else "macro"
    return TaskGroup(PREFIX + data["group"], tuple(PREFIX + m for m in members), f"lm-eval 0.4 group "
                     f"{data['group']} ({source.path.name})", aggregation)


def _check_keys(config: Config) -> None:
    for key in config.values:
        if key in WHY:
            raise EvalkitError(f"{config.where(key)}: {WHY[key]}")
        if key not in TASK_KEYS:
            raise EvalkitError(f"{config.where(key)}: unknown key; supported: {', '.join(sorted(TASK_KEYS))}")
    if config.get("repeats", 1) != 1:
        raise EvalkitError(f"{config.where('repeats')}: only repeats: 1 is supported (log-likelihoods are "
                           f"deterministic)")
    if config.get("gen_prefix") is not None:
        raise EvalkitError(f"{config.where('gen_prefix')}: gen_prefix is not supported")
    if config.get("output_type", "generate_until") != "generate_until":
        for key in GENERATION_ONLY:
            if key in config.values:
                raise EvalkitError(f"{config.where(key)}: {key} applies to output_type generate_until only")


def _metrics(config: Config, output_type: str) -> tuple[str, ...]:
    entries = config.get("metric_list")
    if entries is None:
        return OUTPUT_METRICS[output_type]
    allowed = OUTPUT_METRICS[output_type]
    where = config.where("metric_list")
    if not isinstance(entries, list):
        raise EvalkitError(f"{where}: expected a list of {{metric: name}} entries")
    names = []
    for entry in entries:
        metric = entry.get("metric") if isinstance(entry, dict) else None
        if isinstance(metric, FunctionRef):
            raise EvalkitError(f"{where}: '!function {metric.target}' metrics are not supported; supported "
                               f"metrics for {output_type}: {', '.join(allowed)}")
        if metric not in allowed:
            raise EvalkitError(f"{where}: metric {metric!r} is not supported for output_type {output_type}; "
                               f"supported: {', '.join(allowed)}")
        extra = sorted(set(entry) - {"metric", "aggregation", "higher_is_better"})
        if extra:
            raise EvalkitError(f"{where}: metric {metric!r} option '{extra[0]}' is not supported")
        aggregation, higher = METRICS[metric]
        if entry.get("aggregation", aggregation) != aggregation:
            raise EvalkitError(f"{where}: metric {metric!r} with aggregation {entry['aggregation']!r}: only "
                               f"{aggregation!r} is supported")
        if entry.get("higher_is_better", higher) != higher:
            raise EvalkitError(f"{where}: metric {metric!r} with higher_is_better {entry['higher_is_better']!r}: "
                               f"it is {higher}")
        names.append(metric)
    if "acc_norm" in names and config.get("target_delimiter", " ") != " ":
        raise EvalkitError(f"{where}: acc_norm needs target_delimiter ' ' (evalkit divides by the "
                           f"continuation's length without its one-space delimiter, lm-eval by the choice's)")
    return tuple(dict.fromkeys(names))


class _Field:
    """One of ``doc_to_text`` / ``doc_to_target`` / ``doc_to_choice`` resolved as lm-eval resolves it."""

    LITERALS = {"doc_to_text": (int,), "doc_to_target": (int, list), "doc_to_choice": (list, dict)}

    def __init__(self, config: Config, key: str, value: Any, has_choices: bool):
        self.key, self.where, self.has_choices = key, config.where(key), has_choices
        self.value: Any = value
        self.fn: Callable[[Doc], Any] | None = None
        self.template = None
        if isinstance(value, FunctionRef):
            self.fn = resolve_function(value, key)
        elif isinstance(value, str):
            origin = config.origin.get(key)
            line = origin.lines.get(key, 0) if origin else 0
            try:
                self.template = compile_template(value, origin.path if origin else config.path, key, line)
            except ValueError as exc:
                raise EvalkitError(str(exc)) from None
        elif isinstance(value, bool) or not isinstance(value, self.LITERALS[key]):
            kinds = " or ".join(t.__name__ for t in self.LITERALS[key])
            raise EvalkitError(f"{self.where}: unsupported value {value!r:.60}; expected a field name, a jinja2 "
                               f"template, a literal {kinds}, or !function module.fn")

    def __call__(self, doc: Doc) -> Any:
        if self.fn is not None:
            try:
                return self.fn(doc)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code may fail in any way; name it
                raise ValueError(f"{self.where}: function failed: {failure(exc)}") from None
        if self.template is None:
            return list(self.value.values()) if isinstance(self.value, dict) else self.value
        if self.value in doc:
            return doc[self.value]
        text = self.template.render(doc)
        if self.key == "doc_to_choice":
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError(f"{self.where}: rendered {text[:60]!r}, not a Python list literal") from None
        if text.isdigit() and self.has_choices:
            return ast.literal_eval(text)
        if self.key == "doc_to_target" and len(text) >= 2 and text[0] == "[" and text[-1] == "]":
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
        return text


def _description(config: Config) -> Callable[[Doc], str]:
    value = config.get("description", "")
    if not value:
        return lambda doc: ""
    if not isinstance(value, str):
        raise EvalkitError(f"{config.where('description')}: expected a string or template")
    origin = config.origin["description"]
    try:
        template = compile_template(value, origin.path, "description", origin.lines.get("description", 0))
    except ValueError as exc:
        raise EvalkitError(str(exc)) from None
    return lambda doc: doc[value] if value in doc else template.render(doc)


def _data_files(config: Config) -> dict[str, str] | None:
    kwargs = config.get("dataset_kwargs")
    if kwargs is None:
        return None
    where = config.where("dataset_kwargs")
    if not isinstance(kwargs, dict) or set(kwargs) - {"data_files", "trust_remote_code"}:
        raise EvalkitError(f"{where}: supported: data_files (split -> JSON-lines file) and trust_remote_code")
    files = kwargs.get("data_files")
    if files is None:
        return None
    if isinstance(files, (str, list)):
        files = {"train": files}
    out = {}
    for split, path in files.items():
        if isinstance(path, list) and len(path) == 1:
            path = path[0]
        if not isinstance(path, str):
            raise EvalkitError(f"{where}: data_files['{split}'] must be one file path")
        out[str(split)] = str((config.origin["dataset_kwargs"].path.parent / path).resolve())
    return out


def _task(config: Config) -> Task:
    _check_keys(config)
    name = config.get("task")
    if not isinstance(name, str) or not name:
        raise EvalkitError(f"{config.where('task')}: expected a task name")
    output_type = config.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise EvalkitError(f"{config.where('output_type') if 'output_type' in config.values else config.path}: "
                           f"output_type {output_type!r} is not supported; supported: {', '.join(OUTPUT_TYPES)}")
    scoring = SCORING[output_type]  # the registry refuses a scoring this evalkit lacks (check_task_metrics)
    split = config.get("test_split") or config.get("validation_split")
    if not split:
        raise EvalkitError(f"{config.path}: neither test_split nor validation_split is set (lm-eval evaluates "
                           f"test_split, else validation_split)")
    fewshot_config = config.get("fewshot_config") or {}
    if not isinstance(fewshot_config, dict) or set(fewshot_config) - FEWSHOT_KEYS:
        raise EvalkitError(f"{config.where('fewshot_config')}: supported keys: {', '.join(sorted(FEWSHOT_KEYS))}")
    sampler = fewshot_config.get("sampler", "default")
    if sampler not in fewshot_lmeval.SAMPLERS:
        raise EvalkitError(f"{config.where('fewshot_config')}: sampler {sampler!r} is not supported; supported: "
                           f"{', '.join(fewshot_lmeval.SAMPLERS)}")
    explicit_fewshot = fewshot_config.get("split", config.get("fewshot_split"))
    fewshot_split = (explicit_fewshot or config.get("training_split") or config.get("validation_split")
                     or config.get("test_split"))
    exclude = explicit_fewshot == config.get("test_split")  # lm-eval: fewshot_cfg.split == config.test_split
    samples = _samples(config, fewshot_config) if not explicit_fewshot else None  # a named split wins, as in lm-eval
    if samples is not None:
        fewshot_split = "fewshot_config.samples"
    shots = config.get("num_fewshot")
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 0):
        raise EvalkitError(f"{config.where('num_fewshot')}: expected a non-negative integer")

    target_delimiter = config.get("target_delimiter", " ")
    fewshot_delimiter = config.get("fewshot_delimiter", "\n\n")
    fs_target_delimiter = fewshot_config.get("target_delimiter", target_delimiter)
    fs_fewshot_delimiter = fewshot_config.get("fewshot_delimiter", fewshot_delimiter)
    for key, value in (("target_delimiter", target_delimiter), ("fewshot_delimiter", fewshot_delimiter),
                       ("fewshot_config", fs_target_delimiter), ("fewshot_config", fs_fewshot_delimiter)):
        if not isinstance(value, str):
            raise EvalkitError(f"{config.where(key)}: delimiters must be strings")
    has_choices = config.get("doc_to_choice") is not None
    if output_type == "multiple_choice" and not has_choices:
        raise EvalkitError(f"{config.path}: output_type multiple_choice needs doc_to_choice")
    required = ("doc_to_target",) if output_type == "loglikelihood_rolling" else ("doc_to_text", "doc_to_target")
    for key in required:
        if config.get(key) is None:
            raise EvalkitError(f"{config.path}: missing key '{key}' (needed by output_type {output_type})")
    text = _Field(config, "doc_to_text", config.get("doc_to_text", ""), has_choices)
    target = _Field(config, "doc_to_target", config.get("doc_to_target"), has_choices)
    choices = _Field(config, "doc_to_choice", config.get("doc_to_choice"), True) if has_choices else None
    generate = output_type == "generate_until"
    if generate:
        until, max_new_tokens = lmeval_generate.generation_settings(config, fewshot_delimiter)
        pipelines = lmeval_generate.generation_filters(config)
        metric_options = lmeval_generate.generation_metrics(config)
        metrics = lmeval_generate.result_names(pipelines, metric_options)
    else:
        metrics = _metrics(config, output_type)
    description = _description(config)
    process = config.get("process_docs")
    process_docs = None
    if process is not None:
        if not isinstance(process, FunctionRef):
            raise EvalkitError(f"{config.where('process_docs')}: expected !function module.fn")
        process_docs = _process_docs(resolve_function(process, "process_docs"), config.where("process_docs"))
    where_target = config.where("doc_to_target")

    def choice_list(doc: Doc) -> list[str]:
        value = choices(doc)
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise ValueError(f"{choices.where}: gave {value!r:.60}, not a list of strings")
        return value

    def answer(doc: Doc) -> str:
        """The text a few-shot example shows after its question (lm-eval's build_qa_turn)."""
        a = target(doc)
        c = choice_list(doc) if has_choices else None
        if isinstance(text(doc), int):
            c = None  # multiple inputs: the example shows the gold choice's context, then the common target
        if c and isinstance(a, int):
            return c[a]
        if isinstance(a, list):
            return str(a[0])
        if not isinstance(a, str):
            raise ValueError(f"{where_target}: few-shot answer {a!r} is not text")
        return a

    def question(doc: Doc) -> str:
        q = text(doc)
        if isinstance(q, int):
            return choice_list(doc)[q]
        if not isinstance(q, str):
            raise ValueError(f"{text.where}: gave {q!r:.60}, not text")
        return q

    def gold(doc: Doc) -> int:
        if output_type != "multiple_choice":
            return 0
        q = text(doc)
        if isinstance(q, int):
            return q
        a = target(doc)
        if isinstance(a, list):
            raise ValueError(f"{where_target}: several gold answers ({a!r:.60}) are not supported")
        if isinstance(a, str):
            options = choice_list(doc)
            if a not in options:
                raise ValueError(f"{where_target}: gold {a!r:.60} is not one of the choices")
            return options.index(a)
        if not isinstance(a, int) or isinstance(a, bool):
            raise ValueError(f"{where_target}: gave {a!r:.60}, not a choice index or text")
        return a

    def continuations(doc: Doc) -> list[str]:
        if generate:
            return []
        if output_type == "multiple_choice":
            if isinstance(text(doc), int):
                if "acc_norm" in metrics:
                    raise ValueError(f"{config.where('metric_list')}: acc_norm with multiple inputs (doc_to_text "
                                     f"gave an index) is not supported: lm-eval divides by each per-choice "
                                     f"context's length")
                return [f"{target_delimiter}{target(doc)}"] * len(choice_list(doc))
            return [f"{target_delimiter}{c}" for c in choice_list(doc)]
        a = target(doc)
        if not isinstance(a, str):
            raise ValueError(f"{where_target}: gave {a!r:.60}, not text")
        return [a]

    def contexts(doc: Doc, examples: list[Doc] | tuple[Doc, ...] = ()) -> list[str]:
        if output_type == "loglikelihood_rolling":
            return [""]
        shots = [(question(ex), answer(ex)) for ex in examples]
        desc = description(doc)
        q = text(doc)
        if isinstance(q, int):
            return [fewshot_lmeval.assemble_context(desc, shots, c, fs_target_delimiter, fs_fewshot_delimiter)
                    for c in choice_list(doc)]
        one = fewshot_lmeval.assemble_context(desc, shots, question(doc), fs_target_delimiter, fs_fewshot_delimiter)
        return [one] if generate else [one] * len(continuations(doc))

    def prompt_parts(doc: Doc, examples: list[Doc] | tuple[Doc, ...] = ()) -> PromptParts:
        """The prompt's pieces as lm-eval 0.4.13's fewshot_context turns them into messages."""
        shots = tuple((question(ex), answer(ex)) for ex in examples)
        questions = tuple(choice_list(doc)) if isinstance(text(doc), int) else (question(doc),)
        return PromptParts(description(doc), shots, questions, fs_target_delimiter, fs_fewshot_delimiter,
                           fewshot_delimiter, target_delimiter if output_type == "multiple_choice" else "")

    metadata = config.get("metadata") or {}
    rolling_units = {"units_text": lambda doc: continuations(doc)[0]} if output_type == "loglikelihood_rolling" \
        else {}
    generation: dict[str, Any] = {}
    if generate:
        gold_text = lmeval_generate.gold_of(target, choice_list if has_choices else None, where_target)
        score, answers, references = lmeval_generate.make_scorer(pipelines, metric_options, gold_text)
        generation = {"until": until, "max_new_tokens": max_new_tokens, "score_generation": score,
                      "generation_answers": answers, "references": references}
    kind = f"{output_type}; until {list(until)!r}, {max_new_tokens} new tokens" if generate \
        else f"{output_type}; joint tokenization"
    return Task(
        name=PREFIX + name,
        version=str(metadata.get("version", "0") if isinstance(metadata, dict) else "0"),
        dataset=DatasetSpec(str(config.get("dataset_path")), config.get("dataset_name"), split, None, {},
                            name, _data_files(config)),
        context=lambda doc: "" if output_type == "loglikelihood_rolling" else description(doc) + question(doc),
        continuations=continuations,
        gold=gold,
        scoring=scoring,
        metrics=metrics,
        primary_metric=metrics[0],
        description=f"lm-eval 0.4 task {name} ({kind})",
        source=f"lm-evaluation-harness 0.4 task YAML {config.path}",
        fewshot_split=fewshot_split,
        target=answer,
        choice_contexts=(lambda doc: contexts(doc)) if output_type == "multiple_choice" else None,
        process_docs=process_docs,
        tokenization="joint",
        fewshot_sampler=fewshot_lmeval.sampler_name(sampler, exclude),
        fewshot_contexts=contexts,
        num_fewshot=shots,
        fewshot_samples=samples,
        prompt_parts=prompt_parts,
        **rolling_units,
        **generation,
    )


def _samples(config: Config, fewshot_config: dict[str, Any]) -> tuple[Doc, ...] | None:
    """``fewshot_config.samples``: few-shot example documents written in the file (a list of mappings), or None.

    Raises:
        EvalkitError: samples that are not a non-empty list of mappings (``!function`` samples are not supported).
    """
    samples = fewshot_config.get("samples")
    if samples is None:
        return None
    if not isinstance(samples, list) or not samples or not all(isinstance(d, dict) for d in samples):
        raise EvalkitError(f"{config.where('fewshot_config')}: samples must be a non-empty list of documents "
                           f"(mappings); a !function returning them is not supported")
    return tuple(samples)


def _process_docs(fn: Callable[[Any], Any], where: str) -> Callable[[list[Doc]], list[Doc]]:
    """lm-eval hands ``process_docs`` a ``datasets.Dataset``; give it one and read the rows back."""

    def process(docs: list[Doc]) -> list[Doc]:
        import datasets  # only for tasks that process their documents

        try:
            out = fn(datasets.Dataset.from_list([dict(d) for d in docs]))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code may fail in any way; name it
            raise EvalkitError(f"{where}: process_docs failed: {failure(exc)}") from None
        return _rows_of(out, where)

    return process


def _rows_of(out: Any, where: str) -> list[Doc]:
    """The documents ``process_docs`` returned (a ``datasets.Dataset`` or a list of mappings), as dicts.

    Raises:
        EvalkitError: anything else (None, a string, a list holding a non-mapping), naming the YAML key.
    """
    import datasets

    if not isinstance(out, (datasets.Dataset, list, tuple)):
        raise EvalkitError(f"{where}: process_docs returned {_shown(out)}, not documents (a datasets.Dataset or a "
                           f"list of mappings)")
    rows = list(out)
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise EvalkitError(f"{where}: process_docs returned a list whose row {index} is {_shown(row)}, not a "
                               f"document (a mapping)")
    return [dict(row) for row in rows]


def _shown(value: Any) -> str:
    if value is None:
        return "None"
    kind = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
            tuple: "a tuple", dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")
    return f"{kind} ({value!r:.40})" if isinstance(value, (str, int, float)) else kind
