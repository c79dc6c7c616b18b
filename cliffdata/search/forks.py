"""The fork-aware search: by the sampler identity p[i−1] = Σ_v π_s(v)·p(prefix + v), a token with
max_drop = 1 − π_s(token) below δ_min(N) cannot carry a detectable true drop; only the forks (max_drop >=
δ_min) are tested: both sides at `forks.initial_rollouts`, doubled while a detectable drop is plausible
(p̂_a − p̂_b + z·SE > δ_min, SE of the final test's drop at N), tested at N.

    evaluated = fork_search(oracle, positions, max_drop, params.rollouts.forks, params.rollouts.num_rollouts, params.cliffs.test)
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from cliffdata.cliffs.stats import min_detectable_drop
from cliffdata.config.cliffs import CliffTest
from cliffdata.config.search import ForksParams
from cliffdata.search.base import Counts, Evaluated, Oracle, Search, check_positions, confirm_at_full_n, plausible_drop, run_search


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


def _identity_allows(c: Counts, i: int, max_drop: float | None, delta_min: float, z: float) -> bool:
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
    (observed drop + `cfg.z`·SE > δ_min(N), SE of the drop the final test at N will see: `plausible_drop`)
    and the identity allows one (`_identity_allows`), tested at
    full N. A non-fork cannot carry a true drop the test detects (the sampler identity), so it is never
    tested and gets no rollouts unless it is a fork's other side."""
    positions = check_positions(positions)
    N, n0 = num_rollouts, min(cfg.initial_rollouts, num_rollouts)
    delta_min = min_detectable_drop(N, N, test)
    forks = fork_positions(positions, max_drop, N, test)
    c = Counts()
    yield from c.draw({x: n0 for i in forks for x in (i - 1, i)})
    open_pairs = forks
    while open_pairs:
        open_pairs = [i for i in open_pairs if (c.n[i - 1] < N or c.n[i] < N)
                      and plausible_drop(c, i - 1, i, delta_min, cfg.z, N)
                      and _identity_allows(c, i, max_drop.get(i), delta_min, cfg.z)]
        yield from c.double({x for i in open_pairs for x in (i - 1, i) if c.n[x] < N}, N)
    return (yield from confirm_at_full_n(c, test, N, n0))


def fork_search(oracle: Oracle, positions: Sequence[int], max_drop: Mapping[int, float | None],
                cfg: ForksParams, num_rollouts: int, test: CliffTest) -> Evaluated:
    """`fork_steps` driven by one oracle; returns token_index → (num_rollouts, num_correct, tokens)."""
    return run_search(fork_steps(positions, max_drop, cfg, num_rollouts, test), oracle)
