"""Matched controls of the deletion ablation: for each cliff of a failed trace, one non-cliff position that
resembles it where a deletion's effect could come from something other than the cliff.

    pool = control_pool(traces, every_cliff_key, token_stats)          # every non-cliff position, any trace
    cliffs = cliff_covariates(failed_cliffs, token_stats, replicate)
    nearest = nearest_candidates(cliffs, pool, k)                       # per cliff, its k nearest positions
    pairs = match_controls(cliffs, nearest, estimates, seed)            # [(cliff, control | None)]
    next_estimates(pairs, nearest, estimates, count)                    # what a round estimates afresh next
    balance(pairs)                                                      # standardized mean differences

The covariates (`COVARIATES`) are the potential before the token p̂[i−1], the relative position i/T, the
token's sampler probability π_s and whether it is the greedy token. A deletion's effect depends on the
prefix alone (both arms continue from it), so a control may sit in any trace: a failed one, a correct one,
or one sampled for the pool (`ablation.control_pool.num_samples`), which widens the choice where the run's
own traces hold few positions like the cliffs.

The cliff's p̂[i−1] is the replicate stage's, drawn afresh (the detection's was selected for being high);
a control's is estimated afresh with as many rollouts as the cliff's. Among the `k` positions with the
cliff's greedy flag nearest in relative position and sampler probability (each scaled by its spread among
the cliffs), the control is the one whose p̂[j−1] is within one rollout step of the cliff's (1/N), the
closest first, then the nearest; a seeded draw breaks ties. Estimates are spent in rounds, nearest
first, and only for the cliffs still without a control. No position serves two cliffs; cliffs are
matched in (trace_id, token_index) order, so the result is deterministic. A cliff none of whose `k`
candidates is within the step stays unmatched, and is counted.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cliffdata.backends import request_seed

COVARIATES = ("p_prev", "relative_position", "sampler_prob", "is_greedy")
NEAREST_BY = ("relative_position", "sampler_prob")    # what picks the candidates whose p̂ is estimated
SOURCES = ("failed", "correct", "ungradable", "pool")  # where a control position sits


def _source(trace: dict, pool: bool) -> str:
    if pool:
        return "pool"
    return {True: "correct", False: "failed", None: "ungradable"}[trace["is_correct"]]


def control_pool(traces: Sequence[dict], cliff_keys: set[tuple[str, int]], token_stats: pa.Table,
                 pool_traces: Sequence[dict] = ()) -> list[dict]:
    """Every position of `traces` and `pool_traces` that is no cliff and whose sampler probability is known:
    dicts with trace_id, problem_id, token_index, num_tokens, source (`SOURCES`) and the covariates but
    p_prev (estimated later, for the few candidates that need it)."""
    by_trace = {t["trace_id"]: (t, False) for t in traces}
    by_trace.update({t["trace_id"]: (t, True) for t in pool_traces})
    stats = token_stats.filter(pc.is_in(token_stats["trace_id"], value_set=pa.array(sorted(by_trace), pa.string())))
    pool = []
    for t, j, prob, greedy in zip(*(stats[c].to_pylist() for c in ("trace_id", "token_index", "sampler_prob",
                                                                       "is_greedy"))):
        if (t, j) in cliff_keys or prob is None:
            continue
        trace, sampled = by_trace[t]
        n = len(trace["response_ids"])
        pool.append({"trace_id": t, "problem_id": trace["problem_id"], "token_index": j, "num_tokens": n,
                     "source": _source(trace, sampled), "relative_position": j / n, "sampler_prob": prob,
                     "is_greedy": bool(greedy)})
    pool.sort(key=lambda r: (r["trace_id"], r["token_index"]))
    return pool


def cliff_covariates(cliffs: Sequence[dict], token_stats: pa.Table, replicate: Sequence[dict] = ()) -> list[dict]:
    """The cliffs with their COVARIATES: sampler_prob from token_stats (None where it was not recorded), and
    p_prev / num_rollouts_prev from the replicate stage's fresh rollouts where it tested the cliff
    (`p_prev_source` says which: "replicate" or "detection")."""
    keys = {(c["trace_id"], c["token_index"]) for c in cliffs}
    stats = token_stats.filter(pc.is_in(token_stats["trace_id"], value_set=pa.array(sorted({k[0] for k in keys}),
                                                                                   pa.string())))
    prob = {(t, i): p for t, i, p in zip(*(stats[c].to_pylist() for c in ("trace_id", "token_index", "sampler_prob")))
            if (t, i) in keys}
    fresh = {(r["trace_id"], r["token_index"]): r for r in replicate if r["num_rollouts_prev"]}
    out = []
    for c in sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"])):
        key = (c["trace_id"], c["token_index"])
        row = {**c, "sampler_prob": prob.get(key), "is_greedy": bool(c["is_greedy"]), "p_prev_source": "detection"}
        if key in fresh:
            row.update(p_prev=fresh[key]["p_prev"], num_rollouts_prev=fresh[key]["num_rollouts_prev"],
                       p_prev_source="replicate")
        out.append(row)
    return out


def _spread(values: list[float]) -> float:
    sd = float(np.std(values)) if len(values) > 1 else 0.0
    return sd if sd > 0 else 1.0


def _scales(cliffs: Sequence[dict], pool: Sequence[dict]) -> dict[str, float]:
    """Each NEAREST_BY covariate's spread among the matchable cliffs (the pool's where they have none): the
    scale of the balance's standardized differences."""
    known = [c for c in cliffs if matchable(c)]
    return {k: _spread([c[k] for c in known]) if len(known) > 1 and np.std([c[k] for c in known]) > 0
            else _spread([r[k] for r in pool]) for k in NEAREST_BY}


