"""Cliffs per trace: the test of protocol §2 between adjacent scored positions, first cliff,
critical token and the taxonomy of §4.

A cliff at token i compares p[i-1] (before the token) with p[i] (after it); the cliff token is
response_ids[i]. Positions are 0-based; p[-1] is the empty prefix. With `use_empty_prefix: false`
(paper) token 0 is never tested.

Evidence per cliff and per trace (issue [G]): each cliff carries its one-sided `p_value`, the
`max_drop` its token allows (1 − π_s, from token_stats) and whether that bound lets a drop the test
can detect at the pair's N exist (`feasible`: max_drop >= δ_min(N_prev, N_curr)); each trace carries
`expected_false_cliffs` = Σ over its tested pairs of the probability that the test fires when both
sides share one true potential, given the pair's total correct (`stats.null_fire_conditional`: an
unbiased estimate of `null_fire_probability` at the unknown shared potential, where plugging in the
pooled estimate undercounts by 7.5% at N = 16, p = 0.5), and that count's variance Σ q(1 − q). A token
without a recorded sampler probability (token_stats from before [G]) has max_drop and feasible null.
With
`fdr_q` set, Benjamini-Hochberg over the p-values of every tested pair of a dataset marks
`fdr_significant`.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from cliffdata.config import CliffsConfig
from cliffdata.stats import (benjamini_hochberg, binary_entropy, cliff_p_value, critical_index, detect_cliffs,
                             min_detectable_drop, null_fire_conditional)

CATEGORIES = ("deterministic", "uncertain", "sampled_off", "other")


def categorize(entropy: float, is_greedy: bool, threshold: float) -> str:
    """Protocol §4: H ≤ H* and greedy → deterministic; H > H*: greedy → uncertain, else sampled_off."""
    if entropy > threshold:
        return "uncertain" if is_greedy else "sampled_off"
    return "deterministic" if is_greedy else "other"


def third(relative_position: float) -> str:
    return "early" if relative_position < 1 / 3 else ("mid" if relative_position < 2 / 3 else "late")


def dataset_of(problem_id: str) -> str:
    """The dataset a problem belongs to (problem ids are "<dataset>/<id>", schema.PROBLEMS)."""
    return problem_id.split("/", 1)[0]


def find_cliffs(traces: pa.Table, potentials: pa.Table, token_stats: pa.Table,
                cfg: CliffsConfig) -> tuple[list[dict], list[dict]]:
    """Rows of `schema.CLIFFS` and `schema.TRACE_CLIFFS` for every trace with potentials."""
    threshold = binary_entropy(cfg.entropy_boundary_p)
    entropy_col = "entropy" if cfg.entropy == "top20" else "entropy_full"
    stats = token_stats.select(["trace_id", "token_index", entropy_col, "rank", "is_greedy", "max_drop"]).to_pandas()
    pots = potentials.to_pandas().merge(stats, on=["trace_id", "token_index"], how="left")
    pots = pots.sort_values(["trace_id", "token_index"])
    by_trace = {t["trace_id"]: t for t in traces.select(["trace_id", "problem_id", "is_correct", "response_ids"]).to_pylist()}

    cliffs, summaries = [], []
    tested_p: dict[str, list[np.ndarray]] = {}           # dataset -> p-values of every tested pair (FDR)
    for trace_id, group in pots.groupby("trace_id", sort=True):
        if trace_id not in by_trace:
            raise ValueError(f"potentials name trace {trace_id!r}, which is not in the traces dataset")
        trace = by_trace[trace_id]
        num_tokens = len(trace["response_ids"])
        if not cfg.use_empty_prefix:
            group = group[group.token_index >= 0]
        idx = group.token_index.to_numpy()
        k, n = group.num_correct.to_numpy(), group.num_rollouts.to_numpy()
        # Only adjacent positions are tested (adaptive mode leaves gaps), each side with enough rollouts.
        testable = np.zeros(len(idx), dtype=bool)
        testable[1:] = (np.diff(idx) == 1) & (np.minimum(n[:-1], n[1:]) >= max(cfg.min_rollouts, 1))
        flags = detect_cliffs(k, n, cfg.delta0, cfg.z) & testable
        pot = group.potential.to_numpy()
        max_drop = group.max_drop.to_numpy(dtype=np.float64, na_value=np.nan)   # NaN: no sampler_prob recorded
        pvals = np.ones(len(idx))
        pvals[1:] = cliff_p_value(k[:-1], n[:-1], k[1:], n[1:], cfg.delta0)
        q = np.zeros(len(idx))
        q[1:] = null_fire_conditional(k[:-1], n[:-1], k[1:], n[1:], cfg.delta0, cfg.z)
        q = np.where(testable, q, 0.0)
        tested_p.setdefault(dataset_of(trace["problem_id"]), []).append(pvals[testable])
        feasible = np.zeros(len(idx), dtype=bool)
        for j in np.flatnonzero(testable):
            feasible[j] = max_drop[j] >= min_detectable_drop(int(n[j - 1]), int(n[j]), cfg.delta0, cfg.z)
        positions = np.flatnonzero(flags)
        for rank_in_trace, j in enumerate(positions):
            i = int(idx[j])
            st = group.iloc[j]
            rel = i / num_tokens
            cliffs.append({
                "trace_id": trace_id, "problem_id": trace["problem_id"], "token_index": i,
                "token_id": int(trace["response_ids"][i]), "is_correct": trace["is_correct"],
                "p_prev": float(pot[j - 1]), "potential": float(pot[j]),
                "num_rollouts_prev": int(n[j - 1]), "num_rollouts": int(n[j]),
                "delta": float(pot[j - 1] - pot[j]), "is_first": rank_in_trace == 0,
                "relative_position": rel, "third": third(rel),
                "entropy": float(st[entropy_col]), "rank": int(st["rank"]), "is_greedy": bool(st["is_greedy"]),
                "category": categorize(float(st[entropy_col]), bool(st["is_greedy"]), threshold),
                "p_value": float(pvals[j]), "max_drop": None if np.isnan(max_drop[j]) else float(max_drop[j]),
                "feasible": None if np.isnan(max_drop[j]) else bool(feasible[j]),
                "fdr_significant": None,
            })
        response_pos = idx >= 0
        crit = critical_index(pot[response_pos], cfg.critical_threshold)
        summaries.append({
            "trace_id": trace_id, "problem_id": trace["problem_id"], "is_correct": trace["is_correct"],
            "num_tokens": num_tokens, "num_scored": int(testable.sum()), "num_cliffs": len(positions),
            "first_cliff_index": int(idx[positions[0]]) if len(positions) else None,
            "critical_index": int(idx[response_pos][crit]) if crit is not None else None,
            "num_feasible": int(feasible.sum()), "expected_false_cliffs": float(q.sum()),
            "false_cliffs_variance": float((q * (1 - q)).sum()),
        })
    if cfg.fdr_q is not None:
        cutoff = {}
        for dataset, chunks in tested_p.items():
            p = np.concatenate(chunks) if chunks else np.zeros(0)
            passed = p[benjamini_hochberg(p, cfg.fdr_q)]
            cutoff[dataset] = passed.max() if len(passed) else -1.0
        for c in cliffs:
            c["fdr_significant"] = bool(c["p_value"] <= cutoff[dataset_of(c["problem_id"])])
    return cliffs, summaries


def select_cliffs(cliffs: list[dict], use: str, replicate: list[dict] | None = None) -> list[dict]:
    """The cliffs `cliffs.use` asks the experiments to work on: all (paper), feasible (the sampler
    identity allows a detectable drop) or replicated (the test passed again on fresh rollouts,
    `replicate` rows). A cliff without its replicate row is an error (the stage ran on other cliffs)."""
    if use == "all":
        return list(cliffs)
    if use == "feasible":
        return [c for c in cliffs if c["feasible"]]
    if use != "replicated":
        raise ValueError(f"cliffs.use must be all|feasible|replicated, got {use!r}")
    if replicate is None:
        raise ValueError("cliffs.use = replicated needs the replicate stage's output (data/replicate)")
    verdict = {(r["trace_id"], r["token_index"]): r["replicated"] for r in replicate}
    missing = [(c["trace_id"], c["token_index"]) for c in cliffs if (c["trace_id"], c["token_index"]) not in verdict]
    if missing:
        raise ValueError(f"{len(missing)} cliffs have no replicate row (first: {missing[0]}): re-run `replicate`")
    return [c for c in cliffs if verdict[(c["trace_id"], c["token_index"])]]


def read_selected_cliffs(use: str) -> list[dict]:
    """`select_cliffs` over the datasets on disk (data/cliffs, and data/replicate when needed)."""
    from cliffdata import schema

    cliffs = schema.read("cliffs", schema.PATHS["cliffs"]).to_pylist()
    replicate = schema.read("replicate", schema.PATHS["replicate"]).to_pylist() if use == "replicated" else None
    return select_cliffs(cliffs, use, replicate)
