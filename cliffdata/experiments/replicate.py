"""Replication: fresh rollouts on both sides of every cliff, `response_ids[:i]` and `response_ids[:i+1]`
(p[i-1] and p[i] again, fresh seeds), and the cliff test on the fresh counts."""
from __future__ import annotations

from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.cliffs.stats import cliff_p_value, is_cliff
from cliffdata.config.cliffs import CliffTest
from cliffdata.experiments.resample import resample_by_problem
from cliffdata.generate.sampling import Gold


REPLICATE_SIDES = {"prev": 0, "curr": 1}          # side -> response tokens kept beyond token_index


def run_replicate(traces: list[dict], cliffs: list[dict], golds: dict[str, Gold], backend: Backend, tokenizer,
                  n: int, sampling: Sampling, seed: int, test: CliffTest,
                  checkpoint: UnitCheckpoint | None = None) -> list[dict]:
    """Fresh N rollouts on both sides of every cliff (p[i-1] from `response_ids[:i]`, p[i] from
    `response_ids[:i+1]`, as the rollouts stage scores them) and the cliff test `test` (params
    `cliffs.test`, the cliffs stage's) on the fresh counts; rows of REPLICATE. Seeds: request_seed(seed, "replicate", trace_id, side, token_index), a stream
    disjoint from the rollouts stage's request_seed(seed, trace_id, position)."""
    cliffs = sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"]))
    requests = [{"trace_id": c["trace_id"], "problem_id": c["problem_id"], "token_index": c["token_index"],
                 "side": side, "prefix_length": c["token_index"] + extra}
                for c in cliffs for side, extra in REPLICATE_SIDES.items()]
    results = resample_by_problem(
       requests, traces, golds, backend, tokenizer, n, sampling,
       prefix_of=lambda r, response: list(response[:r["prefix_length"]]),
       seed_of=lambda r: request_seed(seed, "replicate", r["trace_id"], r["side"], r["token_index"]),
       desc="replicate", checkpoint=checkpoint)
    fresh = {(r["trace_id"], r["token_index"], r["side"]): res for r, res in zip(requests, results)}
    rows = []
    for c in cliffs:
        prev, curr = (fresh[(c["trace_id"], c["token_index"], side)] for side in REPLICATE_SIDES)
        args = (prev.num_correct, prev.num_rollouts, curr.num_correct, curr.num_rollouts)
        rows.append({key: c[key] for key in ("trace_id", "problem_id", "token_index", "is_correct", "category",
                                             "feasible")}
                    | {"num_rollouts_prev": prev.num_rollouts, "num_correct_prev": prev.num_correct,
                       "num_rollouts": curr.num_rollouts, "num_correct": curr.num_correct,
                       "p_prev": prev.num_correct / prev.num_rollouts, "potential": curr.num_correct / curr.num_rollouts,
                       "delta": prev.num_correct / prev.num_rollouts - curr.num_correct / curr.num_rollouts,
                       "p_value": float(cliff_p_value(*args, test)), "replicated": bool(is_cliff(*args, test)),
                       "num_generated_tokens": prev.num_generated_tokens + curr.num_generated_tokens})
    return rows
