"""benchmarks/suite_work_size.py: its window count and one run over hand-made arithmetic and wikitext files."""

from __future__ import annotations

import importlib.util
import json

from evalkit.tasks.registry import load_registry
from tests.conftest import REPO, TOKENIZER_JSON

spec = importlib.util.spec_from_file_location("suite_work_size", REPO / "benchmarks" / "suite_work_size.py")
suite_work_size = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite_work_size)


def test_rolling_windows_follow_spec_suite_b24():
    # N = 10, L = 4: ([E,0,1,2] -> 0..3), ([3,4,5,6] -> 4..7), ([5,6,7,8] -> 8,9)
    assert suite_work_size.rolling_windows(10, 4) == [(4, 4), (4, 4), (4, 2)]
    assert suite_work_size.rolling_windows(3, 4) == [(3, 3)]
    assert suite_work_size.rolling_windows(9, 4) == [(4, 4), (4, 4), (4, 1)]  # N = jL + 1: a last window of one


def test_script_counts_hand_made_files(tmp_path, capsys, tokenizer):
    (tmp_path / "arithmetic_2da").mkdir()
    rows = [{"context": "\n\nQ: What is 98 plus 45?\n\nA:", "completion": " 143"},
            {"context": "\n\nQ: What is 1 plus 1?\n\nA:", "completion": " 2"}]
    (tmp_path / "arithmetic_2da" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "wikitext").mkdir()
    page = " = A = \n \n " + "word , " * 20 + "end . \n"
    (tmp_path / "wikitext" / "test.jsonl").write_text(json.dumps({"page": page}) + "\n")
    code = suite_work_size.main(["--data-dir", str(tmp_path), "--tokenizer", str(TOKENIZER_JSON), "--tasks",
                                 "arithmetic_2da,wikitext,piqa", "--window", "16"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    ids = [tokenizer.encode_batch([f"Question: What is {q}?\nAnswer:", a])
           for q, a in (("98 plus 45", " 143"), ("1 plus 1", " 2"))]
    forwarded = sum(len(c) + len(a) - 1 for c, a in ids)
    scored = sum(len(a) for _, a in ids)
    arithmetic = out[2].split()
    assert arithmetic[:5] == ["arithmetic_2da", "2", "2", "16", "2"]
    assert [int(x.replace(",", "")) for x in arithmetic[5:]] == [forwarded, forwarded, scored, 0]
    text = load_registry().get("wikitext").continuations({"page": page})[0]
    n_tokens = len(tokenizer.encode_batch([text])[0])
    assert n_tokens > 16  # more than one window
    windows = suite_work_size.rolling_windows(n_tokens, 16)
    wiki = out[3].split()
    assert wiki[:4] == ["wikitext", "1", "1", "16"]
    assert [int(x.replace(",", "")) for x in wiki[4:]] == [len(windows), sum(i for i, _ in windows),
                                                           sum(i for i, _ in windows), n_tokens, 0]
    assert out[-1] == f"  piqa: no {tmp_path / 'piqa' / 'validation.jsonl'}"
