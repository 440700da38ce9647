"""lm-evaluation-harness 0.4.13's command-line spelling read as evalkit's, before the argument parser sees it.

``lm_eval --model hf --model_args pretrained=gpt2,dtype=float32 --tasks piqa --num_fewshot 5 --output_path out``
runs as ``evalkit run --model gpt2 --dtype float32 --tasks piqa --num-fewshot 5 --output-dir out`` (and, as
lm-eval does for ``--output_path``, lm-eval's results file is written too: :func:`lm_eval_results_path`). Each
flag read in another spelling gives one info line (``lm-eval flag --model_args read as --model-args``). A flag of
lm-eval whose feature evalkit lacks (a named chat template, sampling, W&B logging, ...) stops the command
with one line naming what is missing and the nearest evalkit flag, instead of argparse's usage text.

Semantics follow lm-eval 0.4.13's ``lm_eval/_cli/run.py`` and ``lm_eval/config/evaluate_config.py``:
``--model_args`` (comma-separated and/or space-separated ``key=value``, or one JSON object) and ``--tasks``
(comma- and/or space-separated) take several words; ``--model hf`` names the backend and ``pretrained=`` the
model; ``--output_path`` ending in ``.json`` names a results file (written ``<stem>_<date>.json`` beside it), any
other path a folder (``<path>/<model>/results_<date>.json``); ``--batch_size auto:N`` re-probes N times in
lm-eval, evalkit probes once per task; ``--tasks list`` lists the tasks; a command line without a command
(``lm_eval --model ...``) is a run; ``--gen_kwargs`` (``key=value`` words, values read as Python literals) takes
``max_gen_toks`` (or ``max_new_tokens``) as ``--max-gen-toks`` and greedy settings (``do_sample=False``,
``temperature=0``), and refuses other keys, since evalkit decodes greedily only.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from evalkit.types import EvalkitError

RENAMED = {
    "--model_args": "--model-args", "--num_fewshot": "--num-fewshot", "--batch_size": "--batch-size",
    "--include_path": "--include-path", "--log_samples": "--log-samples", "--trust_remote_code": "--trust-remote-code",
    "--output_path": "--output-dir", "--apply_chat_template": "--apply-chat-template",
    "--system_instruction": "--system-instruction", "--fewshot_as_multiturn": "--fewshot-as-multiturn",
}
"""lm-eval flags that evalkit has under another spelling (``--output_path``: see :class:`Translation`)."""

SHORT = {"-a": "--model_args", "-f": "--num_fewshot", "-b": "--batch_size", "-o": "--output_path",
         "-s": "--log_samples", "-t": "--tasks", "-M": "--model", "-L": "--limit"}
"""lm-eval's one-letter flags that have an evalkit counterpart (``-v`` and ``-q`` stay evalkit's)."""

MISSING = {
    "--use_cache": "evalkit caches every scored request by itself (nearest: --cache-dir DIR; --no-cache)",
    "--cache_requests": "evalkit builds prompts afresh each run and caches scored requests (nearest: --cache-dir; "
                        "--no-cache)",
    "--write_out": "evalkit prints no prompts (nearest: --log-samples, every prompt in the samples file)",
    "--show_config": "evalkit prints no config (nearest: the results JSON's 'config' and each task's definition)",
    "--wandb_args": "evalkit has no Weights & Biases logging (nearest: evalkit export --format lm-eval|csv)",
    "--wandb_config_args": "evalkit has no Weights & Biases logging (nearest: evalkit export --format lm-eval|csv)",
    "--trackio_args": "evalkit has no Trackio logging (nearest: evalkit export --format lm-eval|csv)",
    "--hf_hub_log_args": "evalkit pushes nothing to the hub (nearest: evalkit export --format lm-eval, then upload "
                         "the folder)",
    "--predict_only": "evalkit always computes the metrics (nearest: --log-samples, every request's answer)",
    "--max_batch_size": "evalkit bounds a batch by tokens (nearest: --max-batch-tokens N with --batch-size auto)",
    "--samples": "evalkit takes no document list (nearest: --limit N or a fraction, a seeded random subset)",
    "--check_integrity": "evalkit has no task test suites; every document is validated before the model loads "
                         "(nearest: none needed)",
    "--verbosity": "evalkit sets its log level with flags (nearest: -v or -q)",
    "--config": "evalkit reads no YAML run configuration (nearest: flags on the command line, or evalkit.evaluate "
                "in Python)",
    "--metadata": "evalkit has no task metadata (nearest: --model-args for the model's keywords)",
    "--confirm_run_unsafe_code": "evalkit runs no generated code (nearest: none needed)",
}
"""lm-eval flags without an evalkit counterpart -> what is missing and the nearest evalkit flag."""

SHORT_MISSING = {"-C": "--config", "-c": "--use_cache", "-w": "--write_out", "-x": "--predict_only",
                 "-E": "--samples"}

TAKES_VALUE = {"--model_args", "--num_fewshot", "--batch_size", "--include_path", "--output_path", "--tasks",
               "--model", "--limit", "--seed", "--device", "--system_instruction", "--gen_kwargs"}

MANY_WORDS = {"--model_args", "--tasks", "--gen_kwargs"}
"""lm-eval flags that take several words (``nargs="+"``)."""

HF_MODELS = ("hf", "hf-auto", "huggingface")
"""lm-eval's names of its transformers backend, the one evalkit reproduces."""

