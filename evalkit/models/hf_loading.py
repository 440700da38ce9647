"""Load a Hugging Face causal LM and describe its identity (its tokenizer: :mod:`evalkit.models.tokenizer_loading`).

Together with :mod:`evalkit.scoring.hf_backend`, the only module that imports torch and transformers; the CLI
imports it lazily so ``evalkit tasks`` and ``evalkit report`` start fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from evalkit.models.gguf_file import require_gguf
from evalkit.models.gguf_loading import load_gguf
from evalkit.models.tokenizer_loading import sha256_text
from evalkit.models.attention_windows import windowed_attention
from evalkit.types import EvalkitError
from evalkit.models.weights_hash import folder_digest

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def config_digest_text(config: dict[str, Any], kind: str) -> str:
    """The canonical JSON of a model config that ``config_sha256`` hashes (and the request cache keys on).

    A GGUF model's config is read from the file, and transformers records where it was read from: the folder as
    ``_name_or_path`` and the file name as ``quantization_config["gguf_file"]``; both are left out, so a GGUF file
    keeps its digest (and its cached answers) wherever it is installed, moved or renamed. Other models keep every
    entry (a hub id, or a random model's empty name)."""
    if kind == "gguf":
        config = {k: v for k, v in config.items() if k != "_name_or_path"}
        if isinstance(config.get("quantization_config"), dict):
            config["quantization_config"] = {k: v for k, v in config["quantization_config"].items()
                                             if k != "gguf_file"}
    return json.dumps(config, sort_keys=True, default=str)


def import_model_support() -> None:
    """Import the transformers machinery every causal LM is built on (``modeling_utils``, ``masking_utils``,
    ``modeling_layers`` and the Auto classes: some 3 s and 300,000 objects on a CPU), so that the runner can import
    it with the garbage collector paused (:mod:`evalkit.import_gc`). The architecture's own module, a few
    milliseconds more, imports when the model is built."""
    import transformers.masking_utils  # noqa: F401
    import transformers.modeling_layers  # noqa: F401
    import transformers.modeling_utils  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM  # noqa: F401


def folder_fingerprint(folder: Path, full: bool = False, memo_dir: Path | None = None) -> str:
    """``local:<sha256>`` of a model folder's contents: :func:`evalkit.models.weights_hash.folder_digest` (safetensors
    headers and samples of every weight file, or every byte with ``full``; remembered in ``memo_dir``).

    Answers cached for one checkpoint are never served for another saved at the same path, even one rewritten in
    place with its old modification time restored. ``local`` when ``folder`` is not a folder.
    """
    return folder_digest(folder, full, memo_dir)


def random_revision(seed: int, generator: str) -> str:
    """The revision of seeded random weights: ``seed=N`` when drawn by the CPU generator, else
    ``seed=N,init=<generator>``.

    torch's CPU and CUDA generators draw different numbers from one seed (and a CUDA kernel's draws may depend on
    the GPU), so weights initialised on a GPU are another model than the CPU's: the revision, and with it the
    request cache's model key, tells them apart.

    Args:
        seed: the ``torch.manual_seed`` value.
        generator: ``"cpu"``, or the device the weights were drawn on, e.g. ``"cuda (NVIDIA H200)"``.
    """
    return f"seed={seed}" if generator == "cpu" else f"seed={seed},init={generator}"


def _generator_label(device: torch.device) -> str:
    """``"cpu"``, ``"cuda (<GPU name>)"``, or the device type: which random generator initialises weights there."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def pick_device(device: str | None) -> torch.device:
    """``device`` if given, else cuda when available, else cpu.

    Raises:
        EvalkitError: a device string torch does not know (``--device nonsense``).
    """
    if device:
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise EvalkitError(f"unknown --device '{device}': {exc}") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str, device: torch.device, config: Any) -> torch.dtype:
    """Resolve ``--dtype``: ``auto`` is float32 on CPU and the checkpoint's dtype (else bfloat16) on GPUs.

    Raises:
        EvalkitError: an unknown dtype name.
    """
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if isinstance(saved, str):
            saved = DTYPES.get(saved)
        return saved if saved in DTYPES.values() else torch.bfloat16
    if dtype not in DTYPES:
        raise EvalkitError(f"unknown --dtype '{dtype}'; expected auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


@contextlib.contextmanager
def loading_bars(enabled: bool, stream: Any = None):
    """Show transformers' own progress bars while a model loads (its "Loading weights" bar, and the "Converting and
    de-quantizing GGUF tensors" bar of its GGUF reader) only when ``enabled`` and ``stream`` (default stderr) is a
    terminal: ``--no-progress`` hides them, and a log file or a pipe does not fill with their ``\r`` redraws.
    The settings in force before are restored on exit."""
    from transformers.utils import logging as hf_logging

    try:  # a private module of transformers: where it is missing or changed, only its bar stays as it is
        import transformers.modeling_gguf_pytorch_utils as gguf_reader
    except ImportError:
        gguf_reader = None

    stream = sys.stderr if stream is None else stream
    if enabled and getattr(stream, "isatty", lambda: False)():
        yield
        return
    was_enabled, reader_bar = hf_logging.is_progress_bar_enabled(), getattr(gguf_reader, "tqdm", None)
    hf_logging.disable_progress_bar()
    if reader_bar is not None:  # the GGUF reader calls tqdm.auto directly
        gguf_reader.tqdm = functools.partial(reader_bar, disable=True)
    try:
        yield
    finally:
        if reader_bar is not None:
            gguf_reader.tqdm = reader_bar
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_model(
    resolved: dict[str, Any],
    dtype: str = "auto",
    device: str | None = None,
    seed: int = 1234,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    model_args: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build or download the model described by :func:`evalkit.models.resolve.resolve_model`.

    ``random`` models get seeded random weights from the shipped config (no download). ``device_map``
    (``"auto"``, ``"balanced"``, ``"sequential"`` or an explicit ``{module name: device}`` dict) spreads a
    large model over the devices allowed by ``max_memory`` (``{GPU index or "cpu"/"disk": bytes or "20GiB"}``)
    with accelerate; layers placed on ``"disk"`` are offloaded to a temporary folder. A sharded random model is
    built on the CPU first, so its weights equal the unsharded CPU model's for the same seed.

    ``revision`` (a hub branch, tag or commit), ``trust_remote_code`` and ``model_args`` (other keywords, see
    :mod:`evalkit.models.model_args`) go to ``from_pretrained``; the config is read with the same revision, trust and
    hub-location keywords (``cache_dir``, ``subfolder``, ...). A random model takes ``model_args`` in
    ``from_config`` and refuses a revision.
    ``fingerprint``, when given, is the identity's revision of a local model folder (the runner passes the folder's
    content digest, computed before the weights load); otherwise the hub commit or :func:`folder_fingerprint`.

    A ``gguf`` model (``{"kind": "gguf", "path": file}``, see :func:`evalkit.models.resolve.resolve_model`) is read by
    transformers' GGUF support and dequantized to the chosen dtype; its revision is ``sha256:<content hash>``
    (``resolved["sha256"]`` when the caller computed it, e.g. remembered in the cache folder) and its identity
    adds ``path`` and ``quantization``: the file's type, the storage type of its tensors and the dequantized dtype.

    Returns:
        (model in eval mode, identity dict with name, kind, revision (hub commit, :func:`random_revision` for random
        weights, :func:`folder_fingerprint` for a local folder, ``sha256:...`` for a GGUF file), dtype, device,
        parameters, config sha256, revision_requested, trust_remote_code, model_args; a model with sliding-window
        or chunked layers also ``attention_window``, its smallest window in tokens
        (:func:`evalkit.models.attention_windows.windowed_attention`); a GGUF model also path and quantization).

    Raises:
        EvalkitError: the model cannot be found or loaded, or a revision asked of random weights.
    """
    from evalkit.models.model_args import HUB_LOCATION_KEYS

    model_args = dict(model_args or {})
    from transformers import AutoModelForCausalLM

    target = pick_device(device)
    log.info("loading the model %s (%s, dtype %s, on %s)...", resolved.get("name") or resolved.get("path"),
             "random weights" if resolved["kind"] == "random" else resolved["kind"], dtype,
             "several devices" if device_map is not None else target)
    if resolved["kind"] == "random":
        if revision is not None:
            raise EvalkitError(f"--revision {revision}: random weights have no hub revision (the seed is theirs)")
        config = load_config(resolved)
        torch_dtype = pick_dtype(dtype, target, config)
        if resolved.get("seed") is not None:  # random:<alias>@<seed> fixes the weights apart from --seed
            seed = resolved["seed"]
        init = target if device_map is None else torch.device("cpu")
        torch.manual_seed(seed)
        with init:
            try:
                model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, **model_args)
            except TypeError as exc:
                raise EvalkitError(f"--model-args {model_args} not accepted by a random model: {exc}") from None
        if device_map is not None:
            model = dispatch(model, device_map, max_memory, torch_dtype)
        name = resolved.get("name", f"random:{resolved['alias']}")
        resolved_revision = random_revision(seed, _generator_label(init))
    elif resolved["kind"] == "gguf":
        torch_dtype = pick_dtype(dtype, target, None)  # a GGUF file has no dtype: float32 on CPU, bfloat16 on GPUs
        placement = {} if device_map is None else {
            "device_map": device_map, "max_memory": dict(max_memory) if max_memory else None,
            "offload_folder": _offload_dir()}
        model, extra = load_gguf(resolved, torch_dtype, target, placement)
        name, resolved_revision = Path(resolved["path"]).name, extra.pop("revision")
    else:
        path = resolved["path"]
        hub = {"revision": revision, "trust_remote_code": trust_remote_code,
               **{k: v for k, v in model_args.items() if k in HUB_LOCATION_KEYS}}
        try:
            config = load_config(resolved, hub)
            torch_dtype = pick_dtype(dtype, target, config)
            kwargs: dict[str, Any] = {"dtype": torch_dtype, "revision": revision,
                                      "trust_remote_code": trust_remote_code, **model_args}
            if device_map is not None:
                kwargs.update(device_map=device_map, max_memory=dict(max_memory) if max_memory else None,
                              offload_folder=_offload_dir())
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError, TypeError) as exc:
            raise EvalkitError(f"could not load model '{path}'{f' at revision {revision}' if revision else ''}: "
                               f"{exc}") from None
        if device_map is None:
            model.to(target)
        name = path
        commit = getattr(config, "_commit_hash", None)
        if commit is None and not Path(path).is_dir():
            commit = hub_commit(path, hub)
        resolved_revision = fingerprint or commit or folder_fingerprint(Path(path))
    model.eval()
    config_json = config_digest_text(model.config.to_dict(), resolved["kind"])
    identity = {
        "name": name,
        "kind": resolved["kind"],
        "revision": resolved_revision,
        "revision_requested": revision,
        "trust_remote_code": bool(trust_remote_code),
        "model_args": model_args,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "device": str(target) if device_map is None else describe_device_map(model, device_map),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config_sha256": sha256_text(config_json),
    }
    window = windowed_attention(model.config)
    if window is not None:  # only then: the identity (and cache key) of other models stays as it was
        identity["attention_window"] = window
    if resolved["kind"] == "gguf":
        identity.update(extra)
    return model, identity


