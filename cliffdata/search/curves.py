"""Ground-truth potential curves for the search simulation (cliffdata/search/simulate.py): seeded
libraries of curves, one potential per response token, and the user's own (`load_curves`).

    curves = make_curves(126, seed=0, test=params.cliffs.test)            # the tuning library
    curves = make_model_like_curves(126, seed=0, test=params.cliffs.test) # never tuned on
    curves = make_identity_curves(42, seed=0, test=params.cliffs.test)    # with sampler probabilities

Libraries: `make_curves` (kinds in `KINDS`, lengths 50–2,000, most ≥ 200: the one the adaptive search was
designed on), `make_heldout_curves` and `make_varied_curves` (written apart from it),
`make_model_like_curves` (written apart from all three and never tuned on) and `make_identity_curves`
(curves with the sampler probabilities the fork-aware search reads). Each library draws from its own
seeded generator, so a seed gives the same curves every time.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cliffdata.cliffs.stats import min_detectable_drop
from cliffdata.config.cliffs import CliffTest
from cliffdata.search.adaptive import needed_moves
from cliffdata.search.simulate import EXHAUSTIVE_N, LONG_TRACE

KINDS = ("single_cliff", "multi_cliff", "drop_recovery", "gradual_decline", "noisy_plateau", "no_cliff",
         "near_threshold", "plateau_zero", "plateau_one")


# --- ground-truth curves -------------------------------------------------------------------------

def _min_drop_counts(k_prev: int, test: CliffTest) -> int | None:
    """Smallest drop in counts out of 64 that is a cliff from k_prev (None if none is)."""
    down = needed_moves(EXHAUSTIVE_N, test)[0][k_prev]
    return int(round(down * EXHAUSTIVE_N)) if np.isfinite(down) else None


def _cut(rng: np.random.Generator, T: int) -> int:
    """A change point away from the ends."""
    return int(rng.integers(max(1, T // 5), max(2, 4 * T // 5)))


def _single_cliff(rng, T, test):
    hi = rng.uniform(0.6, 0.95)
    p = np.full(T, hi)
    p[_cut(rng, T):] = rng.uniform(0.0, hi - 0.45)
    return p


def _multi_cliff(rng, T, test):
    # 2–3 drops, each followed by a slow partial recovery to a plateau.
    m = int(rng.integers(2, 4))
    edges = np.linspace(T // 10, 9 * T // 10, m + 1)
    cuts = [int(rng.integers(int(a + (b - a) / 4), int(a + 3 * (b - a) / 4) + 1)) for a, b in zip(edges, edges[1:])]
    level = rng.uniform(0.85, 1.0)
    p = np.full(T, level)
    for j, c in enumerate(cuts):
        low = level - min(level, rng.uniform(0.3, 0.45))
        end = cuts[j + 1] if j + 1 < m else T
        rise = rng.uniform(0.1, 0.3) if j + 1 < m else 0.0
        steps = np.arange(end - c)
        p[c:end] = low + rise * np.minimum(1.0, steps / max(1, (end - c) // 2))
        level = p[end - 1]
    return p


def _drop_recovery(rng, T, test):
    # A dip of 1–5 positions inside a plateau: bisection sees equal ends and never looks inside.
    hi = rng.uniform(0.6, 0.95)
    c, width = _cut(rng, T), int(rng.integers(1, 6))
    p = np.full(T, hi)
    p[c:c + width] = hi - rng.uniform(0.4, min(hi, 0.6))
    return p


def _gradual_decline(rng, T, test):
    # Linear over >= 50 positions: per-step drops <= 0.02, far below δ0.
    hi, lo = rng.uniform(0.7, 1.0), rng.uniform(0.0, 0.3)
    span = int(rng.integers(max(50, T // 2), T + 1))
    start = int(rng.integers(0, T - span + 1))
    p = np.full(T, hi)
    p[start:start + span] = np.linspace(hi, lo, span)
    p[start + span:] = lo
    return p


def _noisy_plateau(rng, T, test):
    return rng.uniform(0.3, 0.9) + rng.uniform(-0.025, 0.025, size=T)


def _no_cliff(rng, T, test):
    # Monotone rise to 1 with bursty upward jumps.
    start = rng.uniform(0.1, 0.6)
    steps = np.cumsum(rng.gamma(0.3, size=T - 1))
    return np.concatenate([[start], start + (1 - start) * steps / steps[-1]])


def _near_threshold(rng, T, test):
    # One drop at the smallest count difference N = 64 can detect from its level (a true cliff) and
    # one a count smaller (not one), in random order, joined by a slow ramp.
    events = [(k, _min_drop_counts(k, test)) for k in rng.integers(30, 50, size=2)]
    events[1] = (events[1][0], events[1][1] - 1)
    events = [events[j] for j in rng.permutation(2)]
    c1 = int(rng.integers(T // 5, 2 * T // 5))
    c2 = int(rng.integers(3 * T // 5, 4 * T // 5))
    (k1, d1), (k2, d2) = events
    p = np.full(T, k1 / 64)
    p[c1:c2] = np.linspace((k1 - d1) / 64, k2 / 64, c2 - c1)
    p[c1] = (k1 - d1) / 64
    p[c2 - 1] = k2 / 64
    p[c2:] = (k2 - d2) / 64
    return p


def _plateau_zero(rng, T, test):
    # A third never solvable; the rest fall to exactly 0 and stay there.
    if rng.random() < 1 / 3:
        return np.zeros(T)
    p = np.full(T, rng.uniform(0.4, 0.95))
    p[_cut(rng, T):] = 0.0
    return p


def _plateau_one(rng, T, test):
    # A third always solved; the rest fall from exactly 1 (SE = 0 on the left side).
    p = np.ones(T)
    if rng.random() >= 1 / 3:
        p[_cut(rng, T):] = rng.uniform(0.0, 0.6)
    return p


_GENERATORS: dict[str, Callable[[np.random.Generator, int, CliffTest], np.ndarray]] = {
    "single_cliff": _single_cliff, "multi_cliff": _multi_cliff, "drop_recovery": _drop_recovery,
    "gradual_decline": _gradual_decline, "noisy_plateau": _noisy_plateau, "no_cliff": _no_cliff,
    "near_threshold": _near_threshold, "plateau_zero": _plateau_zero, "plateau_one": _plateau_one,
}


def make_curves(num_curves: int, seed: int, test: CliffTest) -> list[dict]:
    """The curve library: kinds in rotation; every fourth round of kinds is short (50–199), the rest
    log-uniform in 200–2,000 tokens. `test`: the cliff test whose smallest detectable drop `near_threshold`
    curves sit at."""
    if num_curves < 1:
        raise ValueError(f"num_curves must be >= 1, got {num_curves}")
    rng = np.random.default_rng(seed)
    curves = []
    for j in range(num_curves):
        kind = KINDS[j % len(KINDS)]
        if (j // len(KINDS)) % 4 == 0:
            T = int(rng.integers(50, LONG_TRACE))
        else:
            T = int(round(math.exp(rng.uniform(math.log(LONG_TRACE), math.log(2000)))))
        p = np.clip(_GENERATORS[kind](rng, T, test), 0.0, 1.0)
        curves.append({"kind": kind, "p": p})
    return curves


# --- the held-out library (written apart from the one above) --------------------------------------

def _latent(rng, T):
    """A piecewise-constant potential: 0-3 jumps, levels near 1, mid or near 0."""
    m = int(rng.integers(0, 4))
    cuts = sorted(rng.choice(np.arange(5, T - 5), size=m, replace=False).tolist()) if m else []
    levels = [rng.choice([rng.uniform(0.85, 1.0), rng.uniform(0.4, 0.85), rng.uniform(0.0, 0.2)]) for _ in range(m + 1)]
    p, edges = np.empty(T), [0, *cuts, T]
    for j in range(m + 1):
        p[edges[j]:edges[j + 1]] = levels[j]
    return p


def _real_like(rng, T):
    # what an exhaustive N = 64 run returns for a latent curve: the truth carries sampling noise
    return rng.binomial(64, _latent(rng, T)) / 64


def _dips(rng, T):
    # 1-4 isolated one-token dips, 0.25-0.7 deep, on a high plateau
    p = np.full(T, rng.uniform(0.8, 1.0))
    for c in rng.choice(np.arange(3, T - 3), size=int(rng.integers(1, 5)), replace=False):
        p[c] = max(0.0, p[c - 1] - rng.uniform(0.25, 0.7))
    return p


def _spike_then_step(rng, T):
    # a one-token rise just before a step down, then a partial recovery
    p = np.full(T, rng.uniform(0.5, 0.8))
    c = int(rng.integers(T // 4, 3 * T // 4))
    p[c - 1] = min(1.0, p[c - 1] + rng.uniform(0.1, 0.3))
    p[c:] = rng.uniform(0.0, 0.35)
    r = int(rng.integers(c + 2, T))
    p[r:] = np.minimum(1.0, p[r:] + rng.uniform(0.1, 0.4))
    return p


def _staircase(rng, T):
    # 3-6 drops of 0.15-0.3 (several near the test's threshold)
    cuts = sorted(rng.choice(np.arange(2, T - 2), size=int(rng.integers(3, 7)), replace=False).tolist())
    p, level = np.ones(T), 1.0
    for c in cuts:
        level = max(0.0, level - rng.uniform(0.15, 0.3))
        p[c:] = level
    return p


def _two_token_dip(rng, T):
    p = np.full(T, rng.uniform(0.7, 1.0))
    c = int(rng.integers(2, T - 3))
    p[c:c + 2] = p[c - 1] - rng.uniform(0.3, 0.6)
    return p


HELDOUT: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "real_like": _real_like, "dips": _dips, "spike_then_step": _spike_then_step, "staircase": _staircase,
    "two_token_dip": _two_token_dip}


def _in_rotation(kinds: dict[str, Callable[..., np.ndarray]], num_curves: int, rng: np.random.Generator,
                 min_length: int, max_length: int, *args) -> list[dict]:
    """A held-out library: kinds in rotation, lengths log-uniform in [min_length, max_length]; `args` go to
    every generator after (rng, T)."""
    curves = []
    for j in range(num_curves):
        kind = list(kinds)[j % len(kinds)]
        T = int(round(math.exp(rng.uniform(math.log(min_length), math.log(max_length)))))
        curves.append({"kind": kind, "p": np.clip(kinds[kind](rng, T, *args), 0.0, 1.0)})
    return curves


def make_heldout_curves(num_curves: int, seed: int) -> list[dict]:
    """The held-out library: kinds in rotation, lengths log-uniform in 120-1,500."""
    return _in_rotation(HELDOUT, num_curves, np.random.default_rng([seed, 7919]), 120, 1500)


# --- the varied held-out library, written apart from the two above. Other shapes, noise and levels
# than both: mid-level dips, wider dips, up-spikes, cliffs at the ends, noisier truths (N = 32), dense
# dips, jittered staircases.

def _varied_real_n32(rng, T):
    # a latent with 0-4 steps and linear ramps, seen through N = 32 rollouts (noisier than N = 64)
    latent = np.full(T, rng.uniform(0.2, 1.0))
    for c in np.sort(rng.choice(np.arange(2, T - 2), size=int(rng.integers(0, 5)), replace=False)):
        if rng.random() < 0.5:
            latent[c:] = rng.uniform(0.0, 1.0)
        else:
            span = int(rng.integers(5, 60))
            latent[c:] = np.concatenate([np.linspace(latent[c - 1], rng.uniform(0, 1), span), np.full(T, np.nan)])[:T - c]
            latent[c + span:] = latent[min(T - 1, c + span - 1)]
    return rng.binomial(32, np.clip(latent, 0, 1)) / 32


def _varied_mid_dips(rng, T):
    # 1-3 dips 1-3 tokens wide, 0.2-0.5 deep, on a plateau at mid potential
    p = np.full(T, rng.uniform(0.35, 0.8))
    for c in rng.choice(np.arange(3, T - 5), size=int(rng.integers(1, 4)), replace=False):
        p[c:c + int(rng.integers(1, 4))] = max(0.0, p[c - 1] - rng.uniform(0.2, 0.5))
    return p


def _varied_up_spikes(rng, T):
    # one-token rises of 0.2-0.45 above a plateau (the drop after each is the cliff)
    p = np.full(T, rng.uniform(0.2, 0.6))
    for c in rng.choice(np.arange(3, T - 3), size=int(rng.integers(1, 4)), replace=False):
        p[c] = min(1.0, p[c] + rng.uniform(0.2, 0.45))
    return p


def _varied_edge_cliffs(rng, T):
    # a cliff in the first 3% and one in the last 3% of the trace
    p = np.full(T, rng.uniform(0.75, 1.0))
    a, b = int(rng.integers(1, max(2, T * 3 // 100))), int(rng.integers(T - max(2, T * 3 // 100), T - 1))
    p[a:] = p[0] - rng.uniform(0.25, 0.45)
    p[b:] = max(0.0, p[a] - rng.uniform(0.25, 0.45))
    return p


def _varied_dense_dips(rng, T):
    # 5-10 one-token dips of mixed depth (0.2-0.6) on a plateau 0.6-1.0
    p = np.full(T, rng.uniform(0.6, 1.0))
    for c in rng.choice(np.arange(2, T - 2), size=min(T // 8, int(rng.integers(5, 11))), replace=False):
        p[c] = max(0.0, p[c - 1] - rng.uniform(0.2, 0.6))
    return p


def _varied_jitter_steps(rng, T):
    # 2-4 steps down of 0.2-0.5 and up of 0.1-0.3, with ±0.04 jitter at every token
    p, level = np.empty(T), rng.uniform(0.7, 1.0)
    cuts = [0, *sorted(rng.choice(np.arange(3, T - 3), size=int(rng.integers(2, 5)), replace=False).tolist()), T]
    for j in range(len(cuts) - 1):
        p[cuts[j]:cuts[j + 1]] = level
        level = max(0.05, level - rng.uniform(0.2, 0.5)) if rng.random() < 0.7 else min(1.0, level + rng.uniform(0.1, 0.3))
    return p + rng.uniform(-0.04, 0.04, size=T)


HELDOUT_VARIED: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "real_n32": _varied_real_n32, "mid_dips": _varied_mid_dips, "up_spikes": _varied_up_spikes,
    "edge_cliffs": _varied_edge_cliffs, "dense_dips": _varied_dense_dips, "jitter_steps": _varied_jitter_steps}


def make_varied_curves(num_curves: int, seed: int) -> list[dict]:
    """The varied held-out library: kinds in rotation, lengths log-uniform in 200-2,500."""
    return _in_rotation(HELDOUT_VARIED, num_curves, np.random.default_rng([seed, 15485863]), 200, 2500)


# --- the model-like held-out library: never tuned on (rollouts.adaptive's screen knobs were chosen on the
# three libraries above and the embedded real curves). Curves like real models' exhaustive runs taken as the
# truth: long, seen through N = 64 or N = 48 rollouts, drifting levels, forks clustered in short regions,
# one-token excursions both ways at mid potentials, late cliffs in long traces, drops near the threshold.

def _model_like_drift(rng, T, test):
    # a logit random walk with rare jumps (mostly down), seen through N = 64 rollouts
    steps = rng.normal(0.0, 0.05, size=T)
    jumps = rng.random(T) < rng.uniform(0.002, 0.01)
    steps[jumps] += rng.choice([-1.0, 1.0], size=int(jumps.sum()), p=[0.7, 0.3]) * rng.uniform(1.0, 3.0, size=int(jumps.sum()))
    latent = 1.0 / (1.0 + np.exp(-(rng.normal(1.0, 1.5) + np.cumsum(steps))))
    return rng.binomial(64, latent) / 64


def _model_like_solved_then_lost(rng, T, test):
    # a high plateau (0.9-1.0), a cliff somewhere to 0.1-0.55, sometimes a second later to near 0; N = 48 truth
    latent = np.full(T, rng.uniform(0.9, 1.0))
    a = int(rng.integers(2, T - 2))
    latent[a:] = rng.uniform(0.1, 0.55)
    if rng.random() < 0.5 and a < T - 4:
        latent[int(rng.integers(a + 2, T - 1)):] = rng.uniform(0.0, 0.08)
    return rng.binomial(48, latent) / 48


def _model_like_fork_cluster(rng, T, test):
    # a mid plateau (0.35-0.7) with 1-2 regions of 6-12 tokens holding 2-4 one-token excursions of 0.25-0.5,
    # up or down, and a step of 0.3-0.5 leaving the last region
    p = np.full(T, rng.uniform(0.35, 0.7))
    for _ in range(int(rng.integers(1, 3))):
        start = int(rng.integers(3, max(4, T - 15)))
        for c in rng.choice(np.arange(start, start + int(rng.integers(6, 13))), size=int(rng.integers(2, 5)), replace=False):
            p[min(c, T - 2)] += rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.5)
        end = min(T - 2, start + 13)
    p[end:] -= rng.uniform(0.3, 0.5)
    return p


def _model_like_late_cliff(rng, T, test):
    # a cliff in the last quarter of a long trace, from 0.6-1.0 by 0.25-0.6, truth seen through N = 64
    latent = np.full(T, rng.uniform(0.6, 1.0))
    latent[int(rng.integers(3 * T // 4, T - 1)):] -= rng.uniform(0.25, 0.6)
    return rng.binomial(64, np.clip(latent, 0, 1)) / 64


def _model_like_threshold_steps(rng, T, test):
    # 2-5 steps down, each 0.9-1.3x the smallest fall the test detects at N = 64 from its level
    p, level = np.empty(T), rng.uniform(0.55, 1.0)
    cuts = [0, *sorted(rng.choice(np.arange(2, T - 2), size=int(rng.integers(2, 6)), replace=False).tolist()), T]
    for j in range(len(cuts) - 1):
        p[cuts[j]:cuts[j + 1]] = level
        need = _min_drop_counts(int(round(EXHAUSTIVE_N * level)), test)
        fall = (need / EXHAUSTIVE_N if need is not None else 0.3) * rng.uniform(0.9, 1.3)
        level = max(0.0, level - fall)
    return p


def _model_like_dip_recover(rng, T, test):
    # a fall of 0.3-0.6, a linear recovery over 10-80 tokens, then a second fall; N = 64 truth
    latent = np.full(T, rng.uniform(0.6, 1.0))
    a = int(rng.integers(2, max(3, T // 2)))
    low = max(0.0, latent[0] - rng.uniform(0.3, 0.6))
    span = int(rng.integers(10, 81))
    ramp = np.linspace(low, latent[0], span)
    latent[a:a + span] = ramp[:max(0, min(span, T - a))]
    b = int(rng.integers(min(T - 2, a + span), T - 1)) if a + span < T - 2 else T - 1
    latent[b:] = max(0.0, latent[0] - rng.uniform(0.3, 0.6))
    return rng.binomial(64, latent) / 64


HELDOUT_MODEL_LIKE: dict[str, Callable[[np.random.Generator, int, CliffTest], np.ndarray]] = {
    "drift_n64": _model_like_drift, "solved_then_lost_n48": _model_like_solved_then_lost,
    "fork_cluster": _model_like_fork_cluster, "late_cliff_n64": _model_like_late_cliff,
    "threshold_steps": _model_like_threshold_steps, "dip_recover_n64": _model_like_dip_recover}


def make_model_like_curves(num_curves: int, seed: int, test: CliffTest) -> list[dict]:
    """The model-like held-out library: kinds in rotation, lengths log-uniform in 117-1,500 (real
    models' curves run 117-819 tokens). `test`: the cliff test `threshold_steps` falls near."""
    return _in_rotation(HELDOUT_MODEL_LIKE, num_curves, np.random.default_rng([seed, 32452843]), 117, 1500, test)


# --- curves with sampler probabilities (the fork-aware search's setting) ---------------------------

def make_identity_curves(num_curves: int, seed: int, test: CliffTest) -> list[dict]:
    """Curves with per-position sampler probabilities π(token), consistent with the sampler identity
    p[i−1] = π·p[i] + (1 − π)·p_alt (p_alt: the alternatives' mean potential, drawn in its feasible
    range), so |p[i−1] − p[i]| <= 1 − π = max_drop. Forks (max_drop >= δ_min at N = 64) at a rate of
    5-20% of positions; elsewhere max_drop < 0.9·δ_min (mostly ~0.01): no true cliff off a fork. At a
    fork the alternatives are better than average half of the time (a drop), else anywhere."""
    rng = np.random.default_rng([seed, 104729])
    delta_min = min_detectable_drop(EXHAUSTIVE_N, EXHAUSTIVE_N, test)
    curves = []
    for j in range(num_curves):
        T = int(round(math.exp(rng.uniform(math.log(200), math.log(2000)))))
        fork_rate = rng.uniform(0.05, 0.2)
        is_fork = rng.random(T) < fork_rate
        is_fork[0] = False
        max_drop = np.where(is_fork, rng.uniform(delta_min, 0.9, size=T),
                            np.minimum(0.9 * delta_min, rng.exponential(0.01, size=T)))
        p = np.empty(T)
        p[0] = rng.uniform(0.3, 1.0)
        for i in range(1, T):
            pi = 1.0 - max_drop[i]
            lo, hi = max(0.0, (p[i - 1] - pi) / (1 - pi)), min(1.0, p[i - 1] / (1 - pi))
            alt = rng.uniform(max(lo, (lo + hi) / 2), hi) if is_fork[i] and rng.random() < 0.5 else rng.uniform(lo, hi)
            p[i] = min(1.0, max(0.0, (p[i - 1] - (1 - pi) * alt) / pi))
        curves.append({"kind": f"identity_forks_{'5-10' if fork_rate < 0.1 else '10-20'}%", "p": p,
                       "sampler_prob": 1.0 - max_drop})
    return curves


def load_curves(path: str | Path) -> list[dict]:
    """User curves: a JSON list of {"kind": str, "p": [float, ...]}, one potential per response token,
    optionally with "sampler_prob": [float, ...] (π_s of each token: the fork-aware search runs on those)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list) or not data:
        raise ValueError(f'{path}: expected a non-empty JSON list of {{"kind": str, "p": [float, ...]}}, '
                         f"got {type(data).__name__} {str(data)[:80]}")
    curves = []
    for j, c in enumerate(data):
        if not isinstance(c, dict) or not {"kind", "p"} <= set(c) <= {"kind", "p", "sampler_prob"}:
            raise ValueError(f'{path}: entry {j} must be an object with the keys "kind" and "p" (and optionally '
                             f'"sampler_prob"), got {str(c)[:80]}')
        if not isinstance(c["kind"], str):
            raise ValueError(f'{path}: entry {j}: "kind" must be a string, got {c["kind"]!r}')
        p = c["p"]
        if (not isinstance(p, list) or len(p) < 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in p)):
            raise ValueError(f'{path}: entry {j}: "p" must be a list of at least 2 numbers, got {str(p)[:80]}')
        p = np.asarray(p, dtype=np.float64)
        bad = np.flatnonzero(~((p >= 0) & (p <= 1)))  # also catches NaN
        if len(bad):
            raise ValueError(f'{path}: entry {j}: "p" must lie in [0, 1], got p[{bad[0]}] = {p[bad[0]]}')
        curve = {"kind": c["kind"], "p": p}
        if "sampler_prob" in c:
            sp = c["sampler_prob"]
            if (not isinstance(sp, list) or len(sp) != len(p)
                    or not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 1 for x in sp)):
                raise ValueError(f'{path}: entry {j}: "sampler_prob" must be a list of {len(p)} numbers in [0, 1] '
                                 f'(one per token of "p"), got {str(sp)[:80]}')
            curve["sampler_prob"] = np.asarray(sp, dtype=np.float64)
        curves.append(curve)
    return curves
