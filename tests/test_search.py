"""The potential searches (cliffdata/search/: exhaustive, adaptive, forks) against a seeded binomial oracle and
through the real rollout path."""
from __future__ import annotations

import numpy as np
import pytest

from cliffdata.backends import Sampling, make_backend
from cliffdata.cliffs.stats import min_detectable_drop
from cliffdata.config.generate import SamplingConfig
from cliffdata.config.search import AdaptiveParams, ForksParams, RolloutsConfig
from cliffdata.search.adaptive import adaptive_search
from cliffdata.search.base import cliffs_from_evaluated
from cliffdata.search.exhaustive import exhaustive_search
from cliffdata.search.forks import fork_positions, fork_search
from project_cliffs import TEST

# The setting these curves are searched at: paper N = 64, 16 rollouts at grid points.
SEARCH, N = AdaptiveParams(initial_rollouts=16), 64
FORKS = ForksParams()
from cliffdata.search.rollouts import estimate_potentials, search_wave


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
    assert min_detectable_drop(64, 64, TEST) == 0.1875 and min_detectable_drop(16, 16, TEST) == 0.3125


def test_single_cliff_found_at_its_position_for_a_fraction_of_the_tokens():
    p = [0.8] * 300 + [0.1] * 300
    hits = 0
    for seed in range(5):
        evaluated, cliffs, oracle = run(p, seed)
        hits += cliffs == [300]
        # the screen of every swept position (12 rollouts each, then doubled while a dip or spike against
        # the plateau stays 0.03 as likely as the level: 0.45-0.48x here, ~0.5x at N = 64 in bench/adaptive.py)
        # is all of it; exhaustive spends N everywhere
        assert oracle.tokens < 0.55 * exhaustive_tokens(p)
        for i in cliffs:                                   # every reported cliff was tested at full N
            assert evaluated[i - 1][0] == evaluated[i][0] == 64
    assert hits >= 4


def test_drop_then_recovery_inside_one_grid_interval_is_found():
    """The ends of the grid interval agree (0.85); only the sweep sees the 3-token dip."""
    p = [0.85] * 203 + [0.1] * 3 + [0.85] * 394
    found = sum(206 - 3 in run(p, seed)[1] for seed in range(5))
    assert found >= 4


@pytest.mark.parametrize("level,spike", [(0.4, 0.8), (0.2, 0.55)])
def test_a_one_token_spike_is_found_where_bisection_and_a_dip_screen_are_blind(level, spike):
    """A single token far above a mid-level plateau: the cliff is the fall right after it. The grid's
    ends agree and nothing dips, so only the screen's upward alternative sees it."""
    p = [level] * 250 + [spike] + [level] * 349
    assert min_detectable_drop(64, 64, TEST) < spike - level
    found = sum(251 in run(p, seed)[1] for seed in range(5))
    exhaustive = sum(251 in cliffs_from_evaluated(exhaustive_search(BinomialOracle(p, seed), list(range(600)), N), TEST)
                     for seed in range(5))
    assert exhaustive >= 4 and found >= exhaustive - 1


@pytest.mark.parametrize("level_count,n,direction", [(58, 6, -1), (32, 6, -1), (32, 12, 1), (13, 4, 1), (64, 6, -1),
                                                     (0, 6, 1), (3, 6, -1)])
def test_screen_likelihood_ratio_is_the_depth_average_of_binomial_ratios(level_count, n, direction):
    """_lr_row against scipy: the mean over the detectable depths of Binom(k | n, alt) / Binom(k | n, level),
    and zero where no depth is detectable from the level (a fall from ~0, a rise from ~1)."""
    from scipy.stats import binom

    from cliffdata.cliffs.stats import is_cliff
    from cliffdata.search.adaptive import _DEPTHS, _lr_row, needed_moves

    down, up = needed_moves(N, TEST)
    for k in range(N + 1):                       # the needed moves are the cliff matrix's smallest cells
        if np.isfinite(down[k]):
            d = round(down[k] * N)
            assert is_cliff(k, N, k - d, N, TEST) and not is_cliff(k, N, k - d + 1, N, TEST)
        if np.isfinite(up[k]):
            u = round(up[k] * N)
            assert is_cliff(k + u, N, k, N, TEST) and not is_cliff(k + u - 1, N, k, N, TEST)
    level = min(max(level_count / N, 0.5 / N), 1 - 0.5 / N)
    need = (down if direction < 0 else up)[level_count]
    room = level if direction < 0 else 1 - level
    row = _lr_row(level_count, n, N, TEST, direction)
    if not need < room:
        assert not row.any()
        return
    alt = np.clip(level + direction * (need + (room - need) * np.linspace(0, 1, _DEPTHS)), 1e-9, 1 - 1e-9)
    expected = [np.mean(binom.pmf(k, n, alt) / binom.pmf(k, n, level)) for k in range(n + 1)]
    np.testing.assert_allclose(row, expected, rtol=1e-9)


