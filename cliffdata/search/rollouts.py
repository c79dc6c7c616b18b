"""Token-wise potential by rollouts (protocol §1, §3), in waves of traces, with checkpoint and resume.

`p[i]` = share of N rollouts that end correct when generation restarts from
`prompt_ids + response_ids[:i+1]`; positions i = 0 … T-2 (paper) plus the empty prefix i = -1.
Early termination: after `early_stop_zeros` consecutive positions with p = 0 (counted from i = 0)
the rest of the trace is filled with p = 0 (`is_filled`, `num_rollouts = 0`).

Every request carries a seed derived from (seed, trace_id, token_index[, round]), and a wave's
searches always pack their requests into the same engine calls (`search_wave`), so a deterministic
backend gives identical potentials whether a run was interrupted or not. A finished wave's traces are
written to the checkpoint folder atomically, one `checkpoint.UnitCheckpoint` unit per trace (`trace_key`;
its cost row as the value, its potentials as the attached table); a re-run skips the waves found there
whole, and searches again a wave with a trace whose files do not verify.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time

import pyarrow as pa
from tqdm.auto import tqdm

from cliffdata import grading, schema
from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config.cliffs import CliffTest
from cliffdata.config.search import RolloutsConfig
from cliffdata.generate.sampling import Gold, resample, with_budget
from cliffdata.search.adaptive import adaptive_steps
from cliffdata.search.base import Evaluated, Search
from cliffdata.search.exhaustive import exhaustive_steps
from cliffdata.search.forks import fork_steps

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


def estimate_rollouts(num_tokens: list[int], cfg: RolloutsConfig, backend: str,
                      num_forks: list[int] | None = None) -> dict:
    """The generated tokens (and seconds, where a throughput was measured) a rollouts run should cost.

    A rollout from position i is taken to regenerate the rest of the trace, min(T−1−i, max_new_tokens)
    tokens. Exhaustive: N rollouts at every scored position (early termination ignored, so an upper
    bound in that respect). Adaptive (cliffdata/search/adaptive.py): `initial_rollouts` at the grid points,
    `sweep_rollouts` at every position, and one refined interval per trace (both ends topped up
    to N plus log2(positions/grid) midpoints; the screen's follow-ups of flagged positions are not
    counted: bench/adaptive.py measures the whole search at ~0.27x exhaustive at N = 64); forks: `forks.initial_rollouts` on both sides of each of a
    trace's `num_forks` (an upper bound: a fork shared by two pairs is counted twice) and one pair
    topped up to N; rollouts at the mean remaining length.
    """
    total = 0.0
    for j, T in enumerate(num_tokens):
        remaining = [min(T - 1 - i, cfg.sampling.max_new_tokens) for i in scored_positions(T, cfg.score_empty_prefix)]
        if not remaining:
            continue
        if cfg.mode == "exhaustive":
            total += cfg.num_rollouts * sum(remaining)
            continue
        a, positions = cfg.adaptive, len(remaining)
        if cfg.mode == "forks":
            forks = num_forks[j] if num_forks is not None else positions
            rollouts = 2 * forks * cfg.forks.initial_rollouts + (2 * cfg.num_rollouts if forks else 0)
        else:
            grid = min(a.grid_points, math.ceil(positions / a.min_stride))
            rollouts = (grid * a.initial_rollouts + positions * a.sweep_rollouts
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


class _Job:
    """One trace's search inside a wave: its generator, the request it waits on, and its cost so far."""

    def __init__(self, trace: dict, gold: Gold, sampling: Sampling, search: Search, cfg: RolloutsConfig):
        self.trace, self.gold, self.sampling, self.search, self.cfg = trace, gold, sampling, search, cfg
        self.adapter: str | None = trace.get("adapter")
        self.rounds: dict[int, int] = {}
        self.seconds = 0.0
        self.timeouts = 0                 # rollouts whose answer ran out of grading time
        self.evaluated: Evaluated | None = None
        self.pending: list[tuple[int, int]] = []
        self.results: list[tuple[int, int] | None] = []
        self.sent = 0                     # items of `pending` already in an engine call
        self._advance(None)

    def _advance(self, results) -> None:
        try:
            self.pending = next(self.search) if results is None else self.search.send(results)
        except StopIteration as done:
            self.pending, self.evaluated = [], done.value
        self.results, self.sent = [None] * len(self.pending), 0

    def seed(self, i: int) -> int:
        """Exhaustive: one request per position, seeded by (seed, trace, i). Searches: (seed, trace, i,
        round), where round counts the earlier requests for i, so top-ups draw fresh rollouts."""
        if self.cfg.mode == "exhaustive":
            return request_seed(self.cfg.seed, self.trace["trace_id"], i)
        r = self.rounds.get(i, 0)
        self.rounds[i] = r + 1
        return request_seed(self.cfg.seed, self.trace["trace_id"], i, r)

    def receive(self, item: int, result: tuple[int, int], timeouts: int = 0) -> None:
        self.results[item] = result
        self.timeouts += timeouts
        if all(r is not None for r in self.results):
            self._advance(self.results)

    def output(self) -> tuple[list[dict], dict]:
        """Rows of `schema.POTENTIALS` and the cost row (`schema.ROLLOUT_TRACES`)."""
        trace_id, cfg = self.trace["trace_id"], self.cfg
        positions = scored_positions(len(self.trace["response_ids"]), cfg.score_empty_prefix)
        rows = [{"trace_id": trace_id, "token_index": i, "mode": cfg.mode, "num_rollouts": n, "num_correct": k,
                 "potential": k / n, "is_filled": False, "num_generated_tokens": tok}
                for i, (n, k, tok) in self.evaluated.items()]
        early_stop = None
        if cfg.mode == "exhaustive" and len(rows) < len(positions):     # exhaustive stopped at a zero run
            early_stop = positions[len(rows)]
            rows += [{"trace_id": trace_id, "token_index": i, "mode": cfg.mode, "num_rollouts": 0, "num_correct": 0,
                      "potential": 0.0, "is_filled": True, "num_generated_tokens": 0} for i in positions[len(rows):]]
        cost = {"trace_id": trace_id, "num_positions": len(self.evaluated),
                "num_rollouts": sum(n for n, _, _ in self.evaluated.values()),
                "num_generated_tokens": sum(tok for _, _, tok in self.evaluated.values()),
                "wall_seconds": round(self.seconds, 3), "early_stop_index": early_stop,
                "num_grading_timeouts": self.timeouts}
        return rows, cost


