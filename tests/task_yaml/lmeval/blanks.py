"""Fixture functions for winogrande.yaml: the sentence split at its blank ("_")."""


def keep_one_blank(dataset):
    """Rows whose sentence has exactly one blank, with the blank's position added as a field."""
    dataset = dataset.filter(lambda row: row["sentence"].count("_") == 1)
    return dataset.map(lambda row: {"blank": row["sentence"].index("_")})


def gold_index(doc):
    """answer "1" or "2" -> 0 or 1."""
    return int(doc["answer"]) - 1


def filled_before_blank(doc):
    """The text before the blank, completed by each option."""
    before = doc["sentence"][: doc["blank"]]
    return [before + doc["option1"], before + doc["option2"]]


def after_blank(doc):
    """The text after the blank, without surrounding spaces (the common continuation)."""
    return doc["sentence"][doc["blank"] + 1 :].strip()
