"""Potentials, the cliff test, the critical token and pass@k. numpy/scipy only, never torch.

Protocol §2: cliff at token i iff, with Δ = p_prev − p_curr,
    Δ > δ0  and  Δ > δ0 + z·sqrt(p_prev(1−p_prev)/N_prev + p_curr(1−p_curr)/N_curr)
(one-sided unpooled two-proportion z-test with an offset; strict inequalities; SE = 0 allowed).

The evidence beside each test (the noise audit): `cliff_p_value` (the same z as a one-sided p-value),
`null_fire_probability` (how often the test fires when both sides share one true potential: the
noise floor, exact from the binomials and the cliff matrix), `null_fire_conditional` (its unbiased
estimate per tested pair, from the pair's total), `null_count_quantile` (exact quantiles of the
number of false cliffs over many pairs: a Poisson-binomial of those estimates), `min_detectable_drop`
(the smallest Δ the test can ever report at a pair's N) and `benjamini_hochberg`.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special
from scipy import stats as sps
from scipy.signal import fftconvolve

from cliffdata.config.cliffs import CliffTest

# Every function that decides a cliff takes the test whole (`test`: params `cliffs.test`, a CliffTest);
# none has a default, so a caller that forgets it fails instead of deciding by other values. The
# floor `test.min_rollouts` is the callers' choice of pairs (the cliffs scan, the searches): these
# functions test every pair they are given, each side with its own N.


def binary_entropy(p: float) -> float:
    """H_b(p) in nats; the taxonomy boundary is H* = H_b(0.99) = 0.0560 (protocol §4)."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _unpooled(k_prev, n_prev, k_curr, n_curr) -> tuple[np.ndarray, np.ndarray]:
    """Δ = p_prev − p_curr and its unpooled SE from counts; SE = inf where a side has n = 0."""
    k_prev, n_prev, k_curr, n_curr = (np.asarray(a, dtype=np.float64) for a in (k_prev, n_prev, k_curr, n_curr))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_prev = np.where(n_prev > 0, k_prev / n_prev, 0.0)
        p_curr = np.where(n_curr > 0, k_curr / n_curr, 0.0)
        var = (np.where(n_prev > 0, p_prev * (1 - p_prev) / n_prev, np.inf)
               + np.where(n_curr > 0, p_curr * (1 - p_curr) / n_curr, np.inf))
    return p_prev - p_curr, np.sqrt(var)


def is_cliff(k_prev, n_prev, k_curr, n_curr, test: CliffTest):
    """The cliff test (`test.delta0`, `test.z`) on counts (scalars or broadcastable arrays). n = 0 sides
    are never cliffs."""
    delta, se = _unpooled(k_prev, n_prev, k_curr, n_curr)
    return (delta > test.delta0) & (delta > test.delta0 + test.z * se)


@lru_cache(maxsize=64)
def _cliff_matrix(n_prev: int, n_curr: int, test: CliffTest) -> np.ndarray:
    k_prev = np.arange(n_prev + 1)[:, None]
    k_curr = np.arange(n_curr + 1)[None, :]
    m = is_cliff(k_prev, n_prev, k_curr, n_curr, test)
    m.setflags(write=False)
    return m


def cliff_matrix(n_prev: int, n_curr: int, test: CliffTest) -> np.ndarray:
    """Boolean (n_prev+1, n_curr+1) matrix: entry [k_prev, k_curr] says whether the drop is a cliff.

    For N = 64 on both sides exactly 1283 of the 65×65 cells are cliffs (protocol §2: δ0 = 0.1, z = 1.645).
    """
    if n_prev < 1 or n_curr < 1:
        raise ValueError(f"cliff_matrix needs n >= 1 on both sides, got {n_prev}, {n_curr}")
    return _cliff_matrix(int(n_prev), int(n_curr), test)


def detect_cliffs(num_correct: np.ndarray, num_rollouts: np.ndarray, test: CliffTest) -> np.ndarray:
    """Cliff flags between adjacent scored positions of one trace.

    Inputs are per-position counts in position order; returns a bool array of the same length where
    entry j says whether position j is a cliff relative to position j-1 (entry 0 is always False).
    Counts with equal N go through the precomputed matrix; unequal N through the direct test.
    """
    k = np.asarray(num_correct, dtype=np.int64)
    n = np.asarray(num_rollouts, dtype=np.int64)
    out = np.zeros(len(k), dtype=bool)
    if len(k) < 2:
        return out
    kp, np_, kc, nc = k[:-1], n[:-1], k[1:], n[1:]
    scored = (np_ > 0) & (nc > 0)
    same = scored & (np_ == nc)
    for n_val in np.unique(np_[same]):
        sel = same & (np_ == n_val)
        out[1:][sel] = cliff_matrix(int(n_val), int(n_val), test)[kp[sel], kc[sel]]
    other = scored & ~same
    if other.any():
        out[1:][other] = is_cliff(kp[other], np_[other], kc[other], nc[other], test)
    return out


