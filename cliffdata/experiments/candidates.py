"""Candidate replacement and CPM (protocol §5 RQ2/3, §6): the top-k alternatives at every cliff,
`response_ids[:i] + [c]`, each with fresh rollouts and the cliff test against p[i-1].

p[i-1] and the cliff token's own potential come from the rollouts that detected the cliff (the paper),
or, with `candidates.fresh_estimates`, from the replicate stage's fresh rollouts on both sides of it:
the detection rollouts were selected for a high p̂[i-1] and a low p̂[i], so labelling a candidate
against them calls an alternative as good as the prefix a cliff far more often than the test's level
(docs/method.md, Fresh estimates)."""
from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.cliffs.stats import is_cliff
from cliffdata.config.cliffs import CliffTest
from cliffdata.experiments.resample import resample_by_problem
from cliffdata.generate.sampling import Gold


def candidate_rows(traces: list[dict], cliffs: list[dict], token_stats: pa.Table, potentials: pa.Table,
                   k: int, fresh: dict[tuple[str, int], dict] | None = None) -> list[dict]:
    """One request per candidate at every cliff: the top-k of the stored top list at token i, plus the
    cliff token itself when it is outside the top-k (`candidate_rank` null, prob = exp(logprob)).

    The cliff token's request already carries its counts (the main rollout's potential at i); p_prev
    and its counts come from the potentials row at i-1. With `fresh` (replicate rows by (trace_id,
    token_index)), both come from the replicate stage's fresh rollouts instead: prev side for p_prev,
    curr side for the cliff token. `token_stats` and `potentials` are tables (they can be large); only
    the traces with cliffs are materialised.
    """
    trace_ids = pa.array(sorted({c["trace_id"] for c in cliffs}), pa.string())
    stats = token_stats.filter(pc.is_in(token_stats["trace_id"], value_set=trace_ids)).select(
        ["trace_id", "token_index", "token_id", "logprob", "greedy_token_id", "top_ids", "top_probs"])
    stats_by_key = {(s["trace_id"], s["token_index"]): s for s in stats.to_pylist()}
    pots = potentials.filter(pc.is_in(potentials["trace_id"], value_set=trace_ids)).select(
        ["trace_id", "token_index", "num_rollouts", "num_correct"])
    pots_by_key = {(p["trace_id"], p["token_index"]): p for p in pots.to_pylist()}
    problem_of = {t["trace_id"]: t["problem_id"] for t in traces}

    requests = []
    for c in sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"])):
        trace_id, i = c["trace_id"], c["token_index"]
        st = stats_by_key.get((trace_id, i))
        prev, cur = pots_by_key.get((trace_id, i - 1)), pots_by_key.get((trace_id, i))
        if st is None or prev is None or cur is None or trace_id not in problem_of:
            raise ValueError(f"cliff ({trace_id!r}, {i}) lacks its trace, its token_stats row or the potentials "
                             f"at {i - 1} and {i}")
        if prev["num_rollouts"] < 1 or cur["num_rollouts"] < 1:
            raise ValueError(f"cliff ({trace_id!r}, {i}) has an unscored side: {prev}, {cur}")
        if len(st["top_ids"]) < k:
            raise ValueError(f"candidates.top_k = {k} but token_stats stores only {len(st['top_ids'])} candidates")
        assert st["token_id"] == c["token_id"], f"cliff token {c['token_id']} != token_stats token {st['token_id']}"
        if fresh is not None:
            again = fresh.get((trace_id, i))
            if again is None:
                raise ValueError(f"cliff ({trace_id!r}, {i}) has no replicate row: candidates.fresh_estimates needs "
                                 f"the replicate stage's fresh rollouts at every cliff")
            prev = {"num_rollouts": again["num_rollouts_prev"], "num_correct": again["num_correct_prev"]}
            cur = {"num_rollouts": again["num_rollouts"], "num_correct": again["num_correct"]}
        base = {"trace_id": trace_id, "problem_id": problem_of[trace_id], "token_index": i,
                "p_prev": prev["num_correct"] / prev["num_rollouts"], "num_rollouts_prev": prev["num_rollouts"],
                "num_correct_prev": prev["num_correct"]}

        def request(rank: int | None, candidate_id: int, prob: float) -> dict:
            own = candidate_id == st["token_id"]
            return {**base, "candidate_rank": rank, "candidate_id": candidate_id, "prob": prob,
                    "is_cliff_token": own, "is_greedy": candidate_id == st["greedy_token_id"],
                    "num_rollouts": cur["num_rollouts"] if own else None,
                    "num_correct": cur["num_correct"] if own else None}

        top = list(zip(st["top_ids"][:k], st["top_probs"][:k]))
        requests += [request(rank, cid, float(prob)) for rank, (cid, prob) in enumerate(top, start=1)]
        if st["token_id"] not in {cid for cid, _ in top}:
            requests.append(request(None, st["token_id"], math.exp(st["logprob"])))
    return requests


def run_candidates(requests: list[dict], traces: list[dict], golds: dict[str, Gold], backend: Backend,
                   tokenizer, n: int, sampling: Sampling, seed: int, test: CliffTest,
                   checkpoint: UnitCheckpoint | None = None) -> list[dict]:
    """N fresh rollouts from `response_ids[:i] + [c]` for every candidate but the cliff token (which
    reuses the counts its request carries: the main rollout's, as the paper does, or the replicate
    stage's); rows of CANDIDATES.

    A candidate is a cliff iff the cliff test `test` (params `cliffs.test`; protocol §2, each side's own N)
    fires between p_prev and its potential; the cliff token is a cliff by definition. Seeds: request_seed(seed, "candidates",
    trace_id, token_index, candidate_id).
    """
    todo = [r for r in requests if not r["is_cliff_token"]]
    results = resample_by_problem(
       todo, traces, golds, backend, tokenizer, n, sampling,
       prefix_of=lambda r, response: [*response[:r["token_index"]], r["candidate_id"]],
       seed_of=lambda r: request_seed(seed, "candidates", r["trace_id"], r["token_index"], r["candidate_id"]),
       desc="candidates", checkpoint=checkpoint)
    fresh = iter(results)
    rows = []
    for r in requests:
        if r["is_cliff_token"]:
            num_rollouts, num_correct, num_tokens, cliff = r["num_rollouts"], r["num_correct"], 0, True
        else:
            res = next(fresh)
            num_rollouts, num_correct, num_tokens = res.num_rollouts, res.num_correct, res.num_generated_tokens
            cliff = bool(is_cliff(r["num_correct_prev"], r["num_rollouts_prev"], num_correct, num_rollouts, test))
        rows.append({**{key: value for key, value in r.items() if key != "problem_id"},
                     "num_rollouts": num_rollouts, "num_correct": num_correct,
                     "potential": num_correct / num_rollouts, "is_cliff": cliff, "num_generated_tokens": num_tokens})
    return rows