def hub_commit(repo_id: str, hub: dict[str, Any]) -> str:
    """The commit of a hub model's files, from the snapshot folder its ``config.json`` was read from (offline
    loads leave ``config._commit_hash`` unset); ``requested:<revision>`` when even that is unknown, so answers
    cached for one revision are never served for another."""
    from transformers.utils.hub import cached_file, extract_commit_hash

    try:
        found = cached_file(repo_id, "config.json", **hub)
    except OSError:
        found = None
    return extract_commit_hash(found, None) or f"requested:{hub.get('revision') or 'main'}"


def load_config(resolved: dict[str, Any], hub: dict[str, Any] | None = None) -> Any:
    """The transformers config of a model described by :func:`evalkit.models.resolve.resolve_model`, without weights
    (the shipped config of a ``random:`` model; ``config.json`` of a folder or hub id, read with the ``hub``
    keywords: revision, trust_remote_code, cache_dir, ...).

    Raises:
        EvalkitError: the config cannot be found or read.
    """
    from transformers import AutoConfig

    if resolved["kind"] == "random":
        cfg = dict(resolved["config"])
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    try:
        if resolved["kind"] == "gguf":  # the architecture is in the file's header
            require_gguf()
            path = Path(resolved["path"])
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoConfig.from_pretrained(resolved["path"], **(hub or {}))
    except (OSError, ValueError) as exc:
        raise EvalkitError(f"could not load model '{resolved['path']}': {exc}") from None


