"""A model's chat template: read from its files (a small read, no weights, no tokenizer load) and rendered the way
transformers' ``tokenizer.apply_chat_template(tokenize=False)`` renders it, as lm-eval 0.4.13's ``HFLM`` does.

Where the template comes from (the tokenizer's, like lm-eval, which renders with the tokenizer it loads):

* a GGUF file: its metadata ``tokenizer.chat_template``; the special tokens ``bos_token``, ``eos_token``,
  ``unk_token``, ``pad_token`` are the strings of the ids ``tokenizer.ggml.*_token_id`` name;
* a local folder: ``chat_template.jinja`` if present, else ``chat_template.json`` (``{"chat_template": ...}``),
  else ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of ``{"name", "template"}`` from which
  the one named ``"default"`` is used); special tokens from ``tokenizer_config.json``;
* a hub id: the same files from the hub (or its local cache);
* a ``tokenizer.json`` file or random weights without a tokenizer folder: no template.

``--tokenizer``, when given, is where the template is read, as lm-eval reads its tokenizer's.

Rendering uses transformers' own jinja renderer (``render_jinja_template``: its sandbox, ``raise_exception``,
``strftime_now``, ``tojson``) with ``add_generation_prompt=True``; when the template raises a ``TemplateError``
(one that refuses a system role) the messages are rendered again without the system message, as lm-eval 0.4.13
does, and that is reported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evalkit.models.gguf_file import is_gguf_path, parse_gguf, require_gguf
from evalkit.types import EvalkitError

SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")
"""Special tokens given to the template as variables (transformers passes its ``special_tokens_map``)."""
GGUF_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
            "pad_token": "padding_token_id"}
"""Each special token and the GGUF metadata key (under ``tokenizer.ggml.``) holding its id."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template and where it was read.

    Attributes:
        template: the jinja2 source.
        source: where it was read, e.g. ``"GGUF metadata tokenizer.chat_template of /m/x.gguf"``.
        special_tokens: ``bos_token`` etc. -> their text, the variables the template may use.
    """

    template: str
    source: str
    special_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """Hex sha256 of the template's UTF-8 text (recorded in the results)."""
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()


def _token_text(value: Any) -> str | None:
    """A special token of ``tokenizer_config.json``: a string, or ``{"content": ...}`` (an ``AddedToken``)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _from_gguf(path: str) -> ChatTemplate | None:
    require_gguf()
    try:
        reader = parse_gguf(path)
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError, struct errors, numpy errors
        raise EvalkitError(f"cannot parse GGUF file {path}: {type(exc).__name__}: {exc}") from None
    found = reader.fields.get("tokenizer.chat_template")
    if found is None:
        return None
    template = bytes(found.parts[found.data[0]]).decode("utf-8")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    special = {}
    for name, key in GGUF_IDS.items():
        id_field = reader.fields.get(f"tokenizer.ggml.{key}")
        if id_field is None or tokens is None:
            continue
        index = int(id_field.parts[id_field.data[0]][0])
        if 0 <= index < len(tokens.data):
            special[name] = bytes(tokens.parts[tokens.data[index]]).decode("utf-8")
    return ChatTemplate(template, f"GGUF metadata tokenizer.chat_template of {path}", special)


def _pick(value: Any, where: str) -> str | None:
    """The template of a ``chat_template`` value: a string, or the ``"default"`` entry of a named list."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
        raise EvalkitError(f"{where}: chat_template lists templates {sorted(map(str, named))} but none named "
                           f"'default'")
    raise EvalkitError(f"{where}: chat_template is neither a string nor a list of named templates")


