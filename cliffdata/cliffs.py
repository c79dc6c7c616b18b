"""Cliffs per trace: the test of protocol §2 between adjacent scored positions, first cliff,
critical token and the taxonomy of §4.

A cliff at token i compares p[i-1] (before the token) with p[i] (after it); the cliff token is
response_ids[i]. Positions are 0-based; p[-1] is the empty prefix. With `use_empty_prefix: false`
(paper) token 0 is never tested.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from cliffdata.config import CliffsConfig
from cliffdata.stats import binary_entropy, critical_index, detect_cliffs

CATEGORIES = ("deterministic", "uncertain", "sampled_off", "other")


def categorize(entropy: float, is_greedy: bool, threshold: float) -> str:
    """Protocol §4: H ≤ H* and greedy → deterministic; H > H*: greedy → uncertain, else sampled_off."""
    if entropy > threshold:
        return "uncertain" if is_greedy else "sampled_off"
    return "deterministic" if is_greedy else "other"


def third(relative_position: float) -> str:
    return "early" if relative_position < 1 / 3 else ("mid" if relative_position < 2 / 3 else "late")


def find_cliffs(traces: pa.Table, potentials: pa.Table, token_stats: pa.Table,
                cfg: CliffsConfig) -> tuple[list[dict], list[dict]]:
    """Rows of `schema.CLIFFS` and `schema.TRACE_CLIFFS` for every trace with potentials."""
    threshold = binary_entropy(cfg.entropy_boundary_p)
    entropy_col = "entropy" if cfg.entropy == "top20" else "entropy_full"
    pots = potentials.to_pandas().sort_values(["trace_id", "token_index"])
    stats = token_stats.select(["trace_id", "token_index", entropy_col, "rank", "is_greedy"]).to_pandas()
    stats = stats.set_index(["trace_id", "token_index"]).sort_index()
    by_trace = {t["trace_id"]: t for t in traces.select(["trace_id", "problem_id", "is_correct", "response_ids"]).to_pylist()}

    cliffs, summaries = [], []
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
        positions = np.flatnonzero(flags)
        for rank_in_trace, j in enumerate(positions):
            i = int(idx[j])
            st = stats.loc[(trace_id, i)]
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
            })
        response_pos = idx >= 0
        crit = critical_index(pot[response_pos], cfg.critical_threshold)
        summaries.append({
            "trace_id": trace_id, "problem_id": trace["problem_id"], "is_correct": trace["is_correct"],
            "num_tokens": num_tokens, "num_scored": int(testable.sum()), "num_cliffs": len(positions),
            "first_cliff_index": int(idx[positions[0]]) if len(positions) else None,
            "critical_index": int(idx[response_pos][crit]) if crit is not None else None,
        })
    return cliffs, summaries
