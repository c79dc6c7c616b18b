"""Matched controls of the deletion ablation (experiments/matching.py): the pool, the matching rules, the
standardized mean differences against their closed form, and the balance on a simulated run."""
import math

import numpy as np
import pytest

from cliffdata import schema
from cliffdata.experiments.ablation import ablation_requests
from cliffdata.experiments.matching import (COVARIATES, balance, cliff_covariates, control_pool, match_controls,
                                            standardized_mean_difference)


def stats_rows(trace_id: str, probs: list[float], greedy: list[bool]) -> list[dict]:
    return [{"trace_id": trace_id, "token_index": j, "token_id": 5, "logprob": math.log(p), "rank": 1 if g else 2,
             "entropy": 0.5, "entropy_full": 0.6, "greedy_token_id": 5 if g else 6, "is_greedy": g,
             "top_ids": [5, 6], "top_probs": [0.6, 0.4], "sampler_prob": p, "max_drop": 1 - p}
            for j, (p, g) in enumerate(zip(probs, greedy))]


def potential_rows(trace_id: str, values: dict[int, float]) -> list[dict]:
    return [{"trace_id": trace_id, "token_index": i, "mode": "forks", "num_rollouts": 16,
             "num_correct": round(16 * p), "potential": round(16 * p) / 16, "is_filled": False,
             "num_generated_tokens": 10} for i, p in sorted(values.items())]


def trace(trace_id: str, problem: str, length: int, correct: bool | None) -> dict:
    return {"trace_id": trace_id, "problem_id": problem, "response_ids": list(range(length)), "is_correct": correct}


def test_pool_reads_the_last_evaluated_potential_and_skips_cliffs_and_correct_traces():
    traces = [trace("a", "q1", 5, False), trace("b", "q2", 3, True)]
    stats = schema.to_table("token_stats", stats_rows("a", [0.9, 0.2, 0.95, 0.5, 0.99], [True, False, True, False, True])
                            + stats_rows("b", [0.9, 0.9, 0.9], [True] * 3))
    # the search evaluated the empty prefix, token 1 and token 3 only (forks)
    pots = schema.to_table("potentials", potential_rows("a", {-1: 0.5, 1: 0.25, 3: 0.0}) + potential_rows("b", {-1: 1.0}))
    pool = control_pool(traces, {("a", 1)}, stats, pots)
    assert [(r["trace_id"], r["token_index"], r["p_prev"]) for r in pool] == [
        ("a", 0, 0.5), ("a", 2, 0.25), ("a", 3, 0.25), ("a", 4, 0.0)]
    assert pool[1]["relative_position"] == 2 / 5 and pool[1]["sampler_prob"] == 0.95 and pool[1]["is_greedy"]


def cliff(trace_id: str, i: int, p_prev: float, rel: float, prob: float, greedy: bool, n: int = 16) -> dict:
    return {"trace_id": trace_id, "problem_id": "q", "token_index": i, "p_prev": p_prev, "relative_position": rel,
            "sampler_prob": prob, "is_greedy": greedy, "num_rollouts_prev": n, "is_first": True, "is_correct": False}


def position(trace_id: str, j: int, p_prev: float, rel: float, prob: float, greedy: bool) -> dict:
    return {"trace_id": trace_id, "problem_id": "q", "token_index": j, "num_tokens": 10, "p_prev": p_prev,
            "relative_position": rel, "sampler_prob": prob, "is_greedy": greedy}


def test_matching_rules():
    pool = [position("x", 0, 0.50, 0.1, 0.3, False),     # nearest in position and probability, p too far
            position("x", 1, 0.45, 0.5, 0.3, False),     # within one rollout step (1/16): the match
            position("x", 2, 0.50, 0.5, 0.3, True),      # greedy: never for a non-greedy cliff
            position("y", 3, 0.44, 0.9, 0.9, False)]     # within the caliper, farther in the rest
    c = cliff("t", 4, 0.50, 0.45, 0.3, False)
    c["p_prev"] = 0.5
    pool[0]["p_prev"] = 0.5 + 0.07                       # more than 1/16 away
    [(_, m)] = match_controls([c], pool, seed=0)
    assert (m["trace_id"], m["token_index"]) == ("x", 1)
    # without replacement: a second identical cliff gets the next best
    got = match_controls([c, {**c, "token_index": 5}], pool, seed=0)
    assert [(m["trace_id"], m["token_index"]) for _, m in got] == [("x", 1), ("y", 3)]
    # the caliper doubles until a position qualifies; no position with the greedy flag: no match
    far = cliff("t", 6, 0.95, 0.5, 0.3, False)
    [(_, m)] = match_controls([far], pool, seed=0)
    assert (m["trace_id"], m["token_index"]) in {("x", 0), ("x", 1)}     # caliper 0.5: 0.57 and 0.45 qualify
    assert match_controls([cliff("t", 7, 0.5, 0.5, 0.3, True)], pool[:2], seed=0) == [
        (cliff("t", 7, 0.5, 0.5, 0.3, True), None)]
    # deterministic: the same draw every time
    assert match_controls([c, far], pool, seed=3) == match_controls([c, far], pool, seed=3)


