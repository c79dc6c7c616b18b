"""Matched controls of the deletion ablation (experiments/matching.py): the pool, the candidates, the
matching rules, the standardized mean differences against their closed form, the balance on a simulated
run with estimates drawn as the stage draws them, and the ablation stage's choice through a backend."""
import math

import numpy as np
import pytest

from cliffdata import schema
from cliffdata.experiments.ablation import ablation_requests
from cliffdata.experiments.matching import (COVARIATES, balance, cliff_covariates, control_pool, match_controls,
                                            matched_rows, nearest_candidates, next_estimates,
                                            standardized_mean_difference)


def stats_rows(trace_id: str, probs: list[float], greedy: list[bool]) -> list[dict]:
    return [{"trace_id": trace_id, "token_index": j, "token_id": 5, "logprob": math.log(p), "rank": 1 if g else 2,
             "entropy": 0.5, "entropy_full": 0.6, "greedy_token_id": 5 if g else 6, "is_greedy": g,
             "top_ids": [5, 6], "top_probs": [0.6, 0.4], "sampler_prob": p, "max_drop": 1 - p}
            for j, (p, g) in enumerate(zip(probs, greedy))]


def trace(trace_id: str, problem: str, length: int, correct: bool | None) -> dict:
    return {"trace_id": trace_id, "problem_id": problem, "response_ids": list(range(length)), "is_correct": correct}


def test_pool_holds_every_non_cliff_position_of_every_trace_with_its_source():
    traces = [trace("a", "q1", 4, False), trace("b", "q2", 2, True), trace("u", "q2", 1, None)]
    pool_traces = [trace("q1#control0", "q1", 2, True)]
    stats = schema.to_table("token_stats", stats_rows("a", [0.9, 0.2, 0.95, 0.5], [True, False, True, False])
                            + stats_rows("b", [0.9, 0.8], [True] * 2) + stats_rows("u", [0.7], [True])
                            + stats_rows("q1#control0", [0.3, 0.6], [False, True]))
    pool = control_pool(traces, {("a", 1)}, stats, pool_traces)
    assert [(r["trace_id"], r["token_index"], r["source"]) for r in pool] == [
        ("a", 0, "failed"), ("a", 2, "failed"), ("a", 3, "failed"), ("b", 0, "correct"), ("b", 1, "correct"),
        ("q1#control0", 0, "pool"), ("q1#control0", 1, "pool"), ("u", 0, "ungradable")]
    assert pool[1]["relative_position"] == 2 / 4 and pool[1]["sampler_prob"] == 0.95 and pool[1]["is_greedy"]
    assert "p_prev" not in pool[0]                    # estimated afresh, for the candidates only


def cliff(trace_id: str, i: int, p_prev: float, rel: float, prob: float, greedy: bool, n: int = 16) -> dict:
    return {"trace_id": trace_id, "problem_id": "q", "token_index": i, "p_prev": p_prev, "relative_position": rel,
            "sampler_prob": prob, "is_greedy": greedy, "num_rollouts_prev": n, "is_first": True, "is_correct": False}


def position(trace_id: str, j: int, rel: float, prob: float, greedy: bool, source: str = "failed") -> dict:
    return {"trace_id": trace_id, "problem_id": "q", "token_index": j, "num_tokens": 10, "source": source,
            "relative_position": rel, "sampler_prob": prob, "is_greedy": greedy}


def test_candidates_are_the_nearest_with_the_greedy_flag():
    pool = [position("x", 0, 0.1, 0.3, False), position("x", 1, 0.5, 0.3, False), position("x", 2, 0.5, 0.3, True),
            position("y", 3, 0.9, 0.9, False), position("y", 4, 0.45, 0.35, False)]
    cliffs = [cliff("t", 4, 0.5, 0.45, 0.3, False), cliff("t", 6, 0.5, 0.9, 0.5, False, n=8),
              {**cliff("t", 7, 0.5, 0.5, 0.3, True), "sampler_prob": None}]
    nearest = nearest_candidates(cliffs, pool, k=2)
    # scaled by the cliffs' spread (0.225 in position, 0.1 in probability): x1 is nearer than y4
    assert [(r["trace_id"], r["token_index"]) for r in nearest[("t", 4)]] == [("x", 1), ("y", 4)]
    assert nearest[("t", 4)][0]["distance"] <= nearest[("t", 4)][1]["distance"]
    assert ("t", 7) not in nearest                    # unknown sampler probability: not matchable
    assert all(not r["is_greedy"] for rows in nearest.values() for r in rows)
    # a round's estimates: the next `count` not yet estimated of each cliff without a control, at its N, once
    pairs = [(c, None) for c in cliffs]
    first = next_estimates(pairs, nearest, {}, count=1)
    assert {n: [(r["trace_id"], r["token_index"]) for r in reqs] for n, reqs in first.items()} == {
        8: [("y", 4)], 16: [("x", 1)]}
    later = next_estimates(pairs, nearest, {("x", 1, 16): (8, 16)}, count=1)
    assert {n: [(r["trace_id"], r["token_index"]) for r in reqs] for n, reqs in later.items()} == {
        8: [("y", 4)], 16: [("y", 4)]}
    # a cliff with its control asks for nothing more
    assert next_estimates([(cliffs[0], {"trace_id": "x"}), (cliffs[1], None)], nearest, {}, count=1).keys() == {8}


