"""A wrapper around a scoring backend or a generator that passes on what it does not change.

The request-cache wrappers (:mod:`evalkit.scoring.cache_wrappers`) and the non-finite guard
(:mod:`evalkit.scoring.finite`) wrap a backend or a generator: what the run reads from the wrapped object, its
``max_length``, ``share_context``, ``window``, ``batch_size`` and counters (``forward_calls``, ...), and its
progress-bar switch, go through to it.
"""

from __future__ import annotations

from typing import Any


class DelegatesToInner:
    """The progress switch and every attribute the wrapper does not define are the wrapped object's
    (``self.inner``), which :mod:`evalkit.scoring.distributed` and the run's timing read."""

    inner: Any

    @property
    def progress(self) -> bool:
        """The inner object's progress-bar switch (settable: a data-parallel rank other than 0 turns it off)."""
        return self.inner.progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self.inner.progress = value

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying, unpickling): no delegation
            raise AttributeError(name)
        return getattr(self.inner, name)
