"""The garbage collector around the evalkit program's one-time imports of torch, transformers, matplotlib and
datasets.

Importing them creates some 400,000 Python objects. CPython 3.11 runs a full collection each time the objects
that survived earlier collections grow by a quarter, and each walks every object so far: about a second of a
small run goes to collections that find nothing to free (module objects live as long as the process). In the
program (``evalkit ...``, ``python -m evalkit``: :func:`evalkit.cli.main.main` called without arguments, which
calls :func:`enter_program`) :func:`paused_collection` turns the collector off while such an import runs, then
moves every object it made to the permanent generation (:func:`gc.freeze`), which later collections skip.

Elsewhere (evalkit used as a library, the tests) it does nothing: a long-lived caller's cyclic garbage frozen
with them would never be freed.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

_program = False


def enter_program() -> None:
    """Mark this process as the evalkit program, which exits when its command is done."""
    global _program
    _program = True


def in_program() -> bool:
    """Whether :func:`enter_program` was called in this process."""
    return _program


@contextmanager
def paused_collection() -> Iterator[None]:
    """In the program, no garbage collection inside the block and every object alive after it frozen
    (:func:`gc.freeze`); elsewhere, or when the collector is already off, nothing changes."""
    if not _program or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
