"""The `risk_labels` dataset: one row per pair of adjacent positions the cliff test judges, with its verdict
and the features of the token that no rollout needs.

A row at token i holds what the rollouts say (p[i-1], p[i], their counts, Δ, the test's p-value and
verdict `is_cliff`, `feasible` under the sampler identity, and `replicated` where the replicate stage
re-tested the cliff) beside what the teacher-forced pass says of token i before any rollout (π_s of the
token and of the greedy token, entropies, rank, the top list's first probability and margin, the relative
position, and optionally the projected hidden state). The pairs are the cliffs scan's: the same rule picks
them (`cliffs.find.cliff_test_pairs`), the same test decides them (`cliffs.stats.is_cliff`), so the rows with `is_cliff`
are exactly the cliffs dataset (the check `risk_labels_cliffs`).

    for table in label_tables(traces, potentials, token_stats, replicated, params.cliffs, params.rollouts.sampling):
        writer.write(table)                                # whole traces at a time, in key order

The datasets stream in key order a few row groups at a time (`cliffdata.scan`), as the cliffs scan reads them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cliffdata import schema
from cliffdata.cliffs.find import cliff_test_pairs, potential_chunks
from cliffdata.cliffs.stats import cliff_p_value, is_cliff, min_detectable_drop
from cliffdata.config.cliffs import CliffsConfig
from cliffdata.config.generate import SamplingConfig
from cliffdata.scan import KeyedStream, TraceCoder, read_columns, source_batches

POTENTIAL_COLUMNS = ["trace_id", "token_index", "num_rollouts", "num_correct", "potential"]
STAT_COLUMNS = ["trace_id", "token_index", "token_id", "logprob", "rank", "entropy", "entropy_full",
                "greedy_token_id", "is_greedy", "top_probs", "sampler_prob", "max_drop"]
TRACE_COLUMNS = ["trace_id", "problem_id", "is_correct", "num_tokens"]

#: (trace_id, token indices) -> (k, dim) projected hidden states at those response tokens (risk_labels.hidden)
Projector = Callable[[str, np.ndarray], np.ndarray]


def _first_two(top_probs: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The first and second probability of each top list (NaN / 0 where the list is shorter)."""
    lengths = pc.list_value_length(top_probs).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(top_probs).to_numpy(zero_copy_only=False).astype(np.float64)
    starts = np.cumsum(lengths) - lengths
    first = np.full(len(lengths), np.nan)
    second = np.zeros(len(lengths))
    has1, has2 = lengths >= 1, lengths >= 2
    first[has1] = flat[starts[has1]]
    second[has2] = flat[starts[has2] + 1]
    return first, second


def greedy_sampler_probs(is_greedy_token, logprob, sampler_prob, top_probs: pa.Array,
                         sampling: SamplingConfig) -> np.ndarray:
    """π_s(greedy token) under the rollout sampler `sampling`, per token; NaN where `sampler_prob` is unknown.

    token_stats stores π_s only for the trace's own token a. The sampler keeps a set of tokens (top-k, then
    top-p, backends.hf.filter_logits) that always holds the greedy token g, and inside it π_s ∝ p^(1/T).
    So where a is kept (π_s(a) > 0) the ratio is exact: π_s(g) = π_s(a) · (p(g) / p(a))^(1/T), with p the
    raw (T = 1) probabilities (`top_probs[0]`, `exp(logprob)`). Where the sampler cuts a (π_s(a) = 0: the
    trace's own sampler drew a token the rollouts' would not), π_s(g) comes from the stored top list alone,
    filtered as the engines filter: exact when 1 <= top_k <= the list's length, else the mass beyond the
    list is left out and π_s(g) is overestimated. T = 0 (greedy sampling): 1."""
    sampler_prob = np.asarray(sampler_prob, dtype=np.float64)
    logprob = np.asarray(logprob, dtype=np.float64)
    same = np.asarray(is_greedy_token, dtype=bool)
    if sampling.temperature == 0:
        return np.where(np.isnan(sampler_prob), np.nan, 1.0)
    out = np.full(len(sampler_prob), np.nan)
    known = ~np.isnan(sampler_prob)
    out[known & same] = sampler_prob[known & same]
    top1, _ = _first_two(top_probs)
    kept = known & ~same & (sampler_prob > 0)
    with np.errstate(divide="ignore"):
        log_greedy = np.log(sampler_prob[kept]) + (np.log(top1[kept]) - logprob[kept]) / sampling.temperature
    out[kept] = np.exp(np.minimum(log_greedy, 0.0))
    cut = np.flatnonzero(known & ~same & (sampler_prob == 0))
    if len(cut):
        out[cut] = _greedy_from_top(top_probs.take(pa.array(cut)), sampling)
    return out