def test_several_cliffs_and_plateaus():
    p = [0.7] * 100 + [0.3] * 200 + [0.9] * 100 + [0.05] * 200
    found = [run(p, seed)[1] for seed in range(3)]
    assert sum(set(f) >= {100, 400} for f in found) >= 2


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_plateaus_at_zero_and_one_are_cheap_and_clean(level):
    p = [level] * 500
    evaluated, cliffs, oracle = run(p)
    assert cliffs == []
    # the sweep (sweep_rollouts at every position) plus the grid, and nothing else: no interval opens
    assert oracle.tokens < (SEARCH.sweep_rollouts + 1) / N * exhaustive_tokens(p)


def test_gradual_decline_is_not_a_cliff():
    """No true drop anywhere: every reported cliff is the test firing on noise, which it does at N on
    both sides in any mode: the search reports no more of them than exhaustive on the same seeds."""
    p = list(np.linspace(1, 0, 600))
    false = sum(len(run(p, seed)[1]) for seed in range(10))
    exhaustive = sum(len(cliffs_from_evaluated(exhaustive_search(BinomialOracle(p, seed), list(range(600)), N), TEST))
                     for seed in range(10))
    assert false <= exhaustive and false <= 10


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
    rows, cost = estimate_potentials(trace, "7", "hash", be, tiny_tokenizer, cfg, sampling, TEST)
    again, _ = estimate_potentials(trace, "7", "hash", be, tiny_tokenizer, cfg, sampling, TEST)
    assert rows == again                                       # seeds per (trace, position, round)
    assert {r["mode"] for r in rows} == {"adaptive"}
    evaluated = {r["token_index"]: (r["num_rollouts"], r["num_correct"], r["num_generated_tokens"]) for r in rows}
    assert cliffs_from_evaluated(evaluated, TEST) == [30]
    assert cost["num_rollouts"] < 0.5 * 64 * len(response)
    assert cost["num_generated_tokens"] == sum(r["num_generated_tokens"] for r in rows)


# --- the fork-aware search ------------------------------------------------------------------------

def test_fork_positions_are_the_tokens_that_can_carry_a_detectable_drop():
    delta_min = min_detectable_drop(N, N, TEST)              # 0.1875 at N = 64
    max_drop = {0: 0.9, 1: delta_min, 2: delta_min - 1e-9, 3: None, 4: float("nan"), 5: 0.0}
    # 0 has no scored predecessor here; 1 is exactly detectable; 2 is not; None/NaN have no bound
    assert fork_positions(range(0, 7), max_drop, N, TEST) == [1, 3, 4, 6]
    assert fork_positions(range(-1, 7), max_drop, N, TEST) == [0, 1, 3, 4, 6]


def _identity_curve(rng, T, forks):
    """A curve the sampler identity allows: p moves by at most max_drop at each token, and only the
    forks' max_drop lets a detectable drop happen."""
    max_drop = {i: (0.6 if i in forks else 0.02) for i in range(T)}
    p = np.empty(T)
    p[0] = 0.9
    for i in range(1, T):
        step = rng.uniform(-max_drop[i], max_drop[i]) if i not in forks else -0.55
        p[i] = np.clip(p[i - 1] + step, 0.05, 0.95)
    return p, max_drop


def test_fork_search_spends_nothing_off_the_forks_and_finds_their_cliffs():
    rng = np.random.default_rng(3)
    p, max_drop = _identity_curve(rng, 400, forks={120})
    oracle = BinomialOracle(p, seed=4)
    evaluated = fork_search(oracle, list(range(400)), max_drop, FORKS, N, TEST)
    assert set(evaluated) == {119, 120}                     # both sides of the fork, nothing else
    assert cliffs_from_evaluated(evaluated, TEST) == [120]
    assert evaluated[119][0] == evaluated[120][0] == N      # tested at full N
    assert oracle.tokens < 0.01 * exhaustive_tokens(p)


def test_fork_search_closes_a_fork_without_a_drop_early():
    """A fork whose two sides are level: a detectable drop stops being plausible before N."""
    p = [0.9] * 50
    max_drop = dict.fromkeys(range(50), 0.0) | {25: 0.8}
    spent = []
    for seed in range(20):
        evaluated = fork_search(BinomialOracle(p, seed=seed), list(range(50)), max_drop, FORKS, N, TEST)
        assert set(evaluated) == {24, 25} and cliffs_from_evaluated(evaluated, TEST) == []
        spent.append(evaluated[24][0] + evaluated[25][0])
    assert np.mean(spent) < N                # exhaustive spends 2N on the pair