def test_standardized_mean_difference_closed_form():
    a, b = [0.1, 0.4, 0.7], [0.2, 0.2, 0.5]
    pooled = math.sqrt((np.var(a) + np.var(b)) / 2)
    assert standardized_mean_difference(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled)
    assert standardized_mean_difference([1, 1], [1, 1]) == 0.0
    assert standardized_mean_difference([1, 1], [0, 0]) is None and standardized_mean_difference([], [1]) is None


def simulated_run(seed: int) -> tuple[list[dict], list[dict]]:
    """(cliffs, pool): 40 cliffs drawn among the positions of 60 failed traces of 40 tokens; a cliff is a
    non-greedy token of low sampler probability, while most pool positions are greedy and likely."""
    rng = np.random.default_rng(seed)
    pool, cliffs = [], []
    for t in range(60):
        p = np.clip(np.cumsum(rng.normal(0, 0.08, 40)) + rng.uniform(0.2, 0.8), 0, 1)
        for j in range(40):
            prob = float(rng.beta(5, 1)) if rng.random() < 0.7 else float(rng.beta(1, 3))
            pool.append(position(f"t{t}", j, float(np.round(p[j] * 16) / 16), j / 40, prob, prob > 0.5))
    for k in rng.choice(len(pool), size=40, replace=False):
        r = pool[k]
        prob = float(rng.beta(1, 4))
        while prob > 0.5:                                # a token above one half is the greedy one
            prob = float(rng.beta(1, 4))
        cliffs.append(cliff(r["trace_id"], r["token_index"], r["p_prev"], r["relative_position"], prob, False))
    keys = {(c["trace_id"], c["token_index"]) for c in cliffs}
    return sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"])), \
        [r for r in pool if (r["trace_id"], r["token_index"]) not in keys]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_balance_on_a_simulated_run_is_within_a_tenth(seed):
    """After matching, every covariate's standardized mean difference is below 0.1."""
    cliffs, pool = simulated_run(seed)
    # unmatched, the pool is far from the cliffs in sampler probability and greedy share
    assert standardized_mean_difference([c["sampler_prob"] for c in cliffs], [r["sampler_prob"] for r in pool]) < -1
    out = balance(match_controls(cliffs, pool, seed=0))
    assert out["num_matched"] == 40 and out["num_unmatched"] == 0
    assert set(out["covariates"]) == set(COVARIATES)
    assert all(abs(v["smd"]) < 0.1 for v in out["covariates"].values()), out


def test_matched_arms_in_the_ablation_requests():
    traces = [trace("a", "q1", 6, False), trace("b", "q2", 6, False)]
    cliffs = [{"trace_id": "a", "token_index": 2, "is_first": True}]
    control = position("b", 4, 0.5, 0.66, 0.2, False)
    requests = ablation_requests(traces, cliffs, [{"trace_id": "a", "critical_index": None}], seed=0,
                                 matched=[(cliffs[0], control)])
    matched = [r for r in requests if r["arm"].startswith("matched")]
    assert [(r["trace_id"], r["token_index"], r["arm"], r["prefix_length"], r["cliff_trace_id"], r["cliff_index"],
             r["is_first"]) for r in matched] == [("b", 4, "matched_del", 4, "a", 2, True),
                                                  ("b", 4, "matched_keep", 5, "a", 2, True)]
    assert all(r["cliff_trace_id"] is None for r in requests if not r["arm"].startswith("matched"))


def test_cliff_covariates_take_the_sampler_probability_from_token_stats():
    stats = schema.to_table("token_stats", stats_rows("a", [0.9, 0.2, 0.95], [True, False, True]))
    got = cliff_covariates([{"trace_id": "a", "token_index": 1, "is_greedy": False, "p_prev": 0.5},
                            {"trace_id": "z", "token_index": 0, "is_greedy": True, "p_prev": 0.5}], stats)
    assert [(c["trace_id"], c["sampler_prob"]) for c in got] == [("a", 0.2), ("z", None)]