def matchable(cliff: dict) -> bool:
    return cliff["sampler_prob"] is not None and cliff["p_prev"] is not None


def nearest_candidates(cliffs: Sequence[dict], pool: Sequence[dict], k: int) -> dict[tuple[str, int], list[dict]]:
    """Per matchable cliff, the `k` positions of `pool` with its greedy flag nearest in NEAREST_BY (scaled
    distance, then trace_id and token_index), each with its `distance`; candidate lists may overlap."""
    scale = _scales(cliffs, pool)
    by_flag = {flag: [r for r in pool if r["is_greedy"] == flag] for flag in (False, True)}
    columns = {flag: {key: np.asarray([r[key] for r in rows], dtype=float) for key in NEAREST_BY}
               for flag, rows in by_flag.items()}
    out = {}
    for c in cliffs:
        if not matchable(c):
            continue
        rows, cols = by_flag[bool(c["is_greedy"])], columns[bool(c["is_greedy"])]
        if not rows:
            out[(c["trace_id"], c["token_index"])] = []
            continue
        distance = sum(((cols[key] - c[key]) / scale[key]) ** 2 for key in NEAREST_BY)
        order = sorted(np.argsort(distance, kind="stable")[:k].tolist(),
                       key=lambda x: (distance[x], rows[x]["trace_id"], rows[x]["token_index"]))
        out[(c["trace_id"], c["token_index"])] = [{**rows[x], "distance": float(distance[x])} for x in order]
    return out


def next_estimates(pairs: Sequence[tuple[dict, dict | None]], nearest: Mapping[tuple[str, int], list[dict]],
                   estimates: Mapping[tuple[str, int, int], tuple[int, int]], count: int) -> dict[int, list[dict]]:
    """The p̂[j−1] estimates the next round needs, grouped by N: for each matchable cliff of `pairs` still
    without a control, its `count` nearest candidates not yet estimated at its N (num_rollouts_prev);
    requests with trace_id, problem_id, token_index (= the prefix kept), once each."""
    out: dict[int, dict[tuple[str, int], dict]] = {}
    for c, control in pairs:
        if control is not None or not matchable(c):
            continue
        n = int(c["num_rollouts_prev"])
        todo = [r for r in nearest.get((c["trace_id"], c["token_index"]), [])
                if (r["trace_id"], r["token_index"], n) not in estimates][:count]
        for r in todo:
            out.setdefault(n, {})[(r["trace_id"], r["token_index"])] = {
                "trace_id": r["trace_id"], "problem_id": r["problem_id"], "token_index": r["token_index"]}
    return {n: [reqs[key] for key in sorted(reqs)] for n, reqs in sorted(out.items())}


