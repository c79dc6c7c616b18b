"""A seeded synthetic study at any size: traces, token_stats and potentials in the pipeline's own
schemas and file layout, for scale benchmarks (`bench/scale.py`) and for tests of the analysis.

    write_study(root, rows=10**7, seed=0)      # root/data/{sample,token_stats,rollouts}/...

The mix is meant to look like a real study to the analysis: three datasets with GSM-, MATH- and
AIME-like response lengths (log-normal, medians 200 / 480 / 1,100 tokens), four samples per problem,
about half the traces correct; 75% of traces exhaustive at N = 64 from the empty prefix on, 25%
adaptive (about 60% of positions scored, N of 8, 16, 32 or 64, so many distinct (N_prev, N_curr)
pairs); a true potential that is piecewise constant with level shifts (failed traces fall to about 0
through one to three drops of 0.2-0.9 of the current level, correct traces rise), isolated one-token
dips, binomial counts around it, and early-stop filled tails (N = 0) on a third of failed traces.
Token statistics: rank 1 for 85% of tokens, entropies from an exponential, sampler probabilities
from the token's probability. Columns no analysis step reads (`top_ids`, `top_probs`, `prompt_ids`)
are empty lists, so a 10^8-row study takes a few GB of disk, not the ~10 GB real top-20 lists would.

Files are written in row groups of `schema.ROW_GROUP_ROWS` rows and are sorted by their keys, as
`schema.write` leaves the pipeline's own datasets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cliffdata import schema

DATASETS = (("gsm1k", 0.6, 200.0, 0.5), ("math500", 0.3, 480.0, 0.6), ("aime", 0.1, 1100.0, 0.5))
SAMPLES_PER_PROBLEM = 4
ADAPTIVE_SHARE = 0.25
ADAPTIVE_KEEP = 0.6
ADAPTIVE_NS = np.array([8, 16, 32, 64], dtype=np.int32)


def _plan(rows: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Trace ids (sorted), response lengths and the adaptive flag, for about `rows` potential rows."""
    names, lengths, adaptive = [], [], []
    total, problem = 0.0, 0
    shares = np.array([d[1] for d in DATASETS])
    while total < rows:
        d = rng.choice(len(DATASETS), p=shares)
        name, _, median, sigma = DATASETS[d]
        for s in range(SAMPLES_PER_PROBLEM):
            n = int(np.clip(rng.lognormal(np.log(median), sigma), 16, 4096))
            names.append(f"{name}/{problem:07d}#{s}")
            lengths.append(n)
            adaptive.append(rng.random() < ADAPTIVE_SHARE)
            total += (n + 1) * (ADAPTIVE_KEEP if adaptive[-1] else 1.0)   # expected potential rows
        problem += 1
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    return [names[i] for i in order], np.array(lengths, dtype=np.int64)[order], np.array(adaptive)[order]


