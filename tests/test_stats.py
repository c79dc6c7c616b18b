"""Tests for cliffdata.cliffs.stats: the cliff test (protocol §2) against a naive loop and scipy, pass@k
against enumeration, the critical token, H_b and the Wilson interval.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_stats.py
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from itertools import combinations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from cliffdata.cliffs.stats import (binary_entropy, cliff_matrix, critical_index, detect_cliffs, is_cliff, pass_at_k,
                                    wilson_interval)
from project_cliffs import TEST

DELTA0, Z = TEST.delta0, TEST.z     # the cliffs params section's test (params.yaml cliffs.test)

Z_95 = float(norm.ppf(0.95))  # 1.6448536..., the exact one-sided 95% quantile
TEST_95 = dataclasses.replace(TEST, z=Z_95)


def naive_is_cliff(k_prev: int, n_prev: int, k_curr: int, n_curr: int,
                   delta0: float = DELTA0, z: float = Z) -> bool:
    """Protocol §2 written out with plain python math, one cell at a time."""
    p_prev = k_prev / n_prev
    p_curr = k_curr / n_curr
    delta = p_prev - p_curr
    se = math.sqrt(p_prev * (1 - p_prev) / n_prev + p_curr * (1 - p_curr) / n_curr)
    return delta > delta0 and delta > delta0 + z * se


def naive_matrix(n_prev: int, n_curr: int, z: float = Z) -> np.ndarray:
    return np.array([[naive_is_cliff(kp, n_prev, kc, n_curr, z=z) for kc in range(n_curr + 1)]
                     for kp in range(n_prev + 1)])


def z_statistic(k_prev: int, n_prev: int, k_curr: int, n_curr: int, delta0: float = DELTA0) -> float:
    """One-sided z statistic (Δ − δ0)/SE; SE = 0 gives ±inf (or nan when Δ = δ0)."""
    p_prev, p_curr = k_prev / n_prev, k_curr / n_curr
    excess = (p_prev - p_curr) - delta0
    se = math.sqrt(p_prev * (1 - p_prev) / n_prev + p_curr * (1 - p_curr) / n_curr)
    if se == 0:
        return math.copysign(math.inf, excess) if excess != 0 else math.nan
    return excess / se


# ---------------------------------------------------------------- the cliff matrix, N = 64 facts


def test_cliff_matrix_64_count():
    m = cliff_matrix(64, 64, TEST)
    assert m.shape == (65, 65)
    assert m.dtype == bool
    assert int(m.sum()) == 1283


def test_cliff_matrix_64_smallest_k_prev():
    rows_with_cliff = np.flatnonzero(cliff_matrix(64, 64, TEST).any(axis=1))
    assert rows_with_cliff[0] == 12
    assert 12 / 64 == 0.1875


def _min_drop(row: np.ndarray, k_prev: int, n: int = 64) -> float:
    return min((k_prev - k_curr) / n for k_curr in np.flatnonzero(row))


def test_cliff_matrix_64_smallest_drop():
    m = cliff_matrix(64, 64, TEST)
    assert _min_drop(m[12], 12) == 0.1875   # p_prev = 0.1875
    assert _min_drop(m[64], 64) == 0.1875   # p_prev = 1.0
    for k_prev in range(32, 49):            # p_prev in [0.5, 0.75]
        assert _min_drop(m[k_prev], k_prev) == 0.25, k_prev
    # 0.1875 is the global minimum over all rows, 0.25 the maximum of the per-row minimum.
    drops = [_min_drop(m[k], k) for k in range(65) if m[k].any()]
    assert min(drops) == 0.1875
    assert max(drops) == 0.25


def test_cliff_matrix_64_rows_monotone():
    m = cliff_matrix(64, 64, TEST)
    for k_prev in range(65):
        cliffs = np.flatnonzero(m[k_prev])
        if len(cliffs):
            # a cliff at k_curr implies a cliff at every smaller k_curr: the row is a prefix of True
            assert m[k_prev, : cliffs.max() + 1].all(), k_prev
    # and more k_prev never removes a cliff
    assert (m[1:] >= m[:-1]).all()


def test_cliff_matrix_64_edges():
    m = cliff_matrix(64, 64, TEST)
    assert not m[0].any()                 # k_prev = 0 is never a cliff
    assert not np.diag(m).any()           # no drop, no cliff
    assert not np.triu(m).any()           # rises are never cliffs
    assert m[64, 0]                       # 1 → 0: SE = 0, Δ = 1 > δ0
    assert is_cliff(64, 64, 0, 64, TEST)
    assert is_cliff(1, 1, 0, 1, TEST)           # SE = 0 with N = 1 on both sides


def test_cliff_matrix_is_read_only_and_validates():
    m = cliff_matrix(64, 64, TEST)
    with pytest.raises(ValueError):
        m[0, 0] = True
    with pytest.raises(ValueError, match="n >= 1"):
        cliff_matrix(0, 0, TEST)
    with pytest.raises(ValueError, match="n >= 1"):
        cliff_matrix(64, 0, TEST)


# ---------------------------------------------------------------- against a naive loop and scipy


@pytest.mark.parametrize("n_prev,n_curr", [(64, 64), (16, 16), (16, 64), (64, 16), (37, 5), (1, 1), (10, 10)])
def test_cliff_matrix_matches_naive_loop(n_prev, n_curr):
    fast = cliff_matrix(n_prev, n_curr, TEST)
    assert fast.shape == (n_prev + 1, n_curr + 1)
    np.testing.assert_array_equal(fast, naive_matrix(n_prev, n_curr))


@pytest.mark.parametrize("n_prev,n_curr", [(64, 64), (16, 64), (37, 5)])
def test_is_cliff_scalar_matches_naive(n_prev, n_curr):
    for k_prev in range(n_prev + 1):
        for k_curr in range(n_curr + 1):
            assert bool(is_cliff(k_prev, n_prev, k_curr, n_curr, TEST)) == naive_is_cliff(k_prev, n_prev, k_curr, n_curr)


def _scipy_matrix(n_prev: int, n_curr: int) -> np.ndarray:
    """Cliff iff Δ > δ0 and the one-sided z statistic (Δ − δ0)/SE exceeds scipy's 95% quantile."""
    z_crit = norm.ppf(0.95)
    out = np.zeros((n_prev + 1, n_curr + 1), dtype=bool)
    for kp in range(n_prev + 1):
        for kc in range(n_curr + 1):
            delta = kp / n_prev - kc / n_curr
            stat = z_statistic(kp, n_prev, kc, n_curr)
            out[kp, kc] = delta > DELTA0 and stat > z_crit
    return out


