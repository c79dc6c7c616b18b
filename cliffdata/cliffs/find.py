"""Cliffs per trace: the test of protocol §2 between adjacent scored positions, first cliff,
critical token and the taxonomy of §4.

A cliff at token i compares p[i-1] (before the token) with p[i] (after it); the cliff token is
response_ids[i]. Positions are 0-based; p[-1] is the empty prefix. With `include_empty_prefix: false`
(paper) token 0 is never tested. The test is `cliffs.test` (a CliffTest: δ0, z and the floor
`min_rollouts`), the one the rollouts searches, replicate and candidates decide by.

Evidence per cliff and per trace (the noise audit): each cliff carries its one-sided `p_value`, the
`max_drop` its token allows (1 − π_s, from token_stats) and whether that bound lets a drop the test
can detect at the pair's N exist (`feasible`: max_drop >= δ_min(N_prev, N_curr)); each trace carries
`expected_false_cliffs` = Σ over its tested pairs of the probability that the test fires when both
sides share one true potential, given the pair's total correct (`stats.null_fire_conditional`: an
unbiased estimate of `null_fire_probability` at the unknown shared potential, where plugging in the
pooled estimate undercounts by 7.5% at N = 16, p = 0.5), that count's variance Σ q(1 − q), and the
histogram of those q (`null_fire_cells`), from which the count's exact quantiles follow
(`stats.null_count_quantile`). A token
without a recorded sampler probability (token_stats without `sampler_prob`) has max_drop and feasible null.
With
`fdr_q` set, Benjamini-Hochberg over the p-values of every tested pair of a dataset marks
`fdr_significant`.
"""
from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from cliffdata import schema
from cliffdata.cliffs.stats import (benjamini_hochberg_cutoff, cliff_p_value, is_cliff, min_detectable_drop,
                                    null_fire_conditional)
from cliffdata.cliffs.taxonomy import CATEGORIES, category_codes, entropy_column, entropy_threshold
from cliffdata.config.cliffs import CliffsConfig, CliffTest


THIRDS = ("early", "mid", "late")


def third_codes(relative_position) -> np.ndarray:
    """Indices into THIRDS: early (< 1/3) | mid (< 2/3) | late."""
    r = np.asarray(relative_position, dtype=np.float64)
    return np.where(r < 1 / 3, 0, np.where(r < 2 / 3, 1, 2)).astype(np.int8)


def thirds(relative_position) -> np.ndarray:
    return np.array(THIRDS, dtype=object)[third_codes(relative_position)]


def third(relative_position: float) -> str:
    return str(thirds([relative_position])[0])


def dataset_of(problem_id: str) -> str:
    """The dataset a problem belongs to (problem ids are "<dataset>/<id>", schema.PROBLEMS)."""
    return problem_id.split("/", 1)[0]


