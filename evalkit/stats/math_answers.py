"""MATH answer handling exactly as lm-eval v0.2.0 scores it (the GPT-NeoX-20B paper's MATH rows).

Source of every rule: lm-evaluation-harness tag v0.2.0 (commit 7064d6b9), ``lm_eval/tasks/hendrycks_math.py``,
class ``Math``: ``last_boxed_only_string``, ``remove_boxed``, ``strip_string`` and its helpers, ``is_equiv`` and
``process_results``. The behaviour is reproduced case for case, quirks included, for example:

- ``"\\%"`` in that source is a Python string of two characters (backslash, percent), so a bare ``%`` is *kept*:
  ``"50%"`` and ``"50"`` are not equivalent;
- ``"\\sqrt 3"`` becomes ``"\\sqrt{ }3"`` and then ``"\\sqrt{}3"`` (the braces are added before spaces go);
- ``"tfrac"``/``"dfrac"`` are rewritten anywhere, backslash or not; ``"\\rightarrow"`` loses its ``"\\right"``;
- ``"x/2"`` (a slash with a non-integer side) makes normalisation fail, and so does a second ``"\\text{ "``, a
  trailing ``"\\sqrt"`` or ``"\\frac"``: ``is_equiv`` then compares the raw strings.

Where v0.2.0 fails with an ``AssertionError``/``TypeError`` (a solution without a usable ``\\boxed{...}``), this
module raises :class:`BoxedAnswerError`; where v0.2.0's ``is_equiv`` swallows an exception from ``strip_string``,
this module raises and catches :class:`NormalisationError`, with the same outcome.

Pure Python; imports nothing from evalkit.
"""

from __future__ import annotations

import warnings

_BOXED = "\\boxed"
_BOXED_SPACE = "\\boxed "
_BOXED_BRACE = "\\boxed{"
_FBOX = "\\fbox"
_UNITS = "\\text{ "

# strip_string's plain substitutions before the units step, in v0.2.0's order (old, new).
_BEFORE_UNITS = (
    ("\n", ""),  # line breaks
    ("\\!", ""),  # negative thin spaces
    ("\\\\", "\\"),  # a doubled backslash becomes one (a single left-to-right pass)
    ("tfrac", "frac"),
    ("dfrac", "frac"),
    ("\\left", ""),
    ("\\right", ""),
    ("^{\\circ}", ""),  # degrees
    ("^\\circ", ""),
    ("\\$", ""),  # escaped dollar signs only
)
# After the units step: v0.2.0 removes backslash-percent twice (its second pattern is the same two characters),
# which also removes a pair that the first pass brings together, then writes a zero before " ." and "{.".
_AFTER_UNITS = (("\\%", ""), ("\\%", ""), (" .", " 0."), ("{.", "{0."))


class NormalisationError(ValueError):
    """:func:`strip_string` cannot normalise its input; v0.2.0's ``is_equiv`` then falls back to ``==``."""


class BoxedAnswerError(ValueError):
    """A solution has no answer that v0.2.0's ``remove_boxed`` accepts (v0.2.0 stops with an exception)."""