LM_EVAL_BACKENDS = (
    *HF_MODELS, "anthropic-chat", "anthropic-chat-completions", "anthropic-completions",
    "azure-openai-chat-completions", "dummy", "ggml", "gguf", "habana", "hf-audiolm-qwen", "hf-mistral3",
    "hf-multimodal", "ipex", "litellm", "litellm-chat", "litellm-chat-completions", "local-chat-completions",
    "local-completions", "mamba_ssm", "megatron_lm", "nemo_lm", "neuronx", "onnxruntime", "onnxruntime-genai",
    "openai-chat-completions", "openvino", "sglang", "sglang-generate", "steered", "textsynth", "trtllm", "vllm",
    "vllm-vlm", "watsonx_llm", "winml")
"""The model backends lm-eval 0.4.13 registers (``--model NAME``)."""

MODEL_ARG_FLAGS = {"pretrained": "--model", "revision": "--revision", "dtype": "--dtype", "tokenizer": "--tokenizer",
                   "max_length": "--max-length", "device": "--device", "batch_size": "--batch-size",
                   "gguf_file": "--gguf-file"}
"""lm-eval ``hf`` model arguments that are evalkit flags (``trust_remote_code``, ``parallelize``: switches)."""

HFLM_ONLY = ("backend", "truncation", "logits_cache", "softmax_dtype", "mixed_precision_dtype", "max_batch_size",
             "use_fast_tokenizer", "add_bos_token", "prefix_token_id", "max_memory_per_gpu", "max_cpu_memory",
             "offload_folder", "tp_plan", "peft", "delta", "autogptq", "gptqmodel", "think_end_token",
             "enable_thinking", "chat_template_args")
"""Keywords of lm-eval's ``HFLM`` itself (not of ``from_pretrained``) that evalkit has no counterpart for."""

DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16", "half": "float16",
          "auto": "auto"}
"""lm-eval's ``dtype=`` values (torch attribute names) -> evalkit's ``--dtype``."""


@dataclass
class Translation:
    """An lm-eval-style command line read as evalkit's.

    Attributes:
        argv: the command line evalkit's parser reads.
        notes: one info line per flag read in another spelling.
        output_path: lm-eval's ``--output_path`` as given (the run also writes lm-eval's results file there), or
            None.
    """

    argv: list[str]
    notes: list[str] = field(default_factory=list)
    output_path: str | None = None


def _split_equals(token: str) -> tuple[str, str | None]:
    if token.startswith("--") and "=" in token:
        flag, _, value = token.partition("=")
        return flag, value
    return token, None


def _is_flag(word: str) -> bool:
    return word.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", word)


