"""Cliff detection per trace, first cliff, critical token and taxonomy on hand-made tables."""
from __future__ import annotations

import pyarrow as pa
import pytest

from cliffdata import schema
from cliffdata.cliffs.find import find_cliffs, third
from cliffdata.cliffs.stats import binary_entropy
from cliffdata.cliffs.taxonomy import categorize
from project_cliffs import CLIFFS, cliffs_config

H_STAR = binary_entropy(0.99)


def tables(potentials_by_trace: dict[str, list[tuple[int, int]]], stats_by_trace: dict[str, list[tuple[float, int]]],
           correct: dict[str, bool | None]):
    """potentials: per trace [(num_correct, num_rollouts)] for positions -1, 0, 1, …"""
    traces, pots, stats = [], [], []
    for tid, counts in potentials_by_trace.items():
        n_tokens = len(counts)            # positions -1 … T-2 → T tokens
        response = list(range(100, 100 + n_tokens))
        traces.append({"trace_id": tid, "problem_id": tid.split("#")[0], "sample_index": 0, "prompt_ids": [1],
                       "response_ids": response, "response_text": "", "extracted_answer": None,
                       "is_correct": correct[tid], "finish_reason": "stop", "num_tokens": n_tokens})
        for j, (k, n) in enumerate(counts):
            pots.append({"trace_id": tid, "token_index": j - 1, "mode": "exhaustive", "num_rollouts": n,
                         "num_correct": k, "potential": k / n if n else 0.0, "is_filled": n == 0,
                         "num_generated_tokens": 0})
        for i, (h, rank) in enumerate(stats_by_trace[tid]):
            stats.append({"trace_id": tid, "token_index": i, "token_id": response[i], "logprob": -1.0, "rank": rank,
                          "entropy": h, "entropy_full": h + 0.5, "greedy_token_id": response[i],
                          "is_greedy": rank == 1, "top_ids": [], "top_probs": []})
    return (schema.to_table("traces", traces), schema.to_table("potentials", pots),
            schema.to_table("token_stats", stats))


def test_categories_follow_protocol():
    assert categorize(0.01, True, H_STAR) == "deterministic"
    assert categorize(0.5, True, H_STAR) == "uncertain"
    assert categorize(0.5, False, H_STAR) == "sampled_off"
    assert categorize(0.01, False, H_STAR) == "other"
    assert categorize(H_STAR, True, H_STAR) == "deterministic"     # H ≤ H* is low entropy
    assert [third(x) for x in (0.0, 0.33, 0.34, 0.66, 0.67, 0.99)] == ["early", "early", "mid", "mid", "late", "late"]


def test_find_cliffs_first_critical_and_taxonomy():
    # trace a: 64/64 → 60 → 10 (cliff at token 1) → 30 → 0 (cliff at 3) → 0 → 0; critical token 3
    pots = {"a#0": [(64, 64), (60, 64), (10, 64), (30, 64), (0, 64), (0, 64), (0, 64)],
            # trace b: a drop at token 0 relative to the empty prefix, then flat
            "b#0": [(64, 64), (5, 64), (5, 64), (6, 64)]}
    stats = {"a#0": [(0.0, 1), (0.9, 2), (0.01, 1), (0.5, 1), (0.0, 1), (0.0, 1), (0.0, 1)],
             "b#0": [(0.2, 1), (0.0, 1), (0.0, 1), (0.0, 1)]}
    traces, potentials, token_stats = tables(pots, stats, {"a#0": False, "b#0": True})
    cliffs, summary = find_cliffs(traces, potentials, token_stats, CLIFFS)
    got = [(c["trace_id"], c["token_index"], c["is_first"], c["category"]) for c in cliffs]
    assert got == [("a#0", 1, True, "sampled_off"), ("a#0", 3, False, "uncertain"), ("b#0", 0, True, "uncertain")]
    a = next(c for c in cliffs if c["token_index"] == 1)
    assert a["p_prev"] == 60 / 64 and a["potential"] == 10 / 64 and a["delta"] == pytest.approx(50 / 64)
    assert a["token_id"] == 101 and a["relative_position"] == pytest.approx(1 / 7)
    summ = {s["trace_id"]: s for s in summary}
    assert summ["a#0"]["num_cliffs"] == 2 and summ["a#0"]["first_cliff_index"] == 1
    assert summ["a#0"]["critical_index"] == 3 and summ["a#0"]["num_scored"] == 6
    assert summ["b#0"]["critical_index"] is None and summ["b#0"]["first_cliff_index"] == 0

    paper = cliffs_config(include_empty_prefix=False)       # token 0 is not tested against p[-1]
    cliffs, summary = find_cliffs(traces, potentials, token_stats, paper)
    assert [(c["trace_id"], c["token_index"]) for c in cliffs] == [("a#0", 1), ("a#0", 3)]
    assert {s["trace_id"]: s["num_cliffs"] for s in summary} == {"a#0": 2, "b#0": 0}


