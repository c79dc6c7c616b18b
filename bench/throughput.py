"""Rollout throughput side by side: naive HF, our HF backend, vLLM with and without prefix caching.

    python bench/throughput.py --model models/base --json bench/results/throughput.json [--traces 2] [--num-rollouts 4]

One workload, built once: `--traces` word1 traces of the embedded default (its one-shot prompt,
sampled with the project's `sample_traces` on the deterministic HF backend at `sample.sampling`),
every position -1 … T-2, N rollouts each at `rollouts.sampling`, each request seeded from (seed,
trace, position). Every arm gets exactly these requests, one `resample` call per trace (as the
exhaustive `rollouts` stage submits them), in its own subprocess one after another (fresh memory,
its own vLLM metrics registry):

    naive_hf       transformers `generate(num_return_sequences=N)` per prefix: no batching across
                   prefixes, the prompt copied N times before prefill, no cache reuse
    hf             cliffdata's HF backend: prefixes batched, each prefilled once, its KV expanded to N rows
    vllm           cliffdata's vLLM backend, automatic prefix caching on
    vllm_no_cache  the same engine settings with prefix caching off
    vllm_bfloat16, vllm_float32
                   the vllm arm with that dtype instead of `engine.dtype` (auto resolves per machine:
                   config.resolve_dtype); `--arms vllm_bfloat16 vllm_float32` compares the two

HF arms run with 1 torch thread (OMP_NUM_THREADS=1, the robust setting on this shared 2-core box,
../shared/notes/cpu-inference.md §2.3); vLLM binds its OMP threads to every core (the backend's
CPU default). Reported per arm: generated tokens, wall seconds of the rollouts (engine start-up
apart), tokens/s, the ratio to naive_hf, the mean potential (a sanity check: every arm samples the
same distribution) and, for vLLM, the prefix cache hit rate = vllm:prefix_cache_hits /
vllm:prefix_cache_queries (prompt tokens, from `LLM.get_metrics()`). The JSON's top-level
`vllm_over_naive_hf` is the vllm arm's tokens/s over naive_hf's; a Markdown table goes next to it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = ("naive_hf", "hf", "vllm", "vllm_no_cache", "vllm_bfloat16", "vllm_float32")
HF_THREADS = 1


def naive_hf_backend(model_path: str, dtype: str):
    """`generate` per request: the baseline every HF tutorial writes (defined here, not in the library)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from cliffdata.backends import Backend, Generation

    class NaiveHFBackend(Backend):
        name = "naive_hf"

        def __init__(self):
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
            eos = self.model.generation_config.eos_token_id or self.model.config.eos_token_id
            self.eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)

        @torch.inference_mode()
        def generate(self, requests, sampling):
            out = []
            for req in requests:
                greedy = sampling.temperature == 0
                # top_k=0 spelled out: the model's generation_config would otherwise apply top-k 50
                config = GenerationConfig(do_sample=not greedy, temperature=sampling.temperature if not greedy else None,
                                          top_p=sampling.top_p if not greedy else None,
                                          top_k=sampling.top_k if not greedy else None,
                                          max_new_tokens=sampling.max_new_tokens,
                                          num_return_sequences=1 if greedy else req.n,   # greedy rows are equal
                                          eos_token_id=list(self.eos_token_ids), pad_token_id=self.eos_token_ids[0])
                torch.manual_seed(req.seed)
                ids = torch.tensor([req.prompt_ids])
                seqs = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
                rows, reasons = [], []
                for row in seqs[:, ids.shape[1]:].tolist():
                    cut = next((j + 1 for j, t in enumerate(row) if t in self.eos_token_ids), None)
                    rows.append(tuple(row[:cut] if cut else row))
                    reasons.append("stop" if cut else "length")
                if greedy:
                    rows, reasons = rows * req.n, reasons * req.n
                out.append(Generation(tuple(rows), tuple(reasons)))
            return out

    return NaiveHFBackend()


def open_arm(arm: str, model_path: str, engine, seed: int):
    """The backend of one arm and the settings it runs with (written into the results)."""
    import torch

    from cliffdata.backends import make_backend

    engine = engine.resolved()
    if arm in ("vllm_bfloat16", "vllm_float32"):
        engine = dataclasses.replace(engine, dtype=arm.removeprefix("vllm_"))
    if arm in ("naive_hf", "hf"):
        torch.set_num_threads(HF_THREADS)
        settings = {"dtype": engine.dtype, "torch_threads": torch.get_num_threads()}
        if arm == "naive_hf":
            return naive_hf_backend(model_path, engine.dtype), {**settings, "call": "generate(num_return_sequences=N) per prefix"}
        return (make_backend("hf", model_path, dtype=engine.dtype, max_batch=engine.hf_max_batch),
                {**settings, "max_batch_rows": engine.hf_max_batch, "call": "batched prefixes, one prefill each, KV x N"})
    caching = arm != "vllm_no_cache"
    backend = make_backend("vllm", model_path, dtype=engine.dtype, seed=seed, enforce_eager=engine.enforce_eager,
                           max_model_len=engine.max_model_len, enable_prefix_caching=caching,
                           block_size=engine.block_size, log_stats=True)
    settings = {"dtype": engine.dtype, "enable_prefix_caching": caching, "block_size": engine.block_size,
                "enforce_eager": engine.enforce_eager, "max_model_len": engine.max_model_len,
                "omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
                "kv_cache_space_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
                "call": "all prefixes of a trace in one LLM.generate, n=N"}
    return backend, settings


