"""Token-wise potential by rollouts (protocol §1, §3), trace by trace, with checkpoint and resume.

`p[i]` = share of N rollouts that end correct when generation restarts from
`prompt_ids + response_ids[:i+1]`; positions i = 0 … T-2 (paper) plus the empty prefix i = -1.
Early termination: after `early_stop_zeros` consecutive positions with p = 0 (counted from i = 0)
the rest of the trace is filled with p = 0 (`is_filled`, `num_rollouts = 0`).

Every request carries a seed derived from (seed, trace_id, token_index), and positions are always
submitted in the same groups, so a deterministic backend gives identical potentials whether a run
was interrupted or not. Each finished trace is written to the checkpoint folder atomically; a
re-run skips the traces found there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from cliffdata import schema
from cliffdata.adaptive import adaptive_search
from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.config import CliffsConfig, RolloutsConfig
from cliffdata.sampling import Gold, resample, with_budget

log = logging.getLogger(__name__)


def scored_positions(num_tokens: int, score_empty_prefix: bool) -> list[int]:
    """Positions whose potential is estimated: -1 (optional), then 0 … T-2."""
    return ([-1] if score_empty_prefix else []) + list(range(max(num_tokens - 1, 0)))


def expected_tokens(num_tokens: int, cfg: RolloutsConfig) -> int:
    """Generated tokens if every rollout regenerates the rest of the trace: N·Σ(T−1−i) ≈ N·T²/2."""
    return cfg.num_rollouts * sum(num_tokens - 1 - i for i in scored_positions(num_tokens, cfg.score_empty_prefix))


# Generated tokens per second of the embedded default on this project's machine (2 CPU cores,
# SmolLM2-135M; README "Measured"): the basis of the time estimate. Elsewhere there is no time
# estimate, and the progress bar's rate is the measurement.
MEASURED_TOKENS_PER_SECOND: dict[tuple[str, str], float] = {("vllm", "exhaustive"): 329.0, ("vllm", "adaptive"): 130.0}


def estimate_rollouts(num_tokens: list[int], cfg: RolloutsConfig, backend: str) -> dict:
    """The generated tokens (and seconds, where a throughput was measured) a rollouts run should cost.

    A rollout from position i is taken to regenerate the rest of the trace, min(T−1−i, max_new_tokens)
    tokens. Exhaustive: N rollouts at every scored position (early termination ignored, so an upper
    bound in that respect). Adaptive (cliffdata/adaptive.py): `initial_rollouts` at the grid points,
    `sweep_rollouts` at every other position, and one refined interval per trace (both ends topped up
    to N plus log2(positions/grid) midpoints); rollouts at the mean remaining length.
    """
    total = 0.0
    for T in num_tokens:
        remaining = [min(T - 1 - i, cfg.sampling.max_new_tokens) for i in scored_positions(T, cfg.score_empty_prefix)]
        if not remaining:
            continue
        if cfg.mode == "exhaustive":
            total += cfg.num_rollouts * sum(remaining)
            continue
        a, positions = cfg.adaptive, len(remaining)
        grid = min(a.grid_points, math.ceil(positions / a.min_stride))
        rollouts = (grid * a.initial_rollouts + positions / 2 * a.sweep_rollouts
                    + 2 * cfg.num_rollouts + math.log2(max(positions / grid, 1)) * a.initial_rollouts)
        total += min(rollouts, cfg.num_rollouts * positions) * sum(remaining) / positions
    rate = MEASURED_TOKENS_PER_SECOND.get((backend, cfg.mode))
    return {"estimated_generated_tokens": int(round(total)),
            "estimated_seconds": round(total / rate, 1) if rate else None}


def format_estimate(estimate: dict, num_traces: int, cfg: RolloutsConfig, backend: str) -> str:
    """One line for the log before the rollouts start."""
    seconds = estimate["estimated_seconds"]
    when = (f"~{seconds / 60:.1f} min at {MEASURED_TOKENS_PER_SECOND[(backend, cfg.mode)]:.0f} tok/s measured for "
            f"{backend} on a 2-core CPU" if seconds is not None else f"no measured throughput for {backend}")
    return (f"rollouts estimate ({cfg.mode}, N={cfg.num_rollouts}, {backend}): {num_traces} traces, "
            f"~{estimate['estimated_generated_tokens']:,} generated tokens, {when}")


class BackendOracle:
    """The adaptive search's rollout oracle for one trace, on a real backend.

    Each request for position i carries a seed derived from (seed, trace_id, i, round), where round
    counts earlier requests for i, so repeated top-ups draw fresh, reproducible rollouts.
    """

    def __init__(self, trace: dict, gold: str, answer_format: str, backend: Backend, tokenizer, sampling: Sampling,
                 seed: int):
        self.trace, self.gold, self.answer_format = trace, gold, answer_format
        self.backend, self.tokenizer, self.sampling, self.seed = backend, tokenizer, sampling, seed
        self.rounds: dict[int, int] = {}

    def rollouts(self, requests: list[tuple[int, int]]) -> list[tuple[int, int]]:
        prompt, response = self.trace["prompt_ids"], self.trace["response_ids"]
        out = []
        by_n: dict[int, list[int]] = {}
        for i, n in requests:
            by_n.setdefault(n, []).append(i)
        results: dict[int, tuple[int, int]] = {}
        for n, positions in by_n.items():      # resample takes one n per call
            seeds = []
            for i in positions:
                seeds.append(request_seed(self.seed, self.trace["trace_id"], i, self.rounds.get(i, 0)))
                self.rounds[i] = self.rounds.get(i, 0) + 1
            for i, r in zip(positions, resample(self.backend, self.tokenizer, [(prompt, response[:i + 1]) for i in positions],
                                                n, self.sampling, seeds, self.gold, self.answer_format)):
                results[i] = (r.num_correct, r.num_generated_tokens)
        for i, _ in requests:
            out.append(results[i])
        return out


def estimate_potentials(trace: dict, gold: str, answer_format: str, backend: Backend, tokenizer,
                        cfg: RolloutsConfig, sampling: Sampling,
                        test: CliffsConfig = CliffsConfig()) -> tuple[list[dict], dict]:
    """Potentials of one trace (rows of `schema.POTENTIALS`) and its cost row (`schema.ROLLOUT_TRACES`).
    `test`: params `cliffs`, whose test the adaptive search decides by (exhaustive mode does not read it)."""
    if cfg.mode == "adaptive":
        return _adaptive_potentials(trace, gold, answer_format, backend, tokenizer, cfg, sampling, test)
    started = time.perf_counter()
    prompt, response = trace["prompt_ids"], trace["response_ids"]
    positions = scored_positions(len(response), cfg.score_empty_prefix)
    rows: list[dict] = []
    zero_run, ptr, early_stop = 0, 0, None
    while ptr < len(positions):
        size = cfg.positions_per_batch
        if cfg.early_stop_zeros:
            # never evaluate past the position that completes the zero run: the paper stops there
            size = max(1, min(size, cfg.early_stop_zeros - zero_run))
        batch = positions[ptr:ptr + size]
        results = resample(backend, tokenizer, [(prompt, response[:i + 1]) for i in batch], cfg.num_rollouts, sampling,
                           [request_seed(cfg.seed, trace["trace_id"], i) for i in batch], gold, answer_format)
        for i, r in zip(batch, results):
            rows.append({"trace_id": trace["trace_id"], "token_index": i, "mode": cfg.mode,
                         "num_rollouts": r.num_rollouts, "num_correct": r.num_correct,
                         "potential": r.num_correct / r.num_rollouts, "is_filled": False,
                         "num_generated_tokens": r.num_generated_tokens})
            if i >= 0:
                zero_run = zero_run + 1 if r.num_correct == 0 else 0
        ptr += len(batch)
        if cfg.early_stop_zeros and zero_run >= cfg.early_stop_zeros and ptr < len(positions):
            early_stop = positions[ptr]
            rows += [{"trace_id": trace["trace_id"], "token_index": i, "mode": cfg.mode, "num_rollouts": 0,
                      "num_correct": 0, "potential": 0.0, "is_filled": True, "num_generated_tokens": 0}
                     for i in positions[ptr:]]
            break
    evaluated = [r for r in rows if not r["is_filled"]]
    cost = {"trace_id": trace["trace_id"], "num_positions": len(evaluated),
            "num_rollouts": sum(r["num_rollouts"] for r in evaluated),
            "num_generated_tokens": sum(r["num_generated_tokens"] for r in evaluated),
            "wall_seconds": round(time.perf_counter() - started, 3), "early_stop_index": early_stop}
    return rows, cost


def _adaptive_potentials(trace: dict, gold: str, answer_format: str, backend: Backend, tokenizer,
                         cfg: RolloutsConfig, sampling: Sampling, test: CliffsConfig) -> tuple[list[dict], dict]:
    started = time.perf_counter()
    oracle = BackendOracle(trace, gold, answer_format, backend, tokenizer, sampling, cfg.seed)
    positions = scored_positions(len(trace["response_ids"]), cfg.score_empty_prefix)
    evaluated = adaptive_search(oracle, positions, cfg.adaptive, cfg.num_rollouts, test)
    rows = [{"trace_id": trace["trace_id"], "token_index": i, "mode": cfg.mode, "num_rollouts": n, "num_correct": k,
             "potential": k / n, "is_filled": False, "num_generated_tokens": tok}
            for i, (n, k, tok) in evaluated.items()]
    cost = {"trace_id": trace["trace_id"], "num_positions": len(rows), "num_rollouts": sum(r["num_rollouts"] for r in rows),
            "num_generated_tokens": sum(r["num_generated_tokens"] for r in rows),
            "wall_seconds": round(time.perf_counter() - started, 3), "early_stop_index": None}
    return rows, cost


class Checkpoint:
    """A folder of finished traces: `<key>.parquet` (potentials) then `<key>.json` (cost, the done mark).

    A trace's key covers its id *and* its exact prompt and response ids, so a resumed run whose trace
    with the same id came out differently (cliff_count samples its traces in the stage) recomputes it
    instead of attaching saved potentials to another trace.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(trace: dict) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", trace["trace_id"])[:80]
        content = json.dumps([trace["trace_id"], [int(i) for i in trace["prompt_ids"]],
                              [int(i) for i in trace["response_ids"]]])
        return f"{safe}-{hashlib.sha256(content.encode()).hexdigest()[:16]}"

    def done(self) -> set[str]:
        """Keys of the finished traces."""
        return {p.stem for p in self.folder.glob("*.json")}

    def save(self, trace: dict, rows: list[dict], cost: dict) -> None:
        name = self.key(trace)
        schema.write("potentials", rows, self.folder / f"{name}.parquet")
        tmp = self.folder / f".{name}.json.tmp"
        tmp.write_text(json.dumps(cost, sort_keys=True))
        os.replace(tmp, self.folder / f"{name}.json")

    def load(self, traces: list[dict]) -> tuple[pa.Table, list[dict]]:
        tables, costs = [], []
        for trace in traces:
            name = self.key(trace)
            tables.append(schema.read("potentials", self.folder / f"{name}.parquet"))
            costs.append(json.loads((self.folder / f"{name}.json").read_text()))
        table = pa.concat_tables(tables) if tables else schema.POTENTIALS.empty_table()
        return table, costs

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def fingerprint(*parts: object) -> str:
    """A short hash of everything that determines the rollouts (params, model, traces)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_rollouts(traces: list[dict], golds: dict[str, Gold], backend: Backend, tokenizer,
                 cfg: RolloutsConfig, sampling: Sampling, checkpoint: Checkpoint,
                 desc: str = "rollouts", test: CliffsConfig = CliffsConfig()) -> tuple[pa.Table, list[dict]]:
    """Estimate potentials for every trace, resuming from `checkpoint`; returns (potentials, costs).
    `desc` labels the progress bar; `test` is params `cliffs` (the adaptive search's test).

    `golds` maps problem_id -> `Gold` (answer, answer format, the problem's own token budget or None).
    """
    done = checkpoint.done()
    todo = [t for t in traces if Checkpoint.key(t) not in done]
    if len(todo) < len(traces):
        log.info("resuming: %d of %d traces already in %s", len(traces) - len(todo), len(traces), checkpoint.folder)
    expected = sum(expected_tokens(len(t["response_ids"]), cfg) for t in todo)
    log.info("rollouts: %d traces to do, about %d generated tokens (N·T²/2, no early stop)", len(todo), expected)
    bar = tqdm(total=len(todo), desc=desc, unit="trace")
    num_tokens, started = 0, time.perf_counter()
    for trace in todo:
        gold = Gold(*golds[trace["problem_id"]])
        rows, cost = estimate_potentials(trace, gold.answer, gold.answer_format, backend, tokenizer, cfg,
                                         with_budget(sampling, gold.max_new_tokens), test)
        checkpoint.save(trace, rows, cost)
        num_tokens += cost["num_generated_tokens"]
        bar.set_postfix(tok_s=f"{num_tokens / max(time.perf_counter() - started, 1e-9):.0f}")
        bar.update(1)
    bar.close()
    table, costs = checkpoint.load(traces)
    return table, costs
