"""lm-eval v0.2.0's MATH answer rules (hendrycks_math.py at tag v0.2.0), worked out by hand.

Every expected value below was worked out by hand from v0.2.0's rules and then checked once, outside this
repository, against v0.2.0's own ``Math`` methods taken from the tag's source: all of EQUIV_PAIRS,
STRIPPED, LAST_BOXED, REMOVE_BOXED, ANSWERS and ACC agreed. The tests themselves need neither lm-eval nor the
network.
"""

from __future__ import annotations

import pytest

from evalkit.stats.math_answers import (
    BoxedAnswerError,
    NormalisationError,
    extract_answer,
    fix_a_slash_b,
    fix_fracs,
    fix_sqrt,
    is_equiv,
    last_boxed_only_string,
    math_acc,
    reference_answer,
    remove_boxed,
    remove_right_units,
    strip_string,
)

# (answer, reference, is_equiv) -- the reason in the comment.
EQUIV_PAIRS = [
    ("\\frac{1}{2}", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),  # dfrac -> frac
    ("\\tfrac12", "\\frac{1}{2}", True),  # tfrac -> frac, then \frac12 -> \frac{1}{2}
    ("\\frac12", "\\frac{1}{2}", True),
    ("\\frac1{72}", "\\frac{1}{72}", True),  # second character "{" -> \frac{1}{72}
    ("\\frac{72}1", "\\frac{72}{1}", False),  # a braced first argument is left alone
    ("\\frac1 2", "\\frac{1}{2}", True),  # spaces go before the fracs are braced
    ("1/2", "\\frac{1}{2}", True),  # a/b of two integers
    ("-3/4", "-\\frac{3}{4}", False),  # -3/4 -> \frac{-3}{4}
    ("03/4", "\\frac{3}{4}", False),  # int("03") prints back as "3": unchanged
    ("x/2", "x/2", True),  # int("x") raises: raw strings compared
    ("x/2", "x / 2", False),  # same fallback: the raw strings differ
    ("0.5", "\\frac{1}{2}", True),
    (".5", "\\frac{1}{2}", True),  # leading "." -> "0.5" -> \frac{1}{2}
    (" .5", "0.5", True),  # " ." -> " 0."
    ("\\frac{.5}{2}", "\\frac{0.5}{2}", True),  # "{." -> "{0."
    ("2", "2.0", False),
    ("5", "6", False),
    ("\\frac{1}{3}", "\\frac{2}{6}", False),  # no arithmetic
    ("10\\text{ cm}", "10", True),  # units on the right
    ("\\text{ cm}", "", True),
    ("10\\text{ cm}\\text{ m}", "10", False),  # two unit markers: normalisation fails, raw strings differ
    ("5\\,\\text{cm}", "5", False),  # "\text{" without a space is not a unit
    ("90^\\circ", "90", True),
    ("90^{\\circ}", "90", True),
    ("50\\%", "50", True),
    ("50%", "50", False),  # a bare percent sign stays
    ("5\\\\\\%%", "5", True),  # \\\%% -> \\%% -> \% (first pass) -> "" (second pass)
    ("\\$5", "5", True),
    ("$5", "5", False),  # a bare dollar sign stays
    ("x = 5", "5", True),  # prefix "x " has two characters
    ("k=5", "5", True),
    ("xy = 5", "5", False),  # prefix "xy " has three
    ("a=b=5", "5", False),  # two "=": nothing dropped
    ("x = \\dfrac{3}{4}", "\\frac34", True),
    ("\\sqrt3", "\\sqrt{3}", True),
    ("\\sqrt 3", "\\sqrt{3}", False),  # -> \sqrt{ }3 -> \sqrt{}3
    ("2\\sqrt{2}", "2 \\sqrt{2}", True),
    ("\\sqrt", "\\sqrt", True),  # nothing after \sqrt: normalisation fails, raw strings equal
    ("\\sqrt", "\\sqrt{}", False),
    ("\\frac", "\\frac", True),  # nothing after \frac: same fallback
    ("\\frac1", "\\frac1", True),  # one character after \frac: left unchanged
    ("\\frac1", "\\frac{1}", False),
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("\\rightarrow 5", "arrow5", True),  # "\right" is removed inside "\rightarrow"
    ("1,\\!000", "1,000", True),
    ("\\\\frac{1}{2}", "\\frac{1}{2}", True),  # doubled backslash
    ("\\frac{1}{2}\n", "\\frac12", True),  # line breaks go
    ("\t5", "5", False),  # only " " is removed, not tabs
    ("", " ", True),
    ("$5$", "5", False),  # the dollars of "$$5$$" after extraction stay
]


@pytest.mark.parametrize("answer, reference, expected", EQUIV_PAIRS)
def test_is_equiv_table(answer, reference, expected):
    assert is_equiv(answer, reference) is expected
    assert is_equiv(reference, answer) is expected