def _greedy_from_top(top_probs: pa.Array, sampling: SamplingConfig) -> np.ndarray:
    """π_s of each top list's first token, with the list standing for the whole vocabulary."""
    import torch

    from cliffdata.backends.hf import filter_logits

    out = np.empty(len(top_probs))
    for i, probs in enumerate(top_probs.to_pylist()):
        logits = torch.tensor([probs], dtype=torch.float64).log() / sampling.temperature     # (1, k)
        out[i] = filter_logits(logits, sampling.top_k, sampling.top_p).softmax(-1)[0, 0].item()
    return out


def token_features(rows: pa.Table, relative_position: np.ndarray, sampling: SamplingConfig) -> dict[str, object]:
    """The features of tokens that no rollout needs, from their `token_stats` rows (STAT_COLUMNS) and their
    relative positions i / T: the columns of `risk_labels` and of a trace's risk (`risk.score`) alike.
    `sampling`: the rollout sampler whose π_s token_stats holds."""
    sampler_prob = _np(rows["sampler_prob"]).astype(np.float64)
    logprob = _np(rows["logprob"]).astype(np.float64)
    token_id = _np(rows["token_id"]).astype(np.int64)
    top_probs = rows["top_probs"].combine_chunks()
    top1, top2 = _first_two(top_probs)
    greedy = greedy_sampler_probs(token_id == _np(rows["greedy_token_id"]).astype(np.int64), logprob,
                                  sampler_prob, top_probs, sampling)
    return {"sampler_prob": _floats(sampler_prob), "max_drop": _floats(_np(rows["max_drop"]).astype(np.float64)),
            "greedy_sampler_prob": _floats(greedy), "logprob": logprob, "entropy": rows["entropy"],
            "entropy_full": rows["entropy_full"], "rank": rows["rank"], "is_greedy": rows["is_greedy"],
            "top_prob": _floats(top1), "margin": _floats(top1 - top2),
            "relative_position": np.asarray(relative_position, dtype=np.float64)}


def replicated_by_cliff(replicate) -> dict[tuple[str, int], bool | None]:
    """`replicated` of every replicated cliff by (trace_id, token_index), from the replicate dataset (a path or
    a table); {} when there is none."""
    if replicate is None:
        return {}
    table = replicate if isinstance(replicate, pa.Table) else schema.read("replicate", Path(replicate))
    return {(t, i): r for t, i, r in zip(table["trace_id"].to_pylist(), table["token_index"].to_pylist(),
                                         table["replicated"].to_pylist())}


