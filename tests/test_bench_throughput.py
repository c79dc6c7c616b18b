"""bench/throughput.py: the naive HF arm honours the backend contract, the hit rate reads vLLM's counters."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

from cliffdata.backends import GenerationRequest, Sampling, make_backend

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "bench/throughput.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_throughput"] = bench
spec.loader.exec_module(bench)


def test_naive_hf_contract_and_seeding(tiny_model_dir):
    naive = bench.naive_hf_backend(str(tiny_model_dir), "float32")
    sampling = Sampling(temperature=1.0, max_new_tokens=12)
    reqs = [GenerationRequest((1, 24, 22, 40), n=3, seed=5), GenerationRequest((1, 24, 22), n=2, seed=6)]
    out = naive.generate(reqs, sampling)
    assert [len(g.token_ids) for g in out] == [3, 2]
    for g in out:
        for toks, reason in zip(g.token_ids, g.finish_reasons):
            assert 0 < len(toks) <= 12
            assert (reason == "stop") == (toks[-1] in naive.eos_token_ids)
            assert all(t not in naive.eos_token_ids for t in toks[:-1])     # cut at the first EOS
    assert naive.generate(reqs, sampling) == out                               # seeded per request
    assert naive.generate([GenerationRequest((1, 24, 22, 40), n=3, seed=7)], sampling)[0] != out[0]
    # greedy agrees with our HF backend (same model, same dtype): the arms sample the same model
    greedy = Sampling(temperature=0.0, max_new_tokens=6)
    ours = make_backend("hf", str(tiny_model_dir), dtype="float32")
    assert naive.generate(reqs[:1], greedy)[0].token_ids[0] == ours.generate(reqs[:1], greedy)[0].token_ids[0]


def test_prefix_cache_hit_rate_sums_engines():
    metrics = [SimpleNamespace(name="vllm:prefix_cache_hits", value=30), SimpleNamespace(name="vllm:prefix_cache_queries", value=40),
               SimpleNamespace(name="vllm:prefix_cache_hits", value=10), SimpleNamespace(name="vllm:prefix_cache_queries", value=40),
               SimpleNamespace(name="vllm:num_requests_running", value=3)]
    backend = SimpleNamespace(llm=SimpleNamespace(get_metrics=lambda: metrics))
    assert bench.prefix_cache_hit_rate(backend) == {"prefix_cache_hits": 40, "prefix_cache_queries": 80,
                                                    "prefix_cache_hit_rate": 0.5}
    empty = SimpleNamespace(llm=SimpleNamespace(get_metrics=lambda: []))
    assert bench.prefix_cache_hit_rate(empty)["prefix_cache_hit_rate"] is None