def _from_files(read: Callable[[str], str | None], where: str) -> ChatTemplate | None:
    """From a folder's files; ``read(name)`` gives a file's text or None when it is missing."""
    config_text = read("tokenizer_config.json")
    try:
        config = json.loads(config_text) if config_text is not None else {}
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{where}/tokenizer_config.json: not valid JSON ({exc})") from None
    special = {name: text for name in SPECIAL if (text := _token_text(config.get(name))) is not None}
    jinja = read("chat_template.jinja")
    if jinja is not None:
        return ChatTemplate(jinja, f"{where}/chat_template.jinja", special)
    separate = read("chat_template.json")
    if separate is not None:
        try:
            value = json.loads(separate).get("chat_template")
        except (json.JSONDecodeError, AttributeError):
            raise EvalkitError(f"{where}/chat_template.json: expected a JSON object with 'chat_template'") from None
        template = _pick(value, f"{where}/chat_template.json")
        if template is not None:
            return ChatTemplate(template, f"{where}/chat_template.json", special)
    template = _pick(config.get("chat_template"), f"{where}/tokenizer_config.json")
    if template is None:
        return None
    return ChatTemplate(template, f"{where}/tokenizer_config.json chat_template", special)


def _folder_reader(folder: Path) -> Callable[[str], str | None]:
    def read(name: str) -> str | None:
        path = folder / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    return read


def _hub_reader(repo: str, hub: dict[str, Any]) -> Callable[[str], str | None]:
    def read(name: str) -> str | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        kwargs = {k: v for k, v in (hub.get("hub_kwargs") or {}).items() if k in ("cache_dir", "token")}
        try:
            return Path(hf_hub_download(repo, name, revision=hub.get("revision"), **kwargs)).read_text("utf-8")
        except EntryNotFoundError:
            return None
        except LocalEntryNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - network and hub errors come in many types
            raise EvalkitError(f"cannot read {name} of {repo} for its chat template: {exc}") from None

    return read


def find_chat_template(resolved: dict[str, Any], tokenizer: str | None,
                       hub: dict[str, Any] | None = None) -> ChatTemplate | None:
    """The chat template of the run's tokenizer: ``tokenizer`` (``--tokenizer``) when given, else the model's.

    Args:
        resolved: :func:`evalkit.models.resolve.resolve_model`'s description of ``--model``.
        tokenizer: ``--tokenizer`` (a hub id, folder, GGUF file or ``tokenizer.json``), or None.
        hub: :func:`evalkit.models.model_args.hub_options` (revision, hub keywords) for a hub id.

    Returns:
        the template, or None when that tokenizer has none (a ``tokenizer.json`` file never has one).

    Raises:
        EvalkitError: an unreadable GGUF file or ``tokenizer_config.json``, a list of templates without a default.
    """
    source = tokenizer if tokenizer is not None else (None if resolved["kind"] == "random" else resolved["path"])
    if source is None or source.endswith(".json"):
        return None
    if is_gguf_path(source):
        return _from_gguf(source)
    if Path(source).is_dir():
        return _from_files(_folder_reader(Path(source)), source)
    return _from_files(_hub_reader(source, (hub or {}) if tokenizer is None else {}), source)


def make_renderer(template: ChatTemplate, on_system_dropped: Callable[[str], None] | None = None
                  ) -> Callable[[list[dict[str, str]]], str]:
    """A function rendering messages with ``template`` as ``tokenizer.apply_chat_template(messages,
    tokenize=False, add_generation_prompt=True)`` does.

    A ``TemplateError`` (a template refusing the system role) renders again without the system message, as lm-eval
    0.4.13 does; ``on_system_dropped`` is then told the error's text.

    Raises (from the returned function):
        EvalkitError: the template fails on the messages even without a system message.
    """
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    def render_once(messages: list[dict[str, str]]) -> str:
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=template.template,
                                            add_generation_prompt=True, continue_final_message=False,
                                            **template.special_tokens)
        return rendered[0]

    def render(messages: list[dict[str, str]]) -> str:
        try:
            return render_once(messages)
        except TemplateError as exc:
            if not any(m["role"] == "system" for m in messages):
                raise EvalkitError(f"chat template ({template.source}) fails: {exc}") from None
            if on_system_dropped is not None:
                on_system_dropped(str(exc))
            try:
                return render_once([m for m in messages if m["role"] != "system"])
            except TemplateError as again:
                raise EvalkitError(f"chat template ({template.source}) fails: {again}") from None

    return render