def dispatch(
    model: torch.nn.Module, device_map: str | dict, max_memory: dict | None, dtype: torch.dtype
) -> torch.nn.Module:
    """Place a model's modules as ``device_map`` says (a strategy name is resolved with ``max_memory``).

    Uses accelerate: ``infer_auto_device_map`` (after ``get_balanced_memory`` for ``auto``/``balanced``) never
    splits a transformer layer (the model's ``_no_split_modules``); ``dispatch_model`` moves each module and
    adds the hooks that carry activations between devices and load ``"disk"`` layers at their forward.

    Raises:
        EvalkitError: an unknown strategy name.
    """
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    max_memory = dict(max_memory) if max_memory is not None else None  # accelerate converts sizes in place
    if isinstance(device_map, str):
        strategies = ("auto", "balanced", "balanced_low_0", "sequential")
        if device_map not in strategies:
            raise EvalkitError(f"unknown device map '{device_map}'; expected one of {', '.join(strategies)} or a dict")
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        if device_map != "sequential":
            max_memory = get_balanced_memory(model, max_memory, no_split_module_classes=no_split, dtype=dtype,
                                             low_zero=device_map == "balanced_low_0")
        device_map = dict(infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split,
                                                dtype=dtype))
    offload = _offload_dir() if "disk" in device_map.values() else None
    return dispatch_model(model, device_map=device_map, offload_dir=offload)


