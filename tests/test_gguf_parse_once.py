"""A GGUF model's file is parsed once per run: describing it before the load, then transformers' config, tokenizer
and weight reads share one ``gguf.GGUFReader`` (evalkit.models.gguf_loading.parsed_once), and what loads is the same
as without the sharing: config, token ids, every weight and the logits.

The model is a tiny seeded Llama written to a GGUF file here (a byte-level vocabulary of 262 tokens, five merges,
two layers), so the test needs no download and loads in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import gguf  # a test requirement (evalkit[test]), as for every GGUF test
import numpy as np
import pytest
import torch

from tests.conftest import DATA_DIR

MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
LAYER_PARTS = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
TOP_LEVEL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def _byte_tokens() -> list[str]:
    """GPT-2's byte-level alphabet: the printable bytes as themselves, the others shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shifted = printable[:], 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + shifted)
            shifted += 1
    return [chr(c) for c in chars]


def tiny_llama_gguf(path: Path) -> Path:
    """Write a seeded two-layer Llama (hidden size 32, float32 tensors under GGUF's names) with a byte-level BPE
    tokenizer to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens = _byte_tokens() + [m.replace(" ", "") for m in MERGES] + ["<|endoftext|>"]
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(32)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(MERGES)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])
    writer.add_bos_token_id(len(tokens) - 1)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_add_bos_token(False)
    for name, tensor in model.state_dict().items():
        if name.startswith("model.layers."):
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            module, kind = rest.rsplit(".", 1)
            name = f"blk.{layer}.{LAYER_PARTS[module]}.{kind}"
        else:
            name = TOP_LEVEL[name]
        writer.add_tensor(name, tensor.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def counted(monkeypatch):
    """Count the GGUF parses (``GGUFReader`` constructions) and tensor-name maps built."""
    counts = {"parses": 0, "name_maps": 0}
    real_reader, real_map = gguf.gguf_reader.GGUFReader, gguf.get_tensor_name_map

    class CountingReader(real_reader):
        def __init__(self, *args, **kwargs):
            counts["parses"] += 1
            super().__init__(*args, **kwargs)

    def counting_map(*args, **kwargs):
        counts["name_maps"] += 1
        return real_map(*args, **kwargs)

    monkeypatch.setattr(gguf.gguf_reader, "GGUFReader", CountingReader)
    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", counting_map)
    return counts


def _load_everything(path: Path):
    """What the model stage loads for a GGUF model: its description, tokenizer, config and weights."""
    from evalkit.models import gguf_file, hf_loading, tokenizer_loading
    from evalkit.models.resolve import resolve_model

    resolved = resolve_model(str(path))
    resolved["gguf"] = gguf_file.describe_gguf(path)
    tokenizer = tokenizer_loading.load_tokenizer(None, str(path), None, False, {})
    config = hf_loading.load_config(resolved)
    model, _ = hf_loading.load_model(resolved, "float32", "cpu")
    return resolved["gguf"], tokenizer, config, model


def test_one_parse_loads_the_same_model_as_five(tmp_path, counted):
    from evalkit.models import gguf_file
    from evalkit.models.gguf_loading import parsed_once

    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    plain = _load_everything(path)
    assert counted["parses"] == 5  # describe, tokenizer, config, from_pretrained's config, the weights
    assert counted["name_maps"] > 1  # one per submodule without the sharing
    counted.update(parses=0, name_maps=0)
    gguf_file.forget_parsed_gguf()
    with parsed_once():
        shared = _load_everything(path)
    assert counted == {"parses": 1, "name_maps": 1}
    assert shared[0] == plain[0] == {"architecture": "llama", "file_type": None, "tensor_types": {"F32": 21},
                                     "add_bos_token": False}
    assert shared[2].to_dict() == plain[2].to_dict()
    text = ["the cat in a hat", " the other"]
    assert shared[1].encode_batch(text) == plain[1].encode_batch(text) == [
        [83, 257, 220, 66, 64, 83, 220, 259, 260, 220, 71, 64, 83], [258, 220, 78, 83, 257, 81]]
    weights, reference = shared[3].state_dict(), plain[3].state_dict()
    assert weights.keys() == reference.keys() and len(weights) == 21
    assert all(torch.equal(weights[k], reference[k]) for k in weights)
    ids = torch.tensor(plain[1].encode_batch(text[:1]))
    assert torch.equal(shared[3](ids).logits, plain[3](ids).logits)


def test_the_sharing_ends_with_the_context(tmp_path, counted):
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    from evalkit.models import gguf_file
    from evalkit.models.gguf_loading import parsed_once

    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    reader, name_map, checkpoint = gguf.GGUFReader, gguf.get_tensor_name_map, hf_gguf.load_gguf_checkpoint
    with pytest.raises(RuntimeError, match="stop"):
        with parsed_once():
            gguf_file.parse_gguf(path)
            raise RuntimeError("stop")
    assert (gguf.GGUFReader, gguf.get_tensor_name_map, hf_gguf.load_gguf_checkpoint) == (reader, name_map, checkpoint)
    assert gguf_file._last_parsed is None  # the reader and its memory map are dropped
    first = gguf_file.parse_gguf(path)
    assert gguf_file.parse_gguf(path) is first
    tiny_llama_gguf(path)  # written again: another version of the file is parsed again
    assert gguf_file.parse_gguf(path) is not first
    assert counted["parses"] == 3
    gguf_file.forget_parsed_gguf()


def test_a_run_parses_its_gguf_model_once(tmp_path, counted):
    import evalkit

    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    results = evalkit.evaluate(path, "lambada_openai", data_dir=str(DATA_DIR), limit=2, bootstrap_iters=0,
                               use_cache=False, dtype="float32", device="cpu")
    assert counted == {"parses": 1, "name_maps": 1}
    assert results["model"]["kind"] == "gguf"
    assert len(results["tasks"]["lambada_openai"]["documents"]["loglikelihood"]) == 2


def _patched_names():
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    return gguf.GGUFReader, gguf.get_tensor_name_map, hf_gguf.load_gguf_checkpoint, gguf.gguf_reader.GGUFReader


def test_nested_contexts_restore_each_level_even_after_an_error(tmp_path, counted):
    from evalkit.models import gguf_file
    from evalkit.models.gguf_loading import parsed_once

    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    before = _patched_names()
    with parsed_once():
        outer = _patched_names()
        assert outer[:3] != before[:3] and outer[3] is before[3]  # the reader class itself is never replaced
        with pytest.raises(ValueError, match="inner"):
            with parsed_once():
                assert gguf.GGUFReader(path) is gguf.GGUFReader(str(path))  # one parse, str or Path
                raise ValueError("inner")
        assert _patched_names() == outer
        assert gguf_file._last_parsed is None
        assert gguf.GGUFReader(path) is gguf_file.parse_gguf(path)  # the outer level still shares
    assert _patched_names() == before and gguf_file._last_parsed is None
    assert counted["parses"] == 2  # the inner level's reader was dropped on its exit


def test_a_file_that_fails_to_load_restores_everything(tmp_path, counted):
    """A file cut short: transformers' read fails inside the context; the error escapes unchanged and nothing
    patched or parsed is left behind."""
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    from evalkit.models import gguf_file
    from evalkit.models.gguf_loading import parsed_once

    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    path.write_bytes(path.read_bytes()[:300])
    before = _patched_names()
    with pytest.raises(Exception) as plain:
        hf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
    with pytest.raises(type(plain.value)) as shared:
        with parsed_once():
            hf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
    assert str(shared.value) == str(plain.value)  # the reader's own error (an IndexError here), unchanged
    assert _patched_names() == before and gguf_file._last_parsed is None


def test_metadata_is_a_private_copy_and_a_rewritten_file_is_read_again(tmp_path, counted):
    """Inside the context, each metadata read gets its own copy (changing one changes no later read), a writable
    reader is never the shared one, and a file written again while the context is open is parsed again."""
    import transformers.modeling_gguf_pytorch_utils as hf_gguf

    from evalkit.models.gguf_loading import parsed_once

    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    plain = hf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
    counted.update(parses=0)
    with parsed_once():
        first = hf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
        assert first == plain
        first["config"]["num_hidden_layers"] = 99
        first["tokenizer"].clear()
        second = hf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
        assert second == plain and second["config"]["num_hidden_layers"] == 2
        assert counted["parses"] == 1
        assert gguf.GGUFReader(path, "r+") is not gguf.GGUFReader(path)  # writable: a reader of its own
        assert counted["parses"] == 2
        tiny_llama_gguf(path)  # written again (another ctime), same bytes
        third = hf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
        assert third == plain and counted["parses"] == 3
