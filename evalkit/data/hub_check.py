"""Before a run reads anything from the Hugging Face hub: is the hub reachable, and if not, is everything the run
needs already on this machine? One check, one message naming every missing piece with its fixes.

Without it an offline machine spends the libraries' retries (about 25 s) on each missing piece and reveals them one
run at a time (data, then tokenizer, then model). The hub counts as unreachable when ``HF_HUB_OFFLINE`` is set
(huggingface_hub's offline mode) or when one HEAD request to the hub endpoint gets no answer within
:data:`TIMEOUT_S` seconds. Unreachable but complete (everything in the local caches), the run goes on in offline
mode, so the libraries do not wait on the network either.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evalkit.types import EvalkitError, Task

log = logging.getLogger(__name__)

TIMEOUT_S = 3.0
"""Seconds the reachability HEAD request may take."""

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class HubNeed:
    """One thing the run would fetch from the hub.

    Attributes:
        what: ``"data"``, ``"tokenizer"`` or ``"model"``.
        repo_id: the hub repository, e.g. ``"allenai/sciq"``.
        repo_type: ``"dataset"`` or ``"model"``.
        label: how the message names it, e.g. ``"data of sciq (allenai/sciq, test)"``.
    """

    what: str
    repo_id: str
    repo_type: str
    label: str


def _offline_env() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENV)


def unreachable_reason() -> str | None:
    """None when the hub answers; else why not: offline mode (``HF_HUB_OFFLINE`` and friends), or what one HEAD
    request to the hub endpoint (``HF_ENDPOINT``, default https://huggingface.co) met within :data:`TIMEOUT_S`
    seconds (any HTTP status counts as an answer)."""
    if _offline_env():
        return "offline mode (HF_HUB_OFFLINE)"
    import socket
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=TIMEOUT_S)
    except urllib.error.HTTPError:
        return None
    except (socket.timeout, TimeoutError):
        return f"{endpoint} did not answer within {TIMEOUT_S:g} s"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return f"{endpoint} did not answer within {TIMEOUT_S:g} s"
        return f"{endpoint} did not answer: {reason}"
    except (OSError, ValueError) as exc:
        return f"{endpoint} did not answer: {exc}"
    return None


def hub_reachable() -> bool:
    """True when :func:`unreachable_reason` finds none."""
    return unreachable_reason() is None


def hub_needs(tasks: Sequence[Task], data_dir: Path | None, model: dict[str, Any], tokenizer: str | None) -> list[HubNeed]:
    """What the run would read from the hub: each task's dataset without ``--data-dir`` (unless its own
    ``data_files`` name its evaluated and few-shot splits), the tokenizer when it is
    a hub id (or the hub model's own), the model when it is a hub id."""
    needs = []
    if data_dir is None:
        for task in tasks:
            spec = task.dataset
            files = spec.data_files or {}
            if spec.split in files and (task.fewshot_split in (None, spec.split, *files)
                                        or task.fewshot_samples is not None):
                continue  # read from the task's own data_files
            needs.append(HubNeed("data", spec.hub_id, "dataset", f"data of {task.name} ({spec.hub_id}, {spec.split})"))
    model_repo = model.get("path") if model.get("kind") == "pretrained" and not _is_local(model.get("path")) else None
    if tokenizer is not None:
        if not tokenizer.endswith(".json") and not _is_local(tokenizer):
            needs.append(HubNeed("tokenizer", tokenizer, "model", f"tokenizer {tokenizer}"))
    elif model_repo:
        needs.append(HubNeed("tokenizer", model_repo, "model", f"tokenizer of {model_repo}"))
    if model_repo:
        needs.append(HubNeed("model", model_repo, "model", f"model {model_repo}"))
    return needs


def _is_local(path: str | None) -> bool:
    return bool(path) and Path(path).expanduser().exists()


def in_local_cache(need: HubNeed, cache_dir: str | None = None) -> bool:
    """Whether a repository has files in the hub cache (``cache_dir`` for models when ``--model-args cache_dir=``
    names one, else ``HF_HUB_CACHE``), or, for a dataset, in the datasets cache (``HF_DATASETS_CACHE``)."""
    from huggingface_hub import constants

    hub_cache = cache_dir if cache_dir and need.repo_type == "model" else constants.HF_HUB_CACHE
    folder = Path(hub_cache) / f"{need.repo_type}s--{need.repo_id.replace('/', '--')}" / "snapshots"
    if folder.is_dir() and any(folder.iterdir()):
        return True
    if need.repo_type == "dataset":
        cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
        return (cache / need.repo_id.replace("/", "___")).is_dir()
    return False


def fixes(missing: Sequence[HubNeed], model_spec: str) -> list[str]:
    """The ways out, for what is missing."""
    out = []
    kinds = {n.what for n in missing}
    if "data" in kinds:
        out.append("--data-dir DIR with DIR/<task>/<split>.jsonl (e.g. --data-dir ../shared/data)")
    if "tokenizer" in kinds:
        out.append("--tokenizer PATH to a tokenizer.json or a local folder "
                   "(e.g. --tokenizer ../shared/data/tokenizers/20B_tokenizer.json)")
    if "model" in kinds:
        out.append(f"--model PATH to a local folder holding the model (a copy of {model_spec} made with "
                   f"save_pretrained or huggingface-cli download), or --model random:<alias> to time the path "
                   f"with random weights (no download)")
    out.append("download on a connected machine into the hub cache (HF_HOME), then run with HF_HUB_OFFLINE=1")
    return out


def check_hub(tasks: Sequence[Task], data_dir: Path | None, model: dict[str, Any], model_spec: str,
              tokenizer: str | None, cache_dir: str | None = None) -> None:
    """Fail at once, naming everything missing, when the run needs the hub and cannot reach it.

    Does nothing when nothing comes from the hub. Otherwise checks reachability once (:func:`unreachable_reason`);
    unreachable with every piece in the local caches (``cache_dir``: the model cache named by ``--model-args``),
    switches the process to offline mode (``HF_HUB_OFFLINE=1``) and returns.

    Raises:
        EvalkitError: the hub is unreachable and some pieces are not cached: one message listing each (data,
            tokenizer, model) and the fixes.
    """
    needs = hub_needs(tasks, data_dir, model, tokenizer)
    if not needs:
        return
    why = unreachable_reason()
    if why is None:
        return
    missing = [n for n in needs if not in_local_cache(n, cache_dir)]
    if missing:
        lines = [f"the Hugging Face hub is unreachable ({why}) and this run needs {len(missing)} piece(s) that "
                 f"are not on this machine:"]
        lines += [f"  - {n.label}" for n in missing]
        lines.append("fixes:")
        lines += [f"  - {f}" for f in fixes(missing, model_spec)]
        raise EvalkitError("\n".join(lines))
    if not _offline_env():  # found unreachable by the probe: keep the libraries from retrying it
        log.warning("the Hugging Face hub is unreachable (%s); everything the run needs is cached: running offline",
                    why)
        go_offline()


def go_offline() -> None:
    """Offline mode for this process: the environment variables, and the flags of the hub libraries already
    imported (they read the environment once, at import)."""
    import sys

    for name in OFFLINE_ENV:
        os.environ[name] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = True
        if hasattr(config, "HF_DATASETS_OFFLINE"):
            config.HF_DATASETS_OFFLINE = True