def _model_args_dict(words: Sequence[str]) -> dict[str, Any]:
    """lm-eval's ``--model_args`` words -> a dict: one JSON object, or ``key=value`` items split on commas outside
    brackets and quotes (values read as lm-eval reads them: true/false, numbers, else the text)."""
    if len(words) == 1 and words[0].strip().startswith("{"):
        try:
            value = json.loads(words[0])
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"--model_args: not a JSON object ({exc.msg}, column {exc.colno})") from None
        if not isinstance(value, dict):
            raise EvalkitError("--model_args: expected a JSON object or key=value items")
        return value
    from evalkit.models.model_args import _value

    out: dict[str, Any] = {}
    for word in words:
        for item in re.split(r",(?![^\[\]{}()]*[\]})])", word):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise EvalkitError(f"--model_args: '{item}' is not key=value (e.g. pretrained=EleutherAI/pythia-70m)")
            out[key.strip()] = _value(value.strip())
    return out


def _model_args_to_flags(args: dict[str, Any], notes: list[str]) -> list[str]:
    """An lm-eval ``hf`` model's arguments -> evalkit flags; the rest stays ``--model-args``.

    Raises:
        EvalkitError: a keyword of lm-eval's HFLM evalkit lacks, or a dtype evalkit does not take.
    """
    flags: list[str] = []
    rest: list[str] = []
    for key, value in args.items():
        if key in HFLM_ONLY:
            raise EvalkitError(f"--model_args {key}=: lm-eval's hf model option '{key}' has no evalkit counterpart "
                               f"(nearest: --model-args KEY=VALUE for from_pretrained keywords)")
        if key in ("trust_remote_code", "parallelize"):
            if value is True:
                flags.append(f"--{key.replace('_', '-')}")
                notes.append(f"lm-eval model argument {key}=True read as --{key.replace('_', '-')}")
            elif value is not False:
                raise EvalkitError(f"--model_args {key}={value}: expected True or False")
            continue
        if key in MODEL_ARG_FLAGS:
            text = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            if key == "dtype":
                if text not in DTYPES:
                    raise EvalkitError(f"--model_args dtype={text}: evalkit's --dtype takes "
                                       f"{', '.join(sorted(set(DTYPES.values())))}")
                text = DTYPES[text]
            flags += [MODEL_ARG_FLAGS[key], text]
            notes.append(f"lm-eval model argument {key}= read as {MODEL_ARG_FLAGS[key]} {text}")
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        rest.append(f"{key}={shown}")
    if rest:
        notes.append("lm-eval flag --model_args read as --model-args")
        flags += ["--model-args", ",".join(rest)]
    return flags


def _gen_kwargs_to_flags(words: Sequence[str], notes: list[str]) -> list[str]:
    """lm-eval's ``--gen_kwargs`` words (``max_gen_toks=64,do_sample=False`` or space-separated) -> evalkit flags.

    Values are read as lm-eval reads them (a Python literal, else the text). ``max_gen_toks`` / ``max_new_tokens``
    become ``--max-gen-toks``, overriding every generation task's length as lm-eval's override does.

    Raises:
        EvalkitError: an item that is not ``key=value``, sampling settings, stop strings or another key evalkit
            does not take from the command line (one line naming the key).
    """
    import ast

    flags: list[str] = []
    for word in words:
        for item in re.split(r",(?![^\[\]{}()]*[\]})])", word):
            if not item.strip():
                continue
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise EvalkitError(f"--gen_kwargs: '{item}' is not key=value (e.g. max_gen_toks=256)")
            try:
                value = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                value = text.strip()
            if key in ("max_gen_toks", "max_new_tokens"):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise EvalkitError(f"--gen_kwargs {key}={text.strip()}: expected a whole number above 0")
                flags += ["--max-gen-toks", str(value)]
                notes.append(f"lm-eval --gen_kwargs {key}={value} read as --max-gen-toks {value}")
            elif (key == "do_sample" and value is False) or (
                    key == "temperature" and not isinstance(value, bool) and value == 0):
                notes.append(f"lm-eval --gen_kwargs {key}={value}: greedy decoding, as evalkit always decodes")
            else:
                raise EvalkitError(f"lm-eval --gen_kwargs {key}={text.strip()}: evalkit decodes greedily with each "
                                   f"task's own stop strings and takes only max_gen_toks from the command line "
                                   f"(nearest: --max-gen-toks N; sampling and stop strings belong in a task file)")
    return flags


