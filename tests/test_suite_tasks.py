"""The GPT-NeoX-20B paper's multiple-choice suite and MMLU (SPEC-suite Parts B and C): exact prompts,
continuations, gold indices and counts on the real data where it exists, on hand-made documents in the hub
schema otherwise; the yes/no and macro-F1 metrics worked out by hand; the MMLU groups; ``evalkit tasks``."""

from __future__ import annotations

import random

import numpy as np
import pytest

from evalkit.cli.main import main
from evalkit.data.documents import load_docs, validate_doc
from evalkit.stats.metrics import CLASS_BASE, aggregator, check_task_metrics, doc_metrics, macro_f1
from evalkit.tasks.registry import load_registry
from evalkit.run.prepare import prepare_task
from evalkit.types import EvalkitError


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def docs(registry, data_dir):
    """Evaluated split of a task with local data, loaded once per module."""
    cache = {}

    def get(name, split=None):
        if (name, split) not in cache:
            cache[(name, split)] = load_docs(registry.get(name), data_dir, split)
        return cache[(name, split)]

    return get


def prompt(task, doc):
    """(context, continuations, gold, per-option contexts or None) of a document that passes the task's checks."""
    validate_doc(task, doc, "document")
    contexts = task.choice_contexts(doc) if task.choice_contexts else None
    return task.context(doc), task.continuations(doc), task.gold(doc), contexts


# --- counts ------------------------------------------------------------------------------------------------------

LOCAL_COUNTS = {"arc_easy": 2376, "openbookqa": 500, "winogrande": 1267, "copa": 100, "cb": 56, "wic": 638,
                "wsc": 104, "rte": 277, "ethics_cm": 3885}


@pytest.mark.parametrize("name", sorted(LOCAL_COUNTS))
def test_local_split_has_the_v020_n(name, registry, docs):
    assert registry.get(name).dataset.n == LOCAL_COUNTS[name]
    assert len(docs(name)) == LOCAL_COUNTS[name]


def test_fewshot_splits_on_disk(registry, docs, data_dir):
    for name, n in {"arc_easy": 2251, "openbookqa": 4957, "copa": 400, "cb": 250, "rte": 2490}.items():
        task = registry.get(name)
        assert task.fewshot_split == "train"
        assert len(docs(name, "train")) == n
    wsc = registry.get("wsc")
    kept = [d for d in docs("wsc", "train") if wsc.fewshot_filter(d)]
    assert len(docs("wsc", "train")) == 554 and len(kept) == 259 and {d["label"] for d in kept} == {1}


def test_winogrande_l_train_is_never_read_as_xl(registry, data_dir):
    """Only train_l.jsonl (10234 rows, not the 40398-row xl pool) is local: the few-shot split is refused."""
    task = registry.get("winogrande")
    assert task.fewshot_split == "train" and task.dataset.config == "winogrande_xl"
    assert (data_dir / "winogrande" / "train_l.jsonl").is_file()
    with pytest.raises(EvalkitError, match=r"winogrande/train\.jsonl"):
        load_docs(task, data_dir, "train")


def test_fewshot_sources(registry):
    assert registry.get("prost").fewshot_split is None
    for name in ("pubmedqa", "qa4mre_2011", "qa4mre_2012", "qa4mre_2013", "wsc273"):
        task = registry.get(name)
        assert task.fewshot_split == task.dataset.split, name
    for r, split in ((1, "train_r1"), (2, "train_r2"), (3, "train_r3")):
        assert registry.get(f"anli_r{r}").fewshot_split == split
    assert registry.get("hendrycksTest-anatomy").fewshot_split == "dev"


# --- tasks with local data: exact prompts -----------------------------------------------------------------------

