"""The random-position control of Cliff-DPO: a random non-cliff position j of the same trace whose token
is not the greedy one (as most cliff tokens are not), `response_ids[:j]`, `response_ids[:j+1]` and
`response_ids[:j] + [c]` for every top-k alternative c; the pairs then take alternatives by the rule
the cliff pairs use (dpo/pairs.py), as many as the cliff has pairs."""
from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.cliffs.stats import is_cliff
from cliffdata.config.cliffs import CliffTest
from cliffdata.experiments.resample import resample_by_problem
from cliffdata.generate.sampling import Gold

log = logging.getLogger(__name__)


def control_requests(traces: list[dict], cliffs: list[dict], pairs_per_cliff: dict[tuple[str, int], int],
                     token_stats: pa.Table, all_cliff_keys: set[tuple[str, int]], top_k: int, seed: int) -> list[dict]:
    """For every cliff with m > 0 Cliff-DPO pairs, one position j of the same trace that is no cliff and
    whose token is not the greedy one, drawn uniformly among those with at least m top-k alternatives
    (never the trace's token), with every such alternative: the pairs keep the first m of them that pass
    the rule of the cliff pairs (dpo.pairs.control_pairs), so the control differs from the cliff pairs
    in its position only.

    Requests (one per prefix): `prev` (response_ids[:j]), `token` (response_ids[:j+1]) and each
    alternative c (response_ids[:j] + [c]). Draws are seeded by (seed, "control", trace_id, cliff).
    A trace whose positions are all cliffs, greedy or short of m alternatives gives no control for that
    cliff (logged).
    """
    trace_ids = pa.array(sorted({t for t, _ in pairs_per_cliff}), pa.string())
    stats = token_stats.filter(pc.is_in(token_stats["trace_id"], value_set=trace_ids)).select(
        ["trace_id", "token_index", "token_id", "logprob", "is_greedy", "top_ids", "top_probs"])
    stats_by_key = {(r["trace_id"], r["token_index"]): r for r in stats.to_pylist()}
    by_trace = {t["trace_id"]: t for t in traces}
    taken: set[tuple[str, int]] = set()
    requests = []
    for c in sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"])):
        trace_id, i = c["trace_id"], c["token_index"]
        m = pairs_per_cliff.get((trace_id, i), 0)
        if m == 0:
            continue
        trace = by_trace[trace_id]

        def alternatives(j: int) -> list[tuple[int, int, float]]:
            st = stats_by_key.get((trace_id, j))
            if st is None:
                return []
            return [(rank, cid, prob) for rank, (cid, prob) in enumerate(zip(st["top_ids"][:top_k], st["top_probs"][:top_k]), 1)
                    if cid != st["token_id"]]

        eligible = [j for j in range(len(trace["response_ids"]))
                    if (trace_id, j) not in all_cliff_keys and (trace_id, j) not in taken
                    and (trace_id, j) in stats_by_key and not stats_by_key[(trace_id, j)]["is_greedy"]
                    and len(alternatives(j)) >= m]
        if not eligible:
            log.warning("control: no eligible non-greedy position in %s for the cliff at %d (%d pairs)", trace_id, i, m)
            continue
        rng = np.random.default_rng(request_seed(seed, "control", trace_id, i))
        j = int(eligible[int(rng.integers(len(eligible)))])
        taken.add((trace_id, j))
        st = stats_by_key[(trace_id, j)]
        base = {"trace_id": trace_id, "problem_id": trace["problem_id"], "token_index": j, "cliff_index": i}
        own_rank = next((r for r, cid in enumerate(st["top_ids"][:top_k], 1) if cid == st["token_id"]), None)
        requests.append({**base, "kind": "prev", "candidate_id": None, "candidate_rank": None, "prob": None})
        requests.append({**base, "kind": "token", "candidate_id": int(st["token_id"]), "candidate_rank": own_rank,
                         "prob": math.exp(st["logprob"])})
        requests += [{**base, "kind": "alternative", "candidate_id": int(cid), "candidate_rank": rank,
                      "prob": float(prob)} for rank, cid, prob in alternatives(j)]
    return requests


def run_control(requests: list[dict], traces: list[dict], golds: dict[str, Gold], backend: Backend, tokenizer,
                n: int, sampling: Sampling, seed: int, test: CliffTest,
                checkpoint: UnitCheckpoint | None = None) -> list[dict]:
    """N rollouts per control request; rows of CONTROL (one per trace token / alternative, each with the
    position's p_prev and whether the cliff test fires between p_prev and its potential, as at the cliffs'
    candidates). Seeds: request_seed(seed, "control", trace_id, token_index, kind, candidate_id)."""
    def prefix(r: dict, response) -> list[int]:
        j = r["token_index"]
        return list(response[:j]) + ([] if r["kind"] == "prev" else [r["candidate_id"]])

    results = resample_by_problem(
       requests, traces, golds, backend, tokenizer, n, sampling, prefix_of=prefix,
       seed_of=lambda r: request_seed(seed, "control", r["trace_id"], r["token_index"], r["kind"], r["candidate_id"]),
       desc="control", checkpoint=checkpoint)
    prev = {(r["trace_id"], r["token_index"]): res for r, res in zip(requests, results) if r["kind"] == "prev"}
    rows = []
    for r, res in zip(requests, results):
        if r["kind"] == "prev":
            continue
        before = prev[(r["trace_id"], r["token_index"])]
        rows.append({"trace_id": r["trace_id"], "problem_id": r["problem_id"], "token_index": r["token_index"],
                     "cliff_index": r["cliff_index"], "candidate_id": r["candidate_id"],
                     "candidate_rank": r["candidate_rank"], "prob": r["prob"], "is_trace_token": r["kind"] == "token",
                     "num_rollouts": res.num_rollouts, "num_correct": res.num_correct,
                     "potential": res.num_correct / res.num_rollouts, "num_rollouts_prev": before.num_rollouts,
                     "num_correct_prev": before.num_correct, "p_prev": before.num_correct / before.num_rollouts,
                     "is_cliff": bool(is_cliff(before.num_correct, before.num_rollouts, res.num_correct,
                                               res.num_rollouts, test)),
                     # the prev rollouts are counted once, on the trace token's row
                     "num_generated_tokens": res.num_generated_tokens
                     + (before.num_generated_tokens if r["kind"] == "token" else 0)})
    return rows
