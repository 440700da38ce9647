"""Small checks on what users hand evalkit as tasks (files, links, code), kept free of PyYAML and jinja2 so that
the registry can use them without loading either."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def symlink_loop(path: Path) -> str | None:
    """The system's reason (``"Too many levels of symbolic links"``) when ``path`` is a symbolic link that never
    reaches a file (a loop of links), else None."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return exc.strerror or "symbolic link loop"
    return None


def failure(exc: BaseException, what: str = "function") -> str:
    """How user code failed, for a message: ``"KeyError: 'q'"``; a ``sys.exit`` (SystemExit, which an ``except
    Exception`` lets through and which would end evalkit silently with its code) is said to be one."""
    shown = f"{type(exc).__name__}: {exc}"
    return f"{shown} (the {what} called sys.exit)" if isinstance(exc, SystemExit) else shown