def _lm_eval_model(model: str | None, model_args: dict[str, Any] | None) -> str | None:
    """The model evalkit loads when the command line names lm-eval's backend (``--model hf``, lm-eval's default
    when only ``--model_args pretrained=NAME`` is given), else None (``--model`` is evalkit's model itself).

    Raises:
        EvalkitError: another lm-eval backend (``vllm``, ``openai-completions``, ...), or ``--model hf`` without
            ``pretrained=``.
    """
    pretrained = (model_args or {}).get("pretrained")
    if model in LM_EVAL_BACKENDS and model not in HF_MODELS:
        raise EvalkitError(f"--model {model}: evalkit scores with transformers, lm-eval's 'hf' backend only "
                           f"(nearest: --model hf --model_args pretrained=NAME, or evalkit's --model NAME)")
    if model is not None and model not in HF_MODELS:
        if pretrained is not None:
            raise EvalkitError(f"--model {model} and --model_args pretrained={pretrained} name two models: give "
                               f"one (evalkit's --model NAME, or lm-eval's --model hf --model_args pretrained=NAME)")
        return None
    if pretrained is None:
        if model is None:
            return None
        raise EvalkitError(f"--model {model}: name the model with --model_args pretrained=NAME (or evalkit's "
                           f"--model NAME)")
    return str(pretrained)


def translate(argv: Sequence[str], commands: Sequence[str]) -> Translation:
    """Read lm-eval's spelling of a command line (see the module's description) as evalkit's.

    Args:
        argv: the command line after the program name.
        commands: evalkit's subcommands (a line starting with a flag other than ``-h``, ``--version``, ``-v``,
            ``-q`` is read as ``run``, as lm-eval reads a line without a command).

    Returns:
        the evalkit command line, one info line per flag read in another spelling, and ``--output_path``.

    Raises:
        EvalkitError: an lm-eval flag whose feature evalkit lacks (one line: what is missing, the nearest evalkit
            flag), a model backend other than lm-eval's ``hf``, a malformed ``--model_args``.
    """
    argv = list(argv)
    notes: list[str] = []
    lead = [a for a in argv if a in ("-v", "-vv", "-vvv", "-q", "--verbose", "--quiet")]
    rest = [a for a in argv if a not in lead]
    if rest and rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version") and rest[0] not in commands:
        rest.insert(0, "run")
        notes.append("lm-eval's command line without a command read as `evalkit run`")
    if not rest or rest[0] not in ("run", "baseline"):
        return Translation(lead + rest, notes)
    command, words = rest[0], rest[1:]
    out: list[str] = []
    model = None
    model_args: dict[str, Any] | None = None
    output_path = None
    listing = None
    i = 0
    while i < len(words):
        token, inline = _split_equals(words[i])
        token = SHORT.get(token, SHORT_MISSING.get(token, token))
        i += 1
        if token in MISSING:
            raise EvalkitError(f"lm-eval flag {token}: {MISSING[token]}")
        if token not in TAKES_VALUE and token not in RENAMED:
            out.append(words[i - 1] if inline is None else f"{token}={inline}")
            continue
        values: list[str] = [] if inline is None else [inline]
        if token in TAKES_VALUE:
            many = token in MANY_WORDS
            while i < len(words) and (many or not values) and not _is_flag(words[i]):
                values.append(words[i])
                i += 1
        if token == "--model_args":
            model_args = {**(model_args or {}), **_model_args_dict(values)}
            continue
        if token == "--model":
            model = values[0] if values else None
            continue
        if token == "--tasks":
            tasks = ",".join(v.strip(",") for v in values)
            if tasks in ("list", "list_groups", "list_tags", "list_subtasks"):
                listing = tasks
            out += ["--tasks", tasks]
            continue
        if token == "--gen_kwargs":
            out += _gen_kwargs_to_flags(values, notes)
            continue
        if token == "--apply_chat_template" and (values or (i < len(words) and not _is_flag(words[i]))):
            name = values[0] if values else words[i]
            raise EvalkitError(f"lm-eval flag --apply_chat_template {name}: evalkit applies the tokenizer's default "
                               f"chat template and cannot choose a named one (nearest: --apply-chat-template)")
        if token == "--batch_size" and values and values[0].startswith("auto:"):
            notes.append(f"lm-eval flag --batch_size {values[0]} read as --batch-size auto (evalkit sizes each "
                         f"task's batches once, from its longest batch)")
            out += ["--batch-size", "auto"]
            continue
        if token == "--seed" and values and "," in values[0]:
            raise EvalkitError(f"lm-eval flag --seed {values[0]}: evalkit has no separate python/numpy/torch seeds "
                               f"(nearest: --seed N for subsets, random weights and the bootstrap; --fewshot-seed N)")
        if token == "--output_path":
            output_path = values[0] if values else None
            folder = Path(output_path).parent if output_path and output_path.endswith(".json") else output_path
            notes.append(f"lm-eval flag --output_path read as --output-dir {folder} (and lm-eval's results file "
                         f"written there too)")
            out += ["--output-dir", str(folder)] if folder is not None else ["--output-dir"]
            continue
        new = RENAMED.get(token, token)
        if new != token:
            notes.append(f"lm-eval flag {token} read as {new}")
        out += [new, *values]
    if listing is not None:  # lm-eval's --tasks list: the task list, with the run's task folders
        notes.append(f"lm-eval's --tasks {listing} read as `evalkit tasks`")
        include = [w for j, w in enumerate(out) if j > 0 and out[j - 1] == "--include-path"]
        return Translation(lead + ["tasks", *[x for p in include for x in ("--include-path", p)]], notes)
    name = _lm_eval_model(model, model_args)
    if name is not None:
        notes.append(f"lm-eval's --model {model or 'hf'} --model_args pretrained={name} read as --model {name}")
        model = name
        model_args = {k: v for k, v in (model_args or {}).items() if k != "pretrained"}
    if model_args is not None:
        out += _model_args_to_flags(model_args, notes)
    if model is not None:
        out = ["--model", model, *out]
    return Translation(lead + [command, *out], notes, output_path)


