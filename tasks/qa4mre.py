"""QA4MRE main task, English, 2011-2013 (``qa4mre_2011``, ``qa4mre_2012``, ``qa4mre_2013``): reading comprehension
of long documents, five answer options per question.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``qa4mre_{2011,2012,2013}`` (VERSION 0; SPEC-suite B.20).
Context: ``f"{source}\\nQuestion: {question}\\nAnswer:"`` with ``source`` the reading test's document,
stripped; continuations ``" " + answer`` for every answer option in order (not stripped); gold = the correct
option's id minus 1; acc, acc_norm. The documents are long: contexts are routinely left-truncated to the model
window. Only one split exists: it is evaluated (120 / 160 / 284 questions), and few-shot examples come from the
same questions without the document itself.

Data: v0.2.0 parsed the CLEF gold-standard XML files ``QA4MRE-{year}-EN_GS.xml`` from
``http://nlp.uned.es/clef-qa/repository/js/scripts/downloadFile.php?file=/var/www/html/nlp/clef-qa/repository/resources/QA4MRE/``
+ ``2011/Training_Data/Goldstandard/``, ``2012/Main_Task/Training_Data/Goldstandard/Used_in_Evaluation/`` or
``2013/Main_Task/Training_Data/Goldstandard/`` (source = first child of each ``reading-test``; choices = its
``answer`` texts; gold = ``a_id`` of the answer marked correct, minus 1). The hub dataset ``qa4mre`` (configs
``2011.main.EN``, ``2012.main.EN``, ``2013.main.EN``, split ``train``; the one lm-eval v0.3.0 reads) holds the
same questions parsed from those files: ``document_str``, ``question_str``, ``answer_options.answer_str`` and
``correct_answer_id``. Peñas et al. 2013.
"""

from evalkit.types import DatasetSpec, Doc, Task

YEARS = {2011: 120, 2012: 160, 2013: 284}
"""Year -> number of questions."""


def context(doc: Doc) -> str:
    """The stripped document, then the question."""
    return f"{doc['document_str'].strip()}\nQuestion: {doc['question_str']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """Every answer option in order, each after one space."""
    return [" " + answer for answer in doc["answer_options"]["answer_str"]]


def gold(doc: Doc) -> int:
    """The correct answer's id (1-based) minus 1."""
    return int(doc["correct_answer_id"]) - 1


def validate(doc: Doc) -> None:
    """Non-blank options and a correct answer id that names one of them."""
    answers = doc["answer_options"]["answer_str"]
    for index, answer in enumerate(answers):
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"field 'answer_options.answer_str': option {index} ({answer!r:.40}) is blank")
    key = doc["correct_answer_id"]
    if not (key.isdigit() and 1 <= int(key) <= len(answers)):
        raise ValueError(f"field 'correct_answer_id': {key!r} does not name one of {len(answers)} options")


def year_task(year: int) -> Task:
    """The ``qa4mre_{year}`` task."""
    return Task(
        name=f"qa4mre_{year}",
        version="1.0",
        dataset=DatasetSpec("qa4mre", f"{year}.main.EN", "train", YEARS[year],
                            {"document_str": str, "question_str": str, "answer_options": dict,
                             "answer_options.answer_str": list, "correct_answer_id": str}),
        context=context,
        continuations=continuations,
        gold=gold,
        scoring="multiple_choice",
        metrics=("acc", "acc_norm"),
        validate=validate,
        description=f"QA4MRE {year}: long document + question, 5 options; acc, acc_norm",
        source="Peñas et al. 2013 (CLEF QA4MRE); lm-eval v0.2.0 `qa4mre_*` (VERSION 0)",
        fewshot_split="train",
    )


TASKS = [year_task(year) for year in YEARS]
