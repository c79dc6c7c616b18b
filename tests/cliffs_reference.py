"""The cliffs stage computed the plain way (pandas, a Python loop per trace): the reference the DuckDB
implementation (`cliffdata.cliffs.find.cliff_tables`) is checked against. The per-trace sums of q are
math.fsum here (correctly rounded); the streaming version sums q rounded to 2^-120 exactly, so the two
agree to within a pair count times 2^-121."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from cliffdata.cliffs.find import dataset_of, third
from cliffdata.cliffs.stats import (benjamini_hochberg, binary_entropy, cliff_p_value, critical_index, detect_cliffs,
                                    min_detectable_drop, null_fire_conditional)
from cliffdata.cliffs.taxonomy import categorize
from cliffdata.config.cliffs import CliffsConfig


def find_cliffs_reference(traces: pa.Table, potentials: pa.Table, token_stats: pa.Table,
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
        if not cfg.include_empty_prefix:
            group = group[group.token_index >= 0]
        idx = group.token_index.to_numpy()
        k, n = group.num_correct.to_numpy(), group.num_rollouts.to_numpy()
        # Only adjacent positions are tested (adaptive mode leaves gaps), each side with enough rollouts.
        testable = np.zeros(len(idx), dtype=bool)
        testable[1:] = (np.diff(idx) == 1) & (np.minimum(n[:-1], n[1:]) >= max(cfg.test.min_rollouts, 1))
        flags = detect_cliffs(k, n, cfg.test) & testable
        pot = group.potential.to_numpy()
        max_drop = group.max_drop.to_numpy(dtype=np.float64, na_value=np.nan)   # NaN: no sampler_prob recorded
        pvals = np.ones(len(idx))
        pvals[1:] = cliff_p_value(k[:-1], n[:-1], k[1:], n[1:], cfg.test)
        q = np.zeros(len(idx))
        q[1:] = null_fire_conditional(k[:-1], n[:-1], k[1:], n[1:], cfg.test)
        q = np.where(testable, q, 0.0)
        tested_p.setdefault(dataset_of(trace["problem_id"]), []).append(pvals[testable])
        feasible = np.zeros(len(idx), dtype=bool)
        for j in np.flatnonzero(testable):
            feasible[j] = max_drop[j] >= min_detectable_drop(int(n[j - 1]), int(n[j]), cfg.test)
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
            "num_feasible": int(feasible.sum()), "expected_false_cliffs": math.fsum(q),
            "false_cliffs_variance": math.fsum(q * (1 - q)),
            "null_fire_cells": [{"q": float(v), "num_pairs": int(c)} for v, c in zip(*np.unique(q[q > 0], return_counts=True))],
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


