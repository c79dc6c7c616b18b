"""Adaptive potential search: the cliffs of the exhaustive protocol for a fraction of the rollouts.

    evaluated = adaptive_search(oracle, positions, params.rollouts.adaptive, params.rollouts.num_rollouts, params.cliffs)
    cliffs = cliffs_from_evaluated(evaluated, params.cliffs)

The search never talks to an engine: it asks a rollout *oracle* for n new rollouts at some positions
and gets back correct counts and generated tokens. The real backend (`BackendOracle` in
`cliffdata.rollouts`) and the bench's simulated binomial oracle run exactly this code.

Algorithm (three kinds of evidence, each spending rollouts only where a decision is open):

1. **Grid.** Positions at a coarse stride get `initial_rollouts` each (levels of the curve).
2. **Sweep** (cancellation guard). Every other position gets `sweep_rollouts` (default 2). A drop
   followed by a recovery inside one grid interval leaves the interval's ends equal, which blinds
   bisection; the sweep sees the dip as a run of failures that is unlikely at the level of the

3. **Refine, sequentially.** Between adjacent anchors a and b a *detectable* drop is plausible when
   p̂_a − p̂_b + z_r·SE > δ_min, where δ_min is the smallest drop the protocol test can detect at N
   (0.1875 at N = 64; SE from add-half smoothed estimates). A plausible interval first gets its ends
   topped up to N (more rollouts only where the decision is undecided); if it is still plausible,
   its midpoint becomes an anchor. Adjacent anchors (i−1, i) with a plausible drop are topped up to
   N on both sides and then tested.

Only cliffs between *adjacent* evaluated positions are reported, with the protocol's test on each
side's own N (`cliffs_from_evaluated`), so a reported cliff means the same as in exhaustive mode.
Rollouts are never reused across positions here: every count at position i comes from independent
rollouts started at prefix i, which is what the two-proportion test assumes. (Reusing a rollout from
prefix i−1 whose first sampled token equals the trace's token i as a sample of p[i] is valid in
distribution, but it couples the two sides of the test at i: the estimates are no longer independent
and the test's SE would be too small, so we do not do it.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from cliffdata.config import AdaptiveParams, CliffsConfig
from cliffdata.stats import is_cliff, min_detectable_drop


class Oracle(Protocol):
    def rollouts(self, requests: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(token_index, n) pairs → (num_correct, num_generated_tokens) of n new rollouts each, in order."""


class _Counts:
    """Accumulated rollouts per position, drawn through the oracle in batches."""

    def __init__(self, oracle: Oracle):
        self.oracle = oracle
        self.n: dict[int, int] = {}
        self.k: dict[int, int] = {}
        self.tokens: dict[int, int] = {}

    def draw(self, requests: dict[int, int]) -> None:
        requests = {i: n for i, n in requests.items() if n > 0}
        if not requests:
            return
        order = sorted(requests)
        for i, (k, tok) in zip(order, self.oracle.rollouts([(i, requests[i]) for i in order])):
            self.n[i] = self.n.get(i, 0) + requests[i]
            self.k[i] = self.k.get(i, 0) + k
            self.tokens[i] = self.tokens.get(i, 0) + tok

    def top_up(self, positions, target: int) -> None:
        self.draw({i: target - self.n.get(i, 0) for i in positions})

    def p(self, i: int) -> float:
        return self.k[i] / self.n[i]

    def smoothed(self, i: int) -> tuple[float, float]:
        """(add-half estimate, its variance): never a zero variance at 0/n or n/n."""
        q = (self.k[i] + 0.5) / (self.n[i] + 1)
        return q, q * (1 - q) / self.n[i]


def _drop(c: _Counts, a: int, b: int) -> tuple[float, float]:
    """Observed drop p̂_a − p̂_b and its SE (from the smoothed estimates)."""
    return c.p(a) - c.p(b), math.sqrt(c.smoothed(a)[1] + c.smoothed(b)[1])


def _plausible_drop(c: _Counts, a: int, b: int, delta_min: float, z: float) -> bool:
    drop, se = _drop(c, a, b)
    return drop + z * se > delta_min


def _significantly_lower(c: _Counts, a: int, b: int, z: float) -> bool:
    drop, se = _drop(c, a, b)
    return drop > z * se


def _flag_dips(c: _Counts, inner: list[int], level: float, dip: float, min_lr: float) -> list[int]:
    """Sweep positions inside an interval where a dip to `dip` explains the counts `min_lr` times
    better than the ends' `level` (binomial likelihood ratio over windows of 1–3 positions)."""
    if not inner:
        return []
    k = np.array([c.k[i] for i in inner])
    n = np.array([c.n[i] for i in inner])
    log_lr = k * math.log(dip / level) + (n - k) * math.log((1 - dip) / (1 - level))   # per position
    flagged: set[int] = set()
    for w in (1, 2, 3):
        window = np.convolve(log_lr, np.ones(w), mode="valid")
        for s in np.flatnonzero(window >= math.log(min_lr)):
            flagged.update(inner[s:s + w])
    return sorted(flagged)


