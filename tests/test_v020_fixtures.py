"""lm-evaluation-harness v0.2.0's own test fixtures (SPEC-suite Appendix V), reproduced from the task files.

For every task whose data is in ``shared/data``, the complete zero-shot request list is rebuilt in v0.2.0's
evaluator order (tests/v020.py), its sha256 is compared with the hash v0.2.0 pins in ``tests/testdata``, and the
fake LM's answers (global ``random`` reseeded with 42, ll = -random()) are scored with evalkit's own metric code
and compared with the pinned metrics.

All of them reproduce, including all 57 MMLU subjects on the local ``cais/mmlu`` rows (SPEC-suite had
reproduced 38 subjects from the 2020 CSVs of hendrycks/test's history; the other 19 differ there because those
CSVs changed before the ``data.tar`` v0.2.0 pins, and the hub copy holds the pinned rows). MMLU's fixture
metrics are not listed in SPEC-suite, so only its request hashes are asserted.

Not checked here, for want of local data (the hub is not reachable from the tests): hellaswag, anli_r1-r3,
boolq, logiqa, mathqa, pubmedqa, prost, qa4mre_2011-2013, headqa_en/headqa (Spanish) and wsc273; their prompts
are tested on hand-made documents in tests/test_suite_tasks.py.
"""

from __future__ import annotations

import pytest

from evalkit.data.documents import load_docs
from evalkit.tasks.registry import load_registry
from tests.v020 import fake_metrics, request_hash, request_list

PINNED = {
    # evalkit task: (v0.2.0 fixture request sha256, pinned fake-LM metrics under evalkit's metric names)
    "arc_easy": ("ffa6e39a35a16299dcb015f17f986aaa598ad8b4840c4cebe0339a7042232741",
                 {"acc": 0.2474747474747475, "acc_norm": 0.24074074074074073}),
    "openbookqa": ("78a49a0ca1a47373adb33463b1d092e6bc0d8f4b01bcb380ada48065037849d7",
                   {"acc": 0.214, "acc_norm": 0.276}),
    "winogrande": ("90a3eff49de9173964d46f5ed57bcf9a78a72dd1bfe0e5323b25cebb40b49ea9", {"acc": 0.516179952644041}),
    "copa": ("66276b9045b5300cba4b81340db06f674f031fa0b8883714ad0d03be464cd799", {"acc": 0.48}),
    "cb": ("77b11f4348eb8a7f57faf95c531fda01ab4bf0e729f91a82451ed8e71ec8e66d",
           {"acc": 0.3392857142857143, "f1": 0.2819143819143819}),
    "wic": ("403a08da05e4c44d7e3dd3358382a7ba489c41d223e24cd1a9ed82ef1a2d004b", {"acc": 0.49216300940438873}),
    "wsc": ("45865468eff5ca31e6a050947a6b3310d9d5ed19d0f2e578a32ecaf1c768600f", {"acc": 0.5480769230769231}),
    "rte": ("c80ce13c8c736087f1557f8736d5d318b540ff01e4bb7f55e568890dc8b0393e", {"acc": 0.5379061371841155}),
    "ethics_cm": ("92d136ebb2bd86cd036e61699ad9a1417dbb48651f0a3afa5045cf57cef5a3f6", {"acc": 0.49987129987129986}),
    "arc_challenge": ("41c34c96cca8ace661911d0033d630c554b283f5a3953bcdc50720ae6b00a9c1",
                      {"acc": 0.24488054607508533, "acc_norm": 0.2440273037542662}),
    "piqa": ("6048a3a2bb3ad1e6a3d98139618e06b4d7de766edd685bd38837596199c3f69f",
             {"acc": 0.514145810663765, "acc_norm": 0.5114254624591947}),
    "sciq": ("71cbb6e2a7ac4512c3761ea801d420eb3fac49d158c7e4deaa3ab8727bea923c", {"acc": 0.234, "acc_norm": 0.239}),
    "triviaqa": ("f8ec05b306b9f6187c0f8117cae441fb85a7a2e4670f4f9a1a3b632b1978421a", {"acc": 0.0}),
    # v0.2.0 `lambada` is OpenAI's LAMBADA; its `ppl` is evalkit's `perplexity`
    "lambada_openai": ("6829e6a8aa5922e6c92dd31403cc060f242dc0ede4a775e085a70da095ab2e20",
                       {"acc": 0.0, "perplexity": 1.6479047769869253}),
}

