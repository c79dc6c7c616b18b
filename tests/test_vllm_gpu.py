"""The vLLM backend's CUDA path against a stand-in `vllm` module (no GPU here): what it asks the engine
for (prefix caching, memory fraction, LoRA), and what each request carries (token ids, n, its seed,
its adapter)."""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest

from cliffdata.backends import GenerationRequest, Sampling, open_backend
from cliffdata.config.generate import EngineConfig
from test_lora_merge import save_adapter


@dataclass(frozen=True)
class LoRARequest:                      # vllm.lora.request.LoRARequest(lora_name, lora_int_id, lora_path)
    lora_name: str
    lora_int_id: int
    lora_path: str


class FakeLLM:
    """Records the engine kwargs and every generate call; answers each request with n scripted rows."""
    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        hf_config = types.SimpleNamespace(eos_token_id=2)
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(hf_config=hf_config),
                                                shutdown=lambda: None)
        FakeLLM.instances.append(self)

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "weights_iterator" in kwargs:
            kwargs["weights_iterator"] = dict(kwargs["weights_iterator"])
        self.calls.append({"rpc": method, "kwargs": kwargs})
        return [None]

    def reset_prefix_cache(self):
        self.calls.append({"rpc": "reset_prefix_cache"})
        return True

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        self.calls.append({"prompts": prompts, "params": params, "lora_request": lora_request})
        outs = []
        for prompt, p in zip(prompts, params):
            # completions deliberately out of index order: the backend must sort them
            k = len(prompt["prompt_token_ids"])
            comps = [types.SimpleNamespace(index=j, token_ids=[10 + k, 20 + j] + ([2] if j % 2 == 0 else []),
                                           finish_reason="stop" if j % 2 == 0 else "length")
                     for j in reversed(range(p.kwargs["n"]))]
            outs.append(types.SimpleNamespace(prompt_token_ids=prompt["prompt_token_ids"], outputs=comps))
        return outs


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` package with LLM, SamplingParams, inputs.TokensPrompt and lora.request.LoRARequest."""
    import torch

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = LoRARequest
    for name, mod in {"vllm": vllm, "vllm.inputs": inputs, "vllm.lora": lora, "vllm.lora.request": lora_request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    # the CPU path sets these with setdefault: keep them from leaking into other tests
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    FakeLLM.instances.clear()

    def on(gpu: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    return on


def adapter_dir(tmp_path, name: str, rank: int):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return str(folder)


PAPER_ENGINE = EngineConfig(backend="vllm", dtype="bfloat16", enforce_eager=False, max_model_len=8192,
                            gpu_memory_utilization=0.9, enable_prefix_caching=True, block_size=None)


def test_cuda_engine_settings_and_per_request_seeds(fake_vllm, tmp_path):
    fake_vllm(True)
    adapters = {"uncertain": adapter_dir(tmp_path, "u", 12), "all": adapter_dir(tmp_path, "a", 8)}
    backend = open_backend(PAPER_ENGINE, "Qwen/Qwen3-8B", seed=3, adapters=adapters)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs == {"model": "Qwen/Qwen3-8B", "dtype": "bfloat16", "seed": 3, "enforce_eager": False,
                          "max_model_len": 8192, "enable_prefix_caching": True, "disable_log_stats": True,
                          "gpu_memory_utilization": 0.9, "enable_lora": True, "max_loras": 2, "max_lora_rank": 16}
    assert backend.deterministic and backend.eos_token_ids == (2,)

    reqs = [GenerationRequest((1, 5, 7), n=4, seed=11), GenerationRequest((1, 5), n=2, seed=12, adapter="uncertain"),
            GenerationRequest((1, 9), n=1, seed=13, adapter="all")]
    out = backend.generate(reqs, Sampling(temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=4096))
    # what reached the engine, over however many calls (the backend may split a batch by adapter)
    sent = []
    for call in llm.calls:
        loras = call["lora_request"]
        loras = loras if isinstance(loras, list) else [loras] * len(call["prompts"])
        sent += [(p["prompt_token_ids"], sp.kwargs, lo) for p, sp, lo in zip(call["prompts"], call["params"], loras)]
    sent.sort(key=lambda x: x[1]["seed"])
    assert [ids for ids, _, _ in sent] == [[1, 5, 7], [1, 5], [1, 9]]                     # token ids, no text
    assert [kw for _, kw, _ in sent] == [
        {"n": n, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_tokens": 4096, "seed": s}
        for n, s in ((4, 11), (2, 12), (1, 13))]                                          # one seed per request
    lora = [lo for _, _, lo in sent]
    assert lora[0] is None and lora[1].lora_name == "uncertain" and lora[2].lora_name == "all"
    assert sorted(r.lora_int_id for r in backend.lora_requests.values()) == [1, 2]        # unique ids
    assert lora[1].lora_path == adapters["uncertain"]
    # two engine calls: the base alone, both adapters together (one LoRARequest per prompt)
    assert [len(c["prompts"]) for c in llm.calls] == [1, 2] and llm.calls[0]["lora_request"] is None
    assert [lo.lora_name for lo in llm.calls[1]["lora_request"]] == ["uncertain", "all"]
    assert [backend.batch_key(a) for a in (None, "uncertain", "all")] == [False, True, True]
    # results in request order, completions in index order, finish reasons mapped
    assert [len(g.token_ids) for g in out] == [4, 2, 1]
    assert out[0].token_ids[:2] == ((13, 20, 2), (13, 21)) and out[0].finish_reasons[:2] == ("stop", "length")
    assert out[1].token_ids[0][0] == 12 and out[2].token_ids[0][0] == 12
    with pytest.raises(ValueError, match="unknown adapters"):
        backend.generate([GenerationRequest((1,), n=1, adapter="missing")], Sampling(temperature=0.7))


def test_cpu_path_seeds_requests_without_chunked_prefill_or_memory_fraction(fake_vllm):
    fake_vllm(False)
    backend = open_backend(EngineConfig(backend="vllm", block_size=32), "models/base", seed=0)
    llm = FakeLLM.instances[-1]
    assert "gpu_memory_utilization" not in llm.kwargs and llm.kwargs["block_size"] == 32
    assert llm.kwargs["enable_chunked_prefill"] is False
    assert "enable_lora" not in llm.kwargs and backend.deterministic
    backend.generate([GenerationRequest((1, 5), n=3, seed=11)], Sampling(temperature=0.7))
    assert llm.calls[-1]["params"][0].kwargs["seed"] == 11 and llm.calls[-1]["lora_request"] is None   # base model


def test_cpu_merged_adapters_swap_weights_before_each_models_call(fake_vllm, tmp_path, tiny_model_dir, monkeypatch):
    """engine.lora auto on a CPU: no LoRA kernels; each model's rows in a call of their own, its merged weights
    reloaded in place before it and the prefix cache emptied after; the model loaded last goes first."""
    from transformers import AutoModelForCausalLM

    from cliffdata.backends.lora_merge import MergedAdapters

    fake_vllm(False)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapters = {"all": str(tmp_path / "a"), "uncertain": str(tmp_path / "u")}
    for seed, folder in enumerate(adapters.values(), start=1):
        save_adapter(base, folder, seed=seed)
    backend = open_backend(EngineConfig(backend="vllm"), str(tiny_model_dir), seed=0, adapters=adapters)
    llm = FakeLLM.instances[-1]
    assert "enable_lora" not in llm.kwargs and backend.lora == "merged"
    reqs = [GenerationRequest((1, 5), seed=1, adapter="uncertain"), GenerationRequest((1, 6), seed=2),
            GenerationRequest((1, 7), seed=3, adapter="uncertain"), GenerationRequest((1, 8), seed=4, adapter="all")]
    out = backend.generate(reqs, Sampling(temperature=0.7))
    assert [len(g.token_ids) for g in out] == [1, 1, 1, 1] and out[1].token_ids[0][0] == 12

    def steps(calls):
        return [c["rpc"] if "rpc" in c else [p["prompt_token_ids"] for p in c["prompts"]] for c in calls]
    # nothing loaded yet (the engine holds the base): the base's rows first, no swap; then each adapter
    assert steps(llm.calls) == [[[1, 6]], "reload_weights", "reset_prefix_cache", [[1, 5], [1, 7]],
                                "reload_weights", "reset_prefix_cache", [[1, 8]]]
    assert all(c.get("lora_request") is None for c in llm.calls)
    merged = MergedAdapters(tiny_model_dir, adapters)
    first = llm.calls[1]["kwargs"]
    assert first["is_checkpoint_format"] is True
    assert first["weights_iterator"].keys() == dict(merged.weights("uncertain")).keys()
    assert all(torch_equal(first["weights_iterator"][k], w) for k, w in merged.weights("uncertain"))
    # a second call starts with the model loaded now ("all"), then swaps once
    n = len(llm.calls)
    backend.generate([GenerationRequest((1, 9), seed=5), GenerationRequest((1, 10), seed=6, adapter="all")],
                     Sampling(temperature=0.7))
    assert steps(llm.calls[n:]) == [[[1, 10]], "reload_weights", "reset_prefix_cache", [[1, 9]]]
    assert all(torch_equal(llm.calls[n + 1]["kwargs"]["weights_iterator"][k], w) for k, w in merged.weights(None))
    assert [backend.batch_key(a) for a in (None, "all", "uncertain")] == [None, "all", "uncertain"]
    with pytest.raises(ValueError, match=r"unknown adapters \['x'\] \(opened with \['all', 'uncertain'\]\)"):
        backend.generate([GenerationRequest((1,), adapter="x")], Sampling(temperature=0.7))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ValueError, match="engine.lora: merged swaps weights in the engine's own process"):
        open_backend(EngineConfig(backend="vllm", lora="merged"), str(tiny_model_dir), adapters=adapters)


def torch_equal(a, b):
    import torch
    return torch.equal(a, b)


def test_greedy_draws_one_row_and_repeats_it(fake_vllm):
    fake_vllm(True)
    backend = open_backend(PAPER_ENGINE, "m", seed=0)
    out = backend.generate([GenerationRequest((1,), n=5, seed=1)], Sampling(temperature=0.0))
    assert FakeLLM.instances[-1].calls[-1]["params"][0].kwargs["n"] == 1
    assert len(set(out[0].token_ids)) == 1 and len(out[0].token_ids) == 5
