"""Potential searches: the cliffs of the exhaustive protocol for a fraction of the rollouts.

    evaluated = adaptive_search(oracle, positions, params.rollouts.adaptive, params.rollouts.num_rollouts, params.cliffs.test)
    evaluated = fork_search(oracle, positions, max_drop, params.rollouts.forks, params.rollouts.num_rollouts, params.cliffs.test)
    cliffs = cliffs_from_evaluated(evaluated, params.cliffs.test)

Every search is a generator (`Search`): it yields the rollouts it needs next, (token_index, n) pairs,
and is sent back (num_correct, generated tokens) for each. `run_search` drives one with an oracle
(the bench's binomial oracle); `cliffdata.rollouts.search_wave` drives many at once and packs their
requests into shared engine calls. README "Potential search" has the full description.

- `exhaustive_steps`: every position with N (paper mode), in batches, stopping at a run of zeros.
- `fork_steps`: by the sampler identity p[i−1] = Σ_v π_s(v)·p(prefix + v), a token with max_drop =
  1 − π_s(token) below δ_min(N) cannot carry a detectable true drop; only the forks (max_drop >=
  δ_min) are tested: both sides at `forks.initial_rollouts`, doubled while a detectable drop is
  plausible (p̂_a − p̂_b + z·SE > δ_min, SE of the final test's drop at N), tested at N.
- `adaptive_steps` (no token probabilities): a grid at `initial_rollouts`, a sweep of every position
  between grid points at `sweep_rollouts` (the cancellation guard: a drop followed by a recovery inside one grid
  interval leaves its ends equal and blinds bisection), dips and spikes flagged against the interval's pooled
  level, and sequential refinement of intervals where a detectable drop is plausible.

Only cliffs between *adjacent* evaluated positions are reported, with the protocol's test on each
side's own N (`cliffs_from_evaluated`), and only at full N on both sides, so a reported cliff means the
same as in exhaustive mode. Rollouts are never reused across positions: every count at position i
comes from independent rollouts started at prefix i, which is what the two-proportion test assumes.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Mapping, Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

from cliffdata.config import AdaptiveParams, CliffTest, ForksParams
from cliffdata.stats import cliff_matrix, is_cliff, min_detectable_drop


class Oracle(Protocol):
    def rollouts(self, requests: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(token_index, n) pairs → (num_correct, num_generated_tokens) of n new rollouts each, in order."""


Evaluated = dict[int, tuple[int, int, int]]          # token_index -> (num_rollouts, num_correct, generated tokens)
Requests = list[tuple[int, int]]                     # (token_index, n new rollouts), increasing token_index
#: A search as a generator: it yields the rollouts it needs next, is sent their (num_correct, tokens)
#: in the same order, and returns what it evaluated. Many searches can then share engine calls
#: (cliffdata.rollouts.search_wave packs the requests of many traces into each call).
Search = Generator[Requests, list[tuple[int, int]], Evaluated]


def run_search(search: Search, oracle: Oracle) -> Evaluated:
    """Drive one search with one oracle, request by request."""
    try:
        requests = next(search)
        while True:
            requests = search.send(oracle.rollouts(requests))
    except StopIteration as done:
        return done.value


class _Counts:
    """Accumulated rollouts per position; `draw` is a sub-generator (`yield from c.draw(...)`)."""

    def __init__(self):
        self.n: dict[int, int] = {}
        self.k: dict[int, int] = {}
        self.tokens: dict[int, int] = {}

    def draw(self, requests: dict[int, int]):
        requests = {i: n for i, n in requests.items() if n > 0}
        if not requests:
            return
        order = sorted(requests)
        results = yield [(i, requests[i]) for i in order]
        for i, (k, tok) in zip(order, results):
            self.n[i] = self.n.get(i, 0) + requests[i]
            self.k[i] = self.k.get(i, 0) + k
            self.tokens[i] = self.tokens.get(i, 0) + tok

    def top_up(self, positions, target: int):
        yield from self.draw({i: target - self.n.get(i, 0) for i in positions})

    def double(self, positions, cap: int):
        """Sequential top-up: double each position's rollouts, up to `cap`."""
        yield from self.draw({i: min(cap, 2 * self.n[i]) - self.n[i] for i in positions})

    def p(self, i: int) -> float:
        return self.k[i] / self.n[i]

    def smoothed(self, i: int) -> tuple[float, float]:
        """(add-half estimate, its variance): never a zero variance at 0/n or n/n."""
        q = (self.k[i] + 0.5) / (self.n[i] + 1)
        return q, q * (1 - q) / self.n[i]

    def evaluated(self) -> Evaluated:
        return {i: (self.n[i], self.k[i], self.tokens[i]) for i in sorted(self.n)}