def _curve(length: int, correct: bool, rng: np.random.Generator) -> np.ndarray:
    """True potentials p[-1..length-1] (length + 1 values)."""
    p = np.empty(length + 1)
    level = rng.beta(2, 2)
    shifts = np.sort(rng.choice(np.arange(1, length + 1), size=min(length, int(rng.integers(1, 4))), replace=False))
    start = 0
    for pos in [*shifts, length + 1]:
        p[start:pos] = level
        if correct:
            level = level + (1 - level) * rng.uniform(0.2, 0.9)
        else:
            level = level * (1 - rng.uniform(0.2, 0.9))
        start = pos
    if not correct:
        p[shifts[-1]:] *= 0.05
    dips = rng.choice(np.arange(1, length + 1), size=max(1, length // 200), replace=False)
    p[dips] *= rng.uniform(0.0, 0.7, size=len(dips))
    return np.clip(p, 0.0, 1.0)


def _chunk_tables(trace_ids: list[str], lengths: np.ndarray, adaptive: np.ndarray,
                  rng: np.random.Generator) -> tuple[pa.Table, pa.Table, pa.Table]:
    n_traces = len(trace_ids)
    correct = rng.random(n_traces) < 0.5
    pot_parts = {k: [] for k in ("trace", "idx", "n", "k", "filled", "mode")}
    stat_trace, stat_idx = [], []
    for t in range(n_traces):
        length = int(lengths[t])
        p = _curve(length, bool(correct[t]), rng)
        idx = np.arange(-1, length, dtype=np.int32)
        if adaptive[t]:
            keep = rng.random(length + 1) < ADAPTIVE_KEEP
            keep[:2] = True
            idx, p = idx[keep], p[keep]
            n = ADAPTIVE_NS[rng.integers(0, len(ADAPTIVE_NS), size=len(idx))]
        else:
            n = np.full(len(idx), 64, dtype=np.int32)
        k = rng.binomial(n, p).astype(np.int32)
        filled = np.zeros(len(idx), dtype=bool)
        if not correct[t] and rng.random() < 1 / 3 and len(idx) > 8:
            filled[int(rng.integers(len(idx) // 2, len(idx))):] = True
            n = np.where(filled, 0, n).astype(np.int32)
            k = np.where(filled, 0, k).astype(np.int32)
        pot_parts["trace"].append(np.full(len(idx), t, dtype=np.int32))
        pot_parts["idx"].append(idx)
        pot_parts["n"].append(n)
        pot_parts["k"].append(k)
        pot_parts["filled"].append(filled)
        pot_parts["mode"].append(np.full(len(idx), int(adaptive[t]), dtype=np.int8))
        stat_trace.append(np.full(length, t, dtype=np.int32))
        stat_idx.append(np.arange(length, dtype=np.int32))
    ids = pa.array(trace_ids, pa.string())
    cat = {k: np.concatenate(v) for k, v in pot_parts.items()}
    n, k = cat["n"], cat["k"]
    with np.errstate(divide="ignore", invalid="ignore"):
        potential = np.where(n > 0, k / np.maximum(n, 1), 0.0)
    potentials = pa.table({
        "trace_id": ids.take(pa.array(cat["trace"])),
        "token_index": cat["idx"],
        "mode": pa.array(np.where(cat["mode"] == 1, "adaptive", "exhaustive")),
        "num_rollouts": n, "num_correct": k, "potential": potential, "is_filled": cat["filled"],
        "num_generated_tokens": (n.astype(np.int64) * 40),
    }).cast(schema.POTENTIALS)

    st_t, st_i = np.concatenate(stat_trace), np.concatenate(stat_idx)
    m = len(st_t)
    rank = np.where(rng.random(m) < 0.85, 1, rng.integers(2, 22, size=m)).astype(np.int32)
    token_id = rng.integers(0, 49152, size=m, dtype=np.int32)
    prob = np.where(rank == 1, rng.beta(8, 1, size=m), rng.beta(1, 6, size=m))
    entropy = rng.exponential(0.4, size=m) * (1 - prob)
    sampler_prob = np.clip(prob * rng.uniform(0.9, 1.1, size=m), 0, 1)
    empty_ids = pa.array([[]] * m, pa.list_(pa.int32())) if m else pa.array([], pa.list_(pa.int32()))
    token_stats = pa.table({
        "trace_id": ids.take(pa.array(st_t)), "token_index": st_i, "token_id": token_id,
        "logprob": np.log(np.maximum(prob, 1e-12)), "rank": rank, "entropy": entropy,
        "entropy_full": entropy * 1.2, "greedy_token_id": np.where(rank == 1, token_id, (token_id + 1) % 49152),
        "is_greedy": rank == 1, "top_ids": empty_ids,
        "top_probs": pa.array([[]] * m, pa.list_(pa.float32())) if m else pa.array([], pa.list_(pa.float32())),
        "sampler_prob": sampler_prob, "max_drop": 1.0 - sampler_prob,
    }).cast(schema.TOKEN_STATS)

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    response = pa.ListArray.from_arrays(pa.array(offsets), pa.array(token_id, pa.int32()))
    problem_ids = [t.split("#", 1)[0] for t in trace_ids]
    traces = pa.table({
        "trace_id": ids, "problem_id": pa.array(problem_ids),
        "sample_index": pa.array([int(t.rsplit("#", 1)[1]) for t in trace_ids], pa.int32()),
        "prompt_ids": pa.array([[]] * n_traces, pa.list_(pa.int32())), "response_ids": response,
        "response_text": pa.array(["synthetic"] * n_traces), "extracted_answer": pa.array(["0"] * n_traces),
        "is_correct": correct, "finish_reason": pa.array(["stop"] * n_traces),
        "num_tokens": lengths.astype(np.int32),
    }).cast(schema.TRACES)
    return traces, token_stats, potentials


def write_study(root: str | Path, rows: int, seed: int = 0, traces_per_chunk: int = 2000) -> dict:
    """Write a synthetic study with about `rows` potential rows under `root` (the pipeline's
    `schema.PATHS` layout); returns its sizes. Deterministic for a seed."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    trace_ids, lengths, adaptive = _plan(rows, rng)
    names = ("traces", "token_stats", "potentials")
    paths = {name: root / schema.PATHS[name] for name in names}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    writers = {name: schema.RowGroupWriter(paths[name], schema.SCHEMAS[name]) for name in names}
    counts = dict.fromkeys(names, 0)
    try:
        for start in range(0, len(trace_ids), traces_per_chunk):
            end = start + traces_per_chunk
            tables = _chunk_tables(trace_ids[start:end], lengths[start:end], adaptive[start:end], rng)
            for name, table in zip(names, tables):
                writers[name].write(table)
                counts[name] += table.num_rows
    finally:
        for w in writers.values():
            w.close()
    return {"traces": counts["traces"], "token_stats_rows": counts["token_stats"],
            "potential_rows": counts["potentials"], "seed": seed}
