"""WikiText-2 (Merity et al. 2016), document-level perplexity of the raw test set.

Definition: lm-evaluation-harness v0.2.0 ``wikitext`` (VERSION 1; SPEC-suite B.24). Zero-shot only (v0.2.0 asserts
k = 0): ``fewshot_split`` is None, so ``--num-fewshot`` > 0 is refused for this task.

Documents. v0.2.0 reads ``wikitext-2-raw/wiki.test.raw`` from
``https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip`` (sha256
``ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11``) and cuts it into articles at level-1 headings
(:func:`split_documents`): 62 documents. The hub dataset ``EleutherAI/wikitext_document_level``, config
``wikitext-2-raw-v1``, split ``test``, field ``page``, was built from the same zip by the same rule (its loading
script splits on ``"\\n"``, normalises ``= = =``/``= =``, starts a page at ``"= ... ="`` lines, drops all-whitespace
pages except the last), so its rows are already these documents, in file order; this task reads them as they are.
(Not checked offline: that the parquet files the hub now serves still hold that script's output byte for byte;
a row count other than 62 is warned about like any trimmed split. v0.2.0 opens the file with the platform's default
encoding, the script with UTF-8: the same text on a UTF-8 system.)
:func:`split_documents` is kept for a user holding only the raw file: write one ``{"page": ...}`` line per document
to ``<data dir>/wikitext/test.jsonl``.

Scoring (the rolling contract of :mod:`evalkit.stats.metrics`): one rolling request per document, context ``""``,
the text scored is :func:`detokenize` of the page; the words and UTF-8 bytes that normalise the perplexities are
counted on the **raw** page (``units_text``), as v0.2.0 does:
``word_perplexity`` = exp(-Σll / Σwords), words(doc) = ``len(re.split(r"\\s+", page))``;
``byte_perplexity`` = exp(-Σll / Σbytes); ``bits_per_byte`` = -Σll / Σbytes / ln 2 (ratios of sums over documents).
Totals over the 62 test documents: 241,335 words and 1,290,527 bytes (v0.2.0's fixture, SPEC-suite Appendix V).
"""

from __future__ import annotations

import re

from evalkit.types import DatasetSpec, Doc, Task

_PAIRED = [
    (re.compile(r"\(\s*([^\)]*?)\s*\)"), r"(\1)"),
    (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"),
    (re.compile(r"{\s*([^}]*?)\s*}"), r"{\1}"),
    (re.compile(r"\"\s*([^\"]*?)\s*\""), r'"\1"'),
    (re.compile(r"'\s*([^']*?)\s*'"), r"'\1'"),
]


def detokenize(text: str) -> str:
    """Undo WikiText's tokenisation, rule for rule as lm-eval v0.2.0 ``wikitext_detokenizer`` (SPEC-suite B.24).

    In order: ``s '`` -> ``s'``; the regex ``/' [0-9]/`` -> the literal ``/'[0-9]/`` (v0.2.0 writes the pattern as its
    own replacement, so it only ever matches slash-quote-space-digit-slash); `` @-@ `` -> ``-``, `` @,@ `` -> ``,``,
    `` @.@ `` -> ``.``; `` : `` -> ``: ``, `` ; `` -> ``; ``, `` . `` -> ``. ``, `` ! `` -> ``! ``, `` ? `` -> ``? ``,
    `` , `` -> ``, ``; spaces just inside ``()``, ``[]``, ``{}``, ``""`` and ``''`` pairs removed (non-greedy regexes that
    pair quotes one after another across the whole text, newlines included); ``= = = =`` -> ``====``, ``= = =`` -> ``===``,
    ``= =`` -> ``==``; `` ° `` -> ``°``; `` \\n`` -> ``\\n``, ``\\n `` -> ``\\n``; `` N `` -> `` 1 ``; `` 's`` -> ``'s``.
    Each ``str.replace`` replaces non-overlapping occurrences left to right in one pass.

    Args:
        text: one raw document (str).

    Returns:
        the detokenised text (str).
    """
    string = text.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    for old, new in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                     (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
        string = string.replace(old, new)
    for pattern, replacement in _PAIRED:
        string = pattern.sub(replacement, string)
    for old, new in (("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" ° ", "°"),
                     (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")):
        string = string.replace(old, new)
    return string


def is_article_heading(line: str) -> bool:
    """True for a level-1 heading line such as ``" = Robert Boulter = "``.

    The line, with ``= = =`` -> ``===`` then ``= =`` -> ``==`` and stripped, starts with ``"= "`` and ends with ``" ="``;
    level-2+ headings (``" = = Career = = "`` -> ``"== Career =="``) do not.
    """
    r = line.replace("= = =", "===").replace("= =", "==").strip()
    return r.startswith("= ") and r.endswith(" =")


def split_documents(raw: str) -> list[str]:
    """Cut a raw WikiText file into documents (articles), as lm-eval v0.2.0 does (SPEC-suite B.24).

    The text is split on ``"\\n"``; at each level-1 heading (:func:`is_article_heading`) the lines collected so far are
    emitted joined by ``"\\n"`` unless that text is all whitespace, and a new collection starts; every line (the
    heading included) is appended to the current collection. The last collection is emitted unconditionally.

    Args:
        raw: the whole file as text (str), e.g. ``wiki.test.raw`` read as UTF-8.

    Returns:
        the documents in file order (list of str); 62 for ``wiki.test.raw``.
    """
    documents, current = [], []
    for line in raw.split("\n"):
        if is_article_heading(line):
            page = "\n".join(current)
            if page.strip():
                documents.append(page)
            current = []
        current.append(line)
    documents.append("\n".join(current))
    return documents


def validate(doc: Doc) -> None:
    """A page must hold text.

    Raises:
        ValueError: naming field ``page``.
    """
    if not doc["page"].strip():
        raise ValueError("field 'page' is blank: nothing to score")


TASK = Task(
    name="wikitext",
    version="1.0",
    dataset=DatasetSpec("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test", 62, {"page": str}),
    context=lambda doc: "",
    continuations=lambda doc: [detokenize(doc["page"])],
    gold=lambda doc: 0,
    scoring="rolling",
    metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"),
    primary_metric="word_perplexity",
    validate=validate,
    description="raw WikiText-2 test articles, detokenised; perplexity per raw word and per raw UTF-8 byte",
    source="Merity et al. 2016; wikitext-2-raw-v1.zip (sha256 ef7edb56...5a11); lm-eval v0.2.0 `wikitext` (VERSION 1)",
    fewshot_split=None,
    units_text=lambda doc: doc["page"],
)
