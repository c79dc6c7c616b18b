"""Can one vLLM call serve several LoRA adapters exactly, and how fast do adapters decode? dpo_eval's workload
(greedy, its problems, the trained adapters of models/adapters) four ways, on the pipeline's params.yaml engine
(`engine.lora: native` for the first three arms, `merged` for the last, two engines one after the other):

    python bench/lora_mix.py --json bench/results/lora_mix.json

  alone   one call per model (base, then each adapter): the baseline
  mixed   one call with every adapter's requests (vLLM: one lora_request per prompt)
  base+1  one call mixing base rows with one adapter's rows (the case backends/vllm.py splits because it
          applied the adapter to the base rows)
  merged  no LoRA kernels: each adapter's weights merged into the base and swapped into the engine before its
          call (engine.lora: merged, what dpo_eval and cliff_count do on a CPU)

Reports, per adapter, how many of the problems' greedy tokens equal between alone and mixed and between alone
and merged, the base rows that stay equal when mixed with an adapter, and the wall seconds of each arm. The prefix cache is emptied
before each arm: otherwise the mixed arm (run second) finds every (prompt, adapter) prefill cached by the
alone arm and measures 1.8x faster than alone, not 1.19x.
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--json", default=str(ROOT / "bench/results/lora_mix.json"))
args = ap.parse_args()
from transformers import AutoTokenizer
from cliffdata import schema
from cliffdata.backends import GenerationRequest, Sampling, open_backend
from cliffdata.config.load import load_params
from cliffdata.dpo.evaluate import eval_problems, trained_variants
from cliffdata.prompts import encode_prompt
from vllm import SamplingParams
from vllm.inputs import TokensPrompt

params = load_params()
training = schema.read("problems", schema.PATHS["problems"]).to_pylist()
problems, _ = eval_problems(params.dpo_eval.sources, training, params.prompts)
runs = trained_variants(params.dpo_train.variants)
adapters = {v: f"models/adapters/{v}" for v in runs}
tok = AutoTokenizer.from_pretrained("models/base")
prompts = [TokensPrompt(prompt_token_ids=list(encode_prompt(tok, params.prompts[p["prompt"]], p["question"]))) for p in problems]
sp = SamplingParams(temperature=0.0, max_tokens=params.dpo_eval.max_new_tokens)
native = dataclasses.replace(params.engine, lora="native")
with open_backend(native, "models/base", seed=0, adapters=adapters) as be:
    llm, lr = be.llm, be.lora_requests
    llm.reset_prefix_cache()
    t = time.perf_counter()
    alone, alone_seconds = {}, {}
    for name in [None, *sorted(adapters)]:
        started = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False, lora_request=lr.get(name) if name else None)
        alone[name] = [tuple(o.outputs[0].token_ids) for o in outs]
        alone_seconds[name or "base"] = round(time.perf_counter() - started, 1)
    t_alone = time.perf_counter() - t
    names = sorted(adapters)
    llm.reset_prefix_cache()
    t = time.perf_counter()
    outs = llm.generate(prompts * len(names), [sp] * (len(prompts) * len(names)), use_tqdm=False,
                        lora_request=[lr[n] for n in names for _ in prompts])
    t_mixed = time.perf_counter() - t
    mixed = {n: [tuple(o.outputs[0].token_ids) for o in outs[i * len(prompts):(i + 1) * len(prompts)]] for i, n in enumerate(names)}
    llm.reset_prefix_cache()
    t = time.perf_counter()
    outs2 = llm.generate(prompts * 2, [sp] * (2 * len(prompts)), use_tqdm=False,
                         lora_request=[None] * len(prompts) + [lr[names[0]]] * len(prompts))
    t_base_mixed = time.perf_counter() - t
    base_mixed = [tuple(o.outputs[0].token_ids) for o in outs2[:len(prompts)]]
merged, merged_seconds = {}, {}
greedy = Sampling(temperature=0.0, max_new_tokens=params.dpo_eval.max_new_tokens)
with open_backend(dataclasses.replace(params.engine, lora="merged"), "models/base", seed=0, adapters=adapters) as be:
    t = time.perf_counter()
    for name in [None, *sorted(adapters)]:       # each call swaps the model's weights in (the base's first)
        started = time.perf_counter()
        gens = be.generate([GenerationRequest(tuple(p["prompt_token_ids"]), adapter=name) for p in prompts], greedy)
        merged[name] = [g.token_ids[0] for g in gens]
        merged_seconds[name or "base"] = round(time.perf_counter() - started, 1)
    t_merged = time.perf_counter() - t
res = {"adapters": names, "num_prompts": len(prompts),
       "adapter_only_mixed_equal": {n: sum(a == b for a, b in zip(alone[n], mixed[n])) for n in names},
       "base_rows_equal_when_mixed_with_adapter": sum(a == b for a, b in zip(alone[None], base_mixed)),
       "seconds_one_call_per_model_incl_base": round(t_alone, 1), "seconds_adapters_in_one_call": round(t_mixed, 1),
       "seconds_base_plus_one_adapter_mixed": round(t_base_mixed, 1),
       "tokens_adapters": sum(len(x) for n in names for x in alone[n]), "tokens_base": sum(map(len, alone[None])),
       "seconds_alone_by_model": alone_seconds,
       "merged_equal": {n or "base": sum(a == b for a, b in zip(alone[n], merged[n])) for n in [None, *names]},
       "seconds_merged_one_call_per_model_incl_base": round(t_merged, 1), "seconds_merged_by_model": merged_seconds}
res["engine_dtype"] = params.engine.resolved().dtype
Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps(res))