class CliffLookup:
    """The cliff test on every cell of each (n_prev, n_curr) pair met so far, as flat arrays: `fires`
    (stats.is_cliff), `p_value` (stats.cliff_p_value), `q` (stats.null_fire_conditional), `delta_min`
    (stats.min_detectable_drop of the cell's pair), and q and q(1 − q) as exact integers in units of
    2^-120, cut in four 30-bit limbs (`q_limbs`, `var_limbs`), so per-trace sums are exact and their
    rounding to a double happens once. The test has one definition, in cliffdata.cliffs.stats; 10^8 pairs
    cost a lookup each."""

    def __init__(self, test: CliffTest):
        self.test = test
        self._index = np.full(1, -1, dtype=np.int64)        # N -> dense id
        self._values: list[int] = []
        self._offsets = np.zeros(0, dtype=np.int64)          # dense pair id (a * S + b) -> first cell
        self._parts: dict[tuple[int, int], dict] = {}
        self.size = 0
        self.fires = np.zeros(0, dtype=bool)
        self.p_value = self.q = self.delta_min = np.zeros(0)
        self.q_limbs = self.var_limbs = np.zeros((NUM_LIMBS, 0), dtype=np.int64)

    def _add(self, values: set[int]) -> None:
        self._values = sorted(set(self._values) | values)
        index = np.full(max(self._values) + 1, -1, dtype=np.int64)
        index[self._values] = np.arange(len(self._values))
        self._index = index
        size = len(self._values)
        offsets = np.zeros(size * size, dtype=np.int64)
        layout = []
        for a in self._values:
            for b in self._values:
                if (a, b) not in self._parts:
                    self._parts[(a, b)] = self._cells(a, b)
        start = 0
        for (a, b), part in sorted(self._parts.items(), key=lambda kv: kv[1]["order"]):
            offsets[index[a] * size + index[b]] = start
            layout.append(part)
            start += len(part["fires"])
        self._offsets = offsets
        self.size = start
        for name in ("fires", "p_value", "q", "delta_min", "q_limbs", "var_limbs"):
            setattr(self, name, np.concatenate([part[name] for part in layout], axis=-1))

    def _cells(self, a: int, b: int) -> dict:
        kp, kc = (g.ravel() for g in np.meshgrid(np.arange(a + 1), np.arange(b + 1), indexing="ij"))
        na, nb = np.full(len(kp), a), np.full(len(kp), b)
        q = null_fire_conditional(kp, na, kc, nb, self.test)
        return {"order": len(self._parts), "fires": is_cliff(kp, na, kc, nb, self.test),
                "p_value": cliff_p_value(kp, na, kc, nb, self.test), "q": q,
                "delta_min": np.full(len(kp), min_detectable_drop(a, b, self.test)),
                "q_limbs": _limbs(q), "var_limbs": _limbs(q * (1 - q))}

    def cells(self, n_prev: np.ndarray, n_curr: np.ndarray, k_prev: np.ndarray, k_curr: np.ndarray) -> np.ndarray:
        """Flat cell indices of pairs of counts (every n >= 1); pairs of new N are added first."""
        if len(n_prev) == 0:
            return np.zeros(0, dtype=np.int64)
        top = int(max(n_prev.max(), n_curr.max()))
        if top >= len(self._index) or (self._index[n_prev] < 0).any() or (self._index[n_curr] < 0).any():
            self._add(set(np.unique(n_prev).tolist()) | set(np.unique(n_curr).tolist()))
        size = len(self._values)
        base = self._offsets[self._index[n_prev] * size + self._index[n_curr]]
        return base + k_prev.astype(np.int64) * (n_curr.astype(np.int64) + 1) + k_curr


LIMB_BITS, NUM_LIMBS = 30, 4       # q in units of 2^-120: exact for q >= 2^-67, sums of up to 2^33 pairs


def _limbs(values: np.ndarray) -> np.ndarray:
    """(NUM_LIMBS, n) int64: round(v · 2^120) for v in [0, 1] cut in 30-bit limbs, most significant
    first (each step a power-of-2 scaling and a floor: exact in float64; the last limb rounds half
    to even, as Python's round, and may carry 2^30 into itself, which the sums absorb)."""
    rest = np.asarray(values, dtype=np.float64)
    out = np.zeros((NUM_LIMBS, len(rest)), dtype=np.int64)
    for limb in range(NUM_LIMBS):
        scaled = np.ldexp(rest, LIMB_BITS)
        part = np.rint(scaled) if limb == NUM_LIMBS - 1 else np.floor(scaled)
        out[limb] = part.astype(np.int64)
        rest = scaled - part
    return out


def _from_limbs(sums: np.ndarray) -> list[float]:
    """Per-trace limb sums (NUM_LIMBS, traces) as correctly rounded doubles of the exact totals."""
    totals = [0] * sums.shape[1]
    for limb in range(NUM_LIMBS):
        shift = LIMB_BITS * (NUM_LIMBS - 1 - limb)
        totals = [t + (int(v) << shift) for t, v in zip(totals, sums[limb].tolist())]
    return [math.ldexp(float(t), -LIMB_BITS * NUM_LIMBS) if t else 0.0 for t in totals]


