"""The exhaustive search (paper mode): every position with N rollouts, in batches, stopping at a run of
zeros (protocol §3).

    evaluated = exhaustive_search(oracle, positions, params.rollouts.num_rollouts)
"""
from __future__ import annotations

from collections.abc import Sequence

from cliffdata.search.base import Counts, Evaluated, Oracle, Search, run_search


def exhaustive_steps(positions: Sequence[int], n: int, batch: int = 0, early_stop_zeros: int = 0) -> Search:
    """Every position with n rollouts (paper mode). With `early_stop_zeros`, positions go in batches
    of at most `batch` (0: all at once) and never past the one that completes a run of that many
    zero potentials (counted from i = 0): the rest is left to the caller to fill (protocol §3)."""
    positions = list(positions)
    c = Counts()
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
