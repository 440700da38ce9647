"""jinja2 templates over a document, with errors that name the task file, the field and the line.

The environment is lm-eval 0.4's (``lm_eval/utils.py``): ``StrictUndefined`` (a missing field is an error, never
an empty string), ``keep_trailing_newline=True`` (whitespace kept exactly), no autoescaping, and the
``regex_replace`` filter (``re.sub``) its task YAMLs use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jinja2

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_ENV.filters["regex_replace"] = lambda string, pattern, repl, count=0: re.sub(pattern, repl, string, count=count)


@dataclass(frozen=True)
class Template:
    """A compiled template and where it was written.

    Attributes:
        source: the template text.
        file: the YAML file that holds it.
        field: the key it is the value of (``"context"``, ``"doc_to_text"``, ``"continuations[1]"``).
        line: 1-based line of that key in the file (0: unknown).
    """

    source: str
    file: Path
    field: str
    line: int
    compiled: jinja2.Template

    def where(self, template_line: int | None = None) -> str:
        """``"<file> line <n>, field '<field>'"``, the line moved down by the template's own line when known."""
        line = self.line + (template_line - 1 if template_line and template_line > 1 else 0)
        at = f" line {line}" if self.line else ""
        return f"{self.file}{at}, field '{self.field}'"

    def render(self, doc: Mapping[str, Any]) -> str:
        """The template rendered with the document's fields as variables.

        Raises:
            ValueError: a field the document lacks, or any error while rendering, naming file, field and line.
        """
        try:
            return self.compiled.render(**doc)
        except Exception as exc:  # noqa: BLE001 - jinja raises many kinds; all mean this template failed
            raise ValueError(f"{self.where(_template_line(exc))}: template failed: {type(exc).__name__}: {exc}") \
                from None


def _template_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:  # jinja maps rendering errors onto the template's own line in its traceback frames
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def compile_template(source: str, file: Path, field: str, line: int) -> Template:
    """Compile ``source``.

    Raises:
        ValueError: a template syntax error, naming the file, the field and the line of the error.
    """
    if not isinstance(source, str):
        raise ValueError(f"{file} line {line}, field '{field}': a template must be a string, got "
                         f"{type(source).__name__}")
    try:
        compiled = _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        at = line + max(exc.lineno - 1, 0) if line else 0
        where = f"{file} line {at}" if at else str(file)
        raise ValueError(f"{where}, field '{field}': template syntax error: {exc.message}") from None
    return Template(source, file, field, line, compiled)