def test_matching_rules():
    c = cliff("t", 4, 0.50, 0.45, 0.3, False)
    candidates = [{**position("x", 0, 0.45, 0.3, False), "distance": 0.0},    # nearest, p̂ two steps away
                  {**position("x", 1, 0.5, 0.3, False), "distance": 0.1},     # within one step (1/16): the match
                  {**position("y", 3, 0.9, 0.9, False), "distance": 2.0}]     # within a step, exact, but far
    estimates = {("x", 0, 16): (10, 16), ("x", 1, 16): (7, 16), ("y", 3, 16): (8, 16)}
    nearest = {("t", 4): candidates}
    [(_, m)] = match_controls([c], nearest, estimates, seed=0)
    assert (m["trace_id"], m["token_index"]) == ("y", 3)        # the closest p̂ first (0 steps against 1)
    assert (m["p_prev"], m["num_rollouts_prev"], m["num_correct_prev"]) == (0.5, 16, 8)
    # without replacement: a second cliff with the same candidates gets the next within the step
    second = {**c, "token_index": 5}
    got = match_controls([c, second], {("t", 4): candidates, ("t", 5): candidates}, estimates, seed=0)
    assert [(m["trace_id"], m["token_index"]) for _, m in got] == [("y", 3), ("x", 1)]
    # nothing within one step: unmatched, never the nearest stood in
    assert match_controls([{**c, "p_prev": 0.9}], nearest, estimates, seed=0) == [({**c, "p_prev": 0.9}, None)]
    # a candidate without its estimate at the cliff's N is not chosen
    assert match_controls([{**c, "num_rollouts_prev": 8}], nearest, estimates, seed=0)[0][1] is None
    # deterministic: the same draw every time
    assert match_controls([c, second], nearest, estimates, seed=3) == match_controls([c, second], nearest, estimates,
                                                                                      seed=3)
    rows = matched_rows([c], nearest, estimates, match_controls([c], nearest, estimates, seed=0))
    schema.to_table("matched_controls", rows)
    assert [(r["trace_id"], r["is_chosen"], r["p_prev"]) for r in rows] == [
        ("x", False, 10 / 16), ("x", False, 7 / 16), ("y", True, 0.5)]


def test_standardized_mean_difference_closed_form():
    a, b = [0.1, 0.4, 0.7], [0.2, 0.2, 0.5]
    pooled = math.sqrt((np.var(a) + np.var(b)) / 2)
    assert standardized_mean_difference(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled)
    assert standardized_mean_difference([1, 1], [1, 1]) == 0.0
    assert standardized_mean_difference([1, 1], [0, 0]) is None and standardized_mean_difference([], [1]) is None


