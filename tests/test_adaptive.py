"""Adaptive potential search against a seeded binomial oracle and through the real rollout path."""
from __future__ import annotations

import numpy as np
import pytest

from cliffdata.adaptive import adaptive_search, cliffs_from_evaluated, exhaustive_search
from cliffdata.backends import Sampling, make_backend
from cliffdata.config import AdaptiveParams, CliffsConfig, RolloutsConfig, SamplingConfig
from cliffdata.stats import min_detectable_drop

TEST = CliffsConfig()
# The setting these curves are searched at: paper N = 64, 16 rollouts at grid points.
SEARCH, N = AdaptiveParams(initial_rollouts=16), 64
from cliffdata.rollouts import estimate_potentials


class BinomialOracle:
    """Ground-truth curve p; each rollout from position i costs the remaining length T-1-i tokens."""

    def __init__(self, p, seed=0):
        self.p, self.rng = np.asarray(p, dtype=float), np.random.default_rng(seed)
        self.tokens = self.rollouts_drawn = 0

    def rollouts(self, requests):
        out = []
        for i, n in requests:
            k = int(self.rng.binomial(n, self.p[i]))
            tokens = n * (len(self.p) - 1 - i)
            self.tokens += tokens
            self.rollouts_drawn += n
            out.append((k, tokens))
        return out


def run(p, seed=1, cfg=SEARCH):
    oracle = BinomialOracle(p, seed)
    evaluated = adaptive_search(oracle, list(range(len(p))), cfg, N, TEST)
    return evaluated, cliffs_from_evaluated(evaluated, TEST), oracle


def exhaustive_tokens(p, n=64):
    oracle = BinomialOracle(p, 0)
    exhaustive_search(oracle, list(range(len(p))), n)
    return oracle.tokens


def test_min_detectable_drop_matches_protocol():
    assert min_detectable_drop(64) == 0.1875 and min_detectable_drop(16) == 0.3125


def test_single_cliff_found_at_its_position_for_a_fraction_of_the_tokens():
    p = [0.8] * 300 + [0.1] * 300
    hits = 0
    for seed in range(5):
        evaluated, cliffs, oracle = run(p, seed)
        hits += cliffs == [300]
        assert oracle.tokens < 0.15 * exhaustive_tokens(p)
        for i in cliffs:                                   # every reported cliff was tested at full N
            assert evaluated[i - 1][0] == evaluated[i][0] == 64
    assert hits >= 4


def test_drop_then_recovery_inside_one_grid_interval_is_found():
    """The ends of the grid interval agree (0.85); only the sweep sees the 3-token dip."""
    p = [0.85] * 203 + [0.1] * 3 + [0.85] * 394
    found = sum(206 - 3 in run(p, seed)[1] for seed in range(5))
    assert found >= 4


def test_several_cliffs_and_plateaus():
    p = [0.7] * 100 + [0.3] * 200 + [0.9] * 100 + [0.05] * 200
    found = [run(p, seed)[1] for seed in range(3)]
    assert sum(set(f) >= {100, 400} for f in found) >= 2


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_plateaus_at_zero_and_one_are_cheap_and_clean(level):
    p = [level] * 500
    evaluated, cliffs, oracle = run(p)
    assert cliffs == []
    assert oracle.tokens < 0.06 * exhaustive_tokens(p)


def test_gradual_decline_is_not_a_cliff():
    p = list(np.linspace(1, 0, 600))
    assert sum(len(run(p, seed)[1]) for seed in range(3)) <= 1


def test_positions_must_be_consecutive():
    with pytest.raises(ValueError, match="consecutive"):
        adaptive_search(BinomialOracle([0.5] * 5), [0, 2, 3], SEARCH, N, TEST)
    with pytest.raises(ValueError, match="initial_rollouts"):
        adaptive_search(BinomialOracle([0.5] * 5), [0, 1, 2], SEARCH, 8, TEST)


def test_adaptive_mode_through_the_rollout_path(tiny_tokenizer):
    """The same search on the real rollout path: rows carry mode, N per position, and the trap cliff."""
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    trap = 70
    be = make_backend("fake", correct_ids=enc("#### 7"), wrong_ids=enc("#### 3"), eos_token_id=2,
                      potential=lambda ids: 0.05 if trap in ids else 0.9)
    response = [40] * 30 + [trap] + [41] * 29 + [2]
    trace = {"trace_id": "p/0#0", "problem_id": "p", "prompt_ids": [1, 24], "response_ids": response}
    cfg = RolloutsConfig(mode="adaptive", num_rollouts=64, adaptive=AdaptiveParams(grid_points=8),
                         sampling=SamplingConfig(temperature=0.7, max_new_tokens=8))
    sampling = Sampling(temperature=0.7, max_new_tokens=8)
    rows, cost = estimate_potentials(trace, "7", "hash", be, tiny_tokenizer, cfg, sampling)
    again, _ = estimate_potentials(trace, "7", "hash", be, tiny_tokenizer, cfg, sampling)
    assert rows == again                                       # seeds per (trace, position, round)
    assert {r["mode"] for r in rows} == {"adaptive"}
    evaluated = {r["token_index"]: (r["num_rollouts"], r["num_correct"], r["num_generated_tokens"]) for r in rows}
    assert cliffs_from_evaluated(evaluated, TEST) == [30]
    assert cost["num_rollouts"] < 0.5 * 64 * len(response)
    assert cost["num_generated_tokens"] == sum(r["num_generated_tokens"] for r in rows)