def trace_search(trace: dict, cfg: RolloutsConfig, test: CliffTest,
                 max_drop: dict[int, float | None] | None = None) -> Search:
    """The search `rollouts.mode` runs on one trace (cliffdata/search/: exhaustive, forks, adaptive)."""
    positions = scored_positions(len(trace["response_ids"]), cfg.score_empty_prefix)
    if cfg.mode == "exhaustive":
        return exhaustive_steps(positions, cfg.num_rollouts, cfg.positions_per_batch, cfg.early_stop_zeros)
    if cfg.mode == "forks":
        if max_drop is None:
            raise ValueError(f"rollouts.mode forks: no token_stats max_drop for trace {trace['trace_id']!r}")
        return fork_steps(positions, max_drop, cfg.forks, cfg.num_rollouts, test)
    return adaptive_steps(positions, cfg.adaptive, cfg.num_rollouts, test)


def search_wave(traces: list[dict], golds: dict[str, Gold], backend: Backend, tokenizer, cfg: RolloutsConfig,
                sampling: Sampling, test: CliffTest,
                max_drops: dict[str, dict[int, float | None]] | None = None,
                searches: list[Search] | None = None) -> list[tuple[list[dict], dict]]:
    """The searches of several traces advanced together (one scheduler): every engine call packs up to
    `positions_per_batch` prefixes from any trace whose sampling matches (a problem's token budget), so
    no call is small while work remains. Returns (rows, cost) per trace, in order.

    A trace's optional `adapter` (a LoRA adapter name `backend` was opened with; absent or None: the
    base model) is the model whose rollouts estimate its potentials: the searches of several models'
    traces share calls wherever the backend can serve them together (`Backend.batch_key`).

    For a fixed list of traces the engine calls are fixed too (a trace's requests go out in order,
    traces in list order), so a deterministic backend gives the same bytes on every run. `test`: params
    `cliffs.test`, the test the adaptive and fork searches decide by. `searches`: one per trace instead of
    `rollouts.mode`'s (a benchmark's own search, e.g. PTS bisection)."""
    max_drops = max_drops or {}
    batch_key = getattr(backend, "batch_key", lambda adapter: adapter)     # a duck-typed backend: one adapter per call
    jobs = []
    for j, t in enumerate(traces):
        gold = Gold(*golds[t["problem_id"]])
        search = searches[j] if searches is not None else trace_search(t, cfg, test, max_drops.get(t["trace_id"]))
        jobs.append(_Job(t, gold, with_budget(sampling, gold.max_new_tokens), search, cfg))
    while True:
        waiting = [j for j in jobs if j.sent < len(j.pending)]
        if not waiting:
            break
        call_sampling, call_key = waiting[0].sampling, batch_key(waiting[0].adapter)
        batch: list[tuple[_Job, int]] = []
        for job in waiting:
            if job.sampling != call_sampling or batch_key(job.adapter) != call_key:
                continue
            take = min(cfg.positions_per_batch - len(batch), len(job.pending) - job.sent)
            batch += [(job, job.sent + x) for x in range(take)]
            job.sent += take
            if len(batch) >= cfg.positions_per_batch:
                break
        prefixes = [(j.trace["prompt_ids"], j.trace["response_ids"][:j.pending[x][0] + 1]) for j, x in batch]
        started = time.perf_counter()
        results = resample(backend, tokenizer, prefixes, [j.pending[x][1] for j, x in batch], call_sampling,
                           [j.seed(j.pending[x][0]) for j, x in batch],
                           [j.gold.answer for j, _ in batch], [j.gold.answer_format for j, _ in batch],
                           cfg.stop_at_answer, [j.adapter for j, _ in batch],
                           [f"{j.trace['trace_id']} position {j.pending[x][0]}" for j, x in batch])
        elapsed = time.perf_counter() - started
        total = max(sum(r.num_generated_tokens for r in results), 1)
        for (job, x), r in zip(batch, results):
            job.seconds += elapsed * r.num_generated_tokens / total     # the call's time, split by tokens
            job.receive(x, (r.num_correct, r.num_generated_tokens), r.num_grading_timeouts)
    return [j.output() for j in jobs]


