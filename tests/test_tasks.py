"""The five card tasks: document counts, exact prompts and continuations, gold indices (SPEC.md)."""

from __future__ import annotations

import json

import pytest

from evalkit.data.documents import load_docs
from evalkit.tasks.registry import load_registry

SPEC_N = {"lambada_openai": 5153, "sciq": 1000, "piqa": 1838, "arc_challenge": 1172, "triviaqa": 11313}
SPEC_REQUESTS = {"lambada_openai": 5153, "sciq": 4000, "piqa": 3676, "arc_challenge": 4687, "triviaqa": 116146}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def all_docs(registry, data_dir):
    return {name: load_docs(registry.get(name), data_dir) for name in SPEC_N}


@pytest.mark.parametrize("name", sorted(SPEC_N))
def test_document_and_request_counts_match_spec(registry, all_docs, name):
    task = registry.get(name)
    docs = all_docs[name]
    assert len(docs) == SPEC_N[name] == task.dataset.n
    assert sum(len(task.continuations(d)) for d in docs) == SPEC_REQUESTS[name]


def test_aliases_and_group(registry):
    assert registry.get("lambada").name == "lambada_openai"
    assert registry.get("arc").name == "arc_challenge"
    names = [t.name for t in registry.expand(["neox20b_card"])]
    assert names == ["lambada_openai", "sciq", "piqa", "triviaqa", "arc_challenge"]
    assert [t.name for t in registry.expand(["piqa", "neox20b_card"])][:2] == ["piqa", "lambada_openai"]


def test_lambada_first_document(registry, all_docs):
    task, doc = registry.get("lambada_openai"), all_docs["lambada_openai"][0]
    context = task.context(doc)
    assert context.startswith("In my palm is a clear stone, and inside it is a small ivory statuette.")
    assert context.endswith("his mouth curved in a confident grin, I don't care about")
    assert task.continuations(doc) == [" signs"]
    assert context + task.continuations(doc)[0] == doc["text"]


def test_sciq_first_document(registry, all_docs):
    task, doc = registry.get("sciq"), all_docs["sciq"][0]
    context = task.context(doc)
    assert context.startswith("Oxidants and Reductants Compounds that are capable of accepting electrons")
    assert context.endswith(
        "30 Saylor URL: http://www. saylor. org/books.\nQuestion: Compounds that are capable of accepting "
        "electrons, such as o 2 or f2, are called what?\nAnswer:"
    )
    assert task.continuations(doc) == [" antioxidants", " Oxygen", " residues", " oxidants"]
    assert task.gold(doc) == 3


def test_sciq_empty_support_starts_at_question(registry, all_docs):
    task = registry.get("sciq")
    empty = [i for i, d in enumerate(all_docs["sciq"]) if d["support"] == ""]
    assert len(empty) == 116 and empty[0] == 35
    doc = all_docs["sciq"][35]
    assert task.context(doc) == "Question: In what type of animals may a body cavity be present or absent?\nAnswer:"
    assert task.continuations(doc) == [" vertebrate", " bicellular", " nonvascular", " triploblastic"]


def test_piqa_first_document_keeps_text_verbatim(registry, all_docs):
    task, doc = registry.get("piqa"), all_docs["piqa"][0]
    assert task.context(doc) == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert task.continuations(doc)[1] == (
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, "
        "you will also need to supply it with a water bottle and a food dish."
    )
    assert task.gold(doc) == 0
    trailing = [d for d in all_docs["piqa"] if d["sol1"].endswith(" ") or d["sol2"].endswith(" ")]
    assert trailing, "some PIQA solutions carry trailing spaces"
    assert task.continuations(trailing[0]) == [" " + trailing[0]["sol1"], " " + trailing[0]["sol2"]]


def test_arc_first_and_five_and_three_choice_documents(registry, all_docs):
    task, docs = registry.get("arc_challenge"), all_docs["arc_challenge"]
    assert task.context(docs[0]) == (
        "Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?\nAnswer:"
    )
    assert task.gold(docs[0]) == 2
    assert task.continuations(docs[836]) == [
        " Warm-blooded animals have a higher metabolism in warm weather.",
        " Warm-blooded animals are more aggressive in captivity.",
        " Warm-blooded animals always have a higher blood temperature.",
        " Warm-blooded animals normally maintain a fairly constant internal temperature at all air temperatures.",
        " Warm-blooded animals are found only in warm climates.",
    ]
    assert task.gold(docs[836]) == 3
    assert task.continuations(docs[121]) == [" slower", " faster", " at the same speed"]
    counts = sorted(len(d["choices"]["text"]) for d in docs)
    assert (counts.count(3), counts.count(4), counts.count(5)) == (4, 1165, 3)


def test_triviaqa_prompt_and_alias_pruning(registry, all_docs):
    task, docs = registry.get("triviaqa"), all_docs["triviaqa"]
    assert task.context(docs[0]) == "Question: Who was the man behind The Chipmunks?\nAnswer:"
    assert task.continuations(docs[0]) == [" David Seville"]
    # Sorted: "Campbell Bannerman" < "Campbell-Bannerman" < "Henry ..." < "Sir ..."; no alias starts with another.
    assert task.continuations(docs[3]) == [
        " Campbell Bannerman", " Campbell-Bannerman", " Henry Campbell Bannerman",
        " Henry Campbell-Bannerman", " Sir Henry Campbell Bannerman", " Sir Henry Campbell-Bannerman",
    ]


def test_triviaqa_pruning_on_hand_made_aliases():
    from tasks.triviaqa import prune_aliases

    aliases = ["Paris", "paris", "Paris, France", "Paris (city)", "France", "Fr", "Pa", "Paris"]
    # sorted: Fr, France(starts with Fr: drop), Pa, Paris(drop), Paris (city)(drop), Paris(drop), Paris, France(drop), paris
    assert prune_aliases(aliases) == ["Fr", "Pa", "paris"]
    assert prune_aliases(["b", "a"]) == ["a", "b"]
    assert prune_aliases(["x"]) == ["x"]


def test_triviaqa_question_mark_not_added(registry):
    task = registry.get("triviaqa")
    doc = {"question": "Name the capital of France", "answer": {"aliases": ["Paris"]}}
    assert task.context(doc) == "Question: Name the capital of France\nAnswer:"


def test_local_rows_equal_file_rows(data_dir, registry):
    path = data_dir / "piqa" / "validation.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert load_docs(registry.get("piqa"), data_dir) == raw