# Checks the scan itself enforces (it raises on a key that does not come strictly after the one
# before it), so the cliffs stage need not run them as SQL (a hash aggregate over 10^8 keys, ~25 s)
SCAN_VERIFIED = ("unique_potentials", "unique_token_stats")
POTENTIAL_COLUMNS = ["trace_id", "token_index", "num_rollouts", "num_correct", "potential"]
STAT_COLUMNS = ["trace_id", "token_index", "token_id", "max_drop", "rank", "is_greedy"]
TRACE_COLUMNS = ["trace_id", "problem_id", "is_correct", "num_tokens"]


def _segments(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start of each trace's rows in a chunk, each row's trace number within the chunk, and whether a
    row continues the trace of the row before it."""
    new_trace = np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.zeros(0, dtype=bool)
    return np.flatnonzero(new_trace), np.cumsum(new_trace) - 1, ~new_trace


def cliff_test_pairs(codes, token_index, num_rollouts, min_rollouts: int) -> np.ndarray:
    """The rows j of potentials rows sorted by (trace code, token_index) whose pair (j-1, j) the cliff test
    judges: the same trace, adjacent positions, and at least `min_rollouts` (`cliffs.test.min_rollouts`,
    at least 1) rollouts on both sides. Rows at token_index -1 without `cliffs.include_empty_prefix` are
    the caller's to drop first."""
    codes = np.asarray(codes, dtype=np.int64)
    idx = np.asarray(token_index, dtype=np.int64)
    n = np.asarray(num_rollouts, dtype=np.int64)
    if len(codes) < 2:
        return np.zeros(0, dtype=np.int64)
    ok = (codes[1:] == codes[:-1]) & (np.diff(idx) == 1) & (np.minimum(n[:-1], n[1:]) >= max(min_rollouts, 1))
    return np.flatnonzero(ok) + 1


def potential_chunks(pots, stats, chunk_rows: int, include_empty_prefix: bool):
    """(potentials table, trace codes, token_index, token_stats rows of the same traces) per chunk of whole
    traces of the `pots` and `stats` KeyedStreams, the empty prefix's rows dropped without
    `include_empty_prefix` (paper mode: p[-1] is not scored)."""
    for chunk in pots.chunks(chunk_rows):
        table, codes = chunk.table, chunk.codes
        idx = _np(table["token_index"]).astype(np.int64)
        if not include_empty_prefix:
            keep = idx >= 0
            table, codes, idx = table.filter(pa.array(keep)), codes[keep], idx[keep]
        yield table, codes, idx, stats.take_until(chunk.last_code)


def _scan(traces, potentials, token_stats, cfg: CliffsConfig, chunk_rows: int, part: tuple[int, int] | None = None):
    """Yield (summary columns, cliff columns) per chunk of whole traces, then ({dataset: (p-values,
    counts)} of the tested pairs, None) when `cfg.fdr_q` is set.

    `traces`, `potentials`, `token_stats`: a Parquet file, a folder of parts, or an in-memory table;
    `part`: only the traces of codes lo <= code < hi (a worker's range)."""
    from cliffdata.scan import KeyedStream, TraceCoder, read_columns, source_batches

    meta = read_columns(traces, TRACE_COLUMNS)
    coder = TraceCoder(meta["trace_id"], "traces")
    problem_ids = meta["problem_id"].combine_chunks()
    is_correct = meta["is_correct"].combine_chunks()
    trace_lengths = _np(meta["num_tokens"]).astype(np.int64)
    dataset_names, dataset_ids = np.unique(np.array([dataset_of(p) for p in problem_ids.to_pylist()], dtype=object),
                                           return_inverse=True)
    entropy_col = entropy_column(cfg)
    bounds = {}
    if part is not None:
        bounds = {"first_trace": coder.trace_id(part[0]) if part[0] < len(coder) else None,
                  "end_trace": coder.trace_id(part[1]) if part[1] < len(coder) else None}
    pots = KeyedStream(source_batches(potentials, POTENTIAL_COLUMNS, **bounds), coder, "potentials", part)
    stats = KeyedStream(source_batches(token_stats, [*STAT_COLUMNS, entropy_col], **bounds), coder, "token_stats", part)
    lookup = CliffLookup(cfg.test)
    threshold = entropy_threshold(cfg)
    fdr_counts: dict[int, np.ndarray] = {}

    for table, codes, idx, st in potential_chunks(pots, stats, chunk_rows, cfg.include_empty_prefix):
        if len(codes) == 0:
            continue
        n = _np(table["num_rollouts"]).astype(np.int64)
        k = _np(table["num_correct"]).astype(np.int64)
        pot = _np(table["potential"])
        starts, row_trace, _ = _segments(codes)
        trace_codes = codes[starts]
        t = cliff_test_pairs(codes, idx, n, cfg.test.min_rollouts)
        testable = np.zeros(len(idx), dtype=bool)
        testable[t] = True
        cell = lookup.cells(n[t - 1], n[t], k[t - 1], k[t])
        fires = np.zeros(len(idx), dtype=bool)
        fires[t] = lookup.fires[cell]

        # token_stats rows of the same (trace, token) by merging the two sorted keys
        st_key = (st.codes << 32) | (_np(st.table["token_index"]).astype(np.int64) + 1) if len(st.codes) else np.zeros(0, np.int64)
        key = (codes << 32) | (idx + 1)
        pos = np.searchsorted(st_key, key)
        matched = pos < len(st_key)
        matched[matched] = st_key[pos[matched]] == key[matched]
        max_drop = np.full(len(idx), np.nan)
        if len(st_key):
            md = _np(st.table["max_drop"]).astype(np.float64)   # null -> nan
            max_drop[matched] = md[pos[matched]]
        feasible_t = max_drop[t] >= lookup.delta_min[cell]

        # per trace
        num_scored = np.add.reduceat(testable.astype(np.int64), starts)
        num_cliffs = np.add.reduceat(fires.astype(np.int64), starts)
        big = np.iinfo(np.int64).max
        first = np.minimum.reduceat(np.where(fires, idx, big), starts)
        response = idx >= 0
        last_high = np.maximum.reduceat(np.where(response & (pot >= cfg.critical_threshold), idx, -big), starts)
        crit = np.minimum.reduceat(np.where(response & (pot == 0) & (idx >= last_high[row_trace]), idx, big), starts)
        feasible = np.zeros(len(idx), dtype=np.int64)
        feasible[t] = feasible_t
        num_feasible = np.add.reduceat(feasible, starts)
        # exact per-trace sums of q and q(1 - q): limb-wise prefix sums over the tested pairs
        first_t = np.searchsorted(t, starts)
        end_t = np.r_[first_t[1:], len(t)]
        sums = {}
        for name in ("q_limbs", "var_limbs"):
            prefix = np.zeros((NUM_LIMBS, len(t) + 1), dtype=np.int64)
            np.cumsum(getattr(lookup, name)[:, cell], axis=1, out=prefix[:, 1:])
            sums[name] = _from_limbs(prefix[:, end_t] - prefix[:, first_t])
        null_cells = _null_cells(lookup.q[cell], row_trace[t], len(starts))
        if cfg.fdr_q is not None:
            ds = dataset_ids[codes[t]]
            for d in np.unique(ds):
                counts = np.bincount(cell[ds == d], minlength=lookup.size)
                prev = fdr_counts.get(int(d), np.zeros(0, dtype=np.int64))
                grown = np.zeros(lookup.size, dtype=np.int64)
                grown[:len(prev)] += prev
                fdr_counts[int(d)] = grown + counts

        num_tokens = trace_lengths[trace_codes]
        summary = {
            "trace_id": coder.ids.take(pa.array(trace_codes)), "problem_id": problem_ids.take(pa.array(trace_codes)),
            "is_correct": is_correct.take(pa.array(trace_codes)), "num_tokens": num_tokens,
            "num_scored": num_scored, "num_cliffs": num_cliffs,
            "first_cliff_index": pa.array(first, mask=first == big), "critical_index": pa.array(crit, mask=crit == big),
            "num_feasible": num_feasible, "expected_false_cliffs": sums["q_limbs"],
            "false_cliffs_variance": sums["var_limbs"], "null_fire_cells": null_cells,
        }
        j = np.flatnonzero(fires)
        cj = codes[j]
        if len(j) and not matched[j].all():
            miss = int(j[~matched[j]][0])
            raise ValueError(f"token_stats has no row for the cliff at trace {coder.ids[int(codes[miss])].as_py()!r}, "
                             f"token {int(idx[miss])}")
        sj = pos[j]
        token_ids = _np(st.table["token_id"])[sj] if len(j) else np.zeros(0, np.int32)
        rel = idx[j] / num_tokens[row_trace[j]]
        cell_j = np.searchsorted(t, j)
        entropy = _np(st.table[entropy_col])[sj] if len(j) else np.zeros(0)
        greedy = _np(st.table["is_greedy"])[sj] if len(j) else np.zeros(0, bool)
        rank = _np(st.table["rank"])[sj] if len(j) else np.zeros(0, np.int32)
        first_in_trace = np.r_[True, cj[1:] != cj[:-1]] if len(j) else np.zeros(0, bool)
        cliffs = {
            "trace_id": coder.ids.take(pa.array(cj)), "problem_id": problem_ids.take(pa.array(cj)),
            "token_index": idx[j], "token_id": token_ids, "is_correct": is_correct.take(pa.array(cj)),
            "p_prev": pot[j - 1], "potential": pot[j], "num_rollouts_prev": n[j - 1], "num_rollouts": n[j],
            "delta": pot[j - 1] - pot[j], "is_first": first_in_trace, "relative_position": rel,
            "third": _labels(THIRDS, third_codes(rel)), "entropy": entropy, "rank": rank, "is_greedy": greedy,
            "category": _labels(CATEGORIES, category_codes(entropy, greedy, threshold)),
            "p_value": lookup.p_value[cell[cell_j]],
            "max_drop": pa.array(max_drop[j], mask=np.isnan(max_drop[j])),
            "feasible": pa.array(feasible_t[cell_j], mask=np.isnan(max_drop[j])),
            "fdr_significant": pa.nulls(len(j), pa.bool_()),
        }
        yield summary, cliffs
    if cfg.fdr_q is not None:
        histograms = {}
        for d, counts in fdr_counts.items():
            used = np.flatnonzero(counts)
            histograms[str(dataset_names[d])] = (lookup.p_value[used], counts[used])
        yield histograms, None


def _null_cells(q: np.ndarray, trace: np.ndarray, num_traces: int) -> pa.ListArray:
    """Per trace, the histogram of its tested pairs' null firing probabilities: a list of {q, num_pairs},
    ascending in q, pairs with q = 0 left out (`q[j]`, `trace[j]`: tested pair j's probability and its
    trace's number within the chunk, ascending)."""
    values, q_id = np.unique(q, return_inverse=True)
    key = trace.astype(np.int64) * max(len(values), 1) + q_id
    keys, counts = np.unique(key[q > 0], return_counts=True)
    owner = keys // max(len(values), 1)
    offsets = np.searchsorted(owner, np.arange(num_traces + 1)).astype(np.int32)
    cells = pa.StructArray.from_arrays([pa.array(values[keys % max(len(values), 1)], pa.float64()),
                                        pa.array(counts, pa.int32())], names=["q", "num_pairs"])
    return pa.ListArray.from_arrays(pa.array(offsets), cells)


def _np(column: pa.ChunkedArray) -> np.ndarray:
    """A column as one numpy array (nulls of floats as NaN)."""
    return column.combine_chunks().to_numpy(zero_copy_only=False)


def _labels(names: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(names, pa.string()).take(pa.array(codes))


def _scan_part(traces, potentials, token_stats, cfg: CliffsConfig, chunk_rows: int,
               part: tuple[int, int] | None) -> tuple[pa.Table | None, pa.Table | None, dict]:
    """One trace range's `trace_cliffs` and `cliffs` rows (unsorted schema tables) and FDR histograms."""
    summaries, cliffs, histograms = [], [], {}
    for summary, found in _scan(traces, potentials, token_stats, cfg, chunk_rows, part):
        if found is None:
            histograms = summary
            continue
        summaries.append(pa.table(summary).cast(schema.TRACE_CLIFFS))
        cliffs.append(pa.table(found).cast(schema.CLIFFS))
    return (pa.concat_tables(summaries) if summaries else None, pa.concat_tables(cliffs) if cliffs else None,
            histograms)


def _parts(traces, potentials, workers: int) -> list[tuple[int, int] | None]:
    """Trace ranges of about equal potentials rows, cut at row group boundaries; [None] (one
    in-process scan) for in-memory tables, one worker, or fewer than eight row groups (8 Mi rows) a
    worker: a worker costs an interpreter start (~1.5 s) before it saves anything."""
    from cliffdata.scan import TraceCoder, read_columns, row_group_starts

    if workers <= 1 or any(isinstance(x, pa.Table) for x in (traces, potentials)):
        return [None]
    groups = row_group_starts(Path(potentials))
    if len(groups) < 8 * workers or any(first is None for _, first in groups):
        return [None]
    ids = read_columns(traces, ["trace_id"])["trace_id"]
    coder = TraceCoder(ids, "traces")
    total = sum(rows for rows, _ in groups)
    cuts, seen = [0], 0
    for rows, first in groups:
        if seen >= total * len(cuts) / workers and len(cuts) < workers:
            cuts.append(coder.code_of(first))
        seen += rows
    cuts.append(len(coder))
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def cliff_tables(traces, potentials, token_stats, cfg: CliffsConfig, workers: int = 1,
                 chunk_rows: int = schema.ROW_GROUP_ROWS, searched=None) -> tuple[pa.Table, pa.Table]:
    """The `cliffs` and `trace_cliffs` datasets (schema order, sorted by key) of every trace with
    potentials, streaming the three datasets (Parquet files, folders of parts, or in-memory tables)
    in key order with a few row groups in memory (`cliffdata.scan`); from files, `workers` processes
    scan trace ranges of about equal size side by side. Raises ValueError naming a trace the
    potentials have and the traces do not, a cliff whose token has no token_stats row, or a dataset
    out of key order.

    `searched`: the ids of every trace the rollout search covered (the rollouts stage: all). One of them
    without potentials (mode forks: no token of it can carry a detectable drop, so nothing was
    estimated) still gets its `trace_cliffs` row, nothing scored and no cliff: occurrence counts it
    in its denominators instead of dropping it."""
    parts = _parts(traces, potentials, workers)
    if len(parts) == 1:
        results = [_scan_part(traces, potentials, token_stats, cfg, chunk_rows, parts[0])]
    else:
        with tempfile.TemporaryDirectory(prefix="cliffdata-scan-") as tmp:
            workers = [_start_worker((str(traces), str(potentials), str(token_stats), cfg, chunk_rows, part),
                                     Path(tmp) / f"part{i}") for i, part in enumerate(parts[1:])]
            try:
                results = [_scan_part(traces, potentials, token_stats, cfg, chunk_rows, parts[0])]
            finally:
                for proc, _ in workers:
                    proc.wait()
            results += [_worker_result(proc, out) for proc, out in workers]
    summaries = [r[0] for r in results if r[0] is not None]
    cliffs = [r[1] for r in results if r[1] is not None]
    cliff_table = schema.to_table("cliffs", pa.concat_tables(cliffs) if cliffs else schema.CLIFFS.empty_table())
    if cfg.fdr_q is not None and cliff_table.num_rows:
        cutoffs = {}
        for dataset in {d for r in results for d in r[2]}:
            values = np.concatenate([r[2][dataset][0] for r in results if dataset in r[2]])
            counts = np.concatenate([r[2][dataset][1] for r in results if dataset in r[2]])
            cutoffs[dataset] = benjamini_hochberg_cutoff(values, counts, cfg.fdr_q)
        datasets = [dataset_of(p) for p in cliff_table["problem_id"].to_pylist()]
        significant = pa.array([bool(p <= cutoffs.get(d, -1.0)) for p, d
                                in zip(cliff_table["p_value"].to_pylist(), datasets)], pa.bool_())
        cliff_table = cliff_table.set_column(cliff_table.schema.get_field_index("fdr_significant"),
                                             "fdr_significant", significant)
    summary_table = schema.to_table("trace_cliffs", pa.concat_tables(summaries) if summaries
                                    else schema.TRACE_CLIFFS.empty_table())
    if searched is not None:
        summary_table = _with_unscored(summary_table, traces, searched)
    return cliff_table, summary_table


def _with_unscored(summary: pa.Table, traces, searched) -> pa.Table:
    """`summary` plus a zero row for every searched trace that has none, in the traces' key order."""
    from cliffdata.scan import read_columns

    missing = set(searched) - set(summary["trace_id"].to_pylist())
    if not missing:
        return summary
    meta = read_columns(traces, ["trace_id", "problem_id", "is_correct", "num_tokens"])
    order = {t: i for i, t in enumerate(meta["trace_id"].to_pylist())}
    unknown = sorted(missing - order.keys())
    if unknown:
        raise ValueError(f"searched: {len(unknown)} trace(s) the traces dataset lacks (first {unknown[0]!r})")
    rows = [r for r in meta.to_pylist() if r["trace_id"] in missing]
    zeros = [dict(r, num_scored=0, num_cliffs=0, first_cliff_index=None, critical_index=None, num_feasible=0,
                  expected_false_cliffs=0.0, false_cliffs_variance=0.0, null_fire_cells=[]) for r in rows]
    both = pa.concat_tables([summary, schema.to_table("trace_cliffs", zeros)])
    return both.take(pa.array(np.argsort([order[t] for t in both["trace_id"].to_pylist()], kind="stable")))


def _start_worker(job: tuple, out: Path) -> tuple[subprocess.Popen, Path]:
    """A fresh interpreter scanning one trace range (`python -m cliffdata.cliffs.find`: a subprocess, not
    multiprocessing, so a caller's script is never re-imported and no thread pool is forked)."""
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "cliffdata.cliffs.find", str(out)], stdin=subprocess.PIPE, env=env)
    proc.stdin.write(pickle.dumps(job))
    proc.stdin.close()
    return proc, out


