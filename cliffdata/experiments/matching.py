"""Matched controls of the deletion ablation: for each cliff, one non-cliff position of a failed trace that
resembles it where a deletion's effect could come from something other than the cliff.

    pool = control_pool(traces, every_cliff_key, token_stats, potentials)
    pairs = match_controls(cliff_covariates(cliffs, token_stats), pool, seed)    # [(cliff, control | None)]
    balance(pairs)                                                           # standardized mean differences

The covariates (`COVARIATES`) are the potential before the token (p̂[i−1]; at a position the search did
not evaluate, the last evaluated potential before it, which the sampler identity bounds), the relative
position i/T, the token's sampler probability π_s and whether it is the greedy token. A control has the
cliff's greedy flag exactly and p̂[j−1] within one rollout step of the cliff's (1/N of its prev side;
the caliper doubles until a position qualifies), and among those it is the nearest in the three numeric
covariates, each scaled by its spread among the cliffs; a seeded draw breaks ties. Controls are drawn
without replacement, cliffs in (trace_id, token_index) order, so the result is deterministic.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cliffdata.backends import request_seed

COVARIATES = ("p_prev", "relative_position", "sampler_prob", "is_greedy")


def _last_evaluated(potentials: pa.Table, trace_ids: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per trace, the evaluated token indices (sorted) and their potentials (positions the search filled
    by early termination count: their value is the estimate)."""
    rows = potentials.filter(pc.is_in(potentials["trace_id"], value_set=pa.array(sorted(trace_ids), pa.string())))
    rows = rows.filter(pc.or_(pc.greater(rows["num_rollouts"], 0), rows["is_filled"])).select(
        ["trace_id", "token_index", "potential"]).sort_by([("trace_id", "ascending"), ("token_index", "ascending")])
    out: dict[str, tuple[list, list]] = {}
    for t, i, p in zip(*(rows[c].to_pylist() for c in ("trace_id", "token_index", "potential"))):
        idx, pot = out.setdefault(t, ([], []))
        idx.append(i)
        pot.append(p)
    return {t: (np.asarray(i), np.asarray(p)) for t, (i, p) in out.items()}


def _p_before(evaluated: tuple[np.ndarray, np.ndarray] | None, j: int) -> float | None:
    """p̂[j−1]: the potential at the last evaluated index <= j − 1 (−1 is the empty prefix), or None."""
    if evaluated is None:
        return None
    idx, pot = evaluated
    k = int(np.searchsorted(idx, j - 1, side="right")) - 1
    return None if k < 0 else float(pot[k])


def control_pool(traces: Sequence[dict], cliff_keys: set[tuple[str, int]], token_stats: pa.Table,
                 potentials: pa.Table) -> list[dict]:
    """Every position of a failed trace that is no cliff and has all covariates: dicts with trace_id,
    problem_id, token_index, num_tokens and the COVARIATES."""
    failed = {t["trace_id"]: t for t in traces if t["is_correct"] is False}
    evaluated = _last_evaluated(potentials, set(failed))
    stats = token_stats.filter(pc.is_in(token_stats["trace_id"], value_set=pa.array(sorted(failed), pa.string())))
    pool = []
    for t, j, prob, greedy in zip(*(stats[c].to_pylist() for c in ("trace_id", "token_index", "sampler_prob",
                                                                       "is_greedy"))):
        if (t, j) in cliff_keys or prob is None:
            continue
        p = _p_before(evaluated.get(t), j)
        if p is None:
            continue
        trace = failed[t]
        pool.append({"trace_id": t, "problem_id": trace["problem_id"], "token_index": j,
                     "num_tokens": len(trace["response_ids"]), "p_prev": p,
                     "relative_position": j / len(trace["response_ids"]), "sampler_prob": prob,
                     "is_greedy": bool(greedy)})
    pool.sort(key=lambda r: (r["trace_id"], r["token_index"]))
    return pool


