"""Rollout shards: cost-balanced assignment, and sharded + merged potentials equal the unsharded run."""
from __future__ import annotations

import itertools

import pytest

from cliffdata import schema
from cliffdata.backends import make_backend
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config.generate import SamplingConfig
from cliffdata.config.search import AdaptiveParams, RolloutsConfig
from cliffdata.search.rollouts import expected_tokens, run_rollouts
from cliffdata.search.shards import assign_shards, merge_shards, select_shard, shard_dir
from project_cliffs import TEST


def cfg(**kw) -> RolloutsConfig:
    base = dict(mode="exhaustive", num_rollouts=4, early_stop_zeros=0, positions_per_batch=3, traces_per_wave=1,
                sampling=SamplingConfig(temperature=1.0, max_new_tokens=12))
    return RolloutsConfig(**{**base, **kw})


def traces_of(lengths: list[int]) -> list[dict]:
    return [{"trace_id": f"arith/add1-{k:05d}#0", "problem_id": f"arith/add1-{k:05d}", "prompt_ids": [1, 24, 22],
             "response_ids": [40 + (k + j) % 20 for j in range(n - 1)] + [2]} for k, n in enumerate(lengths)]


def test_assignment_is_lpt_balanced_and_deterministic():
    c = cfg()
    traces = traces_of([30, 3, 12, 25, 8, 8, 17, 5, 21, 2])
    cost = {t["trace_id"]: expected_tokens(len(t["response_ids"]), c) for t in traces}
    got = assign_shards(traces, 3, c)
    assert got == assign_shards(list(reversed(traces)), 3, c)          # input order does not matter
    loads = [sum(cost[t] for t, s in got.items() if s == k) for k in range(3)]
    # LPT is within 4/3 of the optimum; check against the best of all 3^10 assignments
    ids = list(cost)
    best = min(max(sum(cost[i] for i, s in zip(ids, a) if s == k) for k in range(3))
               for a in itertools.product(range(3), repeat=len(ids)))
    assert max(loads) <= 4 / 3 * best
    # the costliest trace opens a shard of its own
    assert sum(1 for s in got.values() if s == got[traces[0]["trace_id"]]) <= 2


def test_select_shard_partitions_the_traces():
    traces = traces_of([5, 9, 3, 7, 6])
    c = cfg(shards=3, shard_ids=(0, 1, 2))
    parts = [select_shard(traces, s, c) for s in range(3)]
    assert sorted(t["trace_id"] for p in parts for t in p) == sorted(t["trace_id"] for t in traces)
    assert all(parts)
    with pytest.raises(ValueError, match="shard must be in"):
        select_shard(traces, 3, c)


def test_shard_ids_must_match_shards():
    with pytest.raises(ValueError, match="shard_ids must be"):
        cfg(shards=2, shard_ids=(0,))


@pytest.mark.parametrize("mode", ["exhaustive", "adaptive"])
def test_two_shards_merge_to_the_unsharded_potentials(tmp_path, monkeypatch, tiny_model_dir, tiny_tokenizer, mode):
    """HF backend on the tiny model (deterministic; its sampling depends on everything in an engine
    call, so only identical calls give identical bytes): waves of 2 traces packed into shared calls,
    2 shards + merge == one run, bit for bit."""
    monkeypatch.chdir(tmp_path)
    backend = make_backend("hf", str(tiny_model_dir), dtype="float32", max_batch=16)
    traces = traces_of([7, 4, 9, 5, 6])
    golds = {t["problem_id"]: ("7", "hash") for t in traces}
    wave_cfg = lambda **kw: cfg(mode=mode, traces_per_wave=2,
                                adaptive=AdaptiveParams(initial_rollouts=4, grid_points=3, min_stride=2), **kw)
    single, _ = run_rollouts(traces, golds, backend, tiny_tokenizer, wave_cfg(), wave_cfg().sampling,
                             UnitCheckpoint(tmp_path / "single"), TEST)
    # the test can tell runs apart: rollouts end at sampled EOS, so token counts depend on the seeds
    other, _ = run_rollouts(traces, golds, backend, tiny_tokenizer, wave_cfg(seed=1), wave_cfg().sampling,
                            UnitCheckpoint(tmp_path / "other"), TEST)
    assert not other.equals(single)

    two = wave_cfg(shards=2, shard_ids=(0, 1))
    for s in range(2):
        part = select_shard(traces, s, two)
        table, costs = run_rollouts(part, golds, backend, tiny_tokenizer, two, two.sampling,
                                    UnitCheckpoint(tmp_path / f"shard{s}"), TEST)
        schema.write("potentials", table, shard_dir(s) / "potentials.parquet")
        schema.write("rollout_traces", costs, shard_dir(s) / "rollout_traces.parquet")
    merged, costs = merge_shards([t["trace_id"] for t in traces], 2)
    assert schema.to_table("potentials", merged).equals(schema.to_table("potentials", single))
    assert sorted(c["trace_id"] for c in costs) == sorted(t["trace_id"] for t in traces)
    # whole waves per shard: the pairs (0, 1), (2, 3) and the short last wave (4) are never split
    shard_of = assign_shards(traces, 2, two)
    assert shard_of[traces[0]["trace_id"]] == shard_of[traces[1]["trace_id"]]
    assert shard_of[traces[2]["trace_id"]] == shard_of[traces[3]["trace_id"]]

    with pytest.raises(ValueError, match="missing"):
        merge_shards([t["trace_id"] for t in traces] + ["arith/add1-99999#0"], 2)
    with pytest.raises(ValueError, match="unknown"):
        merge_shards([t["trace_id"] for t in traces[1:]], 2)