def cliff_p_value(k_prev, n_prev, k_curr, n_curr, test: CliffTest):
    """One-sided p-value of H0: Δ ≤ δ0 (`test.delta0`) with the protocol's unpooled z, each side's own N.

    p = 1 − Φ((Δ − δ0) / SE); with SE = 0 it is 0 when Δ > δ0, else 1. The test fires iff
    p < 1 − Φ(z) (for z > 0): `is_cliff` and this p-value are one decision. n = 0 sides give 1.
    """
    delta, se = _unpooled(k_prev, n_prev, k_curr, n_curr)
    scored = np.isfinite(se)
    excess = delta - test.delta0
    with np.errstate(divide="ignore", invalid="ignore"):
        zstat = np.where(se > 0, excess / se, np.where(excess > 0, np.inf, -np.inf))
    return np.where(scored, sps.norm.sf(zstat), 1.0)


def null_fire_probability(p, n_prev: int, n_curr: int, test: CliffTest) -> np.ndarray | float:
    """P(the test fires) when both sides share the true potential p: Σ Bin(k_prev; n_prev, p) ·
    Bin(k_curr; n_curr, p) · M[k_prev, k_curr] over the cliff matrix M of the pair's two N.

    `p` is a scalar or an array (the result has its shape). At N = 64 and p = 0.5 it is 0.30%.
    """
    m = cliff_matrix(int(n_prev), int(n_curr), test).astype(np.float64)
    pa_ = np.asarray(p, dtype=np.float64)
    flat = pa_.reshape(-1, 1)
    prev = sps.binom.pmf(np.arange(n_prev + 1)[None, :], n_prev, flat)       # (P, n_prev+1)
    curr = sps.binom.pmf(np.arange(n_curr + 1)[None, :], n_curr, flat)       # (P, n_curr+1)
    q = np.einsum("pi,ij,pj->p", prev, m, curr)
    return float(q[0]) if pa_.ndim == 0 else q.reshape(pa_.shape)


@lru_cache(maxsize=256)
def _conditional_fire_table(n_prev: int, n_curr: int, test: CliffTest) -> np.ndarray:
    """Entry K: P(the test fires | k_prev + k_curr = K) when both sides share one potential, i.e. the
    hypergeometric split of K correct rollouts among n_prev + n_curr (it does not depend on p)."""
    m = cliff_matrix(n_prev, n_curr, test)
    total = n_prev + n_curr
    a = np.arange(n_prev + 1)[:, None]
    b = np.arange(n_curr + 1)[None, :]
    log_ways = (special.gammaln(n_prev + 1) - special.gammaln(a + 1) - special.gammaln(n_prev - a + 1)
                + special.gammaln(n_curr + 1) - special.gammaln(b + 1) - special.gammaln(n_curr - b + 1))
    k = np.arange(total + 1)
    log_all = special.gammaln(total + 1) - special.gammaln(k + 1) - special.gammaln(total - k + 1)
    weights = np.where(m, np.exp(log_ways - log_all[(a + b)]), 0.0)
    q = np.bincount((a + b).ravel(), weights=weights.ravel(), minlength=total + 1)
    q.setflags(write=False)
    return q


def null_fire_conditional(k_prev, n_prev, k_curr, n_curr, test: CliffTest) -> np.ndarray:
    """Per tested pair: P(the test fires | the pair's total correct) when both sides share one true
    potential: the expected number of false cliffs the pair contributes.

    This is `null_fire_probability` estimated without bias: averaged over the pair's total K ~
    Bin(n_prev + n_curr, p) it equals null_fire_probability(p) exactly for every p, where plugging in
    the pooled estimate K / (n_prev + n_curr) is biased low (7.5% at N = 16, p = 0.5: q is concave
    there). Arrays of counts; one exact table per distinct (n_prev, n_curr), so 10^8 pairs cost a
    lookup each. Unscored pairs (an N of 0) contribute 0."""
    k_prev, n_prev, k_curr, n_curr = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64)
                                                           for a in (k_prev, n_prev, k_curr, n_curr)))
    out = np.zeros(k_prev.shape, dtype=np.float64)
    scored = (n_prev > 0) & (n_curr > 0)
    pairs = np.unique(np.stack([n_prev[scored], n_curr[scored]], axis=-1).reshape(-1, 2), axis=0)
    for a, b in pairs:
        sel = scored & (n_prev == a) & (n_curr == b)
        out[sel] = _conditional_fire_table(int(a), int(b), test)[(k_prev + k_curr)[sel]]
    return out


@lru_cache(maxsize=256)
def min_detectable_drop(n_prev: int, n_curr: int, test: CliffTest) -> float:
    """δ_min(N): the smallest observed Δ = k_prev/n_prev − k_curr/n_curr the test reports as a cliff
    (0.1875 at N = 64, 0.3125 at N = 16 for δ0 = 0.1, z = 1.645); inf when no cell of the cliff matrix fires."""
    m = cliff_matrix(n_prev, n_curr, test)
    if not m.any():
        return math.inf
    kp, kc = np.nonzero(m)
    return float(np.min(kp / n_prev - kc / n_curr))


