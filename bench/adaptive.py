"""Adaptive vs exhaustive vs PTS-style bisection cliff search, on simulated potential curves.

    python bench/adaptive.py --sim-only [--seed 0] [--num-curves 126] [--curves PATH] [--json bench/results/adaptive.json]

    python bench/adaptive.py --frontier [--curves PATH]    # recall / tokens over rollouts.adaptive's screen knobs

Writes the JSON report and a Markdown table next to it (`adaptive.md`), and prints the table;
`--frontier` writes `<--json stem>_frontier.{json,md}` instead.

Simulation. Each ground-truth potential curve p (one value per response token, T tokens) is searched
by every method through a binomial rollout oracle: a request (i, n) returns Binomial(n, p[i]) correct
rollouts and charges n·(T − 1 − i) generated tokens (each rollout regenerates the rest of the trace).
The curves are a seeded library (kinds in `KINDS`, lengths 50–2,000, most ≥ 200) or the user's
(`--curves`: a JSON list of {"kind": str, "p": [float, ...]}). Methods:

- exhaustive: every position with N = 64 rollouts (paper mode), cliffs by the protocol test (§2);
- adaptive: `cliffdata.adaptive.adaptive_search` with the pipeline's `rollouts.adaptive` and `cliffs.test`
  params (params.yaml, the same objects the `rollouts` stage passes) at N = 64; cliffs by the
  protocol test between adjacent evaluated positions, each side with its own N;
- pts: pivotal-token-search-style bisection (Phi-4, Abdin et al. 2024, arXiv 2412.08905): N = 20 at
  both ends, bisect every interval with |Δp̂| ≥ 0.2 until its ends are adjacent; adjacent pairs with
  p̂[i−1] − p̂[i] ≥ 0.2 are its cliffs.

Definitions (repeated in the Markdown output):
- True cliff: position i with is_cliff(round(64·p[i−1]), 64, round(64·p[i]), 64), i.e. the protocol
  test would fire at N = 64 on the expected counts: a true drop that exhaustive mode can detect.
- Recall: detected true cliffs / true cliffs, pooled over traces.
- False cliffs per trace: reported cliffs that are not true cliffs, divided by the number of traces.
- First-cliff agreement: share of traces whose first reported cliff is the first true cliff (no cliff
  reported where there is none counts as agreement).

Top-level JSON keys, over the traces of length ≥ 200 (of `heldout_model_like`, the library never tuned on,
without --curves; each library's own under `libraries`): `recall_ratio` = adaptive / exhaustive recall;
`false_cliffs_ratio` = (adaptive + ε) / (exhaustive + ε) false cliffs per trace with ε = 0.01, since
exhaustive can have none (raw values in `false_cliffs_per_trace`); `token_ratio` = adaptive /
exhaustive generated tokens. Deterministic for a seed: the curve library and every (curve, method)
oracle draw from their own seeded generators.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cliffdata.adaptive import (Oracle, adaptive_search, cliffs_from_evaluated, exhaustive_search, fork_search,  # noqa: E402
                                needed_moves, run_search)
from cliffdata.config import load_params  # noqa: E402
from cliffdata.stats import is_cliff, min_detectable_drop  # noqa: E402

EXHAUSTIVE_N = 64                     # the simulation's N (paper mode); the pipeline's own N is rollouts.num_rollouts
# The adaptive search and the cliff test exactly as the pipeline runs them: params.yaml's objects.
PARAMS = load_params(ROOT / "params.yaml")
ADAPTIVE_CONFIG = PARAMS.rollouts.adaptive
FORKS_CONFIG = PARAMS.rollouts.forks
TEST = PARAMS.cliffs.test
PTS_N = 20
PTS_THRESHOLD = 0.2
FALSE_CLIFFS_EPS = 0.01
LONG_TRACE = 200
KINDS = ("single_cliff", "multi_cliff", "drop_recovery", "gradual_decline", "noisy_plateau", "no_cliff",
         "near_threshold", "plateau_zero", "plateau_one")
DEFINITIONS = {
    "true_cliff": "position i with is_cliff(round(64·p[i−1]), 64, round(64·p[i]), 64): the protocol test "
                  "would fire at N = 64 on the expected counts",
    "recall": "detected true cliffs / true cliffs, pooled over traces",
    "false_cliffs_per_trace": "reported cliffs that are not true cliffs / number of traces",
    "first_cliff_agreement": "share of traces whose first reported cliff is the first true cliff (none = none agrees)",
    "generated_tokens": "each rollout from position i is charged the remaining trace length T − 1 − i",
    "false_cliffs_ratio": f"(adaptive + {FALSE_CLIFFS_EPS}) / (exhaustive + {FALSE_CLIFFS_EPS}) false cliffs per trace",
}


# --- ground-truth curves -------------------------------------------------------------------------

def _min_drop_counts(k_prev: int) -> int | None:
    """Smallest drop in counts out of 64 that is a cliff from k_prev (None if none is)."""
    down = needed_moves(EXHAUSTIVE_N, TEST)[0][k_prev]
    return int(round(down * EXHAUSTIVE_N)) if np.isfinite(down) else None


def _cut(rng: np.random.Generator, T: int) -> int:
    """A change point away from the ends."""
    return int(rng.integers(max(1, T // 5), max(2, 4 * T // 5)))


def _single_cliff(rng, T):
    hi = rng.uniform(0.6, 0.95)
    p = np.full(T, hi)
    p[_cut(rng, T):] = rng.uniform(0.0, hi - 0.45)
    return p


def _multi_cliff(rng, T):
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


def _drop_recovery(rng, T):
    # A dip of 1–5 positions inside a plateau: bisection sees equal ends and never looks inside.
    hi = rng.uniform(0.6, 0.95)
    c, width = _cut(rng, T), int(rng.integers(1, 6))
    p = np.full(T, hi)
    p[c:c + width] = hi - rng.uniform(0.4, min(hi, 0.6))
    return p


def _gradual_decline(rng, T):
    # Linear over >= 50 positions: per-step drops <= 0.02, far below δ0.
    hi, lo = rng.uniform(0.7, 1.0), rng.uniform(0.0, 0.3)
    span = int(rng.integers(max(50, T // 2), T + 1))
    start = int(rng.integers(0, T - span + 1))
    p = np.full(T, hi)
    p[start:start + span] = np.linspace(hi, lo, span)
    p[start + span:] = lo
    return p


def _noisy_plateau(rng, T):
    return rng.uniform(0.3, 0.9) + rng.uniform(-0.025, 0.025, size=T)


def _no_cliff(rng, T):
    # Monotone rise to 1 with bursty upward jumps.
    start = rng.uniform(0.1, 0.6)
    steps = np.cumsum(rng.gamma(0.3, size=T - 1))
    return np.concatenate([[start], start + (1 - start) * steps / steps[-1]])


def _near_threshold(rng, T):
    # One drop at the smallest count difference N = 64 can detect from its level (a true cliff) and
    # one a count smaller (not one), in random order, joined by a slow ramp.
    events = [(k, _min_drop_counts(k)) for k in rng.integers(30, 50, size=2)]
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


def _plateau_zero(rng, T):
    # A third never solvable; the rest fall to exactly 0 and stay there.
    if rng.random() < 1 / 3:
        return np.zeros(T)
    p = np.full(T, rng.uniform(0.4, 0.95))
    p[_cut(rng, T):] = 0.0
    return p


def _plateau_one(rng, T):
    # A third always solved; the rest fall from exactly 1 (SE = 0 on the left side).
    p = np.ones(T)
    if rng.random() >= 1 / 3:
        p[_cut(rng, T):] = rng.uniform(0.0, 0.6)
    return p


_GENERATORS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "single_cliff": _single_cliff, "multi_cliff": _multi_cliff, "drop_recovery": _drop_recovery,
    "gradual_decline": _gradual_decline, "noisy_plateau": _noisy_plateau, "no_cliff": _no_cliff,
    "near_threshold": _near_threshold, "plateau_zero": _plateau_zero, "plateau_one": _plateau_one,
}


def make_curves(num_curves: int, seed: int) -> list[dict]:
    """The curve library: kinds in rotation; every fourth round of kinds is short (50–199), the rest
    log-uniform in 200–2,000 tokens."""
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
        p = np.clip(_GENERATORS[kind](rng, T), 0.0, 1.0)
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


def _in_rotation(kinds: dict[str, Callable[[np.random.Generator, int], np.ndarray]], num_curves: int,
                 rng: np.random.Generator, min_length: int, max_length: int) -> list[dict]:
    """A held-out library: kinds in rotation, lengths log-uniform in [min_length, max_length]."""
    curves = []
    for j in range(num_curves):
        kind = list(kinds)[j % len(kinds)]
        T = int(round(math.exp(rng.uniform(math.log(min_length), math.log(max_length)))))
        curves.append({"kind": kind, "p": np.clip(kinds[kind](rng, T), 0.0, 1.0)})
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

def _model_like_drift(rng, T):
    # a logit random walk with rare jumps (mostly down), seen through N = 64 rollouts
    steps = rng.normal(0.0, 0.05, size=T)
    jumps = rng.random(T) < rng.uniform(0.002, 0.01)
    steps[jumps] += rng.choice([-1.0, 1.0], size=int(jumps.sum()), p=[0.7, 0.3]) * rng.uniform(1.0, 3.0, size=int(jumps.sum()))
    latent = 1.0 / (1.0 + np.exp(-(rng.normal(1.0, 1.5) + np.cumsum(steps))))
    return rng.binomial(64, latent) / 64


def _model_like_solved_then_lost(rng, T):
    # a high plateau (0.9-1.0), a cliff somewhere to 0.1-0.55, sometimes a second later to near 0; N = 48 truth
    latent = np.full(T, rng.uniform(0.9, 1.0))
    a = int(rng.integers(2, T - 2))
    latent[a:] = rng.uniform(0.1, 0.55)
    if rng.random() < 0.5 and a < T - 4:
        latent[int(rng.integers(a + 2, T - 1)):] = rng.uniform(0.0, 0.08)
    return rng.binomial(48, latent) / 48


def _model_like_fork_cluster(rng, T):
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


def _model_like_late_cliff(rng, T):
    # a cliff in the last quarter of a long trace, from 0.6-1.0 by 0.25-0.6, truth seen through N = 64
    latent = np.full(T, rng.uniform(0.6, 1.0))
    latent[int(rng.integers(3 * T // 4, T - 1)):] -= rng.uniform(0.25, 0.6)
    return rng.binomial(64, np.clip(latent, 0, 1)) / 64


def _model_like_threshold_steps(rng, T):
    # 2-5 steps down, each 0.9-1.3x the smallest fall the test detects at N = 64 from its level
    p, level = np.empty(T), rng.uniform(0.55, 1.0)
    cuts = [0, *sorted(rng.choice(np.arange(2, T - 2), size=int(rng.integers(2, 6)), replace=False).tolist()), T]
    for j in range(len(cuts) - 1):
        p[cuts[j]:cuts[j + 1]] = level
        need = _min_drop_counts(int(round(EXHAUSTIVE_N * level)))
        fall = (need / EXHAUSTIVE_N if need is not None else 0.3) * rng.uniform(0.9, 1.3)
        level = max(0.0, level - fall)
    return p


def _model_like_dip_recover(rng, T):
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


HELDOUT_MODEL_LIKE: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "drift_n64": _model_like_drift, "solved_then_lost_n48": _model_like_solved_then_lost,
    "fork_cluster": _model_like_fork_cluster, "late_cliff_n64": _model_like_late_cliff,
    "threshold_steps": _model_like_threshold_steps, "dip_recover_n64": _model_like_dip_recover}


def make_model_like_curves(num_curves: int, seed: int) -> list[dict]:
    """The model-like held-out library: kinds in rotation, lengths log-uniform in 117-1,500 (real
    models' curves run 117-819 tokens)."""
    return _in_rotation(HELDOUT_MODEL_LIKE, num_curves, np.random.default_rng([seed, 32452843]), 117, 1500)


# --- curves with sampler probabilities (the fork-aware search's setting) ---------------------------

def make_identity_curves(num_curves: int, seed: int) -> list[dict]:
    """Curves with per-position sampler probabilities π(token), consistent with the sampler identity
    p[i−1] = π·p[i] + (1 − π)·p_alt (p_alt: the alternatives' mean potential, drawn in its feasible
    range), so |p[i−1] − p[i]| <= 1 − π = max_drop. Forks (max_drop >= δ_min at N = 64) at a rate of
    5-20% of positions; elsewhere max_drop < 0.9·δ_min (mostly ~0.01): no true cliff off a fork. At a
    fork the alternatives are better than average half of the time (a drop), else anywhere."""
    rng = np.random.default_rng([seed, 104729])
    delta_min = min_detectable_drop(EXHAUSTIVE_N, EXHAUSTIVE_N, TEST)
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


def true_cliffs(p: np.ndarray) -> list[int]:
    """Positions where the cliff test fires at N = 64 on the expected counts round(64·p)."""
    k = np.rint(EXHAUSTIVE_N * np.asarray(p, dtype=np.float64)).astype(np.int64)
    flags = is_cliff(k[:-1], EXHAUSTIVE_N, k[1:], EXHAUSTIVE_N, TEST)
    return (np.flatnonzero(flags) + 1).tolist()


# --- the simulated oracle and the methods ----------------------------------------------------------

class BinomialOracle:
    """Rollouts on a ground-truth curve: Binomial(n, p[i]) correct, each charged T − 1 − i tokens."""

    def __init__(self, p: Sequence[float], rng: np.random.Generator):
        self.p = np.asarray(p, dtype=np.float64)
        self.rng = rng
        self.num_rollouts = 0
        self.num_generated_tokens = 0

    def rollouts(self, requests: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not requests:
            return []
        req = np.asarray(requests, dtype=np.int64).reshape(-1, 2)  # (R, 2)
        idx, n = req[:, 0], req[:, 1]
        T = len(self.p)
        if (idx < 0).any() or (idx >= T).any() or (n < 0).any():
            raise ValueError(f"requests need 0 <= token_index < {T} and n >= 0, got {requests[:5]}…")
        num_correct = self.rng.binomial(n, self.p[idx])
        num_tokens = n * (T - 1 - idx)
        self.num_rollouts += int(n.sum())
        self.num_generated_tokens += int(num_tokens.sum())
        return list(zip(num_correct.tolist(), num_tokens.tolist()))


Evaluated = dict[int, tuple[int, int, int]]


def pts_steps(positions: Sequence[int], n: int = PTS_N, threshold: float = PTS_THRESHOLD):
    """Pivotal-token-search bisection as a search generator (cliffdata.adaptive.Search); returns
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


def _evaluated_only(search):
    """A PTS search as the pipeline's scheduler takes it: returning only what it evaluated."""
    evaluated, _ = yield from search
    return evaluated


def pts_cliffs(evaluated: Evaluated, threshold: float = PTS_THRESHOLD) -> list[int]:
    """PTS's cliffs from what it evaluated: adjacent evaluated positions with p̂ falling >= threshold
    (bisection evaluates two adjacent positions only as the ends of one interval)."""
    tol = 1e-9
    return [i for i in sorted(evaluated) if i - 1 in evaluated
            and evaluated[i - 1][1] / evaluated[i - 1][0] - evaluated[i][1] / evaluated[i][0] >= threshold - tol]


def _run_exhaustive(oracle, positions):
    evaluated = exhaustive_search(oracle, positions, EXHAUSTIVE_N)
    return evaluated, cliffs_from_evaluated(evaluated, TEST)


def _run_adaptive(oracle, positions):
    evaluated = adaptive_search(oracle, positions, ADAPTIVE_CONFIG, EXHAUSTIVE_N, TEST)
    return evaluated, cliffs_from_evaluated(evaluated, TEST)


def _run_forks(oracle, positions, max_drop):
    evaluated = fork_search(oracle, positions, max_drop, FORKS_CONFIG, EXHAUSTIVE_N, TEST)
    return evaluated, cliffs_from_evaluated(evaluated, TEST)


METHODS: dict[str, Callable[..., tuple[Evaluated, list[int]]]] = {
    "exhaustive": _run_exhaustive, "adaptive": _run_adaptive, "pts": pts_search, "forks": _run_forks,
}
NEEDS_SAMPLER_PROB = {"forks"}        # runs only on curves that carry sampler probabilities


# --- the comparison ------------------------------------------------------------------------------

def score_trace(true: list[int], reported: list[int]) -> dict:
    """Detected true cliffs, false cliffs and first-cliff agreement of one method on one trace."""
    true_set, reported_set = set(true), set(reported)
    first = min(reported_set) if reported_set else None
    return {"num_detected": len(true_set & reported_set), "num_false": len(reported_set - true_set),
            "first_cliff": first, "first_cliff_agrees": first == (min(true_set) if true_set else None)}


def run_curve(p: np.ndarray, curve_index: int, seed: int, methods: Sequence[str],
              sampler_prob: np.ndarray | None = None) -> dict:
    """Every method on one curve, each with its own oracle generator seeded by (seed, curve, method);
    the fork-aware search only where the curve has sampler probabilities."""
    positions = list(range(len(p)))
    true = true_cliffs(p)
    out = {"length": len(p), "true_cliffs": true, "methods": {}}
    for name in methods:
        if name in NEEDS_SAMPLER_PROB and sampler_prob is None:
            continue
        oracle = BinomialOracle(p, np.random.default_rng([seed, curve_index, list(METHODS).index(name)]))
        if name in NEEDS_SAMPLER_PROB:
            evaluated, cliffs = METHODS[name](oracle, positions, dict(enumerate((1.0 - sampler_prob).tolist())))
        else:
            evaluated, cliffs = METHODS[name](oracle, positions)
        assert sum(v[0] for v in evaluated.values()) == oracle.num_rollouts, \
            f"{name}: evaluated rollouts disagree with what the oracle was asked for"
        out["methods"][name] = {"cliffs": [int(i) for i in cliffs], **score_trace(true, cliffs),
                                "num_rollouts": oracle.num_rollouts,
                                "num_generated_tokens": oracle.num_generated_tokens}
    return out


def _ratio(a, b):
    return None if a is None or not b else round(a / b, 4)


def summarise(traces: list[dict], method: str) -> dict | None:
    """Pooled metrics of one method over the traces it ran on (None: it ran on none)."""
    traces = [t for t in traces if method in t["methods"]]
    if not traces:
        return None
    runs = [t["methods"][method] for t in traces]
    num, num_true = len(traces), sum(len(t["true_cliffs"]) for t in traces)
    detected = sum(r["num_detected"] for r in runs)
    rollouts = sum(r["num_rollouts"] for r in runs)
    tokens = sum(r["num_generated_tokens"] for r in runs)
    return {
        "num_traces": num, "num_true_cliffs": num_true, "num_detected": detected,
        "recall": _ratio(detected, num_true),
        "false_cliffs_per_trace": _ratio(sum(r["num_false"] for r in runs), num),
        "first_cliff_agreement": _ratio(sum(r["first_cliff_agrees"] for r in runs), num),
        "num_rollouts": rollouts, "num_generated_tokens": tokens,
        "rollouts_per_trace": _ratio(rollouts, num), "tokens_per_trace": _ratio(tokens, num),
    }


RATIO_KEYS = ("recall_ratio", "false_cliffs_ratio", "token_ratio")


def ratios(group: dict, method: str) -> dict:
    """`method` against exhaustive on one group's summaries (None where either did not run)."""
    m, ex = group.get(method), group.get("exhaustive")
    if m is None or ex is None:
        return dict.fromkeys(RATIO_KEYS)
    return {"recall_ratio": _ratio(m["recall"], ex["recall"]),
            "false_cliffs_ratio": round((m["false_cliffs_per_trace"] + FALSE_CLIFFS_EPS)
                                        / (ex["false_cliffs_per_trace"] + FALSE_CLIFFS_EPS), 4),
            "token_ratio": _ratio(m["num_generated_tokens"], ex["num_generated_tokens"]),
            "false_cliffs_per_trace": {method: m["false_cliffs_per_trace"], "exhaustive": ex["false_cliffs_per_trace"]},
            "false_cliffs_eps": FALSE_CLIFFS_EPS}


def run_sim(curves: list[dict], seed: int, methods: Sequence[str] = tuple(METHODS)) -> dict:
    """The simulated comparison: per-trace results, summaries by group and the ratios to exhaustive.

    Top-level `recall_ratio`, `false_cliffs_ratio`, `token_ratio`: adaptive vs exhaustive (no token
    probabilities), over the traces of length >= 200; `forks`: the same for the fork-aware search on
    the curves that carry sampler probabilities (None where none does)."""
    traces = []
    for j, c in enumerate(tqdm(curves, desc="curves", disable=None)):
        sampler_prob = c.get("sampler_prob")
        traces.append({"kind": c["kind"], **run_curve(np.asarray(c["p"], dtype=np.float64), j, seed, methods,
                                                      None if sampler_prob is None else np.asarray(sampler_prob))})
    groups = {"all": traces, f"length>={LONG_TRACE}": [t for t in traces if t["length"] >= LONG_TRACE]}
    groups |= {f"kind:{k}": [t for t in traces if t["kind"] == k] for k in dict.fromkeys(t["kind"] for t in traces)}
    summary = {g: {m: s for m in methods if (s := summarise(ts, m)) is not None} for g, ts in groups.items() if ts}
    long = summary.get(f"length>={LONG_TRACE}", {})
    return {key: value for key, value in ratios(long, "adaptive").items() if key in RATIO_KEYS or long} | {
        "forks": ratios(long, "forks") if "forks" in long else None,
        "seed": seed, "num_curves": len(curves), "definitions": DEFINITIONS,
        "methods": {"exhaustive": {"num_rollouts": EXHAUSTIVE_N},
                    "adaptive": {"num_rollouts": EXHAUSTIVE_N, **dataclasses.asdict(ADAPTIVE_CONFIG)},
                    "forks": {"num_rollouts": EXHAUSTIVE_N, **dataclasses.asdict(FORKS_CONFIG)},
                    "pts": {"num_rollouts": PTS_N, "threshold": PTS_THRESHOLD}},
        "summary": summary, "traces": traces}


def run_seeds(curves_of: Callable[[int], list[dict]], seeds: Sequence[int], methods: Sequence[str] = tuple(METHODS)) -> dict:
    """`run_sim` once per seed (`curves_of(seed)`: the curves of that seed; fixed curves vary only the
    oracle's draws). The top-level ratios are means over the seeds, with each seed's beside them;
    the per-trace results are those of the first seed."""
    runs = [run_sim(curves_of(s), s, methods) for s in seeds]
    def mean(values):
        values = [v for v in values if v is not None]
        return round(float(np.mean(values)), 4) if values else None
    report = dict(runs[0])
    for key in RATIO_KEYS:
        report[key] = mean([r.get(key) for r in runs])
        report.setdefault("per_seed", {})[key] = [r.get(key) for r in runs]
    if runs[0]["forks"] is not None:
        report["forks"] = {key: mean([r["forks"][key] for r in runs]) for key in RATIO_KEYS} | {
            "per_seed": {key: [r["forks"][key] for r in runs] for key in RATIO_KEYS}}
    report["seeds"] = list(seeds)
    return report


def format_markdown(report: dict, title: str = "curves") -> str:
    def fmt(x, digits=3):
        return "–" if x is None else f"{x:.{digits}f}"

    seeds = report.get("seeds", [report["seed"]])
    lines = [f"## Simulated: {title} ({report['num_curves']} curves, seeds {seeds[0]}–{seeds[-1]})", ""]
    for name, r in (("adaptive (no token probabilities)", report), ("forks (sampler probabilities)", report.get("forks"))):
        if r and r.get("recall_ratio") is not None:
            spread = r.get("per_seed", {}).get("recall_ratio") or [r["recall_ratio"]]
            lines.append(f"- **{name}** vs exhaustive, traces ≥ {LONG_TRACE} tokens, mean over {len(spread)} seed(s): "
                         f"recall ratio **{fmt(r['recall_ratio'])}** (seeds {fmt(min(spread))}–{fmt(max(spread))}), "
                         f"false-cliffs ratio **{fmt(r['false_cliffs_ratio'])}** (ε = {FALSE_CLIFFS_EPS}), "
                         f"token ratio **{fmt(r['token_ratio'])}**")
    lines += ["", f"First seed, by group ({seeds[0]}):", "",
              "| traces | method | n | true cliffs | recall | false cliffs / trace | first-cliff agreement "
              "| rollouts / trace | tokens / trace |", "|---|---|---|---|---|---|---|---|---|"]
    for group, by_method in report["summary"].items():
        for m, s in by_method.items():
            lines.append(f"| {group} | {m} | {s['num_traces']} | {s['num_true_cliffs']} | {fmt(s['recall'])} "
                         f"| {fmt(s['false_cliffs_per_trace'], 2)} | {fmt(s['first_cliff_agreement'])} "
                         f"| {s['rollouts_per_trace']:,.0f} | {s['tokens_per_trace']:,.0f} |")
    return "\n".join(lines) + "\n"


def format_definitions() -> str:
    return "\n".join(["# Cliff search: exhaustive vs adaptive vs fork-aware vs PTS", ""]
                     + [f"- **{k.replace('_', ' ')}**: {v}" for k, v in DEFINITIONS.items()]) + "\n\n"


# ---------------------------------------------------------------------------------------------
# Real model: exhaustive vs adaptive on the pipeline's traces, with a second exhaustive run as the
# noise ceiling. The reference exhaustive run is a rollout dataset (default: the pipeline's own
# data/rollouts/potentials.parquet, mode exhaustive); the bench draws the other two.

def _evaluated_by_trace(rows: list[dict]) -> dict[str, Evaluated]:
    by_trace: dict[str, Evaluated] = {}
    for r in rows:
        if not r["is_filled"]:
            by_trace.setdefault(r["trace_id"], {})[r["token_index"]] = (
                r["num_rollouts"], r["num_correct"], r["num_generated_tokens"])
    return by_trace


def _cliff_sets(rows: list[dict]) -> dict[str, list[int]]:
    return {t: cliffs_from_evaluated(ev, TEST) for t, ev in _evaluated_by_trace(rows).items()}


def compare_runs(reference: dict[str, list[int]], other: dict[str, list[int]]) -> dict:
    """First-cliff agreement, all-cliff recall and precision of `other` relative to `reference`."""
    traces = sorted(reference)
    first_agree = sum((reference[t][:1] or [None]) == (other.get(t, [])[:1] or [None]) for t in traces)
    ref_all = {(t, i) for t in traces for i in reference[t]}
    oth_all = {(t, i) for t in traces for i in other.get(t, [])}
    hit = len(ref_all & oth_all)
    return {"num_traces": len(traces), "first_cliff_agreement": first_agree / max(len(traces), 1),
            "recall": hit / len(ref_all) if ref_all else None,
            "precision": hit / len(oth_all) if oth_all else None,
            "num_cliffs_reference": len(ref_all), "num_cliffs": len(oth_all)}


def run_real(potentials_path: str, max_traces: int | None, seed: int) -> dict:
    """Exhaustive (the given dataset) vs a second exhaustive seed vs adaptive vs forks: same N, same
    engine, the pipeline's params and scheduler (`search_wave` over waves of `rollouts.traces_per_wave`)."""
    from transformers import AutoTokenizer

    from cliffdata import schema
    from cliffdata.backends import open_backend
    from cliffdata.rollouts import max_drops_of, scored_positions, search_wave, waves
    from cliffdata.sampling import golds_by_problem

    reference_rows = schema.read("potentials", potentials_path).to_pylist()
    modes = {r["mode"] for r in reference_rows}
    if modes != {"exhaustive"}:
        raise ValueError(f"{potentials_path}: the reference must be an exhaustive run, got modes {sorted(modes)}")
    n_ref = {r["num_rollouts"] for r in reference_rows if not r["is_filled"]}
    if len(n_ref) != 1:
        raise ValueError(f"{potentials_path}: the reference must use one N, got {sorted(n_ref)}")
    (n,) = n_ref
    traces = schema.read("traces", ROOT / schema.PATHS["traces"]).to_pylist()
    wanted = sorted({r["trace_id"] for r in reference_rows})
    if max_traces and max_traces < len(wanted):     # an even spread over the dataset, not its first family
        wanted = [wanted[round(j * len(wanted) / max_traces)] for j in range(max_traces)]
    traces = [t for t in traces if t["trace_id"] in set(wanted)]
    golds = golds_by_problem(schema.read("problems", ROOT / schema.PATHS["problems"]).to_pylist())
    max_drops = max_drops_of(ROOT / schema.PATHS["token_stats"], set(wanted))
    base = dataclasses.replace(PARAMS.rollouts, num_rollouts=n)
    configs = {"exhaustive_seed2": dataclasses.replace(base, mode="exhaustive", seed=seed + 1000),
               "adaptive": dataclasses.replace(base, mode="adaptive", seed=seed + 2000),
               "forks": dataclasses.replace(base, mode="forks", seed=seed + 3000),
               # PTS through the same scheduler (its own searches; seeds per position and round)
               "pts": dataclasses.replace(base, mode="adaptive", seed=seed + 4000)}
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models/base")
    rows: dict[str, list[dict]] = {name: [] for name in configs}
    seconds: dict[str, float] = {}
    with open_backend(PARAMS.engine, str(ROOT / "models/base"), seed=seed) as backend:
        for name, cfg in configs.items():
            started = time.perf_counter()
            for wave in waves(traces, cfg):
                searches = ([_evaluated_only(pts_steps(scored_positions(len(t["response_ids"]), cfg.score_empty_prefix)))
                             for t in wave] if name == "pts" else None)
                for r, _ in search_wave(wave, golds, backend, tokenizer, cfg, cfg.sampling, TEST, max_drops, searches):
                    rows[name] += r
            seconds[name] = round(time.perf_counter() - started, 1)
    reference_rows = [r for r in reference_rows if r["trace_id"] in set(wanted)]
    ref = _cliff_sets(reference_rows)
    tokens = {"exhaustive": sum(r["num_generated_tokens"] for r in reference_rows)}
    report = {"reference": str(potentials_path), "num_rollouts": n, "num_traces": len(traces),
              "engine": PARAMS.engine.backend, "wall_seconds": seconds, "methods": {}}
    for name, r in rows.items():
        tokens[name] = sum(x["num_generated_tokens"] for x in r)
        found = _cliff_sets(r) if name != "pts" else {
            t: pts_cliffs(ev) for t, ev in _evaluated_by_trace(r).items()}
        report["methods"][name] = {**compare_runs(ref, found),
                                   "generated_tokens": tokens[name],
                                   "token_ratio": tokens[name] / max(tokens["exhaustive"], 1),
                                   "wall_seconds": seconds[name],
                                   "wall_ratio": seconds[name] / max(seconds["exhaustive_seed2"], 1e-9)}
    report["methods"]["exhaustive"] = {"generated_tokens": tokens["exhaustive"], "num_cliffs": sum(map(len, ref.values()))}
    return report


def format_real(real: dict) -> str:
    lines = [f"\n## Real model ({real['engine']}, {real['num_traces']} traces, N = {real['num_rollouts']}, "
             f"reference {real['reference']}; the second exhaustive seed is the noise ceiling)\n",
             "| run | first-cliff agreement | recall | precision | cliffs | generated tokens | token ratio "
             "| wall s | wall ratio (to exhaustive_seed2) |", "|---|---|---|---|---|---|---|---|---|"]
    ex = real["methods"]["exhaustive"]
    lines.append(f"| exhaustive (reference) | 1.000 | 1.000 | 1.000 | {ex['num_cliffs']} | {ex['generated_tokens']:,} "
                 f"| 1.000 | – | – |")
    fmt = lambda x: "–" if x is None else f"{x:.3f}"
    for name in ("exhaustive_seed2", "adaptive", "forks", "pts"):
        m = real["methods"][name]
        lines.append(f"| {name} | {fmt(m['first_cliff_agreement'])} | {fmt(m['recall'])} | {fmt(m['precision'])} "
                     f"| {m['num_cliffs']} | {m['generated_tokens']:,} | {m['token_ratio']:.3f} "
                     f"| {m['wall_seconds']:.1f} | {m['wall_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def export_curves(potentials_path: str | Path, out: str | Path) -> int:
    """Real curves for `--curves`: every trace of an exhaustive potentials dataset (filled positions
    at 0), with its tokens' sampler probabilities from the pipeline's token_stats."""
    from cliffdata import schema
    from cliffdata.scan import read_columns

    rows = schema.read("potentials", potentials_path).to_pylist()
    stats = read_columns(ROOT / schema.PATHS["token_stats"], ["trace_id", "token_index", "sampler_prob"]).to_pylist()
    prob = {(s["trace_id"], s["token_index"]): s["sampler_prob"] for s in stats}
    by_trace: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["token_index"] >= 0:
            by_trace.setdefault(r["trace_id"], {})[r["token_index"]] = r["potential"]
    curves = []
    for t, p in sorted(by_trace.items()):
        idx = sorted(p)
        sp = [prob.get((t, i)) for i in idx]
        curve = {"kind": "embedded_exhaustive", "p": [p[i] for i in idx]}
        if all(x is not None for x in sp):
            curve["sampler_prob"] = sp
        if len(idx) >= 2:
            curves.append(curve)
    Path(out).write_text(json.dumps(curves))
    return len(curves)


# --- the no-prior search's recall / token frontier --------------------------------------------------

# (sweep_rollouts, flag_lr) settings of rollouts.adaptive, the rest from params.yaml: the cheapest screen
# (6, 0.2: the setting of the real-model arms in bench/results/adaptive.json) first, the params' own among them
FRONTIER = ((6, 0.2), (8, 0.1), (12, 0.05), (12, 0.03), (6, 0.02), (16, 0.03))


def run_frontier(libraries: dict[str, Callable[[int], list[dict]]], seeds: Sequence[int],
                 settings: Sequence[tuple[int, float]] = FRONTIER) -> dict:
    """Adaptive vs exhaustive on every library under each (sweep_rollouts, flag_lr): the mean ratios over
    the seeds, traces >= 200 tokens (a library without such traces: all its traces)."""
    global ADAPTIVE_CONFIG
    params_config, out = ADAPTIVE_CONFIG, []
    try:
        for sweep, flag_lr in settings:
            ADAPTIVE_CONFIG = dataclasses.replace(params_config, sweep_rollouts=sweep, flag_lr=flag_lr)
            row = {"sweep_rollouts": sweep, "flag_lr": flag_lr, "params": ADAPTIVE_CONFIG == params_config,
                   "libraries": {}}
            for name, curves_of in libraries.items():
                per_seed = []
                for s in seeds:
                    summary = run_sim(curves_of(s), s, ("exhaustive", "adaptive"))["summary"]
                    per_seed.append(ratios(summary.get(f"length>={LONG_TRACE}") or summary["all"], "adaptive"))
                row["libraries"][name] = {key: round(float(np.mean([r[key] for r in per_seed if r[key] is not None])), 4)
                                          for key in RATIO_KEYS}
            out.append(row)
    finally:
        ADAPTIVE_CONFIG = params_config
    return {"seeds": list(seeds), "settings": out}


def format_frontier(frontier: dict) -> str:
    names = list(frontier["settings"][0]["libraries"])
    lines = ["# The no-prior search's frontier: recall ratio / token ratio against exhaustive", "",
             f"Means over seeds {frontier['seeds'][0]}–{frontier['seeds'][-1]}, N = {EXHAUSTIVE_N}, traces ≥ "
             f"{LONG_TRACE} tokens (all traces where a library has none); `rollouts.adaptive` as in params.yaml "
             "but for the two columns varied (bold: params.yaml's own).", "",
             "| sweep_rollouts | flag_lr | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row in frontier["settings"]:
        b = "**" if row["params"] else ""
        cells = [f"{b}{r['recall_ratio']:.3f} / {r['token_ratio']:.3f}{b}" for r in row["libraries"].values()]
        lines.append(f"| {b}{row['sweep_rollouts']}{b} | {b}{row['flag_lr']}{b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--seeds", type=int, default=10, help="how many seeds (from --seed); ratios are means over them")
    ap.add_argument("--num-curves", type=int, default=126, help="size of the tuning and held-out libraries, a third "
                    "of it for the identity library (ignored with --curves)")
    ap.add_argument("--curves", type=Path, default=None,
                    help='JSON list of {"kind": str, "p": [float, ...]} to use instead of the library')
    ap.add_argument("--sim-only", action="store_true", help="only the simulated comparison (seconds)")
    ap.add_argument("--potentials", type=Path, default=ROOT / "data/rollouts/potentials.parquet",
                    help="the exhaustive rollout dataset that is the real-model reference")
    ap.add_argument("--max-traces", type=int, default=None, help="real model: this many traces, evenly spread over the reference")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/adaptive.json")
    ap.add_argument("--frontier", action="store_true",
                    help="the no-prior search's recall / token frontier: rollouts.adaptive under each FRONTIER setting on "
                         "every library (or --curves), adaptive and exhaustive only; writes <--json stem>_frontier.{json,md} "
                         "beside --json")
    ap.add_argument("--export-curves", type=Path, default=None,
                    help="write the --potentials reference as a --curves file (with token_stats sampler probabilities) and exit")
    args = ap.parse_args(argv)
    if args.export_curves:
        print(f"{export_curves(args.potentials, args.export_curves)} curves -> {args.export_curves}")
        return
    try:
        curves = load_curves(args.curves) if args.curves else make_curves(args.num_curves, args.seed)
    except ValueError as e:
        ap.error(str(e))

    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.seeds))
    # tuning: the library the adaptive search was designed on; heldout, heldout_varied: written apart from
    # it (rollouts.adaptive's screen knobs were chosen on these three and the embedded real curves);
    # heldout_model_like: written apart from all three and never tuned on, the top-level ratios' library;
    # identity: curves with sampler probabilities (the fork-aware search's setting)
    libraries = {"tuning": lambda s: make_curves(args.num_curves, s),
                 "heldout": lambda s: make_heldout_curves(args.num_curves, s),
                 "heldout_varied": lambda s: make_varied_curves(args.num_curves, s),
                 "heldout_model_like": lambda s: make_model_like_curves(args.num_curves, s),
                 "identity": lambda s: make_identity_curves(max(args.num_curves // 3, 1), s)}
    if args.frontier:
        frontier = run_frontier({str(args.curves): lambda s: curves} if args.curves else libraries, seeds)
        out = args.json.with_name(f"{args.json.stem}_frontier.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(frontier, indent=1) + "\n")
        out.with_suffix(".md").write_text(format_frontier(frontier))
        print(format_frontier(frontier))
        print(f"frontier: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return
    if args.curves:
        report = run_seeds(lambda s: curves, seeds)
        markdown = format_definitions() + format_markdown(report, str(args.curves))
    else:
        runs = {name: run_seeds(of, seeds) for name, of in libraries.items()}
        report = {key: runs["heldout_model_like"][key] for key in RATIO_KEYS} | {
            "forks": runs["identity"]["forks"], "seeds": seeds,
            "libraries": {name: {k: v for k, v in r.items() if k != "traces"} for name, r in runs.items()}}
        markdown = format_definitions() + "".join(format_markdown(r, name) + "\n" for name, r in runs.items())
    print(f"simulation: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if not args.sim_only:
        report["real"] = run_real(str(args.potentials), args.max_traces, args.seed)
        markdown += format_real(report["real"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    args.json.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