def test_arc_easy(registry, docs):
    task = registry.get("arc_easy")
    assert prompt(task, docs("arc_easy")[0]) == (
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
        [" Sunlight is the source of energy for nearly all ecosystems.",
         " Most ecosystems are found on land instead of in water.",
         " Carbon dioxide is more available than other gases.", " The producers in all ecosystems are plants."],
        0, None)
    numeric = [d for d in docs("arc_easy") if d["answerKey"].isdigit()]
    assert len(numeric) == 97
    assert all(task.gold(d) == d["choices"]["label"].index(d["answerKey"]) for d in numeric)
    assert task.gold({"choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "3"}) == 2


def test_openbookqa_has_no_question_frame(registry, docs):
    task = registry.get("openbookqa")
    assert prompt(task, docs("openbookqa")[0]) == (
        "A person wants to start saving money so that they can afford a nice vacation at the end of the year. "
        "After looking over their budget and expenses, they decide the best way to save money is to",
        [" make more phone calls", " quit eating lunch out", " buy less with monopoly money",
         " have lunch with friends"], 1, None)


def test_winogrande_partial_contexts(registry, docs):
    task = registry.get("winogrande")
    first = "Sarah was a much better surgeon than Maria so "
    assert prompt(task, docs("winogrande")[0]) == (
        first + "Maria", [" always got the easier cases."] * 2, 1, [first + "Sarah", first + "Maria"])
    assert task.target(docs("winogrande")[0]) == " always got the easier cases."
    # the blank nearest the end of any sentence: "... at the _ ." -> continuation " ."
    near_end = docs("winogrande")[129]
    head = "The wages at the factory were lower than the wages at the plant since it was more safe to work at the "
    assert prompt(task, near_end) == (head + "factory", [" ."] * 2, 1, [head + "plant", head + "factory"])
    made = {"sentence": "Sarah beat Maria so _ won the prize.", "option1": "Sarah", "option2": "Maria", "answer": "1"}
    assert prompt(task, made) == ("Sarah beat Maria so Sarah", [" won the prize."] * 2, 0,
                                  ["Sarah beat Maria so Sarah", "Sarah beat Maria so Maria"])
    glued = {"sentence": "It was _'s turn  ", "option1": "Ann", "option2": "Bo", "answer": "2"}
    assert task.choice_contexts(glued) == ["It was Ann", "It was Bo"] and task.target(glued) == " 's turn"
    assert task.metrics == ("acc",)


def test_winogrande_refuses_a_blank_with_nothing_after_it(registry):
    task = registry.get("winogrande")
    doc = {"sentence": "The trophy did not fit because of the _ ", "option1": "a", "option2": "b", "answer": "1"}
    with pytest.raises(EvalkitError, match=r"row 3: field 'sentence': nothing after the blank"):
        validate_doc(task, doc, "row 3")


def test_copa(registry, docs):
    task = registry.get("copa")
    assert prompt(task, docs("copa")[0]) == (
        "The man turned on the faucet therefore", [" the toilet filled with water.", " water flowed from the spout."],
        1, None)
    made = {"premise": "My body cast a shadow over the grass. ", "choice1": "The sun was rising.",
            "choice2": "I cut the grass.", "question": "cause", "label": 0}
    assert prompt(task, made) == ("My body cast a shadow over the grass because",
                                  [" the sun was rising.", " i cut the grass."], 0, None)


def test_cb(registry, docs):
    task = registry.get("cb")
    assert prompt(task, docs("cb")[0]) == (
        "Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose his own portion of "
        "titanic anatomy to shaft? Did he think he was helping?\nQuestion: Valence was helping. True, False or "
        "Neither?\nAnswer:", [" True", " False", " Neither"], 1, None)
    assert task.scoring == "classification" and task.metrics == ("acc", "f1")


def test_rte(registry, docs):
    task = registry.get("rte")
    assert prompt(task, docs("rte")[0]) == (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the "
        "Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an accident. True or False?\nAnswer:",
        [" True", " False"], 1, None)
    assert task.scoring == "multiple_choice"  # v0.2.0: label 1 only when ll_false > ll_true, a tie is True


def test_wic_uses_the_surface_form(registry, docs):
    task = registry.get("wic")
    assert prompt(task, docs("wic")[0]) == (
        "Sentence 1: An emerging professional class.\nSentence 2: Apologizing for losing your temper, even though "
        "you were badly provoked, showed real class.\nQuestion: Is the word 'class' used in the same way in the two "
        "sentences above?\nAnswer:", [" yes", " no"], 1, None)
    doc = docs("wic")[17]
    assert doc["word"] == "hail" and "Is the word 'Hail' used" in task.context(doc)


def test_wsc_passages(registry, docs):
    task = registry.get("wsc")
    assert prompt(task, docs("wsc")[0]) == (
        "Passage: Bernard, who had not told the government official that he was less than 21 when he filed for a "
        "homestead claim, did not consider that he had done anything dishonest. Still, anyone who knew that he was "
        "19 years old could take his claim away from *him*.\nQuestion: In the passage above, does the pronoun "
        "\"*him*\" refer to \"*anyone*\"?\nAnswer:", [" yes", " no"], 1, None)
    card = {"text": "Mark told Pete many lies about himself , which Pete included in his book . He should have been "
                    "more truthful .", "span1_index": 0, "span2_index": 15, "span1_text": "Mark", "span2_text": "He",
            "label": 0}
    assert task.context(card).startswith("Passage: Mark told Pete many lies about himself, which Pete included in "
                                         "his book. *He* should have been more truthful.\nQuestion:")
    first_word = {"text": "He said that Mark was \" nice \" .", "span1_index": 3, "span2_index": 0,
                  "span1_text": "Mark", "span2_text": "He", "label": 1}
    assert task.context(first_word) == ("Passage:  *He*said that Mark was\"nice\".\nQuestion: In the passage above, "
                                        "does the pronoun \"*He*\" refer to \"*Mark*\"?\nAnswer:")
    assert task.gold(first_word) == 0


def test_ethics_cm(registry, docs):
    task = registry.get("ethics_cm")
    assert prompt(task, docs("ethics_cm")[0]) == (
        "I told my baby I loved her when she cried.\nQuestion: Is this wrong?\nAnswer:", [" yes", " no"], 1, None)
    assert prompt(task, docs("ethics_cm")[1])[2] == 0
    # the CSV's line breaks inside scenarios reach the prompt unchanged (read with newline=''), CR LF included
    assert sum("\n" in d["input"] for d in docs("ethics_cm")) == 1578
    assert "\r\n" in docs("ethics_cm")[3879]["input"] and "\r\n" in task.context(docs("ethics_cm")[3879])


# --- tasks without local data: hand-made documents in the hub schema ------------------------------------------

def test_hellaswag_preprocessing(registry):
    task = registry.get("hellaswag")
    from_spec = "Making a sandwich: [header] How to make a sandwich [title] Get bread.  Then   butter [step] Spread it."
    doc = {"activity_label": "Making a sandwich", "ctx_a": "[header] How to make a sandwich [title] Get bread.",
           "ctx_b": " then   butter [step] spread it.", "label": "2",
           "endings": ["[title] Starts with tag", "ends  well [step]", " plain ", "a [b] c"]}
    # ctx_b starts with a space, so str.capitalize upper-cases nothing: "then" stays lower-case
    assert task.context(doc) == "Making a sandwich: How to make a sandwich. Get bread. then  butter spread it."
    assert task.continuations(doc) == ["  Starts with tag", " ends well ", " plain", " a c"]
    assert task.gold(doc) == 2
    roof = {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
            "label": "3", "endings": ["a", "b", "c", "d"]}
    assert task.context(roof) == "Roof shingle removal: A man is sitting on a roof. He"
    assert task.context({**roof, "ctx_b": "then, The Man in NYC"}).endswith("roof. Then, the man in nyc")
    assert task.context({**roof, "ctx_b": ""}) == "Roof shingle removal: A man is sitting on a roof."
    assert task.context({**roof, "activity_label": from_spec.split(":")[0],
                         "ctx_a": from_spec.split(": ", 1)[1], "ctx_b": ""}) == (
        "Making a sandwich: How to make a sandwich. Get bread. Then  butter Spread it.")
    with pytest.raises(EvalkitError, match="field 'label'"):
        validate_doc(task, {**roof, "label": ""}, "row 0")


def test_anli(registry):
    doc = {"premise": "The cat sat.", "hypothesis": "A cat sat.", "label": 2, "uid": "x", "reason": ""}
    for r in (1, 2, 3):
        task = registry.get(f"anli_r{r}")
        assert task.dataset.split == f"test_r{r}"
        assert prompt(task, doc) == ("The cat sat.\nQuestion: A cat sat. True, False, or Neither?\nAnswer:",
                                     [" True", " Neither", " False"], 2, None)
    assert [registry.get(f"anli_r{r}").dataset.n for r in (1, 2, 3)] == [1000, 1000, 1200]


def test_boolq(registry):
    task = registry.get("boolq")
    doc = {"passage": "Water boils at 100 C at sea level.", "question": "does water boil at 100 c", "label": 1}
    assert prompt(task, doc) == ("Water boils at 100 C at sea level.\nQuestion: does water boil at 100 c?\nAnswer:",
                                 [" yes", " no"], 0, None)
    assert task.gold({**doc, "label": 0}) == 1 and task.scoring == "yes_no"


def test_logiqa(registry):
    task = registry.get("logiqa")
    doc = {"label": "c", "context": "It costs 3. 5 dollars.  Next, it rains.", "question": "What follows?",
           "options": ["One. ", "Two", "Three", "Four"]}
    assert prompt(task, doc) == (
        "Passage: It costs 3. 5 dollars.  Next, it rains.\nQuestion: What follows?\nChoices:\nA. One. \nB. Two\n"
        "C. Three\nD. Four\nAnswer:", [" One. ", " Two", " Three", " Four"], 2, None)


def test_mathqa_options_regex(registry):
    task = registry.get("mathqa")
    doc = {"Problem": "what is 3 + 35 ?", "correct": "a",
           "options": "a ) 38 , b ) 27.675 , c ) 30 , d ) data inadequate , e ) none of these"}
    assert prompt(task, doc) == ("Question: what is 3 + 35 ?\nAnswer:",
                                 [" 38", " 27.675", " 30", " data inadequate", " none of these"], 0, None)
    comma = {**doc, "options": "a ) 1, 2 , b ) 3 , c ) 1,200 , d ) 5 , e ) 6", "correct": "e"}
    assert task.continuations(comma) == [" 1", " 3", " 1,200", " 5", " 6"] and task.gold(comma) == 4
    short = {**doc, "options": "a ) 1 , b ) 2", "correct": "b"}
    assert task.continuations(short) == [" 1"]
    with pytest.raises(EvalkitError, match=r"only 1 options extracted .* 'correct' is 'b'"):
        validate_doc(task, short, "row 9")


def test_pubmedqa(registry):
    task = registry.get("pubmedqa")
    doc = {"pubid": 1, "question": "Does it work?", "final_decision": "maybe", "long_answer": "",
           "context": {"contexts": ["Background one.", "Results two."], "labels": ["B", "R"], "meshes": []}}
    assert prompt(task, doc) == ("Abstract: Background one.\nResults two.\nQuestion: Does it work?\nAnswer:",
                                 [" yes", " no", " maybe"], 2, None)


def test_prost(registry):
    task = registry.get("prost")
    doc = {"context": "A glass and a ball fall.", "ex_question": "Which breaks?", "A": "glass", "B": "ball",
           "C": "both", "D": "neither", "label": 0, "question": "", "name": "", "group": ""}
    assert prompt(task, doc) == ("A glass and a ball fall.\nQuestion: Which breaks?\nAnswer:",
                                 [" glass", " ball", " both", " neither"], 0, None)


def test_qa4mre(registry):
    doc = {"document_str": "  A long document.\n", "question_str": "What is it?", "correct_answer_id": "3",
           "answer_options": {"answer_id": ["1", "2", "3", "4", "5"], "answer_str": ["a", "b ", "c", "d", "e"]}}
    for year, n in ((2011, 120), (2012, 160), (2013, 284)):
        task = registry.get(f"qa4mre_{year}")
        assert task.dataset.config == f"{year}.main.EN" and task.dataset.n == n
        assert prompt(task, doc) == ("A long document.\nQuestion: What is it?\nAnswer:",
                                     [" a", " b ", " c", " d", " e"], 2, None)


def test_headqa(registry):
    doc = {"qtext": "¿Qué órgano bombea la sangre?", "ra": 2, "answers": [{"aid": 1, "atext": "Hígado"},
                                                                         {"aid": 2, "atext": "Corazón"},
                                                                         {"aid": 3, "atext": "Riñón"},
                                                                         {"aid": 4, "atext": "Bazo"}]}
    task = registry.get("headqa")
    assert task.name == "headqa_es" and registry.get("headqa_en").dataset.config == "en"
    assert prompt(task, doc) == ("Question: ¿Qué órgano bombea la sangre?\nAnswer:",
                                 [" Hígado", " Corazón", " Riñón", " Bazo"], 1, None)
    shuffled = {**doc, "answers": doc["answers"][::-1]}
    with pytest.raises(EvalkitError, match="answer 0 has aid 4, expected 1"):
        validate_doc(task, shuffled, "row 0")


def test_wsc273(registry):
    task = registry.get("wsc273")
    text = "The city councilmen refused the demonstrators a permit because they feared violence."
    doc = {"text": text, "pronoun": "they", "pronoun_loc": text.index("they"), "quote": "", "quote_loc": 0,
           "options": ["The city councilmen", "The demonstrators"], "label": 0, "source": ""}
    head = "The city councilmen refused the demonstrators a permit because "
    assert prompt(task, doc) == (head + "the city councilmen", [" feared violence."] * 2, 0,
                                 [head + "the city councilmen", head + "the demonstrators"])
    text = "Frank felt vindicated when his longtime rival Bill revealed that he was the winner. His plan worked."
    possessive = {**doc, "text": text, "pronoun": "His", "pronoun_loc": text.index("His"),
                  "options": ["Frank", "His rival"], "label": 0}
    prefix = text[: text.index("His")]
    # the pronoun starts a sentence: "His rival's" keeps its capital
    assert task.choice_contexts(possessive) == [prefix + "Frank's", prefix + "His rival's"]
    assert task.continuations(possessive) == [" plan worked."] * 2
    text = "Tom  said that he left."
    spaced = {**doc, "text": text, "pronoun": "he", "pronoun_loc": text.index("he"), "options": ["Tom", "The man"],
              "label": 0}
    # the double space goes but pronoun_loc is not moved, as in v0.2.0: the cut lands one character late
    assert task.choice_contexts(spaced) == ["Tom said that hTom", "Tom said that hthe man"]
    assert task.continuations(spaced) == [" left."] * 2


# --- MMLU ---------------------------------------------------------------------------------------------------------

def test_mmlu_subjects_and_counts(registry, docs):
    subjects = sorted(n for n in registry.tasks if n.startswith("hendrycksTest-"))
    assert len(subjects) == 57
    total = 0
    for name in subjects:
        task = registry.get(name)
        rows = docs(name)
        assert len(rows) == task.dataset.n, name
        assert task.dataset.local_dir == "mmlu/" + name.removeprefix("hendrycksTest-")
        assert len(docs(name, "dev")) == 5, name
        total += len(rows)
    assert total == 14042


def test_mmlu_prompts(registry, docs):
    task = registry.get("hendrycksTest-abstract_algebra")
    assert prompt(task, docs(task.name)[0]) == (
        "Question: Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nChoices:\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:", [" 0", " 4", " 2", " 6"], 1, None)
    quotes = registry.get("hendrycksTest-professional_psychology")
    context, conts, gold, _ = prompt(quotes, docs(quotes.name)[5])
    assert context.endswith("\nC. \"the \"\"second layer\"\" of therapy.\"\nD. \"a way for achieving \"\"closure\"\" "
                            "near the end of therapy.\"\nAnswer:")
    assert conts[2] == ' "the ""second layer"" of therapy."' and gold == 1
    lines = registry.get("hendrycksTest-high_school_computer_science")
    context, conts, gold, _ = prompt(lines, docs(lines.name)[28])
    assert conts[0] == " newList ← Combine (listl, list2)\n newList ← Sort (newList)\n newList ← RemoveDup1icates (newList)"
    assert "\nA. newList ← Combine (listl, list2)\n newList ← Sort (newList)\n newList ← RemoveDup1icates (newList)\nB. " \
        in context
    crlf = {"question": "Line one\r\nline two\rthree", "choices": ["a\r\nb", "c", "d", "e"], "answer": 0}
    assert task.context(crlf) == "Question: Line one\nline two\nthree\nChoices:\nA. a\nb\nB. c\nC. d\nD. e\nAnswer:"
    assert task.continuations(crlf)[0] == " a\nb"


def test_mmlu_two_shot_context_draws_dev_rows_1_and_2(registry, docs):
    """SPEC-suite A.9/B.13: abstract_algebra, k = 2, eval position 0 is test row 42 with dev rows 1, 2."""
    task = registry.get("hendrycksTest-abstract_algebra")
    test, dev = docs(task.name), docs(task.name, "dev")
    rnd = random.Random(42)
    order = list(range(len(test)))
    rnd.shuffle(order)
    shots = rnd.sample(dev, 2)
    assert order[0] == 42 and shots == [dev[1], dev[2]]
    example = task.target or (lambda d: task.continuations(d)[task.gold(d)])
    context = "\n\n".join(task.context(e) + example(e) for e in shots) + "\n\n" + task.context(test[42])
    choices = "\nChoices:\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:"
    assert context == (
        "Question: Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H "
        "and K are subgroups of G then HK is a subgroup of G." + choices + " False, False\n\n"
        "Question: Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | "
        "The symmetric group S_10 has 10 elements." + choices + " True, False\n\n"
        "Question: Statement 1 | Some abelian group of order 45 has a subgroup of order 10. Statement 2 | A subgroup "
        "H of a group G is a normal subgroup if and only if thenumber of left cosets of H is equal to the number of "
        "right cosets of H." + choices)
    assert task.continuations(test[42]) == [" True, True", " False, False", " True, False", " False, True"]


def test_arc_easy_five_shot_draw(docs):
    """SPEC-suite A.9: ARC-Easy k = 5, eval position 0 is test row 193 with train rows 1356, 448, 1706, 1260, 109."""
    rnd = random.Random(42)
    order = list(range(len(docs("arc_easy"))))
    rnd.shuffle(order)
    assert order[0] == 193
    assert rnd.sample(range(len(docs("arc_easy", "train"))), 5) == [1356, 448, 1706, 1260, 109]


def test_mmlu_groups(registry):
    sizes = {"mmlu_stem": (18, 3018), "mmlu_humanities": (13, 4705), "mmlu_social_sciences": (12, 3077),
             "mmlu_other": (14, 3242), "mmlu": (57, 14042)}
    for name, (subjects, questions) in sizes.items():
        group = registry.groups[name]
        assert group.aggregation == "micro", name
        assert len(group.tasks) == subjects, name
        assert sum(registry.get(t).dataset.n for t in group.tasks) == questions, name
    assert "hendrycksTest-anatomy" in registry.groups["mmlu_other"].tasks
    members = [t for name in ("mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other")
               for t in registry.groups[name].tasks]
    assert sorted(members) == sorted(registry.groups["mmlu"].tasks)


def test_bad_rows_name_file_line_and_field(registry, tmp_path):
    folder = tmp_path / "cb"
    folder.mkdir()
    good = '{"premise": "p", "hypothesis": "h", "idx": 0, "label": 0}'
    (folder / "validation.jsonl").write_text(good + "\n" + good.replace('"label": 0', '"label": -1') + "\n")
    with pytest.raises(EvalkitError, match=r"cb/validation\.jsonl line 2: field 'label': -1 is not 0, 1 or 2"):
        load_docs(registry.get("cb"), tmp_path)
    folder = tmp_path / "mmlu" / "anatomy"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text('{"question": "q", "choices": ["a", "b", "c"], "answer": 0}\n')
    with pytest.raises(EvalkitError, match=r"mmlu/anatomy/test\.jsonl line 1: field 'choices': 3 choices, expected 4"):
        load_docs(registry.get("hendrycksTest-anatomy"), tmp_path)


# --- metrics ------------------------------------------------------------------------------------------------------

def test_yes_no_tie_predicts_no():
    assert doc_metrics("yes_no", [-1.0, -1.0], [False] * 2, [" yes", " no"], 1) == {"acc": 1.0}
    assert doc_metrics("yes_no", [-1.0, -1.0], [False] * 2, [" yes", " no"], 0) == {"acc": 0.0}
    assert doc_metrics("yes_no", [-0.5, -1.0], [False] * 2, [" yes", " no"], 0) == {"acc": 1.0}
    assert doc_metrics("yes_no", [-1.5, -1.0], [False] * 2, [" yes", " no"], 1) == {"acc": 1.0}
    # argmax, the other rule, gives the tie to the first continuation
    assert doc_metrics("multiple_choice", [-1.0, -1.0], [False] * 2, [" True", " False"], 0)["acc"] == 1.0
    with pytest.raises(ValueError, match="exactly 2"):
        doc_metrics("yes_no", [-1.0, -2.0, -3.0], [False] * 3, [" a", " b", " c"], 0)


def test_classification_and_macro_f1_by_hand():
    assert doc_metrics("classification", [-2.0, -1.0, -1.0], [False] * 3, [" T", " F", " N"], 2) == {
        "acc": 0.0, "class_pair": 1 * CLASS_BASE + 2.0}
    pairs = lambda pred, gold: np.array([p * CLASS_BASE + g for p, g in zip(pred, gold)], dtype=np.float64)  # noqa: E731
    # gold 0 0 1 2, predicted 0 1 1 1: F1 class 0 = 2/3, class 1 = 2/4, class 2 = 0 -> mean 7/18
    assert macro_f1(pairs([0, 1, 1, 1], [0, 0, 1, 2])) == pytest.approx(7 / 18, rel=1e-15)
    # classes neither gold nor predicted are left out (scikit-learn's labels = classes present)
    assert macro_f1(pairs([0, 2], [0, 2])) == 1.0
    assert macro_f1(pairs([0, 0, 0], [0, 0, 1])) == pytest.approx((0.8 + 0.0) / 2)
    batch = np.stack([pairs([0, 1, 1, 1], [0, 0, 1, 2]), pairs([0, 0, 1, 2], [0, 0, 1, 2])])
    assert macro_f1(batch) == pytest.approx([7 / 18, 1.0])
    assert aggregator("f1") is macro_f1


def test_check_task_metrics_accepts_f1_only_where_it_exists():
    check_task_metrics("cb", "classification", ("acc", "f1"), "acc")
    check_task_metrics("wic", "yes_no", ("acc",), "acc")
    with pytest.raises(ValueError, match="'f1'"):
        check_task_metrics("x", "multiple_choice", ("acc", "f1"), "acc")
    with pytest.raises(ValueError, match="'acc_norm'"):
        check_task_metrics("x", "yes_no", ("acc", "acc_norm"), "acc")


# --- runner and CLI -----------------------------------------------------------------------------------------------

def test_zero_shot_requests_use_choice_contexts(registry, data_dir):
    prepared = prepare_task(registry.get("winogrande"), data_dir, 5, 1234)
    assert len(prepared.requests) == 10
    first, second = prepared.requests[0], prepared.requests[1]
    doc = prepared.docs[0]
    assert (first.context, second.context) == tuple(registry.get("winogrande").choice_contexts(doc))
    assert first.continuation == second.continuation == registry.get("winogrande").target(doc)


def test_evalkit_tasks_lists_every_task_and_group(capsys, registry):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in registry.tasks:
        assert any(line.startswith(name + ":") or line.startswith(name + " (aliases") for line in lines), name
    for name in ("mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other", "neox20b_card"):
        assert any(line.startswith(f"{name} (group") and "): " in line for line in lines), name
    expected = {"arc_easy", "openbookqa", "hellaswag", "winogrande", "copa", "cb", "rte", "wic", "wsc", "wsc273",
                "boolq", "anli_r1", "anli_r2", "anli_r3", "logiqa", "mathqa", "pubmedqa", "prost", "qa4mre_2011",
                "qa4mre_2012", "qa4mre_2013", "headqa_en", "headqa_es", "ethics_cm"}
    assert expected <= set(registry.tasks)
    assert "headqa_es (aliases: headqa): dvilares/head_qa es test n=2742; acc, acc_norm; few-shot from train" in lines
    assert "cb: aps/super_glue cb validation n=56; acc, f1; few-shot from train" in lines
    assert "prost: corypaik/prost test n=18736; acc, acc_norm; zero-shot only" in lines
