"""evalkit: evaluate causal language models by log-likelihood, reproducing published zero-shot tables.

The Python API (loaded on first use, so ``import evalkit`` stays fast and imports neither torch nor pandas):

* :func:`evaluate` runs tasks on a model and returns the results dict ``evalkit run`` writes;
* :func:`load_results` reads a results JSON;
* :func:`metrics_frame` and :func:`documents_frame` are pandas views (per task and metric; per document);
* :func:`format_summary` is the table ``evalkit run`` prints;
* :func:`to_lm_eval` is the lm-evaluation-harness 0.4 results layout of a run.

See ``docs/python-api.md``.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "evaluate": "evalkit.api", "load_results": "evalkit.api", "make_config": "evalkit.api",
    "metrics_frame": "evalkit.results.frames", "documents_frame": "evalkit.results.frames",
    "format_summary": "evalkit.results.summary", "to_lm_eval": "evalkit.results.export",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import an API function's module on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