def _estimated(cliff: dict, nearest: Mapping[tuple[str, int], list[dict]],
               estimates: Mapping[tuple[str, int, int], tuple[int, int]]) -> Iterator[tuple[int, dict, int, int]]:
    """(rank, candidate, num_correct, num_rollouts) of each of a matchable cliff's candidates estimated at its
    N (num_rollouts_prev), nearest first; nothing for a cliff that is not matchable."""
    if not matchable(cliff):
        return
    n = int(cliff["num_rollouts_prev"])
    for rank, r in enumerate(nearest.get((cliff["trace_id"], cliff["token_index"]), [])):
        if (r["trace_id"], r["token_index"], n) in estimates:
            yield (rank, r, *estimates[(r["trace_id"], r["token_index"], n)])


def match_controls(cliffs: Sequence[dict], nearest: Mapping[tuple[str, int], list[dict]],
                   estimates: Mapping[tuple[str, int, int], tuple[int, int]],
                   seed: int) -> list[tuple[dict, dict | None]]:
    """Each cliff and its control, or None (unknown sampler probability or p̂, or no unused candidate within
    one rollout step). `estimates[(trace_id, token_index, n)]` = (num_correct, n) of p̂[j−1] at N = n; the
    control carries its p_prev, num_rollouts_prev and num_correct_prev."""
    used: set[tuple[str, int]] = set()
    out = []
    for c in cliffs:
        candidates = nearest.get((c["trace_id"], c["token_index"]), []) if matchable(c) else []
        step = 1.0 / max(int(c["num_rollouts_prev"]), 1) if matchable(c) else 1.0
        ties = np.random.default_rng(request_seed(seed, "matched_control", c["trace_id"],
                                                  c["token_index"])).random(len(candidates))
        near = []
        for rank, r, correct, rollouts in _estimated(c, nearest, estimates):
            gap = abs(correct / rollouts - c["p_prev"])
            if (r["trace_id"], r["token_index"]) not in used and gap <= step + 1e-12:
                near.append((gap, r["distance"], ties[rank], {**r, "p_prev": correct / rollouts,
                                                              "num_rollouts_prev": rollouts,
                                                              "num_correct_prev": correct}))
        if not near:
            out.append((c, None))
            continue
        control = min(near, key=lambda x: x[:3])[3]
        used.add((control["trace_id"], control["token_index"]))
        out.append((c, control))
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
    mean difference, over the matched pairs; how many cliffs were matched and how many were not, and
    where the controls sit (`SOURCES`)."""
    matched = [(c, m) for c, m in pairs if m is not None]
    out: dict = {"num_matched": len(matched), "num_unmatched": len(pairs) - len(matched),
                 "control_sources": {s: sum(m.get("source") == s for _, m in matched) for s in SOURCES},
                 "covariates": {}}
    for k in COVARIATES:
        a = [float(c[k]) for c, _ in matched]
        b = [float(m[k]) for _, m in matched]
        smd = standardized_mean_difference(a, b)
        out["covariates"][k] = {"cliff_mean": round(float(np.mean(a)), 6) if a else None,
                                "control_mean": round(float(np.mean(b)), 6) if b else None,
                                "smd": None if smd is None else round(smd, 6)}
    return out


def matched_rows(cliffs: Sequence[dict], nearest: Mapping[tuple[str, int], list[dict]],
                 estimates: Mapping[tuple[str, int, int], tuple[int, int]],
                 pairs: Sequence[tuple[dict, dict | None]]) -> list[dict]:
    """Rows of `schema.MATCHED_CONTROLS`: every candidate of every cliff estimated at its N, the chosen one
    marked."""
    chosen = {(c["trace_id"], c["token_index"]): (m["trace_id"], m["token_index"]) for c, m in pairs if m is not None}
    return [{"cliff_trace_id": c["trace_id"], "cliff_index": c["token_index"], "trace_id": r["trace_id"],
             "token_index": r["token_index"], "source": r["source"], "relative_position": r["relative_position"],
             "sampler_prob": r["sampler_prob"], "is_greedy": r["is_greedy"], "distance": r["distance"],
             "num_rollouts_prev": rollouts, "num_correct_prev": correct, "p_prev": correct / rollouts,
             "cliff_p_prev": c["p_prev"],
             "is_chosen": chosen.get((c["trace_id"], c["token_index"])) == (r["trace_id"], r["token_index"])}
            for c in cliffs for _, r, correct, rollouts in _estimated(c, nearest, estimates)]