def test_full_entropy_option_changes_the_category():
    pots = {"a#0": [(64, 64), (64, 64), (0, 64)]}
    stats = {"a#0": [(0.0, 1), (0.0, 1), (0.0, 1)]}
    traces, potentials, token_stats = tables(pots, stats, {"a#0": False})
    (top20,), _ = find_cliffs(traces, potentials, token_stats, CLIFFS)
    (full,), _ = find_cliffs(traces, potentials, token_stats, cliffs_config(entropy="full"))
    assert (top20["category"], full["category"]) == ("deterministic", "uncertain")


def test_filled_positions_are_never_cliffs_and_unequal_n_uses_each_side():
    pots = {"a#0": [(16, 16), (3, 16), (0, 0), (0, 0)],     # 1 → 3/16 is a cliff at N=16
            "b#0": [(3, 16), (0, 64), (0, 64)]}               # 3/16 → 0/64: SE uses N=16 on the left: no cliff
    stats = {"a#0": [(0.0, 1)] * 4, "b#0": [(0.0, 1)] * 3}
    traces, potentials, token_stats = tables(pots, stats, {"a#0": False, "b#0": False})
    cliffs, _ = find_cliffs(traces, potentials, token_stats, CLIFFS)
    assert [(c["trace_id"], c["token_index"]) for c in cliffs] == [("a#0", 0)]


def test_only_adjacent_pairs_with_enough_rollouts_are_tested():
    """Adaptive mode leaves gaps and 2-rollout sweep points: neither may produce a cliff."""
    pots = {"a#0": [(64, 64), (0, 64), (64, 64), (0, 64)],       # position 0 (0/64) is dropped below
            "b#0": [(2, 2), (0, 2), (0, 2), (0, 2)]}        # 1/1 → 0/2 "passes" the raw test (SE = 0)
    stats = {"a#0": [(0.0, 1)] * 4, "b#0": [(0.0, 1)] * 4}
    traces, potentials, token_stats = tables(pots, stats, {"a#0": False, "b#0": False})
    gappy = potentials.filter([t != "a#0" or i != 0 for t, i in zip(potentials.column("trace_id").to_pylist(),
                                                                      potentials.column("token_index").to_pylist())])
    cliffs, summary = find_cliffs(traces, gappy, token_stats, CLIFFS)
    assert [(c["trace_id"], c["token_index"]) for c in cliffs] == [("a#0", 2)]      # 1 vs -1 is not adjacent
    assert {s["trace_id"]: s["num_scored"] for s in summary} == {"a#0": 1, "b#0": 0}
    cliffs, _ = find_cliffs(traces, gappy, token_stats, cliffs_config(test={"min_rollouts": 1}))
    assert ("b#0", 0) in [(c["trace_id"], c["token_index"]) for c in cliffs]


def test_a_searched_trace_without_potentials_keeps_its_summary_row():
    """mode forks estimates nothing on a trace none of whose tokens can carry a detectable drop: with
    `searched`, it still gets a trace_cliffs row (nothing scored, no cliff), in key order, so occurrence
    counts it; without, only traces with potentials have rows. A searched id the traces lack is an error."""
    pots = {"a#0": [(64, 64), (60, 64), (10, 64)], "b#0": [(5, 64), (5, 64)], "c#0": [(64, 64), (64, 64)]}
    stats = {t: [(0.0, 1)] * len(p) for t, p in pots.items()}
    traces, potentials, token_stats = tables(pots, stats, {"a#0": False, "b#0": None, "c#0": True})
    potentials = potentials.filter(pa.array([t != "b#0" for t in potentials["trace_id"].to_pylist()]))
    _, plain = find_cliffs(traces, potentials, token_stats, CLIFFS)
    assert [s["trace_id"] for s in plain] == ["a#0", "c#0"]
    cliffs, summary = find_cliffs(traces, potentials, token_stats, CLIFFS, searched=["a#0", "b#0", "c#0"])
    assert [s["trace_id"] for s in summary] == ["a#0", "b#0", "c#0"] and [c["trace_id"] for c in cliffs] == ["a#0"]
    assert summary[1] == {"trace_id": "b#0", "problem_id": "b", "is_correct": None, "num_tokens": 2, "num_scored": 0,
                          "num_cliffs": 0, "first_cliff_index": None, "critical_index": None, "num_feasible": 0,
                          "expected_false_cliffs": 0.0, "false_cliffs_variance": 0.0, "null_fire_cells": []}
    assert [s for s in summary if s["trace_id"] != "b#0"] == plain
    with pytest.raises(ValueError, match="'z#0'"):
        find_cliffs(traces, potentials, token_stats, CLIFFS, searched=["z#0"])
