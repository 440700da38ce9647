"""Prompts as chat messages, with lm-evaluation-harness 0.4.13's semantics (``--apply_chat_template``,
``--system_instruction``, ``--fewshot_as_multiturn``). Pure: strings and messages in, strings out; the chat
template itself is rendered by a function handed in (:mod:`evalkit.models.chat_template` makes one).

Source (read for facts): lm-eval 0.4.13 ``ConfigurableTask.fewshot_context``, ``build_qa_turn``,
``multiple_input_context`` and ``construct_requests`` (``lm_eval/api/task.py``) and ``maybe_delimit``,
``Message``, ``multiturn_to_singleturn`` (``lm_eval/api/utils.py``):

* system message: the system instruction and the task description joined by :func:`maybe_delimit` with the
  task's ``fewshot_delimiter`` (no system message when both are empty);
* each few-shot example: a user message (its question) and, when its answer is not ``""``, an assistant message
  (its answer); in plain text the question is followed by ``target_delimiter`` and the answer by
  ``fewshot_delimiter``;
* the evaluated document: a user message (its question; one per choice for a multiple-input task);
* multiturn (``--fewshot_as_multiturn``, lm-eval 0.4.13's default with a chat template): the messages as they
  are; single turn: everything after the system message collapsed into one user message, the plain-text join of
  those messages (the last one without its delimiter);
* the template is rendered with ``add_generation_prompt=True`` (evalkit refuses ``gen_prefix``);
* a multiple-choice continuation then has no target delimiter: ``choice`` instead of ``" " + choice``;
* without a chat template but with a system instruction, the plain text is the system message's text directly
  followed (no delimiter) by the rest, as lm-eval 0.4.13 writes it.

A generation request's context is built the same way (:func:`chat_contexts` with the document's question).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

Render = Callable[[list[dict[str, str]]], str]
"""A chat template: messages (``{"role", "content"}`` dicts) -> the rendered prompt, with the generation prompt."""


@dataclass(frozen=True)
class Message:
    """One message of a prompt.

    Attributes:
        role: ``"system"``, ``"user"`` or ``"assistant"``.
        content: its text.
        delimiter: what follows it in plain text (never part of a chat message's content).
    """

    role: str
    content: str
    delimiter: str = ""

    def text(self) -> str:
        """The message as plain text: its content and its delimiter."""
        return self.content + self.delimiter

    def chat(self) -> dict[str, str]:
        """The message as a chat template reads it: ``{"role", "content"}``."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class PromptParts:
    """What a document's prompt is made of, before it is joined as text or rendered as chat.

    Attributes:
        description: the task description rendered for the document (``""`` for none).
        examples: ``(question, answer)`` of each few-shot example in prompt order; an answer of ``""`` shows
            the question alone (no assistant turn).
        questions: the document's own question; several for a multiple-input task (one context per choice).
        target_delimiter: between an example's question and its answer in plain text.
        fewshot_delimiter: after an example's answer in plain text.
        description_delimiter: between the system instruction and the description (lm-eval: the task's
            ``fewshot_delimiter``).
        choice_delimiter: what precedes each choice in the document's multiple-choice continuations (lm-eval: the
            task's ``target_delimiter``), dropped under a chat template; ``""`` for other tasks.
    """

    description: str
    examples: tuple[tuple[str, str], ...]
    questions: tuple[str, ...]
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description_delimiter: str = "\n\n"
    choice_delimiter: str = ""


@dataclass(frozen=True)
class ChatOptions:
    """How a run turns prompts into chat (the flags ``--apply-chat-template``, ``--system-instruction``,
    ``--fewshot-as-multiturn``).

    Attributes:
        render: the model's chat template (None: plain text, as without ``--apply-chat-template``).
        system_instruction: text put first in the system message; None for none.
        multiturn: few-shot examples as separate user/assistant turns (True) or one user turn (False).
    """

    render: Render | None
    system_instruction: str | None = None
    multiturn: bool = True

    @property
    def changes_prompts(self) -> bool:
        """True when prompts differ from the task's plain text (a chat template or a system instruction)."""
        return self.render is not None or self.system_instruction is not None


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str = " ") -> str:
    """``prefix + delimiter + suffix``, without the delimiter when either side has whitespace at the join; the
    other one alone when one is empty or None."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    if prefix[-1].isspace() or suffix[0].isspace():
        return prefix + suffix
    return prefix + delimiter + suffix


def qa_turn(question: str, answer: str | None, target_delimiter: str = " ",
            fewshot_delimiter: str = "\n\n") -> list[Message]:
    """A question as a user message and, when ``answer`` is neither None nor ``""``, its answer as an assistant
    message (lm-eval 0.4.13 ``build_qa_turn`` without ``gen_prefix``).

    In plain text the question is followed by ``target_delimiter`` only when there is an answer, and the answer
    by ``fewshot_delimiter``.
    """
    if answer is None or answer == "":
        return [Message("user", question)]
    return [Message("user", question, target_delimiter), Message("assistant", answer, fewshot_delimiter)]


def prompt_messages(parts: PromptParts, question: str, system_instruction: str | None = None) -> list[Message]:
    """The messages of one prompt: system (instruction and description), the examples' turns, ``question``."""
    messages = []
    system = maybe_delimit(system_instruction, parts.description, parts.description_delimiter)
    if system:
        messages.append(Message("system", system))
    for example_question, answer in parts.examples:
        messages += qa_turn(example_question, answer, parts.target_delimiter, parts.fewshot_delimiter)
    return messages + qa_turn(question, None)


def plain_text(messages: Sequence[Message]) -> str:
    """The messages joined as plain text (each with its delimiter)."""
    return "".join(m.text() for m in messages)


def single_turn(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The chat messages with every non-system message collapsed into one user message (lm-eval 0.4.13
    ``multiturn_to_singleturn``): their plain text, the last one's delimiter left out; a final assistant message
    stays a message of its own.

    Raises:
        ValueError: no message besides the system message.
    """
    system = [messages[0].chat()] if messages and messages[0].role == "system" else []
    rest = list(messages[len(system):])
    if not rest:
        raise ValueError("a prompt needs a message besides the system message")
    tail = [rest.pop().chat()] if rest[-1].role == "assistant" else []
    if not rest:
        raise ValueError("a prompt needs a user message before its final assistant message")
    user = "".join(m.text() for m in rest[:-1]) + rest[-1].content
    return system + [{"role": "user", "content": user}] + tail


def chat_messages(messages: Sequence[Message], multiturn: bool) -> list[dict[str, str]]:
    """What the chat template is given: every message (multiturn) or :func:`single_turn`'s collapse."""
    return [m.chat() for m in messages] if multiturn else single_turn(messages)


def chat_contexts(parts: PromptParts, options: ChatOptions) -> list[str]:
    """One context per question of ``parts``: rendered by the chat template, or plain text (with the system
    instruction first) when there is none."""
    out = []
    for question in parts.questions:
        messages = prompt_messages(parts, question, options.system_instruction)
        if options.render is None:
            out.append(plain_text(messages))
        else:
            out.append(options.render(chat_messages(messages, options.multiturn)))
    return out


def chat_continuation(continuation: str, choice_delimiter: str, options: ChatOptions) -> str:
    """A multiple-choice continuation under a chat template: without its leading ``choice_delimiter``
    (lm-eval 0.4.13 ``construct_requests``: the target delimiter becomes ``""``); unchanged without a template."""
    if options.render is None or not choice_delimiter or not continuation.startswith(choice_delimiter):
        return continuation
    return continuation[len(choice_delimiter):]