def _worker_result(proc: subprocess.Popen, out: Path) -> tuple[pa.Table | None, pa.Table | None, dict]:
    if proc.returncode != 0:
        raise RuntimeError(f"a cliffs scan worker failed (exit {proc.returncode}); its error is above")
    tables = []
    for name in ("trace_cliffs", "cliffs"):
        path = out / f"{name}.arrow"
        tables.append(pa.ipc.open_file(pa.memory_map(str(path))).read_all() if path.exists() else None)
    with open(out / "histograms.pkl", "rb") as f:
        return tables[0], tables[1], pickle.load(f)


def _worker_main(out: Path) -> None:
    """Scan the trace range of the job on stdin; write its tables (Arrow IPC) and histograms to `out`."""
    summaries, cliffs, histograms = _scan_part(*pickle.loads(sys.stdin.buffer.read()))
    for name, table in (("trace_cliffs", summaries), ("cliffs", cliffs)):
        if table is not None:
            with pa.ipc.new_file(str(out / f"{name}.arrow"), table.schema) as writer:
                writer.write_table(table)
    with open(out / "histograms.pkl", "wb") as f:
        pickle.dump(histograms, f)


def find_cliffs(traces: pa.Table, potentials: pa.Table, token_stats: pa.Table,
                cfg: CliffsConfig, searched=None) -> tuple[list[dict], list[dict]]:
    """Rows of `schema.CLIFFS` and `schema.TRACE_CLIFFS` for every trace with potentials and every
    `searched` trace (in-memory tables; `cliff_tables` as rows)."""
    cliffs, summaries = cliff_tables(traces, potentials, token_stats, cfg, searched=searched)
    return cliffs.to_pylist(), summaries.to_pylist()


if __name__ == "__main__":
    _worker_main(Path(sys.argv[1]))
