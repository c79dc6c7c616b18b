"""Rollout shards: traces split by expected cost, one DVC stage each (`rollouts@<i>`), merged after.

A shard holds whole waves of traces (`rollouts.waves`: the traces whose searches share engine
calls), so every prefix of a trace goes to one engine (its prefix cache stays local), every engine
call is the one an unsharded run makes, and every request keeps its seed: the merged potentials are
the unsharded ones, bit for bit on a deterministic backend. Shards are balanced by the exhaustive
cost model, N·Σ(T−1−i) ≈ N·T²/2 generated tokens per trace (`expected_tokens`) summed over a wave,
with the greedy longest processing time rule: the costliest wave first, each to the shard with the
least work so far. A shard keeps the input order, so its own waves are the unsharded run's (only
the last wave can be short, and it stays last).
"""
from __future__ import annotations

import heapq
from pathlib import Path

import pyarrow as pa

from cliffdata import schema
from cliffdata.config.search import RolloutsConfig
from cliffdata.search.rollouts import wave_cost, waves


def shard_dir(shard: int, root: Path = Path(".")) -> Path:
    """Where shard `shard` writes `potentials.parquet` and `rollout_traces.parquet`, under the model's
    `root` (cliffdata.study.Layout)."""
    return root / Path(schema.PATHS["potentials"]).parent / "shards" / str(shard)


def assign_shards(traces: list[dict], num_shards: int, cfg: RolloutsConfig) -> dict[str, int]:
    """trace_id -> shard, whole waves by greedy LPT on expected generated tokens; deterministic
    (ties by the wave's first trace_id, then shard)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    order = sorted(waves(traces, cfg), key=lambda w: (-wave_cost(w, cfg), w[0]["trace_id"]))
    loads = [(0, s) for s in range(num_shards)]          # (expected tokens so far, shard): a min-heap
    assignment = {}
    for wave in order:
        load, s = heapq.heappop(loads)
        assignment.update(dict.fromkeys((t["trace_id"] for t in wave), s))
        heapq.heappush(loads, (load + wave_cost(wave, cfg), s))
    return assignment


def select_shard(traces: list[dict], shard: int, cfg: RolloutsConfig) -> list[dict]:
    """The traces of shard `shard` of `cfg.shards`, in their input order."""
    if not 0 <= shard < cfg.shards:
        raise ValueError(f"shard must be in [0, rollouts.shards={cfg.shards}), got {shard}")
    assignment = assign_shards(traces, cfg.shards, cfg)
    return [t for t in traces if assignment[t["trace_id"]] == shard]


def merge_shards(trace_ids: list[str], num_shards: int, root: Path = Path(".")) -> tuple[pa.Table, list[dict]]:
    """Potentials and cost rows of shards 0 … num_shards-1 under `root`; every trace exactly once, or
    ValueError."""
    tables, costs = [], []
    for s in range(num_shards):
        folder = shard_dir(s, root)
        tables.append(schema.read("potentials", folder / "potentials.parquet"))
        costs += schema.read("rollout_traces", folder / "rollout_traces.parquet").to_pylist()
    seen = [c["trace_id"] for c in costs]
    missing, extra = sorted(set(trace_ids) - set(seen)), sorted(set(seen) - set(trace_ids))
    if missing or extra or len(seen) != len(set(seen)):
        raise ValueError(f"rollout shards do not cover the traces once each: missing {missing[:5]}, "
                         f"unknown {extra[:5]}, {len(seen) - len(set(seen))} duplicates (stale shard folders?)")
    return pa.concat_tables(tables), costs