def cliff_covariates(cliffs: Sequence[dict], token_stats: pa.Table) -> list[dict]:
    """The cliffs with their COVARIATES (sampler_prob from token_stats; None where it was not recorded)."""
    keys = {(c["trace_id"], c["token_index"]) for c in cliffs}
    stats = token_stats.filter(pc.is_in(token_stats["trace_id"], value_set=pa.array(sorted({k[0] for k in keys}),
                                                                                   pa.string())))
    prob = {(t, i): p for t, i, p in zip(*(stats[c].to_pylist() for c in ("trace_id", "token_index", "sampler_prob")))
            if (t, i) in keys}
    return [{**c, "sampler_prob": prob.get((c["trace_id"], c["token_index"])), "is_greedy": bool(c["is_greedy"])}
            for c in sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"]))]


def _spread(values: list[float]) -> float:
    sd = float(np.std(values)) if len(values) > 1 else 0.0
    return sd if sd > 0 else 1.0


def match_controls(cliffs: Sequence[dict], pool: Sequence[dict], seed: int) -> list[tuple[dict, dict | None]]:
    """Each cliff (with COVARIATES and num_rollouts_prev) and its matched control from `pool`, or None where
    no unused position has its greedy flag (or its sampler probability is unknown)."""
    # each covariate in units of its spread among the cliffs (the pool's where the cliffs have none), the
    # scale the balance's standardized differences use
    known = [c for c in cliffs if c["sampler_prob"] is not None and c["p_prev"] is not None]
    scale = {k: _spread([c[k] for c in known]) if len(known) > 1 and np.std([c[k] for c in known]) > 0
             else _spread([r[k] for r in pool]) for k in ("p_prev", "relative_position", "sampler_prob")}
    used: set[tuple[str, int]] = set()
    out = []
    for c in cliffs:
        if c["sampler_prob"] is None or c["p_prev"] is None:
            out.append((c, None))
            continue
        same = [r for r in pool if r["is_greedy"] == c["is_greedy"] and (r["trace_id"], r["token_index"]) not in used]
        caliper = 1.0 / max(int(c["num_rollouts_prev"]), 1)
        near: list[dict] = []
        while same and not near:
            near = [r for r in same if abs(r["p_prev"] - c["p_prev"]) <= caliper + 1e-12]
            caliper *= 2
        if not near:
            out.append((c, None))
            continue
        rng = np.random.default_rng(request_seed(seed, "matched_control", c["trace_id"], c["token_index"]))
        ties = rng.random(len(near))
        distance = [sum(((r[k] - c[k]) / scale[k]) ** 2 for k in scale) for r in near]
        best = min(range(len(near)), key=lambda x: (distance[x], ties[x]))
        used.add((near[best]["trace_id"], near[best]["token_index"]))
        out.append((c, near[best]))
    return out


def standardized_mean_difference(a: Sequence[float], b: Sequence[float]) -> float | None:
    """(mean a − mean b) / sqrt((var a + var b) / 2), population variances; 0 where both are constant and
    equal; None where a group is empty, or both are constant and differ (no spread to scale by)."""
    if not len(a) or not len(b):
        return None
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    pooled = math.sqrt((float(a.var()) + float(b.var())) / 2)
    if pooled == 0:
        return 0.0 if diff == 0 else None
    return diff / pooled


def balance(pairs: Sequence[tuple[dict, dict | None]]) -> dict:
    """The matched set's balance: per covariate the cliffs' mean, the controls' mean and their standardized
    mean difference, over the matched pairs; how many cliffs were matched and how many were not."""
    matched = [(c, m) for c, m in pairs if m is not None]
    out: dict = {"num_matched": len(matched), "num_unmatched": len(pairs) - len(matched), "covariates": {}}
    for k in COVARIATES:
        a = [float(c[k]) for c, _ in matched]
        b = [float(m[k]) for _, m in matched]
        smd = standardized_mean_difference(a, b)
        out["covariates"][k] = {"cliff_mean": round(float(np.mean(a)), 6) if a else None,
                                "control_mean": round(float(np.mean(b)), 6) if b else None,
                                "smd": None if smd is None else round(smd, 6)}
    return out