def test_forks_mode_through_the_rollout_path_and_one_scheduler(tiny_tokenizer):
    """mode forks on the real path: rows only at the fork's sides; the wave's searches share engine
    calls, each with at most positions_per_batch prefixes, fewer calls than trace by trace."""
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    trap = 70

    class Counting:
        def __init__(self, inner):
            self.inner, self.sizes = inner, []
            self.deterministic, self.eos_token_ids = inner.deterministic, inner.eos_token_ids

        def generate(self, requests, sampling):
            self.sizes.append(len(requests))
            return self.inner.generate(requests, sampling)

    be = make_backend("fake", correct_ids=enc("#### 7"), wrong_ids=enc("#### 3"), eos_token_id=2,
                      potential=lambda ids: 0.05 if trap in ids else 0.9)
    traces = [{"trace_id": f"p/{k}#0", "problem_id": "p", "prompt_ids": [1, 24],
               "response_ids": [40] * (10 + k) + [trap] + [41] * 9 + [2]} for k in range(4)]
    fork = {t["trace_id"]: dict.fromkeys(range(len(t["response_ids"])), 0.01) | {10 + k: 0.7}
            for k, t in enumerate(traces)}
    golds = {"p": ("7", "hash", None)}
    cfg = RolloutsConfig(mode="forks", num_rollouts=64, positions_per_batch=3, traces_per_wave=4,
                         sampling=SamplingConfig(temperature=0.7, max_new_tokens=8))
    packed = Counting(be)
    out = search_wave(traces, golds, packed, tiny_tokenizer, cfg, cfg.sampling, TEST, fork)
    for k, (rows, cost) in enumerate(out):
        assert {r["token_index"] for r in rows} == {9 + k, 10 + k} and {r["mode"] for r in rows} == {"forks"}
        evaluated = {r["token_index"]: (r["num_rollouts"], r["num_correct"], 0) for r in rows}
        assert cliffs_from_evaluated(evaluated, TEST) == [10 + k]
    assert max(packed.sizes) == 3
    alone = Counting(be)
    for t in traces:
        rows, _ = estimate_potentials(t, "7", "hash", alone, tiny_tokenizer, cfg, cfg.sampling, TEST, fork[t["trace_id"]])
    assert len(packed.sizes) < len(alone.sizes)
    with pytest.raises(ValueError, match="no token_stats max_drop"):
        estimate_potentials(traces[0], "7", "hash", be, tiny_tokenizer, cfg, cfg.sampling, TEST)


def test_fork_search_closes_a_fork_whose_potential_is_too_high_to_fall():
    """The identity bounds the drop by max_drop·(1 − p[i]): at a high potential a fork with max_drop 0.5 cannot
    carry a drop of δ_min (p = 0.99 here), so it is closed at initial_rollouts whatever the plausibility test says."""
    p = [0.99] * 40
    max_drop = dict.fromkeys(range(40), 0.0) | {20: 0.5}
    spent = [sum(n for n, _, _ in fork_search(BinomialOracle(p, seed=s), list(range(40)), max_drop, FORKS, N,
                                               TEST).values()) for s in range(10)]
    assert sum(s == 2 * FORKS.initial_rollouts for s in spent) >= 8     # mostly closed at initial_rollouts
    assert max(spent) < 2 * N                                          # never tested at N


def test_plausible_drop_with_n_uses_the_spread_of_the_final_tests_drop():
    """Rollouts already drawn are part of the final test's counts: with N given, each side's variance is
    scaled by (N − n) / N, so at n = N the rule is the observed drop itself against δ_min."""
    from cliffdata.search.base import Counts, plausible_drop

    def counts(ka, na, kb, nb):
        c = Counts()
        c.n, c.k, c.tokens = {0: na, 1: nb}, {0: ka, 1: kb}, {0: 0, 1: 0}
        return c

    dmin = min_detectable_drop(16, 16, TEST)             # 0.3125
    level = counts(6, 8, 6, 8)                           # no drop seen, half of N drawn
    qa, va = level.smoothed(0)
    assert 1.5 * np.sqrt(2 * va) > dmin                  # the estimate's SE alone keeps it open ...
    assert plausible_drop(level, 0, 1, dmin, 1.5)
    assert 1.5 * np.sqrt(2 * va * 8 / 16) < dmin         # ... the final drop's spread does not
    assert not plausible_drop(level, 0, 1, dmin, 1.5, 16)
    for ka, kb in [(16, 11), (16, 12), (10, 5), (10, 6)]:  # at n = N: the observed drop decides
        full = counts(ka, 16, kb, 16)
        assert plausible_drop(full, 0, 1, dmin, 1.5, 16) == ((ka - kb) / 16 > dmin)
    assert plausible_drop(counts(3, 4, 2, 4), 0, 1, dmin, 1.5, 16)   # n << N: still open