MMLU_PINNED = {
    "abstract_algebra": "e35d1eeb356ac1084d4e9773f028cb3c81ba1c6e5574d598ac4a78aa467cd797",
    "anatomy": "bf05e04ed8cf61cf3aad294ed3f5a16137775ffdd20f1b129022ddffc1251768",
    "astronomy": "bed1e47127cc2893c6aef63b9a0909cca31aa351a703da2a166b01cae03c3311",
    "business_ethics": "b3b27e9dbad587377d3c8cab1072782de883e245da93a563bd8b3099017b1fc0",
    "clinical_knowledge": "fbcb7ce507e0675d811e71e10a67c8d05a6605e29036f46776e04a6588cefbda",
    "college_biology": "c29e4e67ff91af29b9434884874414d1b1b32ccc32903c6b1639469b19907419",
    "college_chemistry": "044752b21540db95118b8cbe7e75c4c9b8758e27df56543deaeadec7f749a28d",
    "college_computer_science": "4ea26ad780290429ac5a3317559c154848d662bd40532c966458ba6f2a32d0a3",
    "college_mathematics": "e9fe80752686527281f834d2397875b4580581434b94799f9de6aaa450bd73ff",
    "college_medicine": "dd6e0a9be1407890e9f8cd4434fb6aa4752ab3d2473837fd465ad99f60ad685e",
    "college_physics": "704a7671ef981fb95594782bc446dd632e87ebdbe89436a0603b714fb5786c75",
    "computer_security": "a8a1892d1906cc3e7ffd321043f0a60f3b8b69ef76e5c6ff03c6ea41dc87d0cb",
    "conceptual_physics": "622f191ccfc7a597d99f39897ebe3f95a9ddce0e662fcfb411aa554b289bb355",
    "econometrics": "cde76ba2c7382b4876e17136c94f52aca2774e50342ab757b2a2d18da370dcb6",
    "electrical_engineering": "b9b5d8b8bb02696302ec6bc2a99bf987a5504d3bae0e529d2c8f263538c97518",
    "elementary_mathematics": "6b21f5cd5606268421a667152ec989424b66905c02adbab8d4ff6bb9d21b77d1",
    "formal_logic": "c0d0f0c008a5f3faf2f6f4268d87bbc09c40bb66ae08cf38eea0bf2e519c5a59",
    "global_facts": "9fdc85240b8170839278b1e883ee0868611d84dce202cb8aa037c841ec76d089",
    "high_school_biology": "d4dc051f37a49dc75c218741e87bc826fd44f31ee1309b55e0f33bd191c1bc78",
    "high_school_chemistry": "f4f338e45415c4b5ee7f1d249155bcd910c8401bd1436760a5ec61cb6bb211b6",
    "high_school_computer_science": "870d5a6300c527077aaf6baa3e750e75fa840b41657cf82549f39b768b14862d",
    "high_school_european_history": "d8070e113be9d420fef5578cb69c70df4ea5118f9b18553023fd9efd5ff0b7f4",
    "high_school_geography": "add45970ea3865be7c7a31f788a835949f6937ac73f699b122ca56a3431e95f8",
    "high_school_government_and_politics": "11f40d8f48ba5cd739e21d54c3c04d3761f81df5cb7ddd77df868d24ced44b49",
    "high_school_macroeconomics": "ce4faae2fb6628caa48f6fc74cbc848880db49e6ff51079392778a2322bcefef",
    "high_school_mathematics": "ab368d16fc4648ad27940f71abd266366663f51db612f732a0b9b0eea28de9f8",
    "high_school_microeconomics": "513b998585ebc1ebdefca6435b7c84fd73dc36fc80321a22503467f04efed23e",
    "high_school_physics": "dae59e82d3d4d8dec82239d9620b72cc47bb6efbe2f1c2f9b9d23e849c9c5e32",
    "high_school_psychology": "0e4c8d13806d3696167e40544d2d114c557c10c74bc61fcb9c51bbfced0266ef",
    "high_school_statistics": "33d1d6eaaa2c3a944bf49d3f220a4efc328d7c3b3465b7cec40ae36d8984b75f",
    "high_school_us_history": "8c65c1a28330dd001d395ac11f1bb80c3b33f5935f503e74067aef6e9e1d9d9b",
    "high_school_world_history": "1c8b994bd9a63ec874fc8d0e3a27077118b7adc472306b2fd6c55635a78b9d52",
    "human_aging": "0880b3a78f8d7b17ffc612031427b9085367cf65dabe2a68c4b64e3171d17e88",
    "human_sexuality": "4b07922fa1d549b655c21440b13d869263ce7dd9771d8147c450f11c91d26c10",
    "international_law": "ea9b2cefd27959db564168f6ad1169a5eaa012fc5a5d5b8faf9e34d94e335dc1",
    "jurisprudence": "cac440189f1ec778e82f4975d88b74689553ecc5116aaa7f76587a50c1a610e0",
    "logical_fallacies": "2e9449dd803f9e2334dc562d9f04031fd013ed36b883b44ab500533a5dbbface",
    "machine_learning": "7a7138821a66ef946e427b40344cf7f1a916a2926995a85ef731a3bee40cb7ce",
    "management": "355489f4bd176ab84db5ef4c03d56ddeeeb1b0ad69827122b2d800e1cdc7e5f0",
    "marketing": "b4fa0681fe54671a80509779d4338d744097a7206687f62977df7145dfa74a66",
    "medical_genetics": "db6141246889a19dd3f6b9109f314d49c1a70f7a98795858804378b095c4a2fe",
    "miscellaneous": "972dd88dbbaf09d14766e243cfc233425e7c01a26dbc61bdb9eeefa788822331",
    "moral_disputes": "d6ef028022c02b69d1516973e08bebaa14d8debcf2589a2bb124823178202d20",
    "moral_scenarios": "a8e1882e77728b53c8b86312254d08320d8363fb606d746a8dd145b812f62cf5",
    "nutrition": "19e49d218f55ed5ec4bd1a6cd3f3388c6f620b81484e7abe8b298e5481c3044d",
    "philosophy": "a419204da36c2b7a70fa8909a3a804260cc3283c7e07917534dfb76216c77f46",
    "prehistory": "6983c560a562749f4f702249a3a6ae51fa495acc0643a980bf2cf52c6c5d4b95",
    "professional_accounting": "847418f7b22cd9b499e95fd73c40a2fbc40076895280cc2c560199c0c4c4f433",
    "professional_law": "c38c9d5d84eeb7a5f3c4a34d6e70d7e15847b3c38f26e4b119c982bb935e118f",
    "professional_medicine": "7a30599858398169cde61430c18efdd7fb4dcd09c34aa9baba70f0f8cf17a9f1",
    "professional_psychology": "92a5fad6e9ec700f84946faeccd399dda3569fb71837c9fb0c5c87f5ec29c43e",
    "public_relations": "ab70f500cf24e876f6ae6bdc27525a1d6074fa9b6ea97770255d9fc2559b36ff",
    "security_studies": "92dfffe2acf3278256486d3e1cf1edb5a739ad0a54c0f9c67695f7a411ed5f76",
    "sociology": "f99a3caece11169f2a5cc951001f92027104afd25d29b2a399883bd4bf118605",
    "us_foreign_policy": "a1a338d0083a21054f74d36a296d6bd8e2e457327c0fd630bebcc61ed758044d",
    "virology": "0ffa491f7bad2abbb64ecd752a295729167599b3815238cab0ecf4cb08bba9b6",
    "world_religions": "97a0f68ba30ea3a6ef1db1a2925c964b09ecc54455a0a930da083e52677815bd",
}