def unknown_flag_message(flag: str, known: Sequence[str], command: str) -> str:
    """One line for a flag the command does not know: the closest known flag (difflib), or the help to read."""
    name = flag.split("=", 1)[0]
    close = difflib.get_close_matches(name.replace("_", "-"), list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f" (`evalkit {command} --help` lists them)"
    return f"evalkit {command}: unknown flag {name}{hint}"


def sanitized_model_name(model: str) -> str:
    """lm-eval's folder name for a model: runs of ``"<>:/|\\?*[]`` replaced by ``__`` (``lm_eval.utils``)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model)


def lm_eval_results_path(output_path: str, model: str, stamp: str) -> tuple[Path, Path]:
    """Where lm-eval 0.4.13 writes its results for ``--output_path``: ``(results file, samples folder)``.

    A path ending in ``.json`` is a file: ``<parent>/<stem>_<stamp>.json``, samples in ``<parent>``. Any other path
    is a folder: ``<path>/<sanitized model>/results_<stamp>.json``, samples beside it.
    """
    path = Path(output_path)
    if path.suffix == ".json":
        return path.with_name(f"{path.stem}_{stamp}.json"), path.parent
    folder = path / sanitized_model_name(model)
    return folder / f"results_{stamp}.json", folder


def write_lm_eval_output(output_path: str, model: str, results: dict[str, Any], results_path: Path) -> list[Path]:
    """Write lm-eval's results file (and, when the run logged samples, its per-task samples files) where lm-eval
    0.4.13 would for ``--output_path`` (:func:`lm_eval_results_path`), in lm-eval's layout
    (:func:`evalkit.results.export.write_lm_eval`).

    Returns:
        the written paths, the results file first.
    """
    from evalkit.results.export import date_id, write_lm_eval

    target, folder = lm_eval_results_path(output_path, model, date_id(results))
    written = write_lm_eval(results, results_path, folder)
    if written[0] != target:
        written[0] = written[0].replace(target)
    return written
