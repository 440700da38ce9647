"""A run's chat settings (``--apply-chat-template``, ``--system-instruction``, ``--fewshot-as-multiturn``): checked
and the chat template read in the plan stage (a small read of the tokenizer's files or the GGUF header, before
any weight loads), turned into the renderer the requests stage builds prompts with, and recorded in the results.

The flags' meaning is lm-eval 0.4.13's: ``--fewshot-as-multiturn`` defaults to on with ``--apply-chat-template``
and may be turned off (``--fewshot-as-multiturn false``); asking for it without a chat template is refused, as
lm-eval's ``EvaluatorConfig`` refuses it. A system instruction without a chat template is put, as lm-eval puts it,
directly before the plain-text prompt. The request cache keys answers by token ids, so chat prompts (other ids)
never share answers with plain ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from evalkit.fewshot.chat import ChatOptions
from evalkit.models.chat_template import ChatTemplate, find_chat_template, make_renderer
from evalkit.types import EvalkitError, RunConfig

FLAGS = ("apply_chat_template", "system_instruction", "fewshot_as_multiturn")
"""The ``RunConfig.extra`` keys (and :func:`evalkit.evaluate` options) of the chat settings."""


@dataclass
class ChatPlan:
    """The run's chat settings, checked.

    Attributes:
        apply_chat_template: render prompts with the model's chat template.
        system_instruction: the system instruction, or None.
        fewshot_as_multiturn: few-shot examples as separate turns (only with a chat template).
        template: the chat template (None without ``--apply-chat-template``).
        system_dropped: errors of prompts the template refused with a system message (rendered without it).
    """

    apply_chat_template: bool
    system_instruction: str | None
    fewshot_as_multiturn: bool
    template: ChatTemplate | None = None
    system_dropped: list[str] = field(default_factory=list)

    def options(self) -> ChatOptions:
        """The :class:`evalkit.fewshot.chat.ChatOptions` the requests stage builds prompts with."""
        render = make_renderer(self.template, self.system_dropped.append) if self.template is not None else None
        return ChatOptions(render, self.system_instruction, self.fewshot_as_multiturn)

    def record(self) -> dict[str, Any]:
        """The settings as the results record them (``results["chat"]``)."""
        template = self.template
        return {
            "apply_chat_template": self.apply_chat_template,
            "system_instruction": self.system_instruction,
            "fewshot_as_multiturn": self.fewshot_as_multiturn,
            "chat_template_sha256": template.sha256 if template is not None else None,
            "chat_template_source": template.source if template is not None else None,
            "system_role_dropped": len(self.system_dropped),
        }


def _flag(extra: Mapping[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    value = extra.get(key)
    if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
        names = " or ".join(k.__name__ for k in kinds)
        raise EvalkitError(f"--{key.replace('_', '-')} must be {names}, got {value!r}")
    return value


def chat_settings(config: RunConfig) -> ChatPlan:
    """The chat flags of ``config.extra``, checked (no file read).

    Raises:
        EvalkitError: a flag of the wrong type, or ``fewshot_as_multiturn=True`` without ``apply_chat_template``.
    """
    apply = bool(_flag(config.extra, "apply_chat_template", (bool,)))
    system = _flag(config.extra, "system_instruction", (str,))
    multiturn = _flag(config.extra, "fewshot_as_multiturn", (bool,))
    if multiturn and not apply:
        raise EvalkitError("--fewshot-as-multiturn needs --apply-chat-template (few-shot turns are chat messages)")
    return ChatPlan(apply, system, apply if multiturn is None else multiturn)


def plan_chat(config: RunConfig, resolved: dict[str, Any], hub: dict[str, Any]) -> ChatPlan:
    """The run's chat settings with the chat template read (plan stage: before any weight loads).

    Raises:
        EvalkitError: as :func:`chat_settings`; ``--apply-chat-template`` for a model (or ``--tokenizer``) without
            a chat template, naming it; an unreadable template file.
    """
    chat = chat_settings(config)
    if not chat.apply_chat_template:
        return chat
    chat.template = find_chat_template(resolved, config.tokenizer, hub)
    if chat.template is None:
        where = f"model {config.model}" + (f" with --tokenizer {config.tokenizer}" if config.tokenizer else "")
        raise EvalkitError(f"--apply-chat-template: {where} has no chat template (none in its tokenizer_config.json, "
                           f"chat_template.jinja or GGUF metadata; a tokenizer.json file carries none); run without "
                           f"--apply-chat-template, or name a tokenizer that has one with --tokenizer")
    return chat