@pytest.mark.parametrize("n_prev,n_curr", [(64, 64), (76, 76), (96, 96), (16, 64), (37, 5)])
def test_cliff_matrix_matches_scipy_z_test(n_prev, n_curr):
    exact = cliff_matrix(n_prev, n_curr, TEST_95)
    np.testing.assert_array_equal(exact, _scipy_matrix(n_prev, n_curr))

    # z = 1.645 (protocol) vs 1.6448536 (scipy): they differ exactly on the cells whose z statistic
    # falls in (1.6448536, 1.645].
    expected = sum(
        Z_95 < z_statistic(kp, n_prev, kc, n_curr) <= Z
        for kp in range(n_prev + 1)
        for kc in range(n_curr + 1)
        if kp / n_prev - kc / n_curr > DELTA0
    )
    rounded = cliff_matrix(n_prev, n_curr, TEST)
    assert int((rounded != exact).sum()) == expected
    assert not (rounded & ~exact).any()   # the larger z only ever removes cliffs


def test_z_rounding_matters_somewhere():
    # the paper's N = 64 is unaffected by rounding z, N = 76 is not (2 cells): the scipy test
    # above is not vacuous.
    assert int((cliff_matrix(64, 64, TEST) != cliff_matrix(64, 64, TEST_95)).sum()) == 0
    assert int((cliff_matrix(76, 76, TEST) != cliff_matrix(76, 76, TEST_95)).sum()) == 2
    assert Z_95 == pytest.approx(1.6448536, abs=1e-7)


# ---------------------------------------------------------------- detect_cliffs


def test_detect_cliffs_equal_n():
    k = [64, 64, 40, 40, 10, 64, 0, 12, 0]
    n = [64] * len(k)
    expected = [False, False, True, False, True, False, True, False, True]
    np.testing.assert_array_equal(detect_cliffs(k, n, TEST), expected)


def test_detect_cliffs_unequal_n_uses_each_sides_n():
    # p 0.1875 → 0: a cliff with N_prev = 64 (the smallest one), not with N_prev = 16.
    np.testing.assert_array_equal(detect_cliffs([12, 0], [64, 64], TEST), [False, True])
    np.testing.assert_array_equal(detect_cliffs([3, 0], [16, 64], TEST), [False, False])
    # a mixed trace: equal-N and unequal-N transitions interleaved
    k = [64, 10, 16, 0, 60, 30, 30]
    n = [64, 64, 16, 16, 64, 64, 32]
    expected = [False] + [naive_is_cliff(k[j - 1], n[j - 1], k[j], n[j]) for j in range(1, len(k))]
    assert expected == [False, True, False, True, False, True, False]
    np.testing.assert_array_equal(detect_cliffs(k, n, TEST), expected)


def test_detect_cliffs_unfilled_positions_never_cliffs():
    # num_rollouts = 0 marks a position that was filled, not sampled (early termination).
    k = [64, 0, 0, 64, 0]
    n = [64, 0, 64, 64, 0]
    np.testing.assert_array_equal(detect_cliffs(k, n, TEST), [False] * 5)


