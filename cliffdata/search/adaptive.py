"""The adaptive search (no token probabilities): the cliffs of the exhaustive protocol for a fraction of the
rollouts.

    evaluated = adaptive_search(oracle, positions, params.rollouts.adaptive, params.rollouts.num_rollouts, params.cliffs.test)
    cliffs = cliffs_from_evaluated(evaluated, params.cliffs.test)

A grid at `initial_rollouts`, a sweep of every position between grid points at `sweep_rollouts` (the
cancellation guard: a drop followed by a recovery inside one grid interval leaves its ends equal and blinds
bisection), dips and spikes flagged against the interval's pooled level, and sequential refinement of
intervals where a detectable drop is plausible; every pair that fires is confirmed at full N
(cliffdata/search/base.py).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from cliffdata.cliffs.stats import cliff_matrix, min_detectable_drop
from cliffdata.config.cliffs import CliffTest
from cliffdata.config.search import AdaptiveParams
from cliffdata.search.base import Counts, Evaluated, Oracle, Search, check_positions, confirm_at_full_n, plausible_drop, run_search


@lru_cache(maxsize=64)
def needed_moves(num_rollouts: int, test: CliffTest) -> tuple[np.ndarray, np.ndarray]:
    """(down[k], up[k]) for a level of k / N: the smallest fall below it, and the smallest rise above it
    that then falls back to it, that the test detects at N on both sides (inf: none), as potentials."""
    m = cliff_matrix(num_rollouts, num_rollouts, test)
    down = np.full(num_rollouts + 1, np.inf)
    up = np.full(num_rollouts + 1, np.inf)
    for k in range(num_rollouts + 1):
        if m[k].any():
            down[k] = (k - np.flatnonzero(m[k]).max()) / num_rollouts
        if m[:, k].any():
            up[k] = (np.flatnonzero(m[:, k]).min() - k) / num_rollouts
    return down, up


_DEPTHS = 16            # points of the depth average


@lru_cache(maxsize=4096)
def _lr_row(level_count: int, n: int, num_rollouts: int, test: CliffTest, direction: int) -> np.ndarray:
    """Likelihood ratio, for k = 0 … n successes of n rollouts, of "the potential sits a detectable
    distance below (direction −1) or above (+1) the level" (averaged over every such distance, uniformly)
    to "it is at the level" (level = level_count / N, kept off 0 and 1). Zeros where no move is detectable."""
    N = num_rollouts
    down, up = needed_moves(N, test)
    level = min(max(level_count / N, 0.5 / N), 1 - 0.5 / N)
    need = (down if direction < 0 else up)[level_count]
    room = level if direction < 0 else 1.0 - level
    if not need < room:
        return np.zeros(n + 1)
    alt = level + direction * (need + (room - need) * np.linspace(0.0, 1.0, _DEPTHS))
    alt = np.clip(alt, 1e-9, 1 - 1e-9)
    k = np.arange(n + 1)[:, None]
    log_lr = k * np.log(alt / level) + (n - k) * np.log((1 - alt) / (1 - level))
    top = log_lr.max(axis=1, keepdims=True)
    return np.exp(np.minimum(top[:, 0] + np.log(np.exp(log_lr - top).mean(axis=1)), 700.0))


def _screen_lr(k: int, n: int, level: float, num_rollouts: int, test: CliffTest, direction: int) -> float:
    return float(_lr_row(int(round(level * num_rollouts)), n, num_rollouts, test, direction)[k])


def _flag_moves(c: Counts, inner: list[int], level: float, num_rollouts: int, test: CliffTest,
                min_lr: float) -> list[tuple[int, int]]:
    """Sweep positions inside an interval that may sit a detectable distance below (a dip: −1) or above
    (a spike: +1) the interval's level: windows of 1–3 positions whose pooled counts give a
    depth-averaged likelihood ratio (`_lr_row`) of at least `min_lr`. Returns (position, direction)."""
    flagged: set[tuple[int, int]] = set()
    if not inner:
        return []
    k_all = np.array([c.k[i] for i in inner])
    n_all = np.array([c.n[i] for i in inner])
    level_count = int(round(level * num_rollouts))
    for w in range(1, min(3, len(inner)) + 1):
        k = np.convolve(k_all, np.ones(w, dtype=np.int64), mode="valid")
        n = np.convolve(n_all, np.ones(w, dtype=np.int64), mode="valid")
        for direction in (-1, 1):
            lr = np.empty(len(k))
            for size in np.unique(n):             # one cached row per window size (mostly one)
                at = n == size
                lr[at] = _lr_row(level_count, int(size), num_rollouts, test, direction)[k[at]]
            for s in np.flatnonzero(lr >= min_lr):
                flagged.update((i, direction) for i in inner[s:s + w])
    return sorted(flagged)


def adaptive_steps(positions: Sequence[int], cfg: AdaptiveParams, num_rollouts: int, test: CliffTest) -> Search:
    """The adaptive search (module docstring) as a `Search` generator."""
    positions = check_positions(positions)
    if not positions:
        return {}
    if not 1 <= cfg.initial_rollouts <= num_rollouts:
        raise ValueError(f"need 1 <= initial_rollouts <= num_rollouts, got {cfg.initial_rollouts}, {num_rollouts}")
    N, n0 = num_rollouts, cfg.initial_rollouts
    delta_min = min_detectable_drop(N, N, test)
    c = Counts()
    stride = max(cfg.min_stride, math.ceil(len(positions) / cfg.grid_points))
    anchors = set(positions[::stride]) | {positions[-1]}
    swept: set[int] = set(positions) - anchors if cfg.sweep_rollouts else set()
    # grid and sweep in one request
    yield from c.draw({i: n0 if i in anchors else cfg.sweep_rollouts for i in anchors | swept})

    checked_dips: set[tuple[int, int]] = set()
    to_test: set[int] = set()
    tested: set[int] = set()
    changed = True
    while changed:
        changed = False
        ordered = sorted(anchors)
        new_anchors: set[int] = set()
        flagged_all: list[tuple[int, float, int]] = []
        open_ends: set[int] = set()
        for a, b in zip(ordered, ordered[1:]):
            inner = [i for i in range(a + 1, b) if i in swept]
            if inner and (a, b) not in checked_dips:
                checked_dips.add((a, b))
                # pooled over the interval: a one-token dip barely moves it (the ends alone are noisy)
                level = (sum(c.k[i] for i in (a, b, *inner)) + 0.5) / (sum(c.n[i] for i in (a, b, *inner)) + 1)
                flagged_all += [(i, level, d) for i, d in _flag_moves(c, inner, level, N, test, cfg.flag_lr)]
            if not plausible_drop(c, a, b, delta_min, cfg.refine_z):
                continue
            if c.n[a] < N or c.n[b] < N:
                open_ends.update(x for x in (a, b) if c.n[x] < N)
            elif b - a > 1:
                new_anchors.add((a + b) // 2)
        # flagged positions: doubled while the screen's likelihood ratio stays >= flag_lr, up to N; a
        # flag still standing at N has its other side (the position before a dip, after a spike) at N
        while flagged_all:
            yield from c.draw({i: min(N, 2 * c.n[i]) - c.n[i] for i, _, _ in flagged_all if c.n[i] < N})
            standing = [(i, level, d) for i, level, d in flagged_all
                        if _screen_lr(c.k[i], c.n[i], level, N, test, d) >= cfg.flag_lr]
            for i, _, d in standing:
                if c.n[i] >= N:
                    other = i - 1 if d < 0 else i + 1
                    to_test.update(x for x in (i, other) if positions[0] <= x <= positions[-1])
            flagged_all = [f for f in standing if c.n[f[0]] < N]
        if to_test - tested:
            yield from c.top_up(sorted(to_test - tested), N)
            tested.update(to_test)
        if open_ends:
            yield from c.double(open_ends, N)       # sequential: more rollouts only while the drop is open
            changed = True
        fresh = new_anchors - anchors
        if fresh:
            yield from c.top_up(fresh, n0)
            anchors.update(fresh)
            changed = True
    return (yield from confirm_at_full_n(c, test, N, n0))


def adaptive_search(oracle: Oracle, positions: Sequence[int], cfg: AdaptiveParams, num_rollouts: int,
                    test: CliffTest) -> Evaluated:
    """Evaluate potentials where cliffs can be; returns token_index → (num_rollouts, num_correct, tokens).

    `cfg`: params `rollouts.adaptive`; `num_rollouts`: N of every tested pair (`rollouts.num_rollouts`);
    `test`: params `cliffs.test`, whose test (δ0, z) and floor (`min_rollouts`) the search decides by."""
    return run_search(adaptive_steps(positions, cfg, num_rollouts, test), oracle)