def prefix_cache_hit_rate(backend) -> dict:
    """Token-level hit rate of vLLM's prefix cache from its Prometheus counters (summed over engines)."""
    totals = {"vllm:prefix_cache_hits": 0, "vllm:prefix_cache_queries": 0}
    for metric in backend.llm.get_metrics():
        if metric.name in totals:
            totals[metric.name] += metric.value
    hits, queries = totals["vllm:prefix_cache_hits"], totals["vllm:prefix_cache_queries"]
    return {"prefix_cache_hits": int(hits), "prefix_cache_queries": int(queries),
            "prefix_cache_hit_rate": round(hits / queries, 4) if queries else None}


def run_arm(arm: str, workload_path: Path, out_path: Path) -> None:
    """One arm in this process: every trace's positions through `resample`, timed."""
    from transformers import AutoTokenizer

    from cliffdata.backends import Sampling
    from cliffdata.config.load import load_params
    from cliffdata.generate.sampling import resample

    work = json.loads(workload_path.read_text())
    params = load_params(ROOT / "params.yaml")
    sampling = Sampling(**work["sampling"])
    tokenizer = AutoTokenizer.from_pretrained(work["model"])
    started = time.perf_counter()
    backend, settings = open_arm(arm, work["model"], params.engine, work["seed"])
    startup = time.perf_counter() - started
    num_tokens = num_correct = num_sequences = 0
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for trace in work["traces"]:
        prefixes = [(trace["prompt_ids"], trace["response_ids"][:i + 1]) for i in trace["positions"]]
        results = resample(backend, tokenizer, prefixes, work["num_rollouts"], sampling, trace["seeds"],
                           trace["gold"], trace["answer_format"])
        num_tokens += sum(r.num_generated_tokens for r in results)
        num_correct += sum(r.num_correct for r in results)
        num_sequences += sum(r.num_rollouts for r in results)
    wall = time.perf_counter() - started
    result = {"arm": arm, "settings": settings, "startup_seconds": round(startup, 1), "wall_seconds": round(wall, 2),
              "num_generated_tokens": num_tokens, "num_sequences": num_sequences,
              "tokens_per_second": round(num_tokens / wall, 1), "mean_potential": round(num_correct / num_sequences, 4),
              # the box is shared: the 1-minute load average says how busy it was around this arm
              "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    if arm.startswith("vllm"):
        result.update(prefix_cache_hit_rate(backend))
    backend.close()
    out_path.write_text(json.dumps(result))


def build_workload(model: str, num_traces: int, num_rollouts: int, seed: int) -> dict:
    """Sample the traces (HF backend, seeded) and list every rollout request of the benchmark."""
    import torch
    from transformers import AutoTokenizer

    from cliffdata.backends import make_backend, request_seed
    from cliffdata.config.load import load_params
    from cliffdata.config.problems import SourceConfig
    from cliffdata.generate.sampling import sample_traces
    from cliffdata.problems import generate_arith
    from cliffdata.search.rollouts import scored_positions

    torch.set_num_threads(HF_THREADS)
    params = load_params(ROOT / "params.yaml")
    arith = next(s for s in params.problems.sources if s.dataset == "arith")
    prompt = arith.family_prompts.get("word1", arith.prompt)
    problems = generate_arith(SourceConfig(dataset="arith", seed=seed, families={"word1": num_traces},
                                           family_prompts={"word1": prompt}, prompt=prompt, answer_format="hash"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    with make_backend("hf", model, dtype=params.engine.resolved().dtype) as backend:
        traces = sample_traces(problems, params.prompts, tokenizer, backend, params.sample.sampling,
                               num_samples=1, seed=seed)
    golds = {p["problem_id"]: p for p in problems}
    work = {"model": model, "seed": seed, "num_rollouts": num_rollouts,
            "sampling": vars(params.rollouts.sampling), "traces": []}
    for t in traces:
        positions = scored_positions(len(t["response_ids"]), params.rollouts.score_empty_prefix)
        work["traces"].append({"trace_id": t["trace_id"], "prompt_ids": t["prompt_ids"], "response_ids": t["response_ids"],
                               "gold": golds[t["problem_id"]]["answer"], "answer_format": "hash",
                               "is_correct": t["is_correct"], "positions": positions,
                               "seeds": [request_seed(seed, t["trace_id"], i) for i in positions]})
    return work


def cpu_capability() -> str:
    """torch's CPU kernel path and the dtype `engine.dtype: auto` runs on this machine."""
    import torch

    from cliffdata.config.generate import resolve_dtype

    return f"{torch.backends.cpu.get_cpu_capability()}, engine.dtype auto: {resolve_dtype('auto')}"


def markdown(report: dict) -> str:
    w = report["workload"]
    lines = [f"Workload: {w['num_traces']} word1 traces ({', '.join(map(str, w['trace_tokens']))} tokens), "
             f"{w['num_requests']} prefixes x N = {w['num_rollouts']}, T = {w['sampling']['temperature']}, "
             f"max {w['sampling']['max_new_tokens']} new tokens; {report['machine']}.", "",
             "| arm | settings | generated tokens | wall (s) | tok/s | vs naive HF | prefix cache hit rate | mean potential "
             "| load avg (before → after) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in [a for a in ARMS if a in report["arms"]]:
        r = report["arms"][arm]
        s = r["settings"]
        desc = (f"{s['dtype']}, {s['torch_threads']} thread" if "torch_threads" in s else
                f"{s['dtype']}, prefix caching {'on' if s['enable_prefix_caching'] else 'off'}, block {s['block_size']}, "
                f"eager {s['enforce_eager']}, OMP bind {s['omp_threads_bind']}")
        hit = r.get("prefix_cache_hit_rate")
        ratio = "" if r.get("ratio_to_naive_hf") is None else f"{r['ratio_to_naive_hf']:.2f}x"
        lines.append(f"| {arm} | {desc} | {r['num_generated_tokens']:,} | {r['wall_seconds']:.1f} | "
                     f"{r['tokens_per_second']:.0f} | {ratio} | "
                     f"{'' if hit is None else f'{hit:.3f}'} | {r['mean_potential']:.3f} | "
                     f"{r['load_average_1m'][0]:.1f} → {r['load_average_1m'][1]:.1f} |")
    startups = ", ".join(f"{a} {r['startup_seconds']:.0f} s" for a, r in report["arms"].items())
    ratios = "; ".join(f"`{k}` = {report[k]:.2f}" for k in ("vllm_over_naive_hf", "float32_over_bfloat16")
                       if report.get(k) is not None)
    lines += ["", f"{ratios}{'; ' if ratios else ''}total wall {report['total_seconds']:.0f} s "
              f"(start-ups: {startups}; trace sampling and model loads included)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models/base"))
    ap.add_argument("--traces", type=int, default=2)
    ap.add_argument("--num-rollouts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1, help="problem and rollout seed (default 1: not the pipeline's)")
    # vLLM first: an engine that fails to start fails the run before the slow HF arms
    ap.add_argument("--arms", nargs="+", default=["vllm", "vllm_no_cache", "hf", "naive_hf"], choices=ARMS)
    ap.add_argument("--json", default=str(ROOT / "bench/results/throughput.json"))
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)       # internal: run one arm in this process
    ap.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        run_arm(args.arm, args.workload, args.out)
        return

    os.environ["OMP_NUM_THREADS"] = str(HF_THREADS)      # HF arms; the vLLM backend binds its own OMP threads
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    work = build_workload(str(Path(args.model).resolve()), args.traces, args.num_rollouts, args.seed)
    arms = {}
    with tempfile.TemporaryDirectory() as tmp:
        workload_path = Path(tmp) / "workload.json"
        workload_path.write_text(json.dumps(work))
        for arm in args.arms:
            out = Path(tmp) / f"{arm}.json"
            print(f"[throughput] {arm} ...", flush=True)
            subprocess.run([sys.executable, __file__, "--arm", arm, "--workload", str(workload_path), "--out", str(out)],
                           check=True)
            arms[arm] = json.loads(out.read_text())
            print(f"[throughput] {arm}: {arms[arm]['num_generated_tokens']} tokens in {arms[arm]['wall_seconds']} s "
                  f"= {arms[arm]['tokens_per_second']} tok/s", flush=True)
    base = arms.get("naive_hf", {}).get("tokens_per_second")
    for r in arms.values():
        r["ratio_to_naive_hf"] = round(r["tokens_per_second"] / base, 2) if base else None
    report = {
        "vllm_over_naive_hf": arms["vllm"]["ratio_to_naive_hf"] if base and "vllm" in arms else None,
        "float32_over_bfloat16": (round(arms["vllm_float32"]["tokens_per_second"] / arms["vllm_bfloat16"]["tokens_per_second"], 2)
                                  if {"vllm_float32", "vllm_bfloat16"} <= set(arms) else None),
        "workload": {"num_traces": len(work["traces"]), "trace_tokens": [len(t["response_ids"]) for t in work["traces"]],
                     "num_requests": sum(len(t["positions"]) for t in work["traces"]),
                     "num_rollouts": work["num_rollouts"], "sampling": work["sampling"], "seed": work["seed"],
                     "model": Path(work["model"]).name, "family": "word1", "positions": "all (-1 ... T-2)"},
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()} ({cpu_capability()}), no GPU",
        "arms": arms, "total_seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    Path(args.json).with_suffix(".md").write_text(table)
    print(table)
    print(json.dumps({k: report[k] for k in ("vllm_over_naive_hf", "float32_over_bfloat16")}))


if __name__ == "__main__":
    main()
