"""Post-training cliff count (protocol §6): per model (base or adapter), one trace per problem, token
statistics, full rollouts without early termination, and the cliffs found, counted by category.

The whole per-model pipeline reuses the library: `sample_traces` → `compute_token_stats` →
`run_rollouts` (early_stop_zeros = 0) → `find_cliffs`, with the model selected by an `AdapterView` of
one backend that serves every adapter.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

from cliffdata import schema
from cliffdata.backends import AdapterView, Backend, Sampling
from cliffdata.cliffs import CATEGORIES, find_cliffs
from cliffdata.config import CliffsConfig, PromptConfig, RolloutsConfig
from cliffdata.rollouts import Checkpoint, max_drops_by_trace, run_rollouts
from cliffdata.sampling import golds_by_problem, sample_traces
from cliffdata.token_stats import compute_token_stats


def count_cliffs(model_name: str, adapter: str | None, backend: Backend, torch_model, tokenizer, problems: list[dict],
                 prompts: dict[str, PromptConfig], trace_sampling: Sampling, trace_seed: int, rollouts: RolloutsConfig,
                 rollout_sampling: Sampling, cliffs_cfg: CliffsConfig, top_k: int,
                 checkpoint: Checkpoint) -> list[dict]:
    """CLIFF_COUNT rows of one model. `torch_model` is the HF model for token statistics, already set
    to this model (adapter enabled or disabled); `backend` serves `adapter` (None = base)."""
    view = AdapterView(backend, adapter)
    traces = sample_traces(problems, prompts, tokenizer, view, trace_sampling, num_samples=1, seed=trace_seed,
                           desc=f"cliff_count {model_name}: sample")
    stats = compute_token_stats(torch_model, traces, top_k, rollout_sampling, desc=f"cliff_count {model_name}: token_stats")
    golds = golds_by_problem(problems)
    full = dataclasses.replace(rollouts, early_stop_zeros=0)        # no early termination after training
    potentials, costs = run_rollouts(traces, golds, view, tokenizer, full, rollout_sampling, checkpoint,
                                     desc=f"cliff_count {model_name}: rollouts", test=cliffs_cfg,
                                     max_drops=max_drops_by_trace(stats))    # mode forks: this model's own bounds
    cliffs, summaries = find_cliffs(schema.to_table("traces", traces), potentials,
                                    schema.to_table("token_stats", stats) if stats else schema.TOKEN_STATS.empty_table(),
                                    cliffs_cfg)
    by_trace = Counter((c["trace_id"], c["category"]) for c in cliffs)
    tokens = {c["trace_id"]: c["num_generated_tokens"] for c in costs}
    rows = []
    for s in summaries:
        row = {"model": model_name, "trace_id": s["trace_id"], "is_correct": s["is_correct"],
               "num_tokens": s["num_tokens"], "num_cliffs": s["num_cliffs"],
               "num_generated_tokens": tokens.get(s["trace_id"], 0)}
        row.update({f"num_{c}": by_trace[(s["trace_id"], c)] for c in CATEGORIES})
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per model: traces, accuracy, cliffs per trace and per 1k response tokens, overall and by category."""
    out: dict[str, dict] = {}
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        tokens = sum(r["num_tokens"] for r in mine)
        cell = {"num_traces": len(mine), "num_correct": sum(r["is_correct"] is True for r in mine),
                "num_response_tokens": tokens, "num_generated_tokens": sum(r["num_generated_tokens"] for r in mine),
                "num_cliffs": sum(r["num_cliffs"] for r in mine),
                "traces_with_cliff": sum(r["num_cliffs"] > 0 for r in mine)}
        cell["cliffs_per_trace"] = cell["num_cliffs"] / len(mine)
        cell["cliffs_per_1k_tokens"] = 1000 * cell["num_cliffs"] / tokens if tokens else None
        for c in CATEGORIES:
            n = sum(r[f"num_{c}"] for r in mine)
            cell[f"{c}_per_trace"] = n / len(mine)
            cell[f"{c}_per_1k_tokens"] = 1000 * n / tokens if tokens else None
        out[model] = cell
    return out

