"""Offline or unreachable hub: one check, then one message naming every missing piece (data, tokenizer, model)
with the fixes, before anything waits on the network. The network is never touched: offline mode comes from
HF_HUB_OFFLINE (set by conftest) and unreachability from a patched urlopen."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest

from evalkit.data import hub_check
from evalkit.cli.main import main
from evalkit.tasks.registry import load_registry
from evalkit.models.resolve import resolve_model

from .conftest import TOKENIZER_JSON


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty hub and datasets caches; loading from the hub fails the test if it is ever reached."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))

    def never(*args, **kwargs):
        raise AssertionError("the hub was asked although the check knew it unreachable")

    import datasets
    import transformers

    monkeypatch.setattr(datasets, "load_dataset", never)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", staticmethod(never))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(never))
    return tmp_path


@pytest.fixture
def unreachable(monkeypatch):
    """Online mode, but every HEAD request fails; yields the list of requested URLs."""
    for name in hub_check.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    asked: list[str] = []

    def fail(request, timeout):
        asked.append((request.full_url, request.get_method(), timeout))
        raise urllib.error.URLError("no route to host (simulated)")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    return asked


EXPECTED = """\
evalkit: error: the Hugging Face hub is unreachable ({why}) and this run needs 4 piece(s) that are not on this machine:
  - data of lambada_openai (EleutherAI/lambada_openai, test)
  - data of piqa (baber/piqa, validation)
  - tokenizer of EleutherAI/gpt-neox-20b
  - model EleutherAI/gpt-neox-20b
fixes:
  - --data-dir DIR with DIR/<task>/<split>.jsonl (e.g. --data-dir ../shared/data)
  - --tokenizer PATH to a tokenizer.json or a local folder (e.g. --tokenizer ../shared/data/tokenizers/20B_tokenizer.json)
  - --model PATH to a local folder holding the model (a copy of neox-20b made with save_pretrained or huggingface-cli download), or --model random:<alias> to time the path with random weights (no download)
  - download on a connected machine into the hub cache (HF_HOME), then run with HF_HUB_OFFLINE=1
"""


def test_offline_mode_names_every_missing_piece_at_once(empty_caches, capsys, tmp_path):
    code = main(["run", "--model", "neox-20b", "--tasks", "lambada,piqa", "--output-dir", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == EXPECTED.format(why="offline mode (HF_HUB_OFFLINE)")


def test_unreachable_hub_is_asked_once_with_a_short_timeout(empty_caches, unreachable, capsys, tmp_path):
    code = main(["run", "--model", "neox-20b", "--tasks", "lambada,piqa", "--output-dir", str(tmp_path)])
    assert code == 2
    why = "https://huggingface.co did not answer: no route to host (simulated)"
    assert capsys.readouterr().err == EXPECTED.format(why=why)
    assert unreachable == [("https://huggingface.co", "HEAD", hub_check.TIMEOUT_S)]


def test_only_what_is_missing_is_named(empty_caches, data_dir):
    snapshot = empty_caches / "hub" / "models--EleutherAI--gpt-neox-20b" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    tasks = load_registry().expand(["piqa"])
    with pytest.raises(Exception) as info:
        hub_check.check_hub(tasks, None, resolve_model("neox-20b"), "neox-20b", None)
    message = str(info.value)
    assert "1 piece(s)" in message and "data of piqa" in message and "model EleutherAI" not in message
    assert "--data-dir" in message and "--tokenizer PATH" not in message and "random:<alias>" not in message


def test_everything_cached_runs_offline(empty_caches, data_dir, unreachable, monkeypatch, caplog):
    snapshot = empty_caches / "hub" / "models--EleutherAI--gpt-neox-20b" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    for name in hub_check.OFFLINE_ENV:
        monkeypatch.setenv(name, "0")  # monkeypatch restores each afterwards; "0" is online
    tasks = load_registry().expand(["piqa"])
    hub_check.check_hub(tasks, data_dir, resolve_model("neox-20b"), "neox-20b", str(TOKENIZER_JSON))
    assert len(unreachable) == 1 and "running offline" in caplog.text
    assert all(os.environ[name] == "1" for name in hub_check.OFFLINE_ENV)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # undo go_offline's flag for the other tests


def test_local_runs_never_ask_the_hub(unreachable, data_dir):
    tasks = load_registry().expand(["piqa", "sciq"])
    assert hub_check.hub_needs(tasks, data_dir, resolve_model("random:pythia-14m"), str(TOKENIZER_JSON)) == []
    hub_check.check_hub(tasks, data_dir, resolve_model("random:pythia-14m"), "random:pythia-14m", str(TOKENIZER_JSON))
    assert unreachable == []


def test_a_timeout_is_named(monkeypatch):
    for name in hub_check.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)

    def slow(request, timeout):
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(urllib.request, "urlopen", slow)
    assert hub_check.unreachable_reason() == "https://huggingface.co did not answer within 3 s"


def test_any_http_answer_means_reachable(monkeypatch):
    for name in hub_check.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)

    def forbidden(request, timeout):
        raise urllib.error.HTTPError(request.full_url, 403, "Forbidden", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    assert hub_check.hub_reachable() is True


def test_random_weights_without_a_tokenizer_fail_before_the_data(capsys, tmp_path):
    code = main(["run", "--model", "random:pythia-14m", "--tasks", "piqa", "--output-dir", str(tmp_path)])
    assert code == 2 and "random weights and no tokenizer of its own: add --tokenizer" in capsys.readouterr().err


def test_a_model_in_the_cache_dir_of_model_args_is_found(empty_caches, tmp_path):
    own = tmp_path / "own-cache"
    (own / "models--org--tiny" / "snapshots" / ("d" * 40)).mkdir(parents=True)
    need = hub_check.HubNeed("model", "org/tiny", "model", "model org/tiny")
    assert not hub_check.in_local_cache(need)
    assert hub_check.in_local_cache(need, str(own))


def test_what_needs_the_hub(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    tasks = load_registry().expand(["piqa"])
    local = {"kind": "pretrained", "path": str(folder)}
    assert hub_check.hub_needs(tasks, tmp_path, local, None) == []  # a local model brings its own tokenizer
    needs = hub_check.hub_needs(tasks, tmp_path, local, "EleutherAI/gpt-neox-20b")
    assert [(n.what, n.repo_id) for n in needs] == [("tokenizer", "EleutherAI/gpt-neox-20b")]
    hub = resolve_model("pythia-70m")
    needs = hub_check.hub_needs(tasks, None, hub, str(folder))
    assert [(n.what, n.repo_id, n.repo_type) for n in needs] == [
        ("data", "baber/piqa", "dataset"), ("model", "EleutherAI/pythia-70m", "model")]