def describe_device_map(model: torch.nn.Module, device_map: str | dict) -> str:
    """``"device_map=auto: cuda:0, cuda:1"``: the strategy and the devices the model's modules landed on."""
    placed = getattr(model, "hf_device_map", None) or (device_map if isinstance(device_map, dict) else {})
    names = sorted({(f"cuda:{d}" if isinstance(d, int) else str(d)) for d in placed.values()})
    strategy = device_map if isinstance(device_map, str) else "explicit"
    return f"device_map={strategy}: {', '.join(names)}" if names else f"device_map={strategy}"


def _offload_dir() -> str:
    """A temporary folder for layers offloaded to disk, removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="evalkit-offload-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
"""Config keys naming the positions a model was trained with, in the order they are read."""


def learned_positions(config: Any) -> int | None:
    """The positions a model was trained with (the first of :data:`POSITION_KEYS` its config sets), else None."""
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def position_scheme(config: Any) -> str:
    """``"alibi"`` (BLOOM; MPT and Falcon configs with ALiBi on), ``"rotary"`` (GPT-NeoX, GPT-J, Llama and
    others with rotary settings) or ``"learned"`` (absolute position embeddings, GPT-2, OPT, and anything else)."""
    attn = getattr(config, "attn_config", None)
    attn_alibi = attn.get("alibi") if isinstance(attn, dict) else getattr(attn, "alibi", False)
    if getattr(config, "model_type", "") == "bloom" or getattr(config, "alibi", False) or attn_alibi:
        return "alibi"
    rotary_keys = ("rotary_pct", "rotary_dim", "rotary_emb_base", "rope_theta", "rope_scaling", "rope_parameters")
    if any(getattr(config, key, None) is not None for key in rotary_keys):
        return "rotary"
    return "learned"


EXTRAPOLATING_SCHEMES = ("alibi",)
"""Position schemes that may run past the trained length (ALiBi; Press et al. 2022, "Train Short, Test Long")."""


def config_window(config: Any, override: int | None, model_name: str = "the model") -> int:
    """The context window in tokens: ``override`` (``--max-length``) or the config's positions (else 2048).

    Raises:
        EvalkitError: ``override`` above the positions the model was trained with, for a position scheme that does
            not extrapolate (rotary positions, as GPT-NeoX's, and learned ones give garbage past them); names both
            numbers.
    """
    positions = learned_positions(config)
    if override is None:
        return positions or 2048
    scheme = position_scheme(config)
    if positions is not None and override > positions and scheme not in EXTRAPOLATING_SCHEMES:
        raise EvalkitError(
            f"--max-length {override} is above the {positions} positions {model_name} was trained with "
            f"(its config's max_position_embeddings or equivalent): its {scheme} positions do not extrapolate, so "
            f"longer inputs would be scored with garbage; use --max-length {positions} or less (only ALiBi models, "
            f"e.g. BLOOM, may go beyond their trained length)"
        )
    return int(override)


def model_window(model: torch.nn.Module, override: int | None) -> int:
    """The model's context window in tokens (:func:`config_window` of its config)."""
    return config_window(model.config, override)
