"""Shared vocabulary of evalkit: frozen dataclasses and protocols.

This module imports nothing from evalkit, so every other module may import it.
Terms follow the field: a *document* (doc) is one row of a dataset split; a
*request* asks a model for the log-likelihood of a *continuation* given a
*context*; a *response* answers one request. A *generation request* asks for the model's greedy continuation
of a context, stopped by stop strings, the end-of-text token or a token budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

Doc = Mapping[str, Any]
"""One dataset row, as parsed from JSON (field name -> value)."""


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Ask for log P(continuation | context).

    Attributes:
        task: task name, e.g. ``"piqa"``.
        doc_id: 0-based row index of the document in its split.
        choice_index: index of this continuation among the document's continuations.
        context: prompt text; an empty string means "start of text" (the end-of-text token is used).
        continuation: text whose log-likelihood is scored, e.g. ``" " + choice``.
    """

    task: str
    doc_id: int
    choice_index: int
    context: str
    continuation: str


@dataclass(frozen=True)
class TokenizedRequest:
    """A request after tokenization.

    Attributes:
        context_ids: context token ids, already left-truncated to fit the window (tuple of int).
        continuation_ids: continuation token ids (tuple of int, never empty).
        truncated_tokens: how many context tokens were dropped on the left (int, >= 0).
        joint_fallback: ``--tokenization joint`` only: True when a token spans the join of context and
            continuation, so the request holds the separate encodings (the continuation's exact text) instead of
            the split joint encoding (see :mod:`evalkit.scoring.tokenization`). Not part of the request's cache key.
    """

    context_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    truncated_tokens: int = 0
    joint_fallback: bool = False


@dataclass(frozen=True)
class LoglikelihoodResponse:
    """A model's answer to one request.

    Attributes:
        loglikelihood: sum over continuation tokens of log P(token | prefix), natural log (nats), float.
        greedy: True when every continuation token is the argmax of the model's distribution at its position.
        continuation_tokens: number of continuation tokens scored (int).
        truncated_tokens: context tokens dropped on the left to fit the model's window (int).
    """

    loglikelihood: float
    greedy: bool
    continuation_tokens: int
    truncated_tokens: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    """Ask for a greedy continuation of ``context`` (lm-eval 0.4 ``generate_until``, v0.2.0 ``greedy_until``).

    Greedy decoding only: sampling settings are refused where task files are read, never here.

    Attributes:
        task: task name, e.g. ``"gsm8k"``.
        doc_id: 0-based row index of the document in its split.
        context: prompt text; an empty string means "start of text" (the end-of-text token, or the model's prefix
            ids, is the context).
        until: stop strings; the answer is cut before the first of them (see
            :func:`evalkit.scoring.generation.cut_at_stop`); empty strings are ignored, as lm-eval 0.4 does.
        max_new_tokens: most tokens generated (int, >= 1); lm-eval's ``max_gen_toks``.
    """

    task: str
    doc_id: int
    context: str
    until: tuple[str, ...]
    max_new_tokens: int


@dataclass(frozen=True)
class TokenizedGeneration:
    """A generation request after tokenization.

    Attributes:
        context_ids: context token ids (tuple of int, never empty), already left-truncated to the model window minus
            ``max_new_tokens``, so the context and every generated token fit the window.
        until: stop strings, as in :class:`GenerationRequest`.
        max_new_tokens: most tokens generated (int, >= 1).
        truncated_tokens: context tokens dropped on the left (int, >= 0).
    """

    context_ids: tuple[int, ...]
    until: tuple[str, ...]
    max_new_tokens: int
    truncated_tokens: int = 0


@dataclass(frozen=True)
class GenerationResponse:
    """A model's greedy answer to one generation request.

    Attributes:
        text: the decoded generated tokens (special tokens skipped, as lm-eval 0.4 decodes), cut before the first
            stop string; never contains a stop string or the end-of-text token.
        tokens: tokens generated (int), *including* the token(s) that ended generation: the token that completed a
            stop string, or the end-of-text token; so a ``"length"`` answer has exactly ``max_new_tokens``, and the
            forward passes a request cost equal its ``tokens`` (the first from the context's pass).
        stop_reason: ``"stop"`` (a stop string appeared in the decoded text), ``"eot"`` (an end-of-text token was
            generated) or ``"length"`` (``max_new_tokens`` reached without either).
        truncated_tokens: context tokens dropped on the left to fit the window (int), copied from the request.
    """

    text: str
    tokens: int
    stop_reason: str
    truncated_tokens: int = 0