def estimate_potentials(trace: dict, gold: str, answer_format: str, backend: Backend, tokenizer,
                        cfg: RolloutsConfig, sampling: Sampling, test: CliffTest,
                        max_drop: dict[int, float | None] | None = None) -> tuple[list[dict], dict]:
    """Potentials of one trace (rows of `schema.POTENTIALS`) and its cost row (`schema.ROLLOUT_TRACES`).
    `test`: params `cliffs.test`, the test the adaptive and fork searches decide by; `max_drop`: the
    trace's token_stats max_drop by token_index (mode forks)."""
    golds = {trace["problem_id"]: Gold(gold, answer_format, None)}
    return search_wave([trace], golds, backend, tokenizer, cfg, sampling, test,
                       {trace["trace_id"]: max_drop} if max_drop is not None else None)[0]


def max_drops_by_trace(rows) -> dict[str, dict[int, float | None]]:
    """trace_id -> token_index -> max_drop from token_stats rows (dicts with those three keys)."""
    out: dict[str, dict[int, float | None]] = {}
    for s in rows:
        out.setdefault(s["trace_id"], {})[s["token_index"]] = s["max_drop"]
    return out


def max_drops_of(token_stats_path, trace_ids: set[str]) -> dict[str, dict[int, float | None]]:
    """trace_id -> token_index -> max_drop (1 − sampler_prob; None where token_stats has none) for
    the fork search, from a token_stats dataset; every trace in `trace_ids` must have rows."""
    from cliffdata.scan import read_columns

    table = read_columns(token_stats_path, ["trace_id", "token_index", "max_drop"])
    out = {t: d for t, d in max_drops_by_trace(table.to_pylist()).items() if t in trace_ids}
    missing = sorted(trace_ids - out.keys())
    if missing:
        raise ValueError(f"{token_stats_path}: rollouts.mode forks needs token_stats rows for every trace; "
                         f"none for {len(missing)} (first {missing[0]!r})")
    return out


def waves(traces: list[dict], cfg: RolloutsConfig) -> list[list[dict]]:
    """The fixed groups of traces searched together (`rollouts.traces_per_wave`, in list order)."""
    size = cfg.traces_per_wave
    return [traces[j:j + size] for j in range(0, len(traces), size)]


def wave_cost(wave: list[dict], cfg: RolloutsConfig) -> int:
    """A wave's expected generated tokens (`expected_tokens` summed): the LPT weight of shards and Ray."""
    return sum(expected_tokens(len(t["response_ids"]), cfg) for t in wave)


