"""lm-eval 0.4.13's generate_until filter pipelines and exact_match, on hand-made generations.

Every expected answer and score below was worked out by hand from lm-eval 0.4.13's rules, then checked once,
outside this repository, against lm-eval 0.4.13's own classes (``build_filter_ensemble`` applied to instances,
``exact_match_hf_evaluate`` called as ``ConfigurableTask.process_results`` calls it): all of PIPELINE_CASES,
EXACT_MATCH_CASES and END_TO_END agreed. The tests need neither lm-eval nor the network.
"""

from __future__ import annotations

import pytest

from evalkit.stats.exact_match import ExactMatchOptions, exact_match
from evalkit.stats.filters import build_pipeline, build_pipelines, default_pipeline
from evalkit.types import EvalkitError

# The pipelines of lm-eval 0.4.13's gsm8k.yaml (v3) and triviaqa/default.yaml (v3).
GSM8K_STRICT = {"name": "strict-match", "filter": [
    {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}]}
GSM8K_FLEXIBLE = {"name": "flexible-extract", "filter": [
    {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
    {"function": "take_first"}]}
TRIVIAQA = {"name": "remove_whitespace", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}
GSM8K_METRIC = {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
                "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}
TRIVIAQA_METRIC = {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
                   "ignore_punctuation": True}


def _spec(name, *functions):
    return {"name": name, "filter": list(functions)}


SPECS = {
    "strict": GSM8K_STRICT,
    "flexible": GSM8K_FLEXIBLE,
    "triviaqa": TRIVIAQA,
    "none": {"name": "none", "filter": [{"function": "take_first"}]},
    "digit_first": _spec("d", {"function": "regex", "regex_pattern": "(\\d)"}, {"function": "take_first"}),
    "digit_second_last": _spec("d", {"function": "regex", "regex_pattern": "\\d+", "group_select": -2},
                               {"function": "take_first"}),
    "empty_groups": _spec("g", {"function": "regex", "regex_pattern": "(a)?(b)?", "fallback": " none "},
                          {"function": "take_first"}),
    "no_match_fallback": _spec("g", {"function": "regex", "regex_pattern": "(z)", "fallback": " none "},
                               {"function": "take_first"}),
    "upper": _spec("u", {"function": "uppercase"}, {"function": "take_first"}),
    "lower_then_regex": _spec("l", {"function": "lowercase"}, {"function": "regex", "regex_pattern": "answer: (\\w+)"},
                              {"function": "take_first"}),
    "first_char": _spec("c", {"function": "take_first"}, {"function": "lowercase"}, {"function": "take_first"}),
    "regex_on_chars": _spec("r", {"function": "take_first"}, {"function": "regex", "regex_pattern": "(\\d)"},
                            {"function": "take_first"}),
}

# (spec key, responses of one document (one per repeat), answer)
PIPELINE_CASES = [
    ("strict", ["Natalia sold 48/2 = 24 clips in May.\n#### 72"], "72"),
    ("strict", ["The answer is 72."], "[invalid]"),
    ("strict", ["So she pays $1,234.\n#### 1,234.\n"], "1,234."),
    ("strict", ["#### 5\n#### 7"], "5"),  # group_select 0: the first match
    ("strict", ["#### -3"], "-3"),
    ("strict", ["####  -3"], "[invalid]"),  # two spaces: no match
    ("strict", ["#### 1", "#### 2"], "1"),  # the regex runs on each repeat, take_first keeps the first
    ("flexible", ["She has 3 apples and buys 12 more, so 15."], "15."),  # last match ("15.", "")
    ("flexible", ["The total is $1,000."], "$1,000."),
    ("flexible", ["Answer: 7"], "7"),  # tuple ("", "7"): first non-empty group
    ("flexible", ["-5 degrees"], "-5"),
    ("flexible", ["Wait..."], "..."),  # [$0-9.,]{2,} also matches dots
    ("flexible", ["No numbers here"], "[invalid]"),
    ("triviaqa", [" Paris"], "Paris"),
    ("triviaqa", ["\tParis \n"], "Paris"),  # str.strip() on both sides in 0.4.13
    ("triviaqa", [""], ""),
    ("none", ["  raw text ", "second"], "  raw text "),
    ("digit_first", ["a1b22c"], "1"),  # one group: findall gives strings
    ("digit_second_last", ["10 20 30"], "20"),
    ("empty_groups", ["c"], "none"),  # matches are ("", ""): the fallback, stripped
    ("no_match_fallback", ["c"], " none "),  # no match: the fallback as given
    ("upper", ["Paris"], "PARIS"),
    ("lower_then_regex", ["The ANSWER: Blue sky"], "blue"),
    ("first_char", ["ABC"], "a"),  # after take_first, lowercase runs over characters
    ("regex_on_chars", ["x7y"], "[invalid]"),  # per character: ["[invalid]", "7", "[invalid]"]
]


@pytest.mark.parametrize("key, responses, expected", PIPELINE_CASES)
def test_pipeline_answers(key, responses, expected):
    assert build_pipeline(SPECS[key], "t.yaml: filter_list[0]")(responses) == expected


def test_pipeline_names_and_default():
    pipelines = build_pipelines([GSM8K_STRICT, GSM8K_FLEXIBLE], "gsm8k.yaml: filter_list")
    assert [p.name for p in pipelines] == ["strict-match", "flexible-extract"]
    assert pipelines[1].functions == ("regex", "take_first")
    (none,) = build_pipelines(None, "x.yaml: filter_list")
    assert none.name == "none" and none.functions == ("take_first",)
    assert default_pipeline()(["a", "b"]) == "a"


def test_group_select_beyond_the_matches_is_an_error():
    pipeline = build_pipeline(_spec("s", {"function": "regex", "regex_pattern": "\\d", "group_select": 1},
                                    {"function": "take_first"}), "t.yaml: filter_list[2]")
    assert pipeline(["no digits"]) == "[invalid]"
    assert pipeline(["1 and 2"]) == "2"
    with pytest.raises(EvalkitError, match=r"t\.yaml: filter_list\[2\].*found 1 match.*group_select 1"):
        pipeline(["only 1"])


@pytest.mark.parametrize("spec, message", [
    (_spec("m", {"function": "map", "mapping_dict": {"A": "1"}}, {"function": "take_first"}),
     r"t\.yaml: filter_list\[1\] \(m\) filter\[0\]: filter function 'map' is not supported"),
    (_spec("v", {"function": "regex"}, {"function": "majority_vote"}, {"function": "take_first"}),
     r"filter\[1\]: filter function 'majority_vote'"),
    (_spec("k", {"function": "take_first_k", "k": 2}, {"function": "take_first"}), r"'take_first_k'"),
    (_spec("c", {"function": {"custom": "fn"}}, {"function": "take_first"}), r"custom filter function"),
    (_spec("b", {"function": "regex", "regex_pattern": "(\\d"}, {"function": "take_first"}),
     r"filter\[0\] regex: regex_pattern '\(\\\\d' does not compile"),
    (_spec("e", {"function": "regex"}), r"must end with take_first \(it ends with 'regex'"),
    (_spec("g", {"function": "regex", "group_select": "1"}, {"function": "take_first"}),
     r"group_select must be an integer"),
    (_spec("x", {"function": "regex", "pattern": "a"}, {"function": "take_first"}), r"not \['pattern'\]"),
    (_spec("t", {"function": "take_first", "n": 1}), r"take_first takes no arguments"),
    ({"filter": [{"function": "take_first"}]}, r"name must be a non-empty string"),
    ({"name": "n", "filter": []}, r"filter must be a non-empty list"),
    ({"name": "n", "filter": ["take_first"]}, r"expected a mapping with a 'function' key"),
])
def test_refused_pipelines_name_the_place_and_function(spec, message):
    with pytest.raises(EvalkitError, match=message) as info:
        build_pipeline(spec, "t.yaml: filter_list[1]")
    assert str(info.value).startswith("t.yaml: filter_list[1]")


def test_remove_whitespace_ignores_arguments_like_lm_eval():
    spec = _spec("w", {"function": "remove_whitespace", "anything": 1}, {"function": "take_first"})
    assert build_pipeline(spec, "t.yaml")([" a "]) == "a"


def test_refused_filter_lists():
    with pytest.raises(EvalkitError, match=r"t\.yaml: filter_list: filter_list must be a non-empty list"):
        build_pipelines([], "t.yaml: filter_list")
    with pytest.raises(EvalkitError, match=r"repeated: \['strict-match'\]"):
        build_pipelines([GSM8K_STRICT, GSM8K_STRICT], "t.yaml: filter_list")
    with pytest.raises(EvalkitError, match=r"t\.yaml: filter_list\[1\] \(m\) filter\[0\]: filter function 'map'"):
        build_pipelines([TRIVIAQA, _spec("m", {"function": "map"}, {"function": "take_first"})],
                        "t.yaml: filter_list")


# (prediction, reference (str or list of str), metric_list entry, exact_match)
EXACT_MATCH_CASES = [
    ("72", "Natalia sold 24 clips.\n#### 72", GSM8K_METRIC, 1.0),
    ("1,234.", "She pays 1234 dollars.\n#### 1234", GSM8K_METRIC, 1.0),  # "," and the final "." removed
    ("$1,000.", "#### 1000", GSM8K_METRIC, 1.0),
    ("15.", "so 3 + 12 = 15\n#### 15", GSM8K_METRIC, 1.0),
    ("[invalid]", "#### 72", GSM8K_METRIC, 0.0),
    ("-3", "#### 3", GSM8K_METRIC, 0.0),
    ("Paris", ["Paris", "Paris, France"], TRIVIAQA_METRIC, 1.0),
    ("the Beatles", ["The Beatles", "Beatles"], TRIVIAQA_METRIC, 1.0),
    ("U.S.A", ["USA", "United States"], TRIVIAQA_METRIC, 1.0),
    ("Sir Paul McCartney", ["Paul McCartney", "McCartney"], TRIVIAQA_METRIC, 0.0),
    ("Paris…", ["Paris"], TRIVIAQA_METRIC, 0.0),  # "…" is not in string.punctuation
    ("", ["Paris"], TRIVIAQA_METRIC, 0.0),
    ("Paris", "paris", {"metric": "exact_match"}, 0.0),
    ("Paris", "paris", {"metric": "exact_match", "ignore_case": True}, 1.0),
    ("paris", ["London", "Paris"], {"metric": "exact_match"}, 0.0),
    ("paris", ["London", "Paris"], {"metric": "exact_match", "ignore_case": True}, 1.0),
    ("abc123", "abc", {"metric": "exact_match", "ignore_numbers": True}, 1.0),
    ("acb", "ab", {"metric": "exact_match", "regexes_to_ignore": ["ab", "c"]}, 0.0),  # "ab" vs ""
    ("acb", "ab", {"metric": "exact_match", "regexes_to_ignore": ["c", "ab"]}, 1.0),  # "" vs ""
    ("a", ["a", "b"], {"metric": "exact_match", "regexes_to_ignore": []}, 0.0),  # two Python lists compared
    ("a", ["a", "a"], {"metric": "exact_match", "regexes_to_ignore": []}, 1.0),
    ("a", ["a", "b"], {"metric": "exact_match", "regexes_to_ignore": [], "ignore_case": True}, 1.0),
    ("İ", "i", {"metric": "exact_match", "ignore_case": True}, 1.0),  # numpy cuts "i̇" to the width 1
    ("a\x00", "a", {"metric": "exact_match"}, 1.0),  # numpy ignores trailing NULs
    ("a ", "a", {"metric": "exact_match"}, 0.0),
]


@pytest.mark.parametrize("prediction, reference, entry, expected", EXACT_MATCH_CASES)
def test_exact_match(prediction, reference, entry, expected):
    options = ExactMatchOptions.from_metric_entry(entry, "t.yaml: metric_list[0]")
    assert exact_match(prediction, reference, options) == expected


def test_exact_match_options():
    options = ExactMatchOptions.from_metric_entry(GSM8K_METRIC, "gsm8k.yaml: metric_list[0]")
    assert options == ExactMatchOptions((",", "\\$", "(?s).*#### ", "\\.$"), True, False, False)
    assert ExactMatchOptions.from_metric_entry({"metric": "exact_match"}, "t") == ExactMatchOptions()
    with pytest.raises(ValueError, match="empty"):
        exact_match("a", [])


@pytest.mark.parametrize("entry, message", [
    ({"metric": "exact_match", "ignore_spaces": True}, r"exact_match has no option\(s\) \['ignore_spaces'\]"),
    ({"metric": "exact_match", "ignore_case": "yes"}, r"ignore_case must be true or false, got 'yes'"),
    ({"metric": "exact_match", "regexes_to_ignore": ","}, r"regexes_to_ignore must be a list of strings"),
    ({"metric": "exact_match", "regexes_to_ignore": ["("]}, r"regexes_to_ignore pattern '\(' does not compile"),
    ({"metric": "exact_match", "hf_evaluate": True}, r"hf_evaluate: true"),
])
def test_refused_exact_match_options(entry, message):
    with pytest.raises(EvalkitError, match=r"t\.yaml: metric_list\[3\]: " + message):
        ExactMatchOptions.from_metric_entry(entry, "t.yaml: metric_list[3]")


# (pipeline spec key, metric entry, generation, target, exact_match): filter, then score, as lm-eval does.
END_TO_END = [
    ("strict", GSM8K_METRIC, " She earns 12 * 6 = $72.\n#### 72", "12 * 6 = 72\n#### 72", 1.0),
    ("strict", GSM8K_METRIC, " She earns $72 in total.", "#### 72", 0.0),
    ("flexible", GSM8K_METRIC, " She earns $72 in total.", "#### 72", 1.0),
    ("flexible", GSM8K_METRIC, " 6 times 12 is 72, so 72 dollars.\n\n", "#### 72", 1.0),
    ("flexible", GSM8K_METRIC, " The answer is 7.2", "#### 72", 0.0),
    ("triviaqa", TRIVIAQA_METRIC, " The Beatles", ["The Beatles", "Beatles"], 1.0),
    ("triviaqa", TRIVIAQA_METRIC, " beatles!", ["The Beatles", "Beatles"], 1.0),
    ("triviaqa", TRIVIAQA_METRIC, " John Lennon", ["The Beatles", "Beatles"], 0.0),
]


@pytest.mark.parametrize("key, entry, generation, target, expected", END_TO_END)
def test_end_to_end(key, entry, generation, target, expected):
    answer = build_pipeline(SPECS[key], "t.yaml")([generation])
    assert exact_match(answer, target, ExactMatchOptions.from_metric_entry(entry, "t.yaml")) == expected


def test_generation_scoring_modules_import_only_types_and_no_torch():
    import ast
    from pathlib import Path

    stats = Path(__file__).resolve().parents[1] / "evalkit" / "stats"
    for name in ("math_answers.py", "filters.py", "exact_match.py"):
        imported = set()
        for node in ast.walk(ast.parse((stats / name).read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        assert {m for m in imported if m.startswith("evalkit")} <= {"evalkit.types"}, (name, imported)
        allowed = {"__future__", "re", "string", "warnings", "dataclasses", "typing", "collections.abc", "numpy",
                   "evalkit.types"}
        assert imported <= allowed, (name, imported)