STOP_REASONS = ("stop", "eot", "length")
"""The values of :attr:`GenerationResponse.stop_reason`."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a task's documents come from.

    Attributes:
        hub_id: Hugging Face dataset id, e.g. ``"allenai/sciq"``.
        config: dataset config name or None.
        split: split name, e.g. ``"test"``.
        n: expected number of documents in the split (a mismatch is warned about, not fatal); None when the task
            file declares no size (lm-eval task YAMLs), so no size check is made.
        fields: required fields as dotted paths mapped to their JSON type
            (``str``, ``int``, ``list``, ``dict``), e.g. ``{"choices.text": list}``.
        local_dir: folder under ``--data-dir`` holding ``<split>.jsonl``, e.g. ``"mmlu/anatomy"`` for a task family
            whose data is laid out per member; None means the task's name.
        data_files: split name -> path of a JSON-lines file holding that split (a task YAML's
            ``dataset_kwargs.data_files``); a split listed here is read from its file whatever ``--data-dir`` says.
    """

    hub_id: str
    config: str | None
    split: str
    n: int | None
    fields: Mapping[str, type]
    local_dir: str | None = None
    data_files: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Task:
    """A task: a Python file in ``tasks/`` defines one (``TASK``) or a family (``TASKS``).

    Log-likelihood tasks score ``continuations`` after ``context``; a generation task (``scoring="generate_until"``)
    asks for greedy text after ``context`` until a stop string (``until``) or ``max_new_tokens`` and scores it with
    ``score_generation``; its ``continuations`` return ``[]`` and its ``gold`` 0.

    Attributes:
        name: canonical name, e.g. ``"lambada_openai"``.
        version: bumped whenever the prompt or scoring changes.
        dataset: the split to read (:class:`DatasetSpec`).
        context: ``doc -> str``, the prompt.
        continuations: ``doc -> list[str]``, the scored continuations (each non-empty).
        gold: ``doc -> int`` index of the correct continuation (0 for single-target tasks).
        scoring: how per-document metrics are computed: ``"multiple_choice"`` (acc, acc_norm),
            ``"target"`` (acc = greedy of the one target, perplexity from its log-likelihood),
            ``"any_greedy"`` (acc = 1 when any continuation is greedy), ``"generate_until"`` (a generation scored by
            ``score_generation``: metrics are means of per-document values, stderr in closed form), or
            ``"rolling"`` (document perplexity,
            lm-eval v0.2.0 ``loglikelihood_rolling``, SPEC-suite B.24: ``context(doc)`` returns ``""``,
            ``continuations(doc)`` one string, the text scored in windows of the model's length with every token
            predicted once; ``gold`` returns 0; metrics among ``word_perplexity``, ``byte_perplexity``,
            ``bits_per_byte``, normalised by ``units_text``; see :mod:`evalkit.stats.metrics`).
        metrics: metric names this task reports, in display order.
        primary_metric: the metric the model card's column shows.
        aliases: other names that select this task.
        validate: optional ``doc -> None`` check beyond field types; raises ValueError naming the field.
        description: one line naming the metric variant (shown in reports).
        source: where the prompt and scoring come from (paper, dataset card, harness version).
        fewshot_split: split the few-shot examples are drawn from (``"train"``, MMLU's ``"dev"``); None when the
            task has no source of examples (``--num-fewshot`` > 0 is refused, naming the task). When it equals
            ``dataset.split`` the examples come from the evaluated split itself, without the document (lm-eval
            v0.2.0's "no training split" path; SPEC-suite A.4 route 3).
        fewshot_filter: optional ``doc -> bool`` keeping only some rows of the few-shot split (SuperGLUE WSC keeps
            label-true rows); applied before drawing.
        target: ``doc -> str``, what a few-shot example shows after its ``context(doc)`` (v0.2.0
            ``doc_to_target``); None means ``continuations(doc)[gold(doc)]``.
        choice_contexts: optional ``doc -> list[str]``, one context per continuation (WinoGrande's partial
            evaluation): each replaces the last ``"\n\n"``-separated segment of the assembled few-shot context,
            while ``context(doc)`` stays the text a few-shot example of this document shows.
        units_text: for ``scoring="rolling"``: ``doc -> str`` whose words and UTF-8 bytes normalise the
            document perplexities (wikitext: the raw, un-detokenised document); None means the scored text.
        process_docs: optional ``list[Doc] -> list[Doc]`` applied to every split right after it is read and before
            it is validated (an lm-eval YAML's ``process_docs: !function``); doc ids index the processed list.
        tokenization: ``"separate"`` or ``"joint"`` to override the run's ``--tokenization`` for this task's
            requests (lm-eval 0.4 task YAMLs use ``"joint"``, as lm-eval 0.4 does); None follows the run.
        fewshot_sampler: how few-shot examples are drawn and assembled: ``"v0.2.0"`` (lm-eval v0.2.0, the
            default), or lm-eval 0.4's ``"lm-eval-0.4:<default|first_n>"``, with ``":exclude-doc"`` appended when
            examples equal to the document are never shown (:mod:`evalkit.fewshot.lmeval`).
        fewshot_contexts: for the lm-eval 0.4 samplers: ``(doc, examples) -> list[str]``, the full context of each
            continuation given the drawn few-shot example documents (description, examples, the document).
        num_fewshot: the task file's own number of few-shot examples, used when the run asks for none; None: 0.
        until: ``scoring="generate_until"``: the stop strings (each non-empty), e.g. ``("\\n",)``.
        max_new_tokens: ``scoring="generate_until"``: most tokens generated per document (> 0); the run's
            ``--max-gen-toks`` overrides it.
        score_generation: ``scoring="generate_until"``: ``(doc, generation) -> {metric: value}``, one value per
            name in ``metrics`` (0.0/1.0 for accuracies); ``generation`` is the text already cut at ``until``.
        generation_answers: optional ``(doc, generation) -> {name: answer}``: what the scoring read from the
            generation (MATH: the extracted answer; lm-eval YAMLs: each filter's answer), kept with the samples.
        references: optional ``doc -> list[str]``: the gold answer(s) a generation is compared with, kept with the
            samples (a document scores if any matches, where the task says so).
        fewshot_samples: optional few-shot example documents given in the task file itself (an lm-eval YAML's
            ``fewshot_config.samples``), used instead of reading ``fewshot_split`` (which then only names them).
        prompt_parts: ``(doc, examples) -> evalkit.fewshot.chat.PromptParts``, the pieces of the document's prompt
            (description, each example's question and answer, the document's question or per-choice contexts,
            delimiters) that a chat template renders as messages; None derives them from ``context``, ``target``
            and ``choice_contexts`` (:func:`evalkit.fewshot.v020.prompt_parts`).
    """

    name: str
    version: str
    dataset: DatasetSpec
    context: Callable[[Doc], str]
    continuations: Callable[[Doc], list[str]]
    gold: Callable[[Doc], int]
    scoring: str
    metrics: tuple[str, ...]
    primary_metric: str = "acc"
    aliases: tuple[str, ...] = ()
    validate: Callable[[Doc], None] | None = None
    description: str = ""
    source: str = ""
    fewshot_split: str | None = None
    fewshot_filter: Callable[[Doc], bool] | None = None
    target: Callable[[Doc], str] | None = None
    choice_contexts: Callable[[Doc], list[str]] | None = None
    units_text: Callable[[Doc], str] | None = None
    process_docs: Callable[[list[Doc]], list[Doc]] | None = None
    tokenization: str | None = None
    fewshot_sampler: str = "v0.2.0"
    fewshot_contexts: Callable[[Doc, Sequence[Doc]], list[str]] | None = None
    num_fewshot: int | None = None
    until: tuple[str, ...] = ()
    max_new_tokens: int = 256
    score_generation: Callable[[Doc, str], Mapping[str, float]] | None = None
    generation_answers: Callable[[Doc, str], Mapping[str, str]] | None = None
    references: Callable[[Doc], list[str]] | None = None
    fewshot_samples: tuple[Doc, ...] | None = None
    prompt_parts: Callable[[Doc, Sequence[Doc]], Any] | None = None


