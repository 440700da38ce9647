"""evalkit's own declarative task files: one YAML file per task (or per family) whose prompts are jinja2 templates.

A file holds one task (top-level ``name``) or a family (``tasks:``, a list of mappings, each overriding the file's
other top-level keys; ``dataset`` is merged key by key). Keys (see docs/yaml_tasks.md):

* ``name``, ``version`` (string), ``aliases`` (list), ``description``, ``source``, ``groups`` (list of group names
  this task joins), ``primary_metric``, ``scoring`` and ``metrics`` as for a Python task;
* ``dataset``: ``hub_id``, ``config``, ``split``, ``n``, ``fields`` (dotted name -> ``str``/``int``/``float``/
  ``bool``/``list``/``dict``), optional ``local_dir`` and ``data_files`` (split -> JSON-lines path, relative to
  the YAML's folder);
* ``context`` (template), ``continuations`` (a list of templates, or ``{each: <dotted list field>, template:
  <template>}`` rendered once per item with ``item`` and ``index`` set), ``gold`` (an integer or a template that
  renders to one);
* optional few-shot and rolling fields: ``fewshot_split``, ``fewshot_filter`` (template rendering ``True`` or
  ``False``), ``target`` (template), ``choice_contexts`` (same forms as ``continuations``), ``units_text``
  (template), ``tokenization`` (``separate``/``joint``); the number of examples is the run's;
* a family file may add ``group: {name, description, aggregation}`` naming a group of all its tasks.

Templates are rendered with the document's fields as variables (:mod:`evalkit.tasks.templating`), so ``context(doc)``
of the loaded task is exactly what a Python task's ``context(doc)`` would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from evalkit.tasks.templating import Template, compile_template
from evalkit.types import DatasetSpec, Doc, EvalkitError, Task, TaskGroup
from evalkit.tasks.yaml_source import YamlFile

TASK_KEYS = {
    "name", "version", "dataset", "context", "continuations", "gold", "scoring", "metrics", "primary_metric",
    "aliases", "description", "source", "groups", "fewshot_split", "fewshot_filter", "target", "choice_contexts",
    "units_text", "tokenization",
}
FILE_KEYS = TASK_KEYS | {"tasks", "group"}
DATASET_KEYS = {"hub_id", "config", "split", "n", "fields", "local_dir", "data_files"}
REQUIRED = ("name", "version", "dataset", "context", "continuations", "gold", "scoring", "metrics")
FIELD_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


def is_evalkit_file(data: Any) -> bool:
    """True for a mapping in this format (it has ``name`` or ``tasks``, and no lm-eval ``task`` key)."""
    return isinstance(data, dict) and ("name" in data or "tasks" in data) and "task" not in data


def load_file(source: YamlFile) -> tuple[list[Task | TaskGroup], dict[str, list[str]]]:
    """The tasks (and the family's group) one evalkit YAML file defines, and the groups its tasks join (``groups``
    key: group name -> [task names]; members are gathered over all files).

    Raises:
        EvalkitError: an unknown or missing key, a wrong type, or a template syntax error, naming the file, the
            line and the key.
    """
    data = source.data
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise EvalkitError(f"{source.where(unknown[0])}: unknown key; supported: {', '.join(sorted(FILE_KEYS))}")
    members = data.get("tasks")
    if members is None:
        entries = [dict(data)]
    else:
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise EvalkitError(f"{source.where('tasks')}: must be a list of mappings")
        base = {k: v for k, v in data.items() if k not in ("tasks", "group")}
        entries = []
        for member in members:
            bad = sorted(set(member) - TASK_KEYS)
            if bad:
                raise EvalkitError(f"{source.where('tasks')}: unknown key '{bad[0]}' in task "
                                   f"{member.get('name', '?')!r}; supported: {', '.join(sorted(TASK_KEYS))}")
            merged = dict(base, **member)
            merged["dataset"] = {**(base.get("dataset") or {}), **(member.get("dataset") or {})}
            entries.append(merged)
    out: list[Task | TaskGroup] = [_task(source, entry) for entry in entries]
    joined: dict[str, list[str]] = {}
    for entry in entries:
        for group in _str_list(source, entry, "groups"):
            joined.setdefault(group, []).append(entry["name"])
    group = data.get("group")
    if group is not None:
        if not isinstance(group, dict) or "name" not in group or set(group) - {"name", "description", "aggregation"}:
            raise EvalkitError(f"{source.where('group')}: expected a mapping with name, optional description and "
                               f"aggregation (micro or macro)")
        out.append(TaskGroup(str(group["name"]), tuple(e["name"] for e in entries), str(group.get("description", "")),
                             group.get("aggregation")))
    return out, joined


def _str_list(source: YamlFile, entry: dict, key: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EvalkitError(f"{source.where(key)}: must be a list of strings")
    return value


def _template(source: YamlFile, entry: dict, key: str, text: Any = None, label: str | None = None) -> Template:
    """Compile ``entry[key]`` (or ``text`` written under ``key``), named ``label`` (default ``key``) in errors."""
    try:
        return compile_template(entry[key] if text is None else text, source.path, label or key,
                                source.lines.get(key, 0))
    except ValueError as exc:
        raise EvalkitError(str(exc)) from None


def _dataset(source: YamlFile, entry: dict) -> DatasetSpec:
    spec = entry["dataset"]
    where = source.where("dataset")
    if not isinstance(spec, dict):
        raise EvalkitError(f"{where}: must be a mapping with {', '.join(sorted(DATASET_KEYS))}")
    unknown = sorted(set(spec) - DATASET_KEYS)
    if unknown:
        raise EvalkitError(f"{where}: unknown key '{unknown[0]}'; supported: {', '.join(sorted(DATASET_KEYS))}")
    for key in ("hub_id", "split", "n"):
        if key not in spec:
            raise EvalkitError(f"{where}: missing '{key}'")
    if not isinstance(spec["n"], int) or isinstance(spec["n"], bool):
        raise EvalkitError(f"{where}: 'n' must be an integer, got {spec['n']!r}")
    fields = {}
    for name, kind in (spec.get("fields") or {}).items():
        if kind not in FIELD_TYPES:
            raise EvalkitError(f"{where}: field '{name}' has type {kind!r}; supported: {', '.join(FIELD_TYPES)}")
        fields[str(name)] = FIELD_TYPES[kind]
    files = spec.get("data_files")
    if files is not None:
        if not isinstance(files, dict):
            raise EvalkitError(f"{where}: 'data_files' must map split names to JSON-lines paths")
        files = {str(k): str((source.path.parent / str(v)).resolve()) for k, v in files.items()}
    return DatasetSpec(str(spec["hub_id"]), spec.get("config"), str(spec["split"]), spec["n"], fields,
                       spec.get("local_dir"), files)


def _many(source: YamlFile, entry: dict, key: str) -> Callable[[Doc], list[str]]:
    """``continuations`` / ``choice_contexts``: a list of templates, or ``{each, template}``."""
    value = entry[key]
    if isinstance(value, list):
        templates = [_template(source, entry, key, item, f"{key}[{i}]") for i, item in enumerate(value)]
        return lambda doc: [t.render(doc) for t in templates]
    if isinstance(value, dict) and set(value) == {"each", "template"} and isinstance(value["each"], str):
        template = _template(source, entry, key, value["template"])
        path = value["each"].split(".")

        def render_each(doc: Doc) -> list[str]:
            items: Any = doc
            for part in path:
                if not isinstance(items, dict) or part not in items:
                    raise ValueError(f"{template.where()}: document has no field '{value['each']}'")
                items = items[part]
            if not isinstance(items, list):
                raise ValueError(f"{template.where()}: field '{value['each']}' is not a list")
            return [template.render({**doc, "item": item, "index": i}) for i, item in enumerate(items)]

        return render_each
    raise EvalkitError(f"{source.where(key)}: expected a list of templates or a mapping {{each: <list field>, "
                       f"template: <template>}}")


def _gold(source: YamlFile, entry: dict) -> Callable[[Doc], int]:
    value = entry["gold"]
    if isinstance(value, int) and not isinstance(value, bool):
        return lambda doc: value
    template = _template(source, entry, "gold")

    def gold(doc: Doc) -> int:
        text = template.render(doc).strip()
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{template.where()}: rendered {text!r}, not an integer index") from None

    return gold


def _flag(template: Template) -> Callable[[Doc], bool]:
    def keep(doc: Doc) -> bool:
        text = template.render(doc).strip().lower()
        if text not in ("true", "false"):
            raise ValueError(f"{template.where()}: rendered {text!r}, expected True or False")
        return text == "true"

    return keep


def _task(source: YamlFile, entry: dict) -> Task:
    for key in REQUIRED:
        if key not in entry:
            raise EvalkitError(f"{source.path}: missing key '{key}' (task {entry.get('name', '?')!r}); required: "
                               f"{', '.join(REQUIRED)}")
    metrics = entry["metrics"]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise EvalkitError(f"{source.where('metrics')}: must be a list of metric names")
    context = _template(source, entry, "context")
    optional = {}
    for key in ("target", "units_text"):
        if key in entry:
            optional[key] = _template(source, entry, key).render
    if "fewshot_filter" in entry:
        optional["fewshot_filter"] = _flag(_template(source, entry, "fewshot_filter"))
    if "choice_contexts" in entry:
        optional["choice_contexts"] = _many(source, entry, "choice_contexts")
    if entry.get("tokenization") not in (None, "separate", "joint"):
        raise EvalkitError(f"{source.where('tokenization')}: expected separate or joint")
    return Task(
        name=str(entry["name"]),
        version=str(entry["version"]),
        dataset=_dataset(source, entry),
        context=context.render,
        continuations=_many(source, entry, "continuations"),
        gold=_gold(source, entry),
        scoring=str(entry["scoring"]),
        metrics=tuple(metrics),
        primary_metric=str(entry.get("primary_metric", metrics[0] if metrics else "acc")),
        aliases=tuple(_str_list(source, entry, "aliases")),
        description=str(entry.get("description", "")),
        source=str(entry.get("source", "")) or f"task file {Path(source.path).name}",
        fewshot_split=entry.get("fewshot_split"),
        tokenization=entry.get("tokenization"),
        **optional,
    )