def adaptive_search(oracle: Oracle, positions: Sequence[int], cfg: AdaptiveParams, num_rollouts: int,
                    test: CliffsConfig) -> dict[int, tuple[int, int, int]]:
    """Evaluate potentials where cliffs can be; returns token_index → (num_rollouts, num_correct, tokens).

    `cfg`: params `rollouts.adaptive`; `num_rollouts`: N of every tested pair (`rollouts.num_rollouts`);
    `test`: params `cliffs`, whose test (δ0, z) and floor (`min_rollouts`) the search decides by."""
    positions = list(positions)
    if not positions:
        return {}
    if positions != sorted(set(positions)) or positions != list(range(positions[0], positions[0] + len(positions))):
        raise ValueError(f"positions must be consecutive and increasing, got {positions[:5]}…")
    if not 1 <= cfg.initial_rollouts <= num_rollouts:
        raise ValueError(f"need 1 <= initial_rollouts <= num_rollouts, got {cfg.initial_rollouts}, {num_rollouts}")
    N, n0 = num_rollouts, cfg.initial_rollouts
    delta_min = min_detectable_drop(N, N, test.delta0, test.z)
    c = _Counts(oracle)
    stride = max(cfg.min_stride, math.ceil(len(positions) / cfg.grid_points))
    anchors = set(positions[::stride]) | {positions[-1]}
    c.draw({i: n0 for i in anchors})
    swept: set[int] = set()
    if cfg.sweep_rollouts:
        swept = set(positions) - anchors
        c.draw({i: cfg.sweep_rollouts for i in swept})

    checked_dips: set[tuple[int, int]] = set()
    changed = True
    while changed:
        changed = False
        ordered = sorted(anchors)
        new_anchors: dict[int, int] = {}
        top_up: set[int] = set()
        for a, b in zip(ordered, ordered[1:]):
            inner = [i for i in range(a + 1, b)]
            if cfg.sweep_rollouts and inner and (a, b) not in checked_dips:
                checked_dips.add((a, b))
                level = min(c.smoothed(a)[0], c.smoothed(b)[0])
                if level > delta_min:                # a detectable dip below the ends is possible at all
                    dip = max(level - cfg.dip_depth * delta_min, 0.01)
                    flagged = _flag_dips(c, [i for i in inner if i in swept], level, dip, cfg.flag_lr)
                    c.top_up(flagged, n0)
                    ref = a if c.p(a) >= c.p(b) else b
                    for i in flagged:
                        # a flag is kept only if n0 rollouts confirm the position is below the level
                        if _significantly_lower(c, ref, i, cfg.confirm_z):
                            new_anchors[i] = n0
                            if i - 1 > a:        # the position before a dip is the other side of its test
                                new_anchors[i - 1] = n0
            if not _plausible_drop(c, a, b, delta_min, cfg.refine_z):
                continue
            if c.n[a] < N or c.n[b] < N:
                top_up.update(x for x in (a, b) if c.n[x] < N)
            elif inner:
                new_anchors[(a + b) // 2] = n0
        if top_up:
            c.top_up(top_up, N)
            changed = True
        fresh = set(new_anchors) - anchors
        if fresh:
            c.top_up(fresh, n0)
            anchors.update(fresh)
            changed = True
    # A cliff is only reported at full N on both sides: confirm every pair that fires below N.
    while True:
        evaluated = {i: (c.n[i], c.k[i], c.tokens[i]) for i in sorted(c.n)}
        short = {x for i in cliffs_from_evaluated(evaluated, test, min(n0, test.min_rollouts))
                 for x in (i - 1, i) if c.n[x] < N}
        if not short:
            return evaluated
        c.top_up(short, N)


def exhaustive_search(oracle: Oracle, positions: Sequence[int], n: int) -> dict[int, tuple[int, int, int]]:
    """Every position with n rollouts (paper mode), through the same oracle."""
    positions = list(positions)
    results = oracle.rollouts([(i, n) for i in positions])
    return {i: (n, k, tok) for i, (k, tok) in zip(positions, results)}


def cliffs_from_evaluated(evaluated: dict[int, tuple[int, int, int]], test: CliffsConfig,
                          min_rollouts: int | None = None) -> list[int]:
    """Token indices i with both i−1 and i evaluated (>= min_rollouts each, default `test.min_rollouts`)
    where the test (`test.delta0`, `test.z`) fires, with each side's own N."""
    min_rollouts = test.min_rollouts if min_rollouts is None else min_rollouts
    delta0, z = test.delta0, test.z
    out = []
    for i in sorted(evaluated):
        if i - 1 in evaluated:
            n_prev, k_prev, _ = evaluated[i - 1]
            n_curr, k_curr, _ = evaluated[i]
            if min(n_prev, n_curr) >= max(min_rollouts, 1) and bool(is_cliff(k_prev, n_prev, k_curr, n_curr, delta0, z)):
                out.append(i)
    return out
