"""What every potential search shares: a search is a generator (`Search`) that yields the rollouts it needs
next, (token_index, n) pairs, and is sent back (num_correct, generated tokens) for each; it returns what it
evaluated, token_index -> (num_rollouts, num_correct, tokens). `run_search` drives one with an oracle (the
simulator's binomial oracle, cliffdata/search/simulate.py); `cliffdata.search.rollouts.search_wave` drives
many at once and packs their requests into shared engine calls. README "Potential search" has the full
description; the modes are `exhaustive`, `adaptive` and `forks`, a module each.

Only cliffs between *adjacent* evaluated positions are reported, with the protocol's test on each
side's own N (`cliffs_from_evaluated`), and only at full N on both sides (`confirm_at_full_n`), so a
reported cliff means the same as in exhaustive mode. Rollouts are never reused across positions: every
count at position i comes from independent rollouts started at prefix i, which is what the two-proportion
test assumes.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Sequence
from typing import Protocol

import numpy as np

from cliffdata.cliffs.stats import is_cliff
from cliffdata.config.cliffs import CliffTest


class Oracle(Protocol):
    def rollouts(self, requests: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(token_index, n) pairs → (num_correct, num_generated_tokens) of n new rollouts each, in order."""


Evaluated = dict[int, tuple[int, int, int]]          # token_index -> (num_rollouts, num_correct, generated tokens)
Requests = list[tuple[int, int]]                     # (token_index, n new rollouts), increasing token_index
#: A search as a generator: it yields the rollouts it needs next, is sent their (num_correct, tokens)
#: in the same order, and returns what it evaluated. Many searches can then share engine calls
#: (cliffdata.search.rollouts.search_wave packs the requests of many traces into each call).
Search = Generator[Requests, list[tuple[int, int]], Evaluated]


def run_search(search: Search, oracle: Oracle) -> Evaluated:
    """Drive one search with one oracle, request by request."""
    try:
        requests = next(search)
        while True:
            requests = search.send(oracle.rollouts(requests))
    except StopIteration as done:
        return done.value


class Counts:
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


def _drop(c: Counts, a: int, b: int) -> tuple[float, float]:
    """Observed drop p̂_a − p̂_b and its SE (from the smoothed estimates)."""
    return c.p(a) - c.p(b), math.sqrt(c.smoothed(a)[1] + c.smoothed(b)[1])


def plausible_drop(c: Counts, a: int, b: int, delta_min: float, z: float, num_rollouts: int | None = None) -> bool:
    """Whether a detectable drop a -> b is still plausible: drop + z·SE > δ_min. With `num_rollouts` (N)
    the SE is that of the drop the final test at N will observe: the rollouts already drawn are part of
    its counts, so only the N − n still to come vary (each side's variance times (N − n) / N)."""
    drop, se = _drop(c, a, b)
    if num_rollouts:
        se = math.sqrt(sum(c.smoothed(x)[1] * max(num_rollouts - c.n[x], 0) / num_rollouts for x in (a, b)))
    return drop + z * se > delta_min


def check_positions(positions: Sequence[int]) -> list[int]:
    positions = list(positions)
    if positions and (positions != sorted(set(positions))
                      or positions != list(range(positions[0], positions[0] + len(positions)))):
        raise ValueError(f"positions must be consecutive and increasing, got {positions[:5]}…")
    return positions


def confirm_at_full_n(c: Counts, test: CliffTest, num_rollouts: int, n0: int):
    """A cliff is only reported at full N on both sides: top up every pair that fires below N. Pairs are
    screened from the search's starting n `n0` up (or the test's own floor, where lower)."""
    screen = dataclasses.replace(test, min_rollouts=min(n0, test.min_rollouts))
    while True:
        short = {x for i in cliffs_from_evaluated(c.evaluated(), screen)
                 for x in (i - 1, i) if c.n[x] < num_rollouts}
        if not short:
            return c.evaluated()
        yield from c.top_up(short, num_rollouts)


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