def _np(column) -> np.ndarray:
    """A column as one numpy array (nulls of floats as NaN)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy(zero_copy_only=False)


def _floats(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=np.isnan(values))


def label_tables(traces, potentials, token_stats, replicated: dict[tuple[str, int], bool | None],
                 cfg: CliffsConfig, sampling: SamplingConfig, project: Projector | None = None,
                 chunk_rows: int = schema.ROW_GROUP_ROWS) -> Iterator[pa.Table]:
    """`risk_labels` tables (schema order, sorted by key) of whole traces, in key order, for every pair the
    cliff test judges (`cliffs.find.cliff_test_pairs`, `cfg`: cliffs). `traces`, `potentials`, `token_stats`: Parquet files,
    folders of parts or in-memory tables; `replicated`: `replicated_by_cliff`; `sampling`: the rollout
    sampler (rollouts.sampling), whose π_s token_stats holds; `project`: the hidden-state projection, or
    None. A tested token without a token_stats row is a ValueError naming it."""
    meta = read_columns(traces, TRACE_COLUMNS)
    coder = TraceCoder(meta["trace_id"], "traces")
    problem_ids = meta["problem_id"].combine_chunks()
    trace_correct = meta["is_correct"].combine_chunks()
    trace_lengths = _np(meta["num_tokens"]).astype(np.int64)
    pots = KeyedStream(source_batches(potentials, POTENTIAL_COLUMNS), coder, "potentials")
    stats = KeyedStream(source_batches(token_stats, STAT_COLUMNS), coder, "token_stats")
    delta_min: dict[tuple[int, int], float] = {}
    for table, codes, idx, st in potential_chunks(pots, stats, chunk_rows, cfg.include_empty_prefix):
        n = _np(table["num_rollouts"]).astype(np.int64)
        t = cliff_test_pairs(codes, idx, n, cfg.test.min_rollouts)
        if len(t) == 0:
            continue
        k = _np(table["num_correct"]).astype(np.int64)
        pot = _np(table["potential"]).astype(np.float64)
        code_t, idx_t = codes[t], idx[t]

        # the token_stats row of each tested token, by merging the two sorted keys
        key = (code_t << 32) | (idx_t + 1)
        st_key = ((st.codes << 32) | (_np(st.table["token_index"]).astype(np.int64) + 1)
                  if st.table is not None and len(st.codes) else np.zeros(0, dtype=np.int64))
        pos = np.searchsorted(st_key, key)
        matched = pos < len(st_key)
        matched[matched] = st_key[pos[matched]] == key[matched]
        if not matched.all():
            miss = int(np.flatnonzero(~matched)[0])
            raise ValueError(f"token_stats has no row for the tested token at trace "
                             f"{coder.trace_id(int(code_t[miss]))!r}, token {int(idx_t[miss])}")
        rows = st.table.take(pa.array(pos))

        n_prev, n_cur, k_prev, k_cur = n[t - 1], n[t], k[t - 1], k[t]
        fires = np.asarray(is_cliff(k_prev, n_prev, k_cur, n_cur, cfg.test), dtype=bool)
        p_value = np.asarray(cliff_p_value(k_prev, n_prev, k_cur, n_cur, cfg.test), dtype=np.float64)
        for pair in set(zip(n_prev.tolist(), n_cur.tolist())) - delta_min.keys():
            delta_min[pair] = min_detectable_drop(pair[0], pair[1], cfg.test)
        floor = np.array([delta_min[p] for p in zip(n_prev.tolist(), n_cur.tolist())])
        features = token_features(rows, idx_t / trace_lengths[code_t], sampling)
        max_drop = _np(rows["max_drop"]).astype(np.float64)
        trace_ids = coder.ids.take(pa.array(code_t))
        replication, known = np.zeros(len(t), dtype=bool), np.zeros(len(t), dtype=bool)
        for j in np.flatnonzero(fires):                   # the cliffs only: few, looked up one by one
            value = replicated.get((coder.trace_id(int(code_t[j])), int(idx_t[j])))
            if value is not None:
                replication[j], known[j] = value, True
        columns = {
            "trace_id": trace_ids, "problem_id": problem_ids.take(pa.array(code_t)), "token_index": idx_t,
            "token_id": _np(rows["token_id"]).astype(np.int64), "is_correct": trace_correct.take(pa.array(code_t)),
            "num_rollouts_prev": n_prev, "num_correct_prev": k_prev, "num_rollouts": n_cur, "num_correct": k_cur,
            "p_prev": pot[t - 1], "potential": pot[t], "delta": pot[t - 1] - pot[t], "p_value": p_value,
            "is_cliff": fires, "feasible": pa.array(max_drop >= floor, mask=np.isnan(max_drop)),
            "replicated": pa.array(replication, pa.bool_(), mask=~known),
            **features,
            "hidden_projection": _projections(project, trace_ids.to_pylist(), idx_t) if project is not None
            else pa.nulls(len(t), pa.list_(pa.float32())),
        }
        yield schema.to_table("risk_labels", pa.table(columns))


def _projections(project: Projector, trace_ids: list[str], token_index: np.ndarray) -> pa.Array:
    """The projected hidden states of the tested tokens, one model pass per trace (rows grouped by trace)."""
    out: list[list[float]] = []
    start = 0
    while start < len(trace_ids):
        end = start
        while end < len(trace_ids) and trace_ids[end] == trace_ids[start]:
            end += 1
        out.extend(np.asarray(project(trace_ids[start], token_index[start:end]), dtype=np.float32).tolist())
        start = end
    return pa.array(out, pa.list_(pa.float32()))


def write_labels(path: str | Path, tables: Iterator[pa.Table]) -> dict[str, int]:
    """Write the `risk_labels` tables (in key order) to `path` atomically; returns its counts."""
    counts = {"num_positions": 0, "num_cliffs": 0, "num_feasible": 0}
    with schema.RowGroupWriter(path, schema.RISK_LABELS) as writer:
        for table in tables:
            writer.write(table)
            counts["num_positions"] += table.num_rows
            counts["num_cliffs"] += pc.sum(table["is_cliff"]).as_py() or 0
            counts["num_feasible"] += pc.sum(pc.fill_null(table["feasible"], False)).as_py() or 0
    return counts