@dataclass(frozen=True)
class TaskGroup:
    """A named set of tasks run together, e.g. the model card's table.

    Attributes:
        name: group name selectable with ``--tasks``.
        tasks: member task names, in table order.
        description: one line shown by ``evalkit tasks``.
        aggregation: None for a plain selection (the card's table), else the group's own row in results and
            reports: ``"micro"`` (mean over all documents of its tasks) or ``"macro"`` (unweighted mean of the
            task means).
        categories: names of the groups that split this one's tasks into categories (MMLU's STEM, humanities,
            social sciences, other), in display order; each member task falls in at most one of them.
    """

    name: str
    tasks: tuple[str, ...]
    description: str = ""
    aggregation: str | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class DocResult:
    """Per-document outcome.

    Attributes:
        task: task name.
        doc_id: 0-based row index in the split.
        metrics: metric name -> value for this document (acc in {0.0, 1.0}; ``loglikelihood`` in nats).
        loglikelihoods: one summed log-likelihood (nats) per continuation (empty for a generation task).
        greedy: one greedy flag per continuation (empty for a generation task).
        generation: a generation task's raw generated text (cut at the stop strings), else None.
        answers: a generation task's answers read from the generation (filter or step name -> text), else None.
    """

    task: str
    doc_id: int
    metrics: Mapping[str, float]
    loglikelihoods: tuple[float, ...]
    greedy: tuple[bool, ...]
    generation: str | None = None
    answers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class MetricResult:
    """An aggregated metric over a task's documents.

    Attributes:
        task: task name.
        metric: metric name (``acc``, ``acc_norm``, ``perplexity``).
        value: aggregate value (a fraction in [0, 1] for accuracies; perplexity in exp(nats)).
        stderr: closed-form standard error of the mean, sqrt(sum((x-mean)^2)/(n-1)/n); None where no
            closed form exists (perplexity).
        stderr_bootstrap: standard deviation of the statistic over bootstrap resamples of documents.
        n: number of documents.
        higher_is_better: direction of the metric.
    """

    task: str
    metric: str
    value: float
    stderr: float | None
    stderr_bootstrap: float | None
    n: int
    higher_is_better: bool


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (what ``evalkit run`` parses its flags into).

    Attributes:
        model: model spec: alias (``neox-20b``), hub id, local folder, or ``random:<alias>``.
        tasks: task or group names as given (aliases allowed).
        tokenizer: hub id or path to a ``tokenizer.json``; None uses the model's.
        data_dir: folder holding ``<task>/<split>.jsonl``; None reads the hub.
        include_paths: extra folders of task files.
        limit: seeded random subset of this many documents per task, or of this fraction (0 < limit < 1,
            rounded up) of each task's documents; None for all (:func:`evalkit.data.documents.subset_ids`).
        seed: seed for the subset, the random model weights and the bootstrap.
        batch_size: packed sequences per forward pass (each sequence: one context and its continuations), or
            ``"auto"``: probed per task on CUDA, a fixed default elsewhere (see ``evalkit.scoring.batching.initial_batch_size``).
        max_length: model window override in tokens; None reads the model config.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        device: torch device string, or None to pick cuda when available.
        bootstrap_iters: bootstrap resamples per metric (0 disables).
        output_dir: results go to ``output_dir/results``, reports to ``output_dir/reports``.
        log_samples: also write one JSON line per document.
        cache_dir: folder of the request cache; None uses ``$EVALKIT_CACHE_DIR`` or ``~/.cache/evalkit``.
        use_cache: answer already-scored requests from the cache and store new answers batch by batch.
        num_fewshot: few-shot examples per document for every task of the run (0: zero-shot).
        fewshot_overrides: task name -> shots, overriding ``num_fewshot`` (``--tasks arc_challenge:25``); an alias
            names its task, a group name sets its members, and a task's own count beats its group's.
        fewshot_seed: seed of the generator that shuffles documents and draws examples (v0.2.0 uses 42).
        extra: backend options, each optional: ``max_batch_tokens`` (int, padded tokens per forward pass,
            default 32768), ``tokenization`` (``"separate"`` or ``"joint"``), ``share_context`` (bool, default
            True), ``load_kwargs`` (``device_map`` / ``max_memory`` for sharding), ``dist_timeout_s`` (float),
            ``allow_non_finite`` (bool: count NaN/inf log-likelihoods instead of stopping), ``full_weight_hash``
            (bool: key a local model folder by every weight byte instead of headers and samples),
            ``figure`` (bool, default True: draw the report's PNG figure).
        skip_missing_data: with a data folder, leave out (and name) the tasks whose local files are missing instead
            of failing the run.
        max_gen_toks: generation tasks only: most tokens generated per document, overriding each task's own
            ``max_new_tokens`` (``--max-gen-toks``); None keeps the tasks' values. Must be > 0 and below the
            model's window.
    """

    model: str
    tasks: tuple[str, ...]
    tokenizer: str | None = None
    data_dir: str | None = None
    include_paths: tuple[str, ...] = ()
    limit: int | float | None = None
    seed: int = 1234
    batch_size: int | str = 16
    max_length: int | None = None
    dtype: str = "auto"
    device: str | None = None
    bootstrap_iters: int = 10000
    output_dir: str = "."
    log_samples: bool = False
    cache_dir: str | None = None
    use_cache: bool = True
    num_fewshot: int = 0
    fewshot_overrides: Mapping[str, int] = field(default_factory=dict)
    fewshot_seed: int = 42
    extra: Mapping[str, Any] = field(default_factory=dict)
    skip_missing_data: bool = False
    max_gen_toks: int | None = None


BatchCallback = Callable[[Sequence[int], Sequence[LoglikelihoodResponse]], None]
"""``on_batch(request indices, responses)``: told after each scored batch which requests it answered."""


GenerationCallback = Callable[[Sequence[int], Sequence[GenerationResponse]], None]
"""``on_done(request indices, responses)``: told as generations finish which requests they answered."""


class LoglikelihoodBackend(Protocol):
    """Scores requests. Returns responses of the same length and order as the input."""

    def loglikelihood(
        self,
        requests: Sequence[TokenizedRequest],
        on_batch: BatchCallback | None = None,
    ) -> list[LoglikelihoodResponse]:
        """Score tokenized requests; see :class:`LoglikelihoodResponse` for units.

        ``on_batch``, when given, is called after each batch with the indices (into ``requests``) of the
        requests that batch answered and their responses, so a caller can persist finished work as it goes.
        """
        ...


class EvalkitError(Exception):
    """A user-facing error: bad input, unknown name, missing file. The CLI prints it without a traceback."""


JSON_MAX_DEPTH = 100
"""Arrays and objects inside one another that :func:`parse_json` reads (evalkit's own files nest 5 deep)."""

JSON_MAX_INT_DIGITS = 308
"""Digits of the largest integer :func:`parse_json` reads: every such integer converts to a finite float."""


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > JSON_MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits; numbers above {JSON_MAX_INT_DIGITS} digits are not read "
                         f"(no float holds them)")
    return int(text)


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests more than :data:`JSON_MAX_DEPTH` arrays/objects (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > JSON_MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(text: str, parse_constant: Callable[[str], Any] | None = None) -> Any:
    """``json.loads`` for files a person may have edited: the parsed value, or ValueError with a reason a message
    can quote, where the standard parser would raise RecursionError (nesting deeper than the interpreter's stack)
    or give integers no float holds (``10**400``; thousands of digits raise a ValueError naming an interpreter
    setting).

    Raises:
        json.JSONDecodeError: not JSON (a ValueError, with the position).
        ValueError: nested more than :data:`JSON_MAX_DEPTH` levels, an integer of more than
            :data:`JSON_MAX_INT_DIGITS` digits, or whatever ``parse_constant`` raises.
    """
    deep = f"nested more than {JSON_MAX_DEPTH} levels deep (arrays and objects inside one another)"
    kwargs: dict[str, Any] = {"parse_int": _bounded_int}
    if parse_constant is not None:
        kwargs["parse_constant"] = parse_constant
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError(deep) from None
    if _too_deep(value):
        raise ValueError(deep)
    return value
