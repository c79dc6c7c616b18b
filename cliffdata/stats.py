"""Potentials, the cliff test, the critical token and pass@k. numpy/scipy only, never torch.

Protocol §2: cliff at token i iff, with Δ = p_prev − p_curr,
    Δ > δ0  and  Δ > δ0 + z·sqrt(p_prev(1−p_prev)/N_prev + p_curr(1−p_curr)/N_curr)
(one-sided unpooled two-proportion z-test with an offset; strict inequalities; SE = 0 allowed).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

DELTA0 = 0.1
Z = 1.645


def binary_entropy(p: float) -> float:
    """H_b(p) in nats; the taxonomy boundary is H* = H_b(0.99) = 0.0560 (protocol §4)."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def is_cliff(k_prev, n_prev, k_curr, n_curr, delta0: float = DELTA0, z: float = Z):
    """The cliff test on counts (scalars or broadcastable arrays). n = 0 sides are never cliffs."""
    k_prev, n_prev, k_curr, n_curr = (np.asarray(a, dtype=np.float64) for a in (k_prev, n_prev, k_curr, n_curr))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_prev = np.where(n_prev > 0, k_prev / n_prev, 0.0)
        p_curr = np.where(n_curr > 0, k_curr / n_curr, 0.0)
        var = (np.where(n_prev > 0, p_prev * (1 - p_prev) / n_prev, np.inf)
               + np.where(n_curr > 0, p_curr * (1 - p_curr) / n_curr, np.inf))
    delta = p_prev - p_curr
    return (delta > delta0) & (delta > delta0 + z * np.sqrt(var))


@lru_cache(maxsize=64)
def _cliff_matrix(n_prev: int, n_curr: int, delta0: float, z: float) -> np.ndarray:
    k_prev = np.arange(n_prev + 1)[:, None]
    k_curr = np.arange(n_curr + 1)[None, :]
    m = is_cliff(k_prev, n_prev, k_curr, n_curr, delta0, z)
    m.setflags(write=False)
    return m


def cliff_matrix(n_prev: int, n_curr: int | None = None, delta0: float = DELTA0, z: float = Z) -> np.ndarray:
    """Boolean (n_prev+1, n_curr+1) matrix: entry [k_prev, k_curr] says whether the drop is a cliff.

    For N = 64 on both sides exactly 1283 of the 65×65 cells are cliffs (protocol §2).
    """
    if n_curr is None:
        n_curr = n_prev
    if n_prev < 1 or n_curr < 1:
        raise ValueError(f"cliff_matrix needs n >= 1 on both sides, got {n_prev}, {n_curr}")
    return _cliff_matrix(int(n_prev), int(n_curr), float(delta0), float(z))


def detect_cliffs(num_correct: np.ndarray, num_rollouts: np.ndarray,
                  delta0: float = DELTA0, z: float = Z) -> np.ndarray:
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
        out[1:][sel] = cliff_matrix(int(n_val), delta0=delta0, z=z)[kp[sel], kc[sel]]
    other = scored & ~same
    if other.any():
        out[1:][other] = is_cliff(kp[other], np_[other], kc[other], nc[other], delta0, z)
    return out


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
