"""wikitext (SPEC-suite B.24): the task's definition, its detokeniser rule by rule, the document splitter and the
raw-text units, on hand-made strings (the data is not available offline)."""

from __future__ import annotations

import re

import pytest

from evalkit.tasks.registry import load_registry

from tasks import wikitext
from tasks.wikitext import detokenize, split_documents


@pytest.fixture(scope="module")
def task():
    return load_registry().get("wikitext")


def test_task_follows_the_rolling_contract(task):
    ds = task.dataset
    assert (ds.hub_id, ds.config, ds.split, ds.n) == ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1",
                                                     "test", 62)
    assert dict(ds.fields) == {"page": str}
    assert task.scoring == "rolling"
    assert task.metrics == ("word_perplexity", "byte_perplexity", "bits_per_byte")
    assert task.primary_metric == "word_perplexity"
    assert task.fewshot_split is None  # zero-shot only, as v0.2.0 asserts
    doc = {"page": " = Robert Boulter = \n \n Robert Boulter is an English film , television and theatre actor . "
                   "He had a guest @-@ starring role in 2000 . \n"}
    assert task.context(doc) == ""
    assert task.gold(doc) == 0
    assert task.continuations(doc) == [" = Robert Boulter =\n\nRobert Boulter is an English film, television and "
                                       "theatre actor. He had a guest-starring role in 2000.\n"]
    assert task.units_text(doc) == doc["page"]  # words and bytes count the raw page


DETOK_RULES = [
    ("s_quote", "the players ' union", "the players' union"),
    ("slash_quote_digit_literal", "a /' 5/ b", "a /'[0-9]/ b"),
    ("hyphen", "1 @-@ 2", "1-2"),
    ("comma_number", "1 @,@ 000", "1,000"),
    ("decimal_point", "3 @.@ 5", "3.5"),
    ("colon", "a : b", "a: b"),
    ("semicolon", "a ; b", "a; b"),
    ("full_stop", "a . b", "a. b"),
    ("exclamation", "a ! b", "a! b"),
    ("question", "a ? b", "a? b"),
    ("comma", "a , b", "a, b"),
    ("parentheses", "x ( a b ) y", "x (a b) y"),
    ("brackets", "x [ a ] y", "x [a] y"),
    ("braces", "x { a } y", "x {a} y"),
    ("double_quotes", 'he said " yes " then', 'he said "yes" then'),
    ("single_quotes", "the ' Bill ' show", "the 'Bill' show"),
    ("quotes_pair_across_newlines", '" a\n" b " c "', '"a" b "c"'),
    ("heading_level_4", "= = = = x = = = =", "==== x ===="),
    ("heading_level_3", "= = = x = = =", "=== x ==="),
    ("heading_level_2", "= = x = =", "== x =="),
    ("degree", "30 ° C", "30°C"),
    ("space_before_newline", "a \nb", "a\nb"),
    ("space_after_newline", "a\n b", "a\nb"),
    ("number_placeholder", "the N th", "the 1 th"),
    ("possessive", "John 's car", "John's car"),
    ("replace_is_one_pass", "a  ,  , b", "a , , b"),
]


@pytest.mark.parametrize("raw, expected", [r[1:] for r in DETOK_RULES], ids=[r[0] for r in DETOK_RULES])
def test_detokenizer_rule(raw, expected):
    assert detokenize(raw) == expected


def test_detokenizer_rules_apply_in_order():
    # " @.@ " runs before " . ": "3 @.@ 5 ." keeps the decimal point; " . " then needs its trailing space.
    assert detokenize("3 @.@ 5 . x") == "3.5. x"
    # the paired-quote regex runs before " 's": "' s '" first becomes "'s'", whose " 's" is then joined.
    assert detokenize("it ' s ' ok") == "it's' ok"
    # parentheses are tidied before " \n" removal, so a newline inside them is kept
    assert detokenize("( a \n )") == "(a)"


def test_words_and_bytes_count_the_raw_page(task):
    doc = {"page": " = A = \n \n B c . \n"}
    raw = task.units_text(doc)
    # re.split(r"\s+") on the raw page: '', '=', 'A', '=', 'B', 'c', '.', '' (the empty ends count)
    assert len(re.split(r"\s+", raw)) == 8
    assert len(re.split(r"\s+", task.continuations(doc)[0])) == 7  # what the detokenised text would give instead
    assert len(raw.encode("utf-8")) == 18  # 18 ASCII characters
    degree = {"page": " 30 ° C \n"}
    assert len(re.split(r"\s+", task.units_text(degree))) == 5  # '', '30', '°', 'C', ''
    assert len(task.units_text(degree).encode("utf-8")) == 10  # nine characters, '°' takes two bytes


RAW_FILE = (" \n = Alpha = \n \n Text a . \n \n = = Sub = = \n \n More . \n \n = Beta = \n \n Text b . \n \n"
            " = = = Deep = = = \n x \n")


def test_split_documents_cuts_at_level_one_headings_only():
    docs = split_documents(RAW_FILE)
    assert docs == [
        " = Alpha = \n \n Text a . \n \n = = Sub = = \n \n More . \n ",
        " = Beta = \n \n Text b . \n \n = = = Deep = = = \n x \n",
    ]  # the leading " " line is all whitespace: not a document


def test_split_documents_edges():
    assert split_documents(" = A = \n = B = \n") == [" = A = ", " = B = \n"]  # back-to-back headings
    assert split_documents("= A =\nx") == ["= A =\nx"]  # no surrounding spaces needed
    assert split_documents(" \n \n") == [" \n \n"]  # the last collection is emitted even when blank
    assert split_documents(" = = A = = \n y") == [" = = A = = \n y"]  # a level-2 heading never splits
    assert wikitext.is_article_heading(" = Robert Boulter = ")
    assert not wikitext.is_article_heading(" = = Career = = ")
    assert not wikitext.is_article_heading(" = = = 2000 – 2005 = = = ")
