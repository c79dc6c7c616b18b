"""Post-training cliff count (protocol §6): per model (base or adapter), one trace per problem, token
statistics, full rollouts without early termination, and the cliffs found, counted by category.

The whole per-model pipeline reuses the library: `sample_traces` → `compute_token_stats` →
`run_rollouts` (early_stop_zeros = 0) → `find_cliffs`, on one backend that serves every adapter. The
rollouts of every model run in one scheduler, so an engine call packs prefixes of several models.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter

import pyarrow as pa

from cliffdata import schema
from cliffdata.backends import AdapterView, Backend, Sampling
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.cliffs.find import find_cliffs
from cliffdata.cliffs.taxonomy import CATEGORIES
from cliffdata.config.cliffs import CliffsConfig
from cliffdata.config.problems import PromptConfig
from cliffdata.config.search import RolloutsConfig
from cliffdata.dpo.evaluate import same_adapters
from cliffdata.generate.sampling import golds_by_problem, sample_traces
from cliffdata.generate.token_stats import compute_token_stats
from cliffdata.search.rollouts import max_drops_by_trace, run_rollouts


@contextlib.contextmanager
def selected(torch_model, adapter: str | None):
    """`torch_model` (a PeftModel holding the adapters, or a plain model) computing as `adapter` (None: the base)."""
    if not hasattr(torch_model, "disable_adapter"):
        if adapter is not None:
            raise ValueError(f"cliff_count: adapter {adapter!r} asked of a model that holds no adapters")
        yield torch_model
    elif adapter is None:
        with torch_model.disable_adapter():
            yield torch_model
    else:
        torch_model.set_adapter(adapter)
        yield torch_model


def count_cliffs(models: dict[str, str | None], backend: Backend, torch_model, tokenizer, problems: list[dict],
                 prompts: dict[str, PromptConfig], trace_sampling: Sampling, trace_seed: int, rollouts: RolloutsConfig,
                 rollout_sampling: Sampling, cliffs: CliffsConfig, top_k: int,
                 checkpoint: UnitCheckpoint, digests: dict[str, str] | None = None) -> list[dict]:
    """CLIFF_COUNT rows of every model of `models` (name -> its adapter in `backend` and `torch_model`, the
    HF model for token statistics; None: the base). `cliffs` is params `cliffs`: its test (`cliffs.test`)
    decides the rollouts searches and the cliffs found, the rest the cliffs' categories.

    Each model samples its traces and gets its token statistics; then one scheduler runs every model's
    rollouts (`search_wave` on traces that carry their adapter), in waves of `rollouts.traces_per_wave`
    problems times every model, so that each engine call packs prefixes of several models where the
    backend can serve them together (vLLM: every adapter in one call, the base apart). Inside the
    scheduler a trace is known as `<model>/<trace_id>`, which seeds its rollouts (each model its own
    stream) and keys its checkpoint; the rows carry the plain trace id beside the model.

    `digests` (adapter model -> its weights' digest): a model whose adapter has the same weights as an
    earlier model's (variants trained on the same pairs) is that model; it is measured once and its rows
    are the earlier model's under its own name."""
    same_as = same_adapters({m: d for m, d in (digests or {}).items() if m in models})
    everything, models = models, {m: a for m, a in models.items() if same_as.get(m, m) == m}
    traces, max_drops, stats_of = {}, {}, {}
    for name, adapter in models.items():
        traces[name] = sample_traces(problems, prompts, tokenizer, AdapterView(backend, adapter), trace_sampling,
                                     num_samples=1, seed=trace_seed, desc=f"cliff_count {name}: sample")
        with selected(torch_model, adapter):
            stats_of[name] = compute_token_stats(torch_model, traces[name], top_k, rollout_sampling,
                                                 desc=f"cliff_count {name}: token_stats")
        # mode forks: each model's own bounds
        max_drops.update({f"{name}/{t}": d for t, d in max_drops_by_trace(stats_of[name]).items()})
    per_wave = rollouts.traces_per_wave
    scheduled, origin = [], {}
    for start in range(0, len(problems), per_wave):
        for name, adapter in models.items():
            for t in traces[name][start:start + per_wave]:
                scheduled.append(dict(t, trace_id=f"{name}/{t['trace_id']}", adapter=adapter))
                origin[scheduled[-1]["trace_id"]] = (name, t["trace_id"])
    # no early termination after training; a wave holds its problems' traces of every model
    full = dataclasses.replace(rollouts, early_stop_zeros=0, traces_per_wave=per_wave * len(models))
    potentials, costs = run_rollouts(scheduled, golds_by_problem(problems), backend, tokenizer, full,
                                     rollout_sampling, checkpoint, cliffs.test, desc="cliff_count: rollouts",
                                     max_drops=max_drops)
    owner = [origin[t] for t in potentials.column("trace_id").to_pylist()]
    field = potentials.schema.field("trace_id")
    potentials = potentials.set_column(potentials.schema.get_field_index("trace_id"), field,
                                       pa.array([t for _, t in owner], field.type))
    tokens = {origin[c["trace_id"]]: c["num_generated_tokens"] for c in costs}
    rows = []
    for name in models:
        mine = potentials.filter(pa.array([m == name for m, _ in owner], pa.bool_()))
        stats = schema.to_table("token_stats", stats_of[name]) if stats_of[name] else schema.TOKEN_STATS.empty_table()
        found, summaries = find_cliffs(schema.to_table("traces", traces[name]), mine, stats, cliffs,
                                       searched=[t["trace_id"] for t in traces[name]])
        by_trace = Counter((c["trace_id"], c["category"]) for c in found)
        for s in summaries:
            row = {"model": name, "trace_id": s["trace_id"], "is_correct": s["is_correct"],
                   "num_tokens": s["num_tokens"], "num_cliffs": s["num_cliffs"],
                   "num_generated_tokens": tokens.get((name, s["trace_id"]), 0)}
            row.update({f"num_{c}": by_trace[(s["trace_id"], c)] for c in CATEGORIES})
            rows.append(row)
    return [dict(r, model=m) for m in everything for r in rows if r["model"] == same_as.get(m, m)]


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

