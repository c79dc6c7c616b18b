"""Hand-made pipeline datasets for the report and export tests: a few traces with a known cliff each,
potentials (exhaustive or adaptive), token stats, and optionally ablation and candidates rows.

The cliffs and per-trace summaries come from the real `cliffs.find_cliffs` with the project's `cliffs`
params (params.yaml), so the fixture is consistent with the pipeline's own definitions; read them back
with the same section: `load_report_data(root, CLIFFS)`.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

from cliffdata import schema
from cliffdata.cliffs.find import find_cliffs
from project_cliffs import CLIFFS

N = 16


def curve(num_tokens: int, cliff_at: int | None) -> list[tuple[int, int]]:
    """(token_index, num_correct) for -1 … T-2: 14/16 before the cliff, 1/16 from it on."""
    return [(i, 14 if cliff_at is None or i < cliff_at else 1) for i in range(-1, num_tokens - 1)]


def write_fixture(root: Path, tokenizer, texts: dict[str, tuple[str, bool | None, int | None]],
                  mode: str = "exhaustive", optional: bool = True, seed: int = 0,
                  questions: dict[str, str] | None = None, sweep: bool = False) -> dict:
    """Write the datasets under `root` for traces {trace_id: (response text, is_correct, cliff index)}.

    Token i of a trace greedy unless i is its cliff (the cliff token is sampled-off with entropy 0.9).
    Adaptive mode keeps every 5th position plus both sides of the cliff; with `sweep`, the other
    positions are 2-rollout screening points (the adaptive search's sweep). `questions` maps problem ids
    to question texts (default "Problem <n>."). Returns the trace rows.
    """
    rng = random.Random(seed)
    problems, traces, stats, pots = [], [], [], []
    for n, (trace_id, (text, is_correct, cliff_at)) in enumerate(sorted(texts.items())):
        problem_id = trace_id.split("#")[0]
        ids = tokenizer.encode(text, add_special_tokens=False)
        question = (questions or {}).get(problem_id, f"Problem {n}.")
        # the chat-templated prompt of the question, as `sample` stores it
        chat = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)
        prompt_ids = tokenizer.encode(chat, add_special_tokens=False)
        problems.append({"problem_id": problem_id, "dataset": problem_id.split("/")[0],
                         "question": question, "answer": str(n + 1),
                         "answer_format": "hash", "prompt": "p", "family": None, "level": None, "source_index": n})
        traces.append({"trace_id": trace_id, "problem_id": problem_id, "sample_index": 0, "prompt_ids": prompt_ids,
                       "response_ids": ids, "response_text": text,
                       "extracted_answer": text.rsplit("####", 1)[1].strip() if "####" in text else None,
                       "is_correct": is_correct, "finish_reason": "stop", "num_tokens": len(ids)})
        for i, t in enumerate(ids):
            off = i == cliff_at
            greedy = (t + 1) % len(tokenizer) if off else t
            top = [greedy] + [x for x in (t, (t + 2) % len(tokenizer), (t + 3) % len(tokenizer)) if x != greedy][:2]
            stats.append({"trace_id": trace_id, "token_index": i, "token_id": t,
                          "logprob": math.log(0.3) if off else -rng.random() * 0.01, "rank": 2 if off else 1,
                          "entropy": 0.9 if off else 0.01 * rng.random(), "entropy_full": 1.0 if off else 0.02,
                          "greedy_token_id": greedy, "is_greedy": not off, "top_ids": top,
                          "top_probs": [0.6, 0.3, 0.1][:len(top)], "sampler_prob": 0.3 if off else 0.99,
                          "max_drop": 0.7 if off else 0.01})
        for i, k in curve(len(ids), cliff_at):
            n = N
            if mode == "adaptive" and not (i % 5 == 0 or i == -1 or (cliff_at is not None and i in (cliff_at - 1, cliff_at))):
                if not sweep:
                    continue
                n, k = 2, round(2 * k / N)
            pots.append({"trace_id": trace_id, "token_index": i, "mode": mode, "num_rollouts": n, "num_correct": k,
                         "potential": k / n, "is_filled": False, "num_generated_tokens": 10 * n})
    paths = {name: root / schema.PATHS[name] for name in schema.PATHS}
    schema.write("problems", problems, paths["problems"])
    schema.write("traces", traces, paths["traces"])
    schema.write("token_stats", stats, paths["token_stats"])
    pot_table = schema.write("potentials", pots, paths["potentials"])
    cliffs, summaries = find_cliffs(schema.to_table("traces", traces), pot_table,
                                    schema.to_table("token_stats", stats), CLIFFS)
    schema.write("cliffs", cliffs, paths["cliffs"])
    schema.write("trace_cliffs", summaries, paths["trace_cliffs"])
    if optional:
        ablation, candidates = [], []
        for c in cliffs:
            for arm, prefix, k in (("del", c["token_index"], 12), ("keep", c["token_index"] + 1, 2)):
                ablation.append({"trace_id": c["trace_id"], "token_index": c["token_index"], "arm": arm,
                                 "is_first": c["is_first"], "is_correct": c["is_correct"], "prefix_length": prefix,
                                 "num_rollouts": N, "num_correct": k, "potential": k / N,
                                 "num_reemitted": 0 if arm == "del" else None, "num_generated_tokens": 100})
            greedy = (c["token_id"] + 1) % len(tokenizer)
            for rank, (cand, prob, k) in enumerate([(greedy, 0.6, 13), (c["token_id"], 0.3, 1),
                                                    ((c["token_id"] + 2) % len(tokenizer), 0.1, 9)], start=1):
                candidates.append({"trace_id": c["trace_id"], "token_index": c["token_index"], "candidate_rank": rank,
                                   "candidate_id": cand, "prob": prob, "is_cliff_token": cand == c["token_id"],
                                   "is_greedy": cand == greedy, "num_rollouts": N, "num_correct": k, "potential": k / N,
                                   "p_prev": c["p_prev"], "num_rollouts_prev": N, "num_correct_prev": 14,
                                   "is_cliff": k <= 4, "num_generated_tokens": 0 if cand == c["token_id"] else 100})
        schema.write("ablation", ablation, paths["ablation"])
        schema.write("candidates", candidates, paths["candidates"])
        # the replicate stage: the test passes again (14/16 -> 1/16) on every cliff but the last
        schema.write("replicate", [
            {**{k: c[k] for k in ("trace_id", "problem_id", "token_index", "is_correct", "category", "feasible")},
             "num_rollouts_prev": N, "num_correct_prev": 14, "num_rollouts": N, "num_correct": 1 if j < len(cliffs) - 1 else 12,
             "p_prev": 14 / N, "potential": (1 if j < len(cliffs) - 1 else 12) / N,
             "delta": (13 if j < len(cliffs) - 1 else 2) / N, "p_value": 0.0 if j < len(cliffs) - 1 else 0.9,
             "replicated": j < len(cliffs) - 1, "num_generated_tokens": 200} for j, c in enumerate(cliffs)],
            paths["replicate"])
    return {t["trace_id"]: t for t in traces}


def long_text(num_tokens: int, seed: int = 0) -> str:
    """A character-level 'response' of exactly `num_tokens` tokens for the tiny tokenizer."""
    rng = random.Random(seed)
    words = ["Tom", "has", "31", "marbles", "and", "gets", "28", "more,", "so", "31", "+", "28", "=", "59.", "\n"]
    out = []
    while sum(len(w) + 1 for w in out) < num_tokens:
        out.append(rng.choice(words))
    return " ".join(out)[:num_tokens]
