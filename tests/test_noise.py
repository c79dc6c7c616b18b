"""The noise floor of the cliff test: p-values, the null firing probability against brute
force and scipy, the smallest detectable drop, Benjamini-Hochberg, and the per-trace expected false
cliffs against simulated flat curves."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps

from cliffdata import schema
from cliffdata.cliffs.find import find_cliffs
from cliffdata.cliffs.select import select_cliffs
from cliffdata.cliffs.stats import (benjamini_hochberg, cliff_matrix, cliff_p_value, detect_cliffs, is_cliff,
                                    min_detectable_drop, null_count_pmf, null_count_quantile, null_fire_conditional,
                                    null_fire_probability)
from project_cliffs import CLIFFS, TEST, cliffs_config
from test_cliffs import tables

DELTA0, Z = TEST.delta0, TEST.z     # the cliffs params section's test (params.yaml cliffs.test)


@pytest.mark.parametrize("n_prev, n_curr", [(16, 16), (64, 64), (8, 16), (64, 12)])
def test_p_value_and_the_test_are_one_decision(n_prev, n_curr):
    kp, kc = np.meshgrid(np.arange(n_prev + 1), np.arange(n_curr + 1), indexing="ij")
    p = cliff_p_value(kp, n_prev, kc, n_curr, TEST)
    fires = is_cliff(kp, n_prev, kc, n_curr, TEST)
    alpha = sps.norm.sf(Z)
    # away from the boundary (floating point at p == alpha), fires <=> p < 1 - Phi(z)
    clear = np.abs(p - alpha) > 1e-9
    assert np.array_equal(fires[clear], (p < alpha)[clear])
    assert ((p >= 0) & (p <= 1)).all()


def test_p_value_closed_cases():
    # 16/16 -> 11/16: delta 5/16, SE sqrt(11/16 * 5/16 / 16)
    se = math.sqrt(11 / 16 * 5 / 16 / 16)
    assert cliff_p_value(16, 16, 11, 16, TEST) == pytest.approx(sps.norm.sf((5 / 16 - 0.1) / se), abs=1e-15)
    assert cliff_p_value(16, 16, 0, 16, TEST) == 0.0          # SE = 0 and delta > delta0
    assert cliff_p_value(16, 16, 16, 16, TEST) == 1.0         # SE = 0 and delta <= delta0
    assert cliff_p_value(3, 0, 0, 16, TEST) == 1.0            # an unscored side


def brute_null_fire(p: float, n_prev: int, n_curr: int) -> float:
    m = cliff_matrix(n_prev, n_curr, TEST)
    return sum(math.comb(n_prev, a) * p ** a * (1 - p) ** (n_prev - a)
               * math.comb(n_curr, b) * p ** b * (1 - p) ** (n_curr - b)
               for a in range(n_prev + 1) for b in range(n_curr + 1) if m[a, b])


@pytest.mark.parametrize("n_prev, n_curr", [(64, 64), (16, 16), (8, 16), (64, 12)])
def test_null_fire_probability_equals_brute_force_and_scipy(n_prev, n_curr):
    levels = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0]
    got = null_fire_probability(levels, n_prev, n_curr, TEST)
    m = cliff_matrix(n_prev, n_curr, TEST)
    for p, q in zip(levels, got):
        assert q == pytest.approx(brute_null_fire(p, n_prev, n_curr), abs=1e-12)
        scipy_sum = float((np.outer(sps.binom(n_prev, p).pmf(np.arange(n_prev + 1)),
                                    sps.binom(n_curr, p).pmf(np.arange(n_curr + 1))) * m).sum())
        assert q == pytest.approx(scipy_sum, abs=1e-12)
    assert null_fire_probability(0.5, n_prev, n_curr, TEST) == pytest.approx(got[5], abs=0)     # scalar in, scalar out


def test_null_fire_probability_at_n64():
    # N = 64 on both sides: 0.30% at p = 0.5, 0.23% at 0.3/0.7, 0.11% at 0.2/0.8 (0.1145%), 0.02% at 0.1/0.9
    q = null_fire_probability([0.5, 0.3, 0.7, 0.2, 0.8, 0.1, 0.9], 64, 64, TEST)
    assert np.round(100 * q, 2).tolist() == [0.30, 0.23, 0.23, 0.11, 0.11, 0.02, 0.02]


def test_null_fire_conditional_is_the_hypergeometric_split_and_unbiased():
    rng = np.random.default_rng(0)
    n_prev = rng.choice([8, 16, 64], 100)
    n_curr = rng.choice([8, 16, 64], 100)
    k_prev, k_curr = rng.binomial(n_prev, 0.4), rng.binomial(n_curr, 0.4)
    got = null_fire_conditional(k_prev, n_prev, k_curr, n_curr, TEST)
    for j in range(100):                   # brute force: every split of the total, hypergeometric weights
        a_, b_, total = int(n_prev[j]), int(n_curr[j]), int(k_prev[j] + k_curr[j])
        m = cliff_matrix(a_, b_, TEST)
        want = sum(sps.hypergeom(a_ + b_, a_, total).pmf(x) for x in range(max(0, total - b_), min(a_, total) + 1)
                   if m[x, total - x])
        assert got[j] == pytest.approx(want, abs=1e-12)
    # unbiased: averaged over the total K ~ Bin(n_prev + n_curr, p), it is null_fire_probability(p)
    for n_a, n_b in [(16, 16), (64, 64), (8, 16)]:
        totals = np.arange(n_a + n_b + 1)
        table = null_fire_conditional(np.minimum(totals, n_a), n_a, totals - np.minimum(totals, n_a), n_b, TEST)
        for p in (0.1, 0.5, 0.77):
            assert sps.binom(n_a + n_b, p).pmf(totals) @ table == pytest.approx(
                null_fire_probability(p, n_a, n_b, TEST), abs=1e-12)
    assert null_fire_conditional([3], [0], [2], [16], TEST).tolist() == [0.0]      # unscored pairs contribute nothing


def test_min_detectable_drop():
    assert min_detectable_drop(64, 64, TEST) == 0.1875 and min_detectable_drop(16, 16, TEST) == 0.3125
    # brute force: the smallest observed drop among the cells that fire, for unequal N too
    for a, b in [(8, 16), (64, 12), (2, 2)]:
        cells = [x / a - y / b for x in range(a + 1) for y in range(b + 1) if is_cliff(x, a, y, b, TEST)]
        assert min_detectable_drop(a, b, TEST) == (min(cells) if cells else math.inf)


def test_benjamini_hochberg_against_the_definition():
    rng = np.random.default_rng(1)
    for m in (1, 5, 50, 400):
        p = np.concatenate([rng.uniform(0, 1, m), rng.uniform(0, 0.002, m // 4)])
        rng.shuffle(p)
        for q in (0.05, 0.2):
            ranked = np.sort(p)
            ks = [k for k in range(1, len(p) + 1) if ranked[k - 1] <= q * k / len(p)]
            expected = p <= ranked[max(ks) - 1] if ks else np.zeros(len(p), dtype=bool)
            assert np.array_equal(benjamini_hochberg(p, q), expected)
    assert benjamini_hochberg([], 0.1).tolist() == []
    with pytest.raises(ValueError, match="FDR level"):
        benjamini_hochberg([0.1], 1.0)


def flat_tables(level: float, n: int, num_traces: int, num_tokens: int, seed: int):
    """Exhaustive potentials of traces whose true potential never moves (every cliff is false)."""
    rng = np.random.default_rng(seed)
    traces, pots, stats = [], [], []
    for t in range(num_traces):
        tid = f"flat/{t}#0"
        traces.append({"trace_id": tid, "problem_id": f"flat/{t}", "sample_index": 0, "prompt_ids": [1],
                       "response_ids": [5] * num_tokens, "response_text": "", "extracted_answer": None,
                       "is_correct": False, "finish_reason": "stop", "num_tokens": num_tokens})
        for i, k in zip(range(-1, num_tokens), rng.binomial(n, level, num_tokens + 1)):
            pots.append({"trace_id": tid, "token_index": i, "mode": "exhaustive", "num_rollouts": n,
                         "num_correct": int(k), "potential": k / n, "is_filled": False, "num_generated_tokens": 0})
        stats += [{"trace_id": tid, "token_index": i, "token_id": 5, "logprob": -0.7, "rank": 1, "entropy": 0.7,
                   "entropy_full": 0.7, "greedy_token_id": 5, "is_greedy": True, "top_ids": [5], "top_probs": [0.5],
                   "sampler_prob": 0.5, "max_drop": 0.5} for i in range(num_tokens)]
    return (schema.to_table("traces", traces), schema.to_table("potentials", pots),
            schema.to_table("token_stats", stats))


@pytest.mark.parametrize("level, n", [(0.5, 16), (0.5, 64), (0.3, 64), (0.8, 16), (0.15, 64)])
def test_expected_false_cliffs_match_simulated_flat_curves(level, n):
    """Mean observed false cliffs per trace inside the 95% interval of the summed expected_false_cliffs
    (± 1.96 · sqrt(Σ q(1 − q)) over all pairs, per trace)."""
    num_traces, num_tokens = 400, 200
    cliffs, summaries = find_cliffs(*flat_tables(level, n, num_traces, num_tokens, seed=int(100 * level) + n),
                                    CLIFFS)
    observed = sum(s["num_cliffs"] for s in summaries) / num_traces
    expected = sum(s["expected_false_cliffs"] for s in summaries) / num_traces
    half = 1.96 * math.sqrt(sum(s["false_cliffs_variance"] for s in summaries)) / num_traces
    assert abs(observed - expected) <= half, (observed, expected, half)
    # and the estimate is close to the truth: the expected count at the true level
    truth = num_tokens * null_fire_probability(level, n, n, TEST)
    assert expected == pytest.approx(truth, rel=0.15)
    assert len(cliffs) == sum(s["num_cliffs"] for s in summaries)


def test_find_cliffs_carries_the_evidence():
    counts = [(16, 16), (16, 16), (2, 16), (2, 16), (15, 16), (1, 16)]      # positions -1 … 4
    traces, potentials, stats = tables({"a/1#0": counts}, {"a/1#0": [(0.5, 1)] * 6}, {"a/1#0": False})
    probs = [0.99, 0.2, 0.9, 0.5, 0.7, 0.1]                                  # sampler_prob of tokens 0 … 5
    stats = (stats.drop_columns(["sampler_prob", "max_drop"])
             .append_column("sampler_prob", pa.array(probs, pa.float64()))
             .append_column("max_drop", pa.array([1 - p for p in probs], pa.float64())))
    cliffs, (summary,) = find_cliffs(traces, potentials, stats, CLIFFS)
    assert [c["token_index"] for c in cliffs] == [1, 4]
    first, second = cliffs
    assert first["p_value"] == cliff_p_value(16, 16, 2, 16, TEST)
    assert first["max_drop"] == pytest.approx(0.8) and first["feasible"] is True
    assert second["max_drop"] == pytest.approx(0.3) and second["feasible"] is False     # < delta_min(16) = 0.3125
    assert summary["num_feasible"] == 2                    # tested tokens 0 … 4; max_drop >= 0.3125: tokens 1 and 3
    q = [float(null_fire_conditional(a, 16, b, 16, TEST)) for (a, _), (b, _) in zip(counts[:-1], counts[1:])]
    assert summary["expected_false_cliffs"] == pytest.approx(sum(q), abs=1e-15)
    assert summary["false_cliffs_variance"] == pytest.approx(sum(x * (1 - x) for x in q), abs=1e-15)
    values, num_pairs = np.unique([x for x in q if x > 0], return_counts=True)
    assert summary["null_fire_cells"] == [{"q": float(v), "num_pairs": int(c)} for v, c in zip(values, num_pairs)]
    assert first["fdr_significant"] is None                 # FDR off by default
    # FDR over the dataset's 5 tested pairs
    on, _ = find_cliffs(traces, potentials, stats, cliffs_config(fdr_q=0.05))
    k = np.array([a for a, _ in counts])
    expected = benjamini_hochberg(cliff_p_value(k[:-1], 16, k[1:], 16, TEST), 0.05)
    assert [c["fdr_significant"] for c in on] == [bool(expected[1]), bool(expected[4])]
    # token_stats without sampler_prob: evidence unknown, not made up
    old = stats.drop_columns(["sampler_prob", "max_drop"])
    old = old.append_column("sampler_prob", pa.nulls(6, pa.float64())).append_column("max_drop", pa.nulls(6, pa.float64()))
    unknown, (summary,) = find_cliffs(traces, potentials, old, CLIFFS)
    assert [(c["max_drop"], c["feasible"]) for c in unknown] == [(None, None)] * 2 and summary["num_feasible"] == 0


def test_select_cliffs():
    cliffs = [{"trace_id": "a", "token_index": 1, "feasible": True}, {"trace_id": "a", "token_index": 4, "feasible": False},
              {"trace_id": "b", "token_index": 2, "feasible": None}]
    replicate = [{"trace_id": "a", "token_index": 1, "replicated": False},
                 {"trace_id": "a", "token_index": 4, "replicated": True},
                 {"trace_id": "b", "token_index": 2, "replicated": True}]
    assert select_cliffs(cliffs, "all") == cliffs
    assert [c["token_index"] for c in select_cliffs(cliffs, "feasible")] == [1]
    assert [c["token_index"] for c in select_cliffs(cliffs, "replicated", replicate)] == [4, 2]
    with pytest.raises(ValueError, match="no replicate row"):
        select_cliffs(cliffs, "replicated", replicate[:2])
    with pytest.raises(ValueError, match="needs the replicate stage"):
        select_cliffs(cliffs, "replicated")


def test_config_validates_the_new_keys():
    with pytest.raises(ValueError, match="cliffs.use"):
        cliffs_config(use="some")
    with pytest.raises(ValueError, match="fdr_q"):
        cliffs_config(fdr_q=1.5)
    assert detect_cliffs([16, 2], [16, 16], TEST).tolist() == [False, True]


# --- the false-cliff count's exact law (Poisson-binomial) ------------------------------------------------

def brute_force_law(q: list[float]) -> np.ndarray:
    """P(count = x) over all 2^len(q) outcomes of independent pairs."""
    law = np.zeros(len(q) + 1)
    for fired in itertools.product((0, 1), repeat=len(q)):
        law[sum(fired)] += math.prod(p if f else 1 - p for p, f in zip(q, fired))
    return law


@pytest.mark.parametrize("seed", range(5))
def test_null_count_law_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    q = np.r_[rng.uniform(0, 0.6, 4), 0.0, 1.0]             # a pair that never fires and one that always does
    counts = rng.integers(0, 4, len(q))
    offset, pmf = null_count_pmf(q, counts)
    law = brute_force_law([p for p, c in zip(q, counts) for _ in range(c)])
    full = np.zeros(len(law))
    full[offset:offset + len(pmf)] = pmf
    np.testing.assert_allclose(full, law, atol=1e-14)
    cdf = np.cumsum(law)
    for prob in (0.025, 0.5, 0.975, 1.0):
        assert null_count_quantile(q, counts, prob) == int(np.argmax(cdf >= prob - 1e-12))


@pytest.mark.parametrize("n, q", [(10, 0.3), (1000, 0.01), (10**6, 0.002), (5 * 10**7, 1e-4)])
def test_null_count_quantile_of_one_probability_is_scipys_binomial(n, q):
    for prob in (0.025, 0.5, 0.975):
        assert null_count_quantile([q], [n], prob) == int(sps.binom.ppf(prob, n, q))


def test_null_count_law_is_cheap_at_10_to_the_8_pairs():
    q = np.linspace(1e-4, 0.05, 200)
    offset, pmf = null_count_pmf(q, np.full(200, 500_000))
    mean = 500_000 * q.sum()
    assert abs(offset + np.dot(np.arange(len(pmf)), pmf) - mean) < 1e-6 * mean
    sd = np.sqrt(500_000 * np.sum(q * (1 - q)))
    assert len(pmf) < 20 * sd                                 # a window of a few sds, not 10^8 cells


def test_null_count_interval_covers_at_least_95_percent():
    """Simulated false-cliff counts fall inside [q2.5, q97.5] in >= 95% of draws (the law is discrete,
    so the interval is conservative), where a ± 1.96 SD normal interval covers less for skewed counts."""
    rng = np.random.default_rng(7)
    q, counts = np.array([0.001, 0.01]), np.array([300, 20])          # half a false cliff expected
    lo, hi = (null_count_quantile(q, counts, prob) for prob in (0.025, 0.975))
    draws = sum(rng.binomial(c, p, 20_000) for p, c in zip(q, counts))
    assert np.mean((draws >= lo) & (draws <= hi)) >= 0.95
    mean, sd = float(np.dot(q, counts)), float(np.sqrt(np.dot(q * (1 - q), counts)))
    assert np.mean((draws >= mean - 1.96 * sd) & (draws <= mean + 1.96 * sd)) < 0.95


def test_null_count_law_refuses_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        null_count_pmf([0.1, 0.2], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        null_count_pmf([1.5], [1])
    with pytest.raises(ValueError, match="probability must be in"):
        null_count_quantile([0.1], [1], 1.5)