def test_detect_cliffs_first_entry_and_short_inputs():
    assert detect_cliffs([], [], TEST).tolist() == []
    assert detect_cliffs([64], [64], TEST).tolist() == [False]
    out = detect_cliffs([64, 0, 64, 0], [64, 64, 64, 64], TEST)
    assert out.dtype == bool
    assert out.tolist() == [False, True, False, True]


def test_detect_cliffs_matches_naive_on_random_traces():
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = int(rng.integers(2, 40))
        n = rng.choice([0, 16, 32, 64], size=t, p=[0.1, 0.2, 0.2, 0.5])
        k = np.array([int(rng.integers(0, m + 1)) for m in n])
        expected = [False] + [
            bool(n[j - 1] and n[j] and naive_is_cliff(k[j - 1], n[j - 1], k[j], n[j])) for j in range(1, t)
        ]
        np.testing.assert_array_equal(detect_cliffs(k, n, TEST), expected)


# ---------------------------------------------------------------- critical_index


@pytest.mark.parametrize("potentials,expected", [
    ([], None),
    ([0.5, 0.5, 0.2], None),                 # never zero
    ([0.5, 0.04], None),                     # small but never zero
    ([0.0], 0),
    ([0.0, 0.0, 0.0], 0),                    # all zeros → 0
    ([0.9, 0.5, 0.0], 2),                    # zero at the end
    ([0.9, 0.0, 0.04, 0.0], 1),              # later values below 0.05 are fine
    ([0.9, 0.0, 0.06, 0.0], 3),              # a zero followed by 0.06 is not critical
    ([0.0, 0.06], None),
    ([0.9, 0.0, 0.05, 0.0, 0.0], 3),         # strict: 0.05 is not < 0.05
])
def test_critical_index(potentials, expected):
    assert critical_index(np.array(potentials)) == expected


def test_critical_index_threshold():
    p = [0.9, 0.0, 0.05, 0.0]
    assert critical_index(p) == 3
    assert critical_index(p, threshold=0.06) == 1
    assert critical_index(p, threshold=0.0) == 3   # nothing is < 0 after the last position
    assert critical_index([0.0, 0.0], threshold=0.0) == 1


# ---------------------------------------------------------------- pass@k


def _pass_at_k_enumerated(n: int, c: int, k: int) -> Fraction:
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


def test_pass_at_k_matches_enumeration():
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(_pass_at_k_enumerated(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_matches_comb_formula_n64():
    n = 64
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
            assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-12), (c, k)


def test_pass_at_k_special_values():
    assert pass_at_k(64, 0, 64) == 0.0
    assert pass_at_k(64, 64, 1) == 1.0
    assert pass_at_k(64, 1, 64) == 1.0
    assert pass_at_k(64, 16, 1) == pytest.approx(0.25)


def test_pass_at_k_monotone_in_k():
    for c in range(65):
        values = [pass_at_k(64, c, k) for k in range(1, 65)]
        assert all(a <= b + 1e-15 for a, b in zip(values, values[1:])), c


def test_pass_at_k_stable_for_large_n():
    n = 1024
    for c in [0, 1, 2, 10, 100, 512, 1000, 1023, 1024]:
        for k in [1, 2, 4, 64, 512, 1000, 1024]:
            v = pass_at_k(n, c, k)
            assert math.isfinite(v) and 0.0 <= v <= 1.0, (c, k, v)
            exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
            assert v == pytest.approx(float(exact), rel=1e-9, abs=1e-12), (c, k)


@pytest.mark.parametrize("n,c,k", [(10, -1, 1), (10, 11, 1), (10, 5, 0), (10, 5, 11), (0, 0, 1), (10, 5, -1)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


# ---------------------------------------------------------------- H_b and Wilson


def test_binary_entropy():
    assert round(binary_entropy(0.99), 4) == 0.0560
    assert binary_entropy(0.5) == pytest.approx(math.log(2))
    assert binary_entropy(0.01) == pytest.approx(binary_entropy(0.99))


def _wilson_reference(k: int, n: int, z: float) -> tuple[float, float]:
    """Roots of (p̂ − p)² = z² p(1 − p)/n in p (the definition of the Wilson interval)."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("n", [1, 5, 16, 64, 1000])
def test_wilson_interval_matches_closed_form(n):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        lo, hi = wilson_interval(k, n)
        ref_lo, ref_hi = _wilson_reference(k, n, 1.96)
        assert lo == pytest.approx(max(0.0, ref_lo), abs=1e-12), (k, n)
        assert hi == pytest.approx(min(1.0, ref_hi), abs=1e-12), (k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


@pytest.mark.parametrize("k,n", [(0, 64), (12, 64), (32, 64), (63, 64), (3, 10)])
def test_wilson_interval_matches_scipy(k, n):
    z = float(norm.ppf(0.975))
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n, z=z)
    assert lo == pytest.approx(ci.low, abs=1e-12)
    assert hi == pytest.approx(ci.high, abs=1e-12)


def test_wilson_interval_empty():
    assert wilson_interval(0, 0) == (0.0, 1.0)