# strip_string's normal forms (input, output).
STRIPPED = [
    ("\\sqrt 3", "\\sqrt{}3"),
    ("x = \\dfrac{3}{4}", "\\frac{3}{4}"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("1/2", "\\frac{1}{2}"),
    ("-3/4", "\\frac{-3}{4}"),
    ("10\\text{ cm}", "10"),
    ("50%", "50%"),
    (".5", "\\frac{1}{2}"),
    ("\\frac1{72}", "\\frac{1}{72}"),
    ("\\frac1", "\\frac1"),
    ("", ""),
]


@pytest.mark.parametrize("text, expected", STRIPPED)
def test_strip_string(text, expected):
    assert strip_string(text) == expected


@pytest.mark.parametrize("text", ["x/2", "/2", "\\sqrt", "a\\sqrt\\sqrt2", "\\frac", "\\frac\\frac12",
                                  "1\\text{ a}\\text{ b}"])
def test_strip_string_failures_are_normalisation_errors(text):
    with pytest.raises(NormalisationError):
        strip_string(text)


def test_helpers():
    assert fix_sqrt("\\sqrt2+\\sqrt{3}") == "\\sqrt{2}+\\sqrt{3}"
    assert fix_fracs("\\frac12+\\frac{3}{4}+\\fracab") == "\\frac{1}{2}+\\frac{3}{4}+\\frac{a}{b}"
    assert fix_fracs("\\frac12+\\frac3") == "\\frac12+\\frac3"  # one short \frac undoes all of them
    assert fix_a_slash_b("12/34") == "\\frac{12}{34}"
    assert fix_a_slash_b("1/2/3") == "1/2/3"
    assert fix_a_slash_b("+1/2") == "+1/2"
    assert remove_right_units("3\\text{ inches}") == "3"
    assert remove_right_units("3\\text{inches}") == "3\\text{inches}"


def test_none_answers():
    assert is_equiv(None, "5") is False
    assert is_equiv("5", None) is False
    with pytest.warns(UserWarning, match="both answers are None"):
        assert is_equiv(None, None) is True


# (solution, last_boxed_only_string)
LAST_BOXED = [
    ("a \\boxed{1} b \\boxed{\\frac{1}{2}} c", "\\boxed{\\frac{1}{2}}"),
    ("\\boxed{1}\\boxed{2}", "\\boxed{2}"),
    ("so x \\boxed{a}{b}.", "\\boxed{a}"),
    ("The answer is $\\boxed 5$.", "\\boxed 5"),
    ("$\\boxed 5$ and later $\\boxed 6$", "\\boxed 6"),
    ("$\\boxed 5$ then \\boxed{6}", "\\boxed 5"),  # "\boxed " wins over a later "\boxed{": text up to the "$"
    ("\\boxed 5 and \\boxed{6}", "\\boxed 5 and \\boxed{6}"),
    ("hence \\fbox{7}.", "\\fbox{7}"),
    ("\\boxedx{3}", "\\boxedx{3}"),
    ("\\boxed{}", "\\boxed{}"),
    ("\\boxed{1", None),  # braces never balance
    ("\\boxed}{1}", None),  # the count goes -1, 0, -1: never back to 0 on a "}"
    ("no box at all", None),
]


@pytest.mark.parametrize("solution, expected", LAST_BOXED)
def test_last_boxed_only_string(solution, expected):
    assert last_boxed_only_string(solution) == expected


# (boxed, remove_boxed) ; None expected means v0.2.0 stops with an exception
REMOVE_BOXED = [
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed 5", "5"),
    ("\\boxed 5 and \\boxed{6}", "5 and \\boxed{6}"),
    ("\\boxed{}", ""),
    ("\\fbox{7}", None),
    ("\\boxedx{3}", None),
    ("x\\boxed 5", None),
    ("\\boxed{5", None),
    (None, None),
]


@pytest.mark.parametrize("boxed, expected", REMOVE_BOXED)
def test_remove_boxed(boxed, expected):
    if expected is None:
        with pytest.raises(BoxedAnswerError):
            remove_boxed(boxed)
    else:
        assert remove_boxed(boxed) == expected


def test_reference_answer_without_a_box_raises():
    assert reference_answer("So $x=\\boxed{\\dfrac{3}{4}}$.") == "\\dfrac{3}{4}"
    with pytest.raises(BoxedAnswerError):
        reference_answer("The answer is 5.")


# (generation, extracted answer)
ANSWERS = [
    (" The answer is $5$.", "5"),
    ("$x$ and $y$", "x$ and $y"),
    (" costs $5", " costs $5"),
    ("$$5$$", "$5$"),
    (" \\frac{1}{2}", " \\frac{1}{2}"),
    ("", ""),
]


@pytest.mark.parametrize("generation, expected", ANSWERS)
def test_extract_answer(generation, expected):
    assert extract_answer(generation) == expected


# (generation, solution, acc)
ACC = [
    (" $\\frac12$", "Thus the answer is $\\boxed{\\dfrac{1}{2}}$.", 1),
    (" The answer is $0.5$.", "Thus $\\boxed{\\dfrac{1}{2}}$.", 1),
    (" 1/2", "Thus $\\boxed{\\frac{1}{2}}$.", 1),
    (" $$5$$", "So \\boxed{5}.", 0),
    (" 5 cm", "So $\\boxed{5\\text{ cm}}$.", 0),  # " 5 cm" -> "5cm" against "5"
    (" 5", "So $\\boxed{5\\text{ cm}}$.", 1),
    (" $x = 7$", "Hence $x = \\boxed{7}$.", 1),
    (" 7", "First \\boxed{3}, finally \\boxed{7}.", 1),
]


@pytest.mark.parametrize("generation, solution, expected", ACC)
def test_math_acc(generation, solution, expected):
    assert math_acc(generation, solution) == expected