NO_LOCAL_DATA = {
    # fixture pinned by v0.2.0, but no copy of the evaluated split in shared/data
    "hellaswag", "anli_r1", "anli_r2", "anli_r3", "boolq", "logiqa", "mathqa", "pubmedqa", "prost",
    "qa4mre_2011", "qa4mre_2012", "qa4mre_2013", "headqa_en", "headqa_es", "wsc273",
}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_request_hash_and_fake_metrics(name, registry, data_dir):
    task = registry.get(name)
    docs = load_docs(task, data_dir)
    expected_hash, expected_metrics = PINNED[name]
    assert request_hash(request_list(task, docs)) == expected_hash
    metrics = fake_metrics(task, docs)
    assert metrics == pytest.approx(expected_metrics, rel=1e-12, abs=0)


@pytest.mark.parametrize("subject", sorted(MMLU_PINNED))
def test_mmlu_request_hash(subject, registry, data_dir):
    task = registry.get(f"hendrycksTest-{subject}")
    docs = load_docs(task, data_dir)
    assert request_hash(request_list(task, docs)) == MMLU_PINNED[subject]


def test_every_fixture_is_checked_or_listed_without_data(registry, data_dir):
    """Each v0.2.0 task of this suite is either hash-checked above or has no evaluated split locally."""
    suite = {name for name in registry.tasks if not name.startswith("hendrycksTest-")}
    assert len(MMLU_PINNED) == 57 and {f"hendrycksTest-{s}" for s in MMLU_PINNED} <= set(registry.tasks)
    assert NO_LOCAL_DATA <= suite
    for name in NO_LOCAL_DATA:
        task = registry.get(name)
        assert not (data_dir / (task.dataset.local_dir or name) / f"{task.dataset.split}.jsonl").exists(), name
    for name in PINNED:
        assert name in suite


def test_a_changed_prompt_changes_the_hash(registry, data_dir):
    """The hash is sensitive to one character of one prompt (the check can fail)."""
    import dataclasses

    task = registry.get("copa")
    docs = load_docs(task, data_dir)
    altered = dataclasses.replace(task, context=lambda doc: task.context(doc) + " ")
    assert request_hash(request_list(altered, docs)) != PINNED["copa"][0]
    unshuffled = [pair for doc in docs for pair in zip([task.context(doc)] * 2, task.continuations(doc))]
    assert request_hash(unshuffled) != PINNED["copa"][0]