def last_boxed_only_string(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) of a MATH solution, braces balanced, as v0.2.0 finds it.

    Args:
        text: a solution (str).
    Returns:
        - if ``"\\boxed "`` (with a space) occurs anywhere: ``"\\boxed "`` + the text after its last occurrence up
          to the first ``$`` (even when a later ``\\boxed{`` exists);
        - else the text from the last ``"\\boxed"`` (or, if none, the last ``"\\fbox"``) through the first ``}``
          that brings the count of ``{`` minus ``}`` (counted from there) back to zero;
        - None when neither marker occurs or the braces never balance.
    """
    start = text.rfind(_BOXED)
    if _BOXED_SPACE in text:
        return _BOXED_SPACE + text.split(_BOXED_SPACE)[-1].split("$")[0]
    if start < 0:
        start = text.rfind(_FBOX)
        if start < 0:
            return None
    depth = 0
    for pos in range(start, len(text)):
        char = text[pos]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:pos + 1]
    return None


def remove_boxed(boxed: str | None) -> str:
    """The content of a boxed answer, as v0.2.0's ``remove_boxed``.

    ``"\\boxed 5"`` -> ``"5"`` (whenever ``"\\boxed "`` occurs, the string must start with it);
    ``"\\boxed{5}"`` -> ``"5"`` (must start with ``"\\boxed{"`` and end with ``"}"``).

    Raises:
        BoxedAnswerError: None (no boxed answer found), or a string of neither form (``"\\fbox{5}"`` included;
            v0.2.0 fails there with an AssertionError or TypeError).
    """
    if boxed is None:
        raise BoxedAnswerError("the solution has no \\boxed{...} answer with balanced braces")
    if _BOXED_SPACE in boxed:
        if not boxed.startswith(_BOXED_SPACE):
            raise BoxedAnswerError(f"{boxed!r} contains '\\boxed ' but does not start with it")
        return boxed[len(_BOXED_SPACE):]
    if not boxed.startswith(_BOXED_BRACE) or not boxed.endswith("}"):
        raise BoxedAnswerError(f"{boxed!r} is not of the form \\boxed{{...}}")
    return boxed[len(_BOXED_BRACE):-1]


def reference_answer(solution: str) -> str:
    """``remove_boxed(last_boxed_only_string(solution))``: a document's answer in v0.2.0 (``doc["answer"]``).

    Raises:
        BoxedAnswerError: as :func:`remove_boxed`.
    """
    return remove_boxed(last_boxed_only_string(solution))


def extract_answer(generation: str) -> str:
    """The answer part of a generation (v0.2.0 ``process_results``).

    With at least two ``$``: the text strictly between the first and the last ``$``; else the whole generation.
    ``"so $x$ and $y$"`` -> ``"x$ and $y"``.
    """
    first, last = generation.find("$"), generation.rfind("$")
    if first == last:  # no dollar sign, or exactly one
        return generation
    return generation[first + 1:last]


def remove_right_units(text: str) -> str:
    """Everything before ``"\\text{ "`` (v0.2.0 treats it as a unit on the right); unchanged if absent.

    Raises:
        NormalisationError: ``"\\text{ "`` occurs more than once (v0.2.0's assertion).
    """
    before, found, after = text.partition(_UNITS)
    if not found:
        return text
    if _UNITS in after:
        raise NormalisationError("'\\text{ ' occurs more than once")
    return before


def fix_sqrt(text: str) -> str:
    """Brace the single character after each ``\\sqrt`` not followed by ``{``: ``\\sqrt3`` -> ``\\sqrt{3}``.

    Raises:
        NormalisationError: a ``\\sqrt`` with nothing after it before the next ``\\sqrt`` or the end.
    """
    head, *pieces = text.split("\\sqrt")
    out = [head]
    for piece in pieces:
        if not piece:
            raise NormalisationError("'\\sqrt' with nothing after it")
        if piece[0] == "{":
            out.append("\\sqrt" + piece)
        else:
            out.append("\\sqrt{" + piece[0] + "}" + piece[1:])
    return "".join(out)


def fix_fracs(text: str) -> str:
    """Brace unbraced ``\\frac`` arguments: ``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``.

    After each ``\\frac`` not followed by ``{``: the next two characters become ``{a}{b}`` (or ``{a}{`` when the
    second is ``{``). A ``\\frac`` followed by exactly one character returns the input unchanged (all of it).

    Raises:
        NormalisationError: a ``\\frac`` directly followed by another ``\\frac`` or by the end of the string.
    """
    head, *pieces = text.split("\\frac")
    out = [head]
    for piece in pieces:
        if not piece:
            raise NormalisationError("'\\frac' with nothing after it")
        if piece[0] == "{":
            out.append("\\frac" + piece)
            continue
        if len(piece) < 2:
            return text
        first, second, rest = piece[0], piece[1], piece[2:]
        if second == "{":
            out.append("\\frac{" + first + "}{" + rest)
        else:
            out.append("\\frac{" + first + "}{" + second + "}" + rest)
    return "".join(out)


def fix_a_slash_b(text: str) -> str:
    """``"3/4"`` -> ``"\\frac{3}{4}"`` when the text is exactly ``int/int`` in canonical form; else unchanged.

    Raises:
        NormalisationError: exactly one ``/`` and a side that Python's ``int()`` rejects (``"x/2"``, ``"/2"``);
            v0.2.0 lets that ValueError out of ``strip_string``. Sides ``int()`` accepts but that do not print
            back the same (``"03/4"``, ``"+3/4"``) leave the text unchanged.
    """
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        numerator, denominator = int(parts[0]), int(parts[1])
    except ValueError as err:
        raise NormalisationError(f"{text!r}: {err}") from err
    if text != f"{numerator}/{denominator}":
        return text
    return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


def strip_string(text: str) -> str:
    """v0.2.0's normal form of a MATH answer, the steps in its order.

    Substitutions (line breaks, ``\\!``, ``\\\\``, tfrac/dfrac, ``\\left``/``\\right``, degrees, ``\\$``), units
    (:func:`remove_right_units`), ``\\%``, a zero before ``" ."``/``"{."``/a leading ``"."``, a prefix of at most
    two characters before the only ``=`` dropped (``"x = 5"`` -> ``" 5"``), :func:`fix_sqrt`, spaces removed (only
    ``" "``: tabs stay), :func:`fix_fracs`, ``"0.5"`` -> ``\\frac{1}{2}``, :func:`fix_a_slash_b`.

    Raises:
        NormalisationError: from the helpers, or ``text`` is not a str (v0.2.0 then fails on ``.replace``).
    """
    if not isinstance(text, str):
        raise NormalisationError(f"not a string: {text!r}")
    for old, new in _BEFORE_UNITS:
        text = text.replace(old, new)
    text = remove_right_units(text)
    for old, new in _AFTER_UNITS:
        text = text.replace(old, new)
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = fix_sqrt(text).replace(" ", "")
    text = fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return fix_a_slash_b(text)


def is_equiv(first: str | None, second: str | None) -> bool:
    """v0.2.0's answer equivalence: ``strip_string(first) == strip_string(second)``.

    If normalising either raises, the raw values are compared with ``==``. Both None -> True (v0.2.0 prints a
    warning; here a ``UserWarning``); exactly one None -> False.
    """
    if first is None and second is None:
        warnings.warn("MATH is_equiv: both answers are None", stacklevel=2)
        return True
    if first is None or second is None:
        return False
    try:
        return strip_string(first) == strip_string(second)
    except NormalisationError:
        return first == second


def math_acc(generation: str, solution: str) -> int:
    """v0.2.0 MATH ``acc`` of one document: 1 if the generation's answer is equivalent to the solution's, else 0.

    Args:
        generation: the model's continuation, already cut at the first ``"\\n"``.
        solution: the document's ``solution`` field (its last ``\\boxed{}`` is the reference).
    Raises:
        BoxedAnswerError: the solution has no usable boxed answer.
    """
    return int(is_equiv(extract_answer(generation), reference_answer(solution)))
