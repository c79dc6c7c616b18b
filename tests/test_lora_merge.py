"""LoRA adapters merged into the base weights (engine.lora: merged): the merged tensors against PEFT's own
merge_and_unload, what cannot be merged, and vLLM's CPU engine serving merged adapters (greedy tokens equal
to its native LoRA kernels and to HF + PEFT)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cliffdata.backends import GenerationRequest, Sampling, make_backend
from cliffdata.backends.lora_merge import MergedAdapters, read_adapter
from cliffdata.config.generate import EngineConfig, resolve_lora
from conftest import build_model

HAS_VLLM = importlib.util.find_spec("vllm") is not None
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def save_base(folder, seed=0):
    model = build_model(96, seed=seed)
    model.save_pretrained(folder)
    return model


def save_adapter(base, folder, seed=1, **lora):
    """A PEFT adapter with random A and B (init_lora_weights=False), so that B·A is not zero."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "init_lora_weights": False, **lora})
    model = build_model(base.config.vocab_size)           # (seeds torch itself)
    torch.manual_seed(seed)
    model = get_peft_model(model, cfg)
    model.base_model.model.load_state_dict(base.state_dict(), strict=False)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("lora", [{}, {"use_rslora": True}, {"rank_pattern": {"q_proj": 2}, "alpha_pattern": {"v_proj": 3}},
                                  {"target_modules": ["q_proj", "down_proj"]}])
def test_merged_weights_equal_peft_merge_and_unload(tmp_path, lora):
    base = save_base(tmp_path / "base")
    peft_model = save_adapter(base, tmp_path / "ad", **lora)
    merged = MergedAdapters(tmp_path / "base", {"x": str(tmp_path / "ad")})
    expected = peft_model.merge_and_unload().state_dict()
    got = dict(merged.weights("x"))
    targets = lora.get("target_modules", TARGETS)
    assert sorted(got) == sorted(n for n in expected if n.rsplit(".", 2)[-2] in targets)   # the targets, nothing more
    for name, w in got.items():
        assert torch.allclose(w, expected[name], atol=1e-6), name
        assert not torch.equal(w, base.state_dict()[name]), name                            # the adapter moved it
    for name, w in merged.weights(None):                                                    # the base, restored
        assert torch.equal(w, base.state_dict()[name])


def test_sharded_base_folder(tmp_path):
    base = build_model(96)
    base.save_pretrained(tmp_path / "base", max_shard_size="200KB")
    assert (tmp_path / "base" / "model.safetensors.index.json").exists()
    peft_model = save_adapter(base, tmp_path / "ad")
    expected = peft_model.merge_and_unload().state_dict()
    for name, w in MergedAdapters(tmp_path / "base", {"x": str(tmp_path / "ad")}).weights("x"):
        assert torch.allclose(w, expected[name], atol=1e-6)


@pytest.mark.parametrize("field,value", [("use_dora", True), ("modules_to_save", ["lm_head"]), ("lora_bias", True),
                                         ("fan_in_fan_out", True), ("peft_type", "IA3")])
def test_refuses_what_does_not_merge_naming_file_and_field(tmp_path, field, value):
    base = save_base(tmp_path / "base")
    save_adapter(base, tmp_path / "ad")
    cfg_path = tmp_path / "ad" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[field] = value
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"adapter_config.json: {field}=.*engine.lora: native"):
        read_adapter(tmp_path / "ad")


def test_refuses_an_adapter_of_another_model_and_a_folder_without_safetensors(tmp_path):
    base = save_base(tmp_path / "base")
    save_adapter(base, tmp_path / "ad")
    from transformers import LlamaConfig, LlamaForCausalLM
    small = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    small.save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="an adapter of another model"):
        MergedAdapters(tmp_path / "small", {"x": str(tmp_path / "ad")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no model.safetensors"):
        MergedAdapters(tmp_path / "empty", {"x": str(tmp_path / "ad")})
    with pytest.raises(ValueError, match="unknown adapter 'y'"):
        MergedAdapters(tmp_path / "base", {"x": str(tmp_path / "ad")}).weights("y")


def test_engine_lora_setting(monkeypatch):
    with pytest.raises(ValueError, match="engine.lora must be one of .*got 'fused'"):
        EngineConfig(lora="fused")
    for cuda, expected in [(True, "native"), (False, "merged")]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        assert resolve_lora("auto") == expected and EngineConfig().resolved().lora == expected
        assert resolve_lora("native") == "native" and EngineConfig(lora="merged").resolved().lora == "merged"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vllm cannot be imported here")
def test_vllm_merged_adapters_decode_as_native_lora_and_peft(tmp_path, tiny_model_dir):
    """vLLM-CPU on the tiny model with two random adapters: the merged engine's greedy tokens for the base and
    each adapter, in one mixed batch (two swaps and back), equal the native LoRA engine's and HF + PEFT's;
    seeded sampled rows equal across the two engines too."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapters = {name: str(tmp_path / name) for name in ("a", "b")}
    for seed, folder in enumerate(adapters.values(), start=1):
        save_adapter(base, folder, seed=seed, lora_alpha=32)
    prompts = [(1, 24, 22, 8), (1, 24, 22, 8, 21, 78, 52), (1, 40)]
    requests = [GenerationRequest(p, adapter=a) for a in (None, "a", "b", None, "a") for p in prompts]
    greedy = Sampling(temperature=0.0, max_new_tokens=10)
    hf = make_backend("hf", str(tiny_model_dir), dtype="float32", adapters=adapters).generate(requests, greedy)
    assert hf[0:3] != hf[3:6] and hf[3:6] != hf[6:9] and hf[0:3] == hf[9:12]   # base, a, b differ; base again
    out = {}
    for lora in ("native", "merged"):
        be = make_backend("vllm", str(tiny_model_dir), dtype="float32", seed=0, enforce_eager=True, max_model_len=256,
                          adapters=adapters, lora=lora)
        try:
            sampled = [GenerationRequest(p, n=3, seed=7 + i, adapter=a) for i, (p, a) in
                       enumerate((p, a) for a in ("b", None) for p in prompts)]
            out[lora] = (be.generate(requests, greedy), be.generate(sampled, Sampling(temperature=1.0, max_new_tokens=8)))
            if lora == "merged":
                assert be.loaded is None              # sampled call: "b" (loaded by the greedy call) first, then the base
                assert [be.batch_key(a) for a in (None, "a")] == [None, "a"]
        finally:
            be.close()
    assert out["merged"][0] == out["native"][0] == hf
    assert out["merged"][1] == out["native"][1]