# Mass left off each tail of a binomial factor, and of the running convolution, in `null_count_pmf`.
_PMF_TAIL = 1e-15


def null_count_pmf(q, counts) -> tuple[int, np.ndarray]:
    """The distribution of the number of false cliffs over independent tested pairs: `counts[j]` pairs
    fire with probability `q[j]` each (a Poisson-binomial, built as the convolution of one binomial per
    distinct q). Returns (offset, pmf): P(count = offset + i) = pmf[i]. Each binomial factor, and the
    running product, drops tails of at most 1e-15 of mass, so 10^8 pairs cost a window of a few sds per
    distinct q, not 10^8 cells; a q of 0 adds nothing, a q of 1 shifts the offset."""
    q = np.asarray(q, dtype=np.float64).ravel()
    c = np.asarray(counts, dtype=np.int64).ravel()
    if q.shape != c.shape:
        raise ValueError(f"q and counts differ in length: {len(q)} vs {len(c)}")
    if ((q < 0) | (q > 1) | np.isnan(q)).any() or (c < 0).any():
        raise ValueError("null_count_pmf needs probabilities in [0, 1] and counts >= 0")
    offset, pmf = 0, np.ones(1)
    for value, n in zip(q, c):
        if n == 0 or value == 0.0:
            continue
        if value == 1.0:
            offset += int(n)
            continue
        lo = int(sps.binom.ppf(_PMF_TAIL, n, value))
        hi = int(sps.binom.isf(_PMF_TAIL, n, value))
        factor = sps.binom.pmf(np.arange(lo, hi + 1), n, value)
        pmf = np.convolve(pmf, factor) if min(len(pmf), len(factor)) < 512 else \
            np.clip(fftconvolve(pmf, factor), 0.0, None)
        offset += lo
        cdf = np.cumsum(pmf)
        first = int(np.searchsorted(cdf, _PMF_TAIL, side="right"))
        last = int(np.searchsorted(cdf, cdf[-1] - _PMF_TAIL, side="left"))
        pmf = pmf[first:last + 1]
        offset += first
    return offset, pmf / pmf.sum()


def null_count_quantile(q, counts, prob: float) -> int:
    """The smallest x with P(count <= x) >= prob for the false-cliff count of `null_count_pmf`: the exact
    Poisson-binomial quantile (ties within 1e-12 of `prob` count as reached)."""
    if not 0 <= prob <= 1:
        raise ValueError(f"a quantile's probability must be in [0, 1], got {prob}")
    offset, pmf = null_count_pmf(q, counts)
    cdf = np.cumsum(pmf)
    return offset + int(min(np.searchsorted(cdf, prob - 1e-12, side="left"), len(pmf) - 1))


def benjamini_hochberg(p_values, q: float) -> np.ndarray:
    """Bool mask of the hypotheses Benjamini-Hochberg rejects at FDR level q (step-up, ties included)."""
    p = np.asarray(p_values, dtype=np.float64)
    values, counts = np.unique(p, return_counts=True)
    return p <= benjamini_hochberg_cutoff(values, counts, q)


def benjamini_hochberg_cutoff(p_values, counts, q: float) -> float:
    """Benjamini-Hochberg on a histogram: `counts[j]` hypotheses have p-value `p_values[j]` (m = their
    sum). Returns the largest p-value the step-up rejects, every p at or below it being rejected, or
    −1.0 when none is. A distinct value v with C(v) p-values at or below it passes iff v ≤ q·C(v)/m
    (the last of its ties has the largest bound), so 10^8 tested pairs with a few thousand distinct
    p-values cost a few thousand comparisons."""
    if not 0 < q < 1:
        raise ValueError(f"the FDR level must be in (0, 1), got {q}")
    p = np.asarray(p_values, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    values, inverse = np.unique(p, return_inverse=True)
    merged = np.bincount(inverse.ravel(), weights=c.ravel(), minlength=len(values)).astype(np.int64)
    m = int(merged.sum())
    if m == 0:
        return -1.0
    passed = values <= q * np.cumsum(merged) / m
    return float(values[np.flatnonzero(passed)[-1]]) if passed.any() else -1.0


def critical_index(potentials: np.ndarray, threshold: float = 0.05) -> int | None:
    """First i with p[i] == 0 and every later p[j] < threshold (Lin et al. 2411.19943), or None."""
    p = np.asarray(potentials, dtype=np.float64)
    if len(p) == 0:
        return None
    # suffix max of p[i+1:]; the last position has no later positions.
    later_max = np.append(np.maximum.accumulate(p[::-1])[::-1][1:], -np.inf)
    hits = np.flatnonzero((p == 0) & (later_max < threshold))
    return int(hits[0]) if len(hits) else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 − C(n−c, k)/C(n, k), computed as a stable product (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (used for potential bands)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