def _drop(c: _Counts, a: int, b: int) -> tuple[float, float]:
    """Observed drop p̂_a − p̂_b and its SE (from the smoothed estimates)."""
    return c.p(a) - c.p(b), math.sqrt(c.smoothed(a)[1] + c.smoothed(b)[1])


def _plausible_drop(c: _Counts, a: int, b: int, delta_min: float, z: float, num_rollouts: int | None = None) -> bool:
    """Whether a detectable drop a -> b is still plausible: drop + z·SE > δ_min. With `num_rollouts` (N)
    the SE is that of the drop the final test at N will observe: the rollouts already drawn are part of
    its counts, so only the N − n still to come vary (each side's variance times (N − n) / N)."""
    drop, se = _drop(c, a, b)
    if num_rollouts:
        se = math.sqrt(sum(c.smoothed(x)[1] * max(num_rollouts - c.n[x], 0) / num_rollouts for x in (a, b)))
    return drop + z * se > delta_min


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


def _flag_moves(c: _Counts, inner: list[int], level: float, num_rollouts: int, test: CliffTest,
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


def _check_positions(positions: Sequence[int]) -> list[int]:
    positions = list(positions)
    if positions and (positions != sorted(set(positions))
                      or positions != list(range(positions[0], positions[0] + len(positions)))):
        raise ValueError(f"positions must be consecutive and increasing, got {positions[:5]}…")
    return positions


def _confirm_at_full_n(c: _Counts, test: CliffTest, num_rollouts: int, n0: int):
    """A cliff is only reported at full N on both sides: top up every pair that fires below N. Pairs are
    screened from the search's starting n `n0` up (or the test's own floor, where lower)."""
    screen = dataclasses.replace(test, min_rollouts=min(n0, test.min_rollouts))
    while True:
        short = {x for i in cliffs_from_evaluated(c.evaluated(), screen)
                 for x in (i - 1, i) if c.n[x] < num_rollouts}
        if not short:
            return c.evaluated()
        yield from c.top_up(short, num_rollouts)


def adaptive_steps(positions: Sequence[int], cfg: AdaptiveParams, num_rollouts: int, test: CliffTest) -> Search:
    """The adaptive search (module docstring) as a `Search` generator."""
    positions = _check_positions(positions)
    if not positions:
        return {}
    if not 1 <= cfg.initial_rollouts <= num_rollouts:
        raise ValueError(f"need 1 <= initial_rollouts <= num_rollouts, got {cfg.initial_rollouts}, {num_rollouts}")
    N, n0 = num_rollouts, cfg.initial_rollouts
    delta_min = min_detectable_drop(N, N, test)
    c = _Counts()
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
            if not _plausible_drop(c, a, b, delta_min, cfg.refine_z):
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
    return (yield from _confirm_at_full_n(c, test, N, n0))


def adaptive_search(oracle: Oracle, positions: Sequence[int], cfg: AdaptiveParams, num_rollouts: int,
                    test: CliffTest) -> Evaluated:
    """Evaluate potentials where cliffs can be; returns token_index → (num_rollouts, num_correct, tokens).

    `cfg`: params `rollouts.adaptive`; `num_rollouts`: N of every tested pair (`rollouts.num_rollouts`);
    `test`: params `cliffs.test`, whose test (δ0, z) and floor (`min_rollouts`) the search decides by."""
    return run_search(adaptive_steps(positions, cfg, num_rollouts, test), oracle)


def fork_positions(positions: Sequence[int], max_drop: Mapping[int, float | None], num_rollouts: int,
                   test: CliffTest) -> list[int]:
    """Positions i (with i − 1 also scored) whose token can carry a drop the test detects at N:
    max_drop[i] = 1 − π_s(token i) >= δ_min(N). A missing or None max_drop counts as a fork."""
    delta_min = min_detectable_drop(num_rollouts, num_rollouts, test)
    scored = set(positions)
    out = []
    for i in positions:
        if i - 1 in scored:
            md = max_drop.get(i)
            if md is None or not md < delta_min:     # None / NaN: no bound, test it
                out.append(i)
    return out


def _identity_allows(c: _Counts, i: int, max_drop: float | None, delta_min: float, z: float) -> bool:
    """Whether the sampler identity still allows a detectable drop at token i once p[i] is estimated:
    p[i−1] − p[i] = Σ_{v≠t} π(v)·(p_v − p[i]) <= (1 − π(t))·(1 − p[i]), so a token whose potential
    is high cannot fall far; checked at the lower confidence bound of p[i] (a missing bound allows)."""
    if max_drop is None or max_drop != max_drop:
        return True
    q, var = c.smoothed(i)
    return max_drop * (1.0 - max(q - z * math.sqrt(var), 0.0)) >= delta_min


def fork_steps(positions: Sequence[int], max_drop: Mapping[int, float | None], cfg: ForksParams,
               num_rollouts: int, test: CliffTest) -> Search:
    """The fork-aware search: rollouts only on both sides of the forks (`fork_positions`), each pair
    topped up sequentially (doubling from `cfg.initial_rollouts`) while a detectable drop is plausible
    (observed drop + `cfg.z`·SE > δ_min(N), SE of the drop the final test at N will see: `_plausible_drop`)
    and the identity allows one (`_identity_allows`), tested at
    full N. A non-fork cannot carry a true drop the test detects (the sampler identity), so it is never
    tested and gets no rollouts unless it is a fork's other side."""
    positions = _check_positions(positions)
    N, n0 = num_rollouts, min(cfg.initial_rollouts, num_rollouts)
    delta_min = min_detectable_drop(N, N, test)
    forks = fork_positions(positions, max_drop, N, test)
    c = _Counts()
    yield from c.draw({x: n0 for i in forks for x in (i - 1, i)})
    open_pairs = forks
    while open_pairs:
        open_pairs = [i for i in open_pairs if (c.n[i - 1] < N or c.n[i] < N)
                      and _plausible_drop(c, i - 1, i, delta_min, cfg.z, N)
                      and _identity_allows(c, i, max_drop.get(i), delta_min, cfg.z)]
        yield from c.double({x for i in open_pairs for x in (i - 1, i) if c.n[x] < N}, N)
    return (yield from _confirm_at_full_n(c, test, N, n0))


def fork_search(oracle: Oracle, positions: Sequence[int], max_drop: Mapping[int, float | None],
                cfg: ForksParams, num_rollouts: int, test: CliffTest) -> Evaluated:
    """`fork_steps` driven by one oracle; returns token_index → (num_rollouts, num_correct, tokens)."""
    return run_search(fork_steps(positions, max_drop, cfg, num_rollouts, test), oracle)


def exhaustive_steps(positions: Sequence[int], n: int, batch: int = 0, early_stop_zeros: int = 0) -> Search:
    """Every position with n rollouts (paper mode). With `early_stop_zeros`, positions go in batches
    of at most `batch` (0: all at once) and never past the one that completes a run of that many
    zero potentials (counted from i = 0): the rest is left to the caller to fill (protocol §3)."""
    positions = list(positions)
    c = _Counts()
    ptr, zero_run = 0, 0
    while ptr < len(positions):
        size = batch or len(positions)
        if early_stop_zeros:
            size = max(1, min(size, early_stop_zeros - zero_run))
        chunk = positions[ptr:ptr + size]
        yield from c.draw(dict.fromkeys(chunk, n))
        for i in chunk:
            if i >= 0:
                zero_run = zero_run + 1 if c.k[i] == 0 else 0
        ptr += len(chunk)
        if early_stop_zeros and zero_run >= early_stop_zeros:
            break
    return c.evaluated()


def exhaustive_search(oracle: Oracle, positions: Sequence[int], n: int) -> Evaluated:
    """Every position with n rollouts (paper mode), through the same oracle."""
    return run_search(exhaustive_steps(positions, n), oracle)


def cliffs_from_evaluated(evaluated: dict[int, tuple[int, int, int]], test: CliffTest) -> list[int]:
    """Token indices i with both i−1 and i evaluated (>= `test.min_rollouts` rollouts each) where the
    test (`test.delta0`, `test.z`) fires, with each side's own N."""
    index = [i for i in sorted(evaluated) if i - 1 in evaluated]
    if not index:
        return []
    prev = np.array([evaluated[i - 1][:2] for i in index])       # (num_rollouts, num_correct) per side
    curr = np.array([evaluated[i][:2] for i in index])
    fires = ((np.minimum(prev[:, 0], curr[:, 0]) >= max(test.min_rollouts, 1))
             & is_cliff(prev[:, 1], prev[:, 0], curr[:, 1], curr[:, 0], test))
    return [i for i, f in zip(index, fires.tolist()) if f]
