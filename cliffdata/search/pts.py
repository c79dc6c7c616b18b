"""Pivotal-token-search-style bisection (Phi-4, Abdin et al. 2024, arXiv 2412.08905), the baseline the
searches are measured against (bench/adaptive.py): N = 20 at both ends, bisect every interval with
|Δp̂| ≥ 0.2 until its ends are adjacent; adjacent pairs with p̂[i−1] − p̂[i] ≥ 0.2 are its cliffs. Not a
`rollouts.mode`: the pipeline never runs it.

    evaluated, cliffs = pts_search(oracle, positions)
"""
from __future__ import annotations

from collections.abc import Sequence

from cliffdata.search.base import Evaluated, Oracle, run_search

PTS_N = 20
PTS_THRESHOLD = 0.2


def pts_steps(positions: Sequence[int], n: int = PTS_N, threshold: float = PTS_THRESHOLD):
    """Pivotal-token-search bisection as a search generator (cliffdata.search.base.Search); returns
    (evaluated, cliffs), cliffs = adjacent drops >= threshold.

    Level by level: all midpoints of the intervals that still need splitting are one request. A dip
    that recovers inside an interval leaves its ends equal, so bisection never sees it.
    """
    positions = list(positions)
    counts: dict[int, tuple[int, int, int]] = {}  # index into positions -> (n, k, tokens)

    def evaluate(js):
        todo = sorted(set(js) - counts.keys())
        if todo:
            results = yield [(positions[j], n) for j in todo]
            for j, (k, tok) in zip(todo, results):
                counts[j] = (n, k, tok)

    def drop(a, b):  # p̂[a] − p̂[b]
        return (counts[a][1] - counts[b][1]) / n

    tol = 1e-9  # |Δp̂| ≥ 0.2 must hold at exactly 4/20, whatever the float rounding

    if not positions:
        return {}, []
    last = len(positions) - 1
    yield from evaluate([0, last])
    frontier = [(0, last)] if last > 0 else []
    cliffs = []
    while frontier:
        cliffs += [positions[b] for a, b in frontier if b - a == 1 and drop(a, b) >= threshold - tol]
        split = [(a, b) for a, b in frontier if b - a > 1 and abs(drop(a, b)) >= threshold - tol]
        mids = [(a + b) // 2 for a, b in split]
        yield from evaluate(mids)
        frontier = [half for (a, b), m in zip(split, mids) for half in ((a, m), (m, b))]
    return {positions[j]: v for j, v in sorted(counts.items())}, sorted(cliffs)


def pts_search(oracle: Oracle, positions: Sequence[int], n: int = PTS_N,
               threshold: float = PTS_THRESHOLD) -> tuple[Evaluated, list[int]]:
    """`pts_steps` driven by one oracle."""
    return run_search(pts_steps(positions, n, threshold), oracle)


def evaluated_only(search):
    """A PTS search as the pipeline's scheduler takes it: returning only what it evaluated."""
    evaluated, _ = yield from search
    return evaluated


def pts_cliffs(evaluated: Evaluated, threshold: float = PTS_THRESHOLD) -> list[int]:
    """PTS's cliffs from what it evaluated: adjacent evaluated positions with p̂ falling >= threshold
    (bisection evaluates two adjacent positions only as the ends of one interval)."""
    tol = 1e-9
    return [i for i in sorted(evaluated) if i - 1 in evaluated
            and evaluated[i - 1][1] / evaluated[i - 1][0] - evaluated[i][1] / evaluated[i][0] >= threshold - tol]