def trace_key(trace: dict) -> str:
    """The checkpoint unit of a trace: its id (readable, for the file name) and a digest of its id, its exact
    prompt and response ids and its `adapter` (None: the base model), so a resumed run whose trace with
    the same id came out differently (cliff_count samples its traces in the stage) recomputes it instead
    of attaching saved potentials to another trace."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", trace["trace_id"])[:80]
    digest = UnitCheckpoint.key(trace["trace_id"], [int(i) for i in trace["prompt_ids"]],
                                [int(i) for i in trace["response_ids"]], trace.get("adapter"))
    return f"{safe}-{digest[:16]}"


def unfinished_waves(traces: list[dict], cfg: RolloutsConfig, checkpoint: UnitCheckpoint) -> list[list[dict]]:
    """The waves with a trace not yet in `checkpoint` (a wave is skipped only whole), logging a resume.
    A trace whose files do not verify is set aside there (logged with its path) and is not done."""
    done = checkpoint.done()
    todo = [w for w in waves(traces, cfg) if not all(trace_key(t) in done for t in w)]
    num_todo = sum(map(len, todo))
    if num_todo < len(traces):
        log.info("resuming: %d of %d traces already in %s", len(traces) - num_todo, len(traces), checkpoint.folder)
    return todo


def save_trace(checkpoint: UnitCheckpoint, trace: dict, rows: list[dict], cost: dict) -> None:
    """A finished trace as its unit: the potentials rows (`schema.POTENTIALS`) as the table, the cost row
    as the value."""
    checkpoint.put(trace_key(trace), cost, schema.to_table("potentials", rows))


def load_traces(checkpoint: UnitCheckpoint, traces: list[dict]) -> tuple[pa.Table, list[dict]]:
    """The potentials and cost rows of `traces`, every one of them finished in `checkpoint`, in order."""
    tables, costs = [], []
    for trace in traces:
        key = trace_key(trace)
        cost = checkpoint.get(key)
        if cost is None:
            raise RuntimeError(f"{checkpoint.folder / key}.json: trace {trace['trace_id']!r} is not in the checkpoint")
        tables.append(schema.to_table("potentials", checkpoint.table(key)))
        costs.append(cost)
    table = pa.concat_tables(tables) if tables else schema.POTENTIALS.empty_table()
    return table, costs


def fingerprint(*parts: object) -> str:
    """A short hash of everything that determines the rollouts (params, model, traces)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_rollouts(traces: list[dict], golds: dict[str, Gold], backend: Backend, tokenizer,
                 cfg: RolloutsConfig, sampling: Sampling, checkpoint: UnitCheckpoint, test: CliffTest,
                 desc: str = "rollouts",
                 max_drops: dict[str, dict[int, float | None]] | None = None) -> tuple[pa.Table, list[dict]]:
    """Estimate potentials for every trace, resuming from `checkpoint`; returns (potentials, costs).
    `test` is params `cliffs.test` (the searches' test); `desc` labels the progress bar; `max_drops`:
    trace_id -> token_index -> token_stats max_drop (mode forks).

    Traces go in fixed waves (`waves`) whose searches share engine calls (`search_wave`); a wave's
    traces are saved when it finishes, and a resumed run skips the waves whose traces are all saved
    (a wave cut short is searched again whole: same calls, same bytes).

    `golds` maps problem_id -> `Gold` (answer, answer format, the problem's own token budget or None).
    """
    todo = unfinished_waves(traces, cfg, checkpoint)
    num_todo = sum(map(len, todo))
    expected = sum(expected_tokens(len(t["response_ids"]), cfg) for w in todo for t in w)
    log.info("rollouts: %d traces to do, about %d generated tokens (N·T²/2, no early stop)", num_todo, expected)
    bar = tqdm(total=num_todo, desc=desc, unit="trace")
    num_tokens, started = 0, time.perf_counter()
    for wave in todo:
        for trace, (rows, cost) in zip(wave, search_wave(wave, golds, backend, tokenizer, cfg, sampling, test, max_drops)):
            save_trace(checkpoint, trace, rows, cost)
            num_tokens += cost["num_generated_tokens"]
        bar.set_postfix(tok_s=f"{num_tokens / max(time.perf_counter() - started, 1e-9):.0f}")
        bar.update(len(wave))
    bar.close()
    table, costs = load_traces(checkpoint, traces)
    # the resumed traces' grading timeouts, so this process's count covers the whole result
    computed = {t["trace_id"] for w in todo for t in w}
    grading.grader().count_timeouts(sum(c.get("num_grading_timeouts") or 0 for c in costs
                                        if c["trace_id"] not in computed))
    return table, costs