def simulated_run(seed: int, num_traces: int) -> tuple[list[dict], list[dict], dict]:
    """(cliffs, pool, true p[j-1] per position) of `num_traces` traces of 40 tokens whose potential walks
    at random: 25 cliffs are non-greedy tokens of low sampler probability at mid potential (their p̂[i−1]
    a fresh estimate), while most positions are greedy and likely, and many sit where the potential is
    near 0 or 1."""
    rng = np.random.default_rng(seed)
    pool, truth = [], {}
    for t in range(num_traces):
        p = np.clip(np.cumsum(rng.normal(0, 0.12, 40)) + rng.uniform(0, 1), 0, 1)
        for j in range(40):
            prob = float(rng.beta(5, 1)) if rng.random() < 0.7 else float(rng.beta(1, 3))
            pool.append(position(f"t{t}", j, j / 40, prob, prob > 0.5))
            truth[(f"t{t}", j)] = float(p[j - 1]) if j else float(p[0])
    middle = [r for r in pool if 0.3 <= truth[(r["trace_id"], r["token_index"])] <= 0.8 and r["relative_position"] > 0.2]
    cliffs = []
    for k in rng.choice(len(middle), size=25, replace=False):
        r = middle[k]
        prob = float(rng.beta(1, 4))
        while prob > 0.5:                                # a token above one half is the greedy one
            prob = float(rng.beta(1, 4))
        p_prev = rng.binomial(16, truth[(r["trace_id"], r["token_index"])]) / 16
        cliffs.append(cliff(r["trace_id"], r["token_index"], float(p_prev), r["relative_position"], prob, False))
    keys = {(c["trace_id"], c["token_index"]) for c in cliffs}
    return (sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"])),
            [r for r in pool if (r["trace_id"], r["token_index"]) not in keys], truth)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_balance_on_a_simulated_run_is_within_a_tenth(seed):
    """From a pool ten times the run, with fresh binomial estimates spent in rounds of 8 up to 32 per cliff
    (the stage's loop, experiments/ablation.choose_controls), nearly every cliff gets a control and every
    covariate's standardized mean difference is below 0.1."""
    cliffs, pool, truth = simulated_run(seed, num_traces=400)
    # unmatched, the pool is far from the cliffs in sampler probability and greedy share
    assert standardized_mean_difference([c["sampler_prob"] for c in cliffs], [r["sampler_prob"] for r in pool]) < -1
    nearest = nearest_candidates(cliffs, pool, k=32)
    rng = np.random.default_rng(seed + 100)
    estimates: dict = {}
    pairs = match_controls(cliffs, nearest, estimates, seed=0)
    for _ in range(4):
        for n, requests in next_estimates(pairs, nearest, estimates, count=8).items():
            estimates.update({(r["trace_id"], r["token_index"], n): (int(rng.binomial(n, truth[(r["trace_id"],
                              r["token_index"])])), n) for r in requests})
        pairs = match_controls(cliffs, nearest, estimates, seed=0)
    out = balance(pairs)
    assert out["num_matched"] >= 22 and out["num_matched"] + out["num_unmatched"] == 25
    assert len(estimates) < 25 * 32 / 2                  # rounds stop where a control is found
    assert set(out["covariates"]) == set(COVARIATES) and out["control_sources"]["failed"] == out["num_matched"]
    assert all(abs(v["smd"]) < 0.1 for v in out["covariates"].values()), out


def test_matched_arms_in_the_ablation_requests():
    traces = [trace("a", "q1", 6, False), trace("b", "q2", 6, False)]
    cliffs = [{"trace_id": "a", "token_index": 2, "is_first": True, "is_correct": False}]
    control = position("b", 4, 0.66, 0.2, False)
    requests = ablation_requests(traces, cliffs, [{"trace_id": "a", "critical_index": None}], seed=0,
                                 matched=[(cliffs[0], control)])
    matched = [r for r in requests if r["arm"].startswith("matched")]
    assert [(r["trace_id"], r["token_index"], r["arm"], r["prefix_length"], r["cliff_trace_id"], r["cliff_index"],
             r["is_first"]) for r in matched] == [("b", 4, "matched_del", 4, "a", 2, True),
                                                  ("b", 4, "matched_keep", 5, "a", 2, True)]
    assert all(r["cliff_trace_id"] is None for r in requests if not r["arm"].startswith("matched"))


def test_cliff_covariates_take_the_sampler_probability_and_the_replicated_potential():
    stats = schema.to_table("token_stats", stats_rows("a", [0.9, 0.2, 0.95], [True, False, True]))
    replicate = [{"trace_id": "a", "token_index": 1, "p_prev": 0.375, "num_rollouts_prev": 8}]
    got = cliff_covariates([{"trace_id": "a", "token_index": 1, "is_greedy": False, "p_prev": 0.5,
                             "num_rollouts_prev": 16},
                            {"trace_id": "z", "token_index": 0, "is_greedy": True, "p_prev": 0.5,
                             "num_rollouts_prev": 16}], stats, replicate)
    assert [(c["trace_id"], c["sampler_prob"], c["p_prev"], c["num_rollouts_prev"], c["p_prev_source"])
            for c in got] == [("a", 0.2, 0.375, 8, "replicate"), ("z", None, 0.5, 16, "detection")]
