"""The paper's experiments on cliffs (protocol §5): deletion ablation and candidate replacement / CPM.

Pure functions that build the experiment prefixes and rows; `pipeline/ablation.py` and
`pipeline/candidates.py` read the datasets, call these and write the outs. Every rollout goes through
`sampling.resample` (graded on decode(prefix + continuation)), one call per problem (its gold).

Prefixes, as response token ids of the trace (protocol §1; positions 0-based):

    del           response_ids[:i]                 cliff token i removed, resample from there
    keep          response_ids[:i+1]
    critical_del  response_ids[:critical_index]    failed traces: truncate before the critical token
    random_del    response_ids[:j]                 failed traces: j uniform in [0, T), seeded per trace
    candidate c   response_ids[:i] + [c]
    replicate     response_ids[:i] and response_ids[:i+1]: p[i-1] and p[i] again, fresh seeds
    control j     response_ids[:j], response_ids[:j+1] and response_ids[:j] + [c]: a random non-cliff
                  position j of the same trace (the Cliff-DPO control)
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from cliffdata import duck, grading
from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config import CliffTest
from cliffdata.sampling import Gold, Resampled, resample, with_budget
from cliffdata.stats import cliff_p_value, is_cliff, pass_at_k

log = logging.getLogger(__name__)

ARMS = ("del", "keep", "critical_del", "random_del")
COMPARATORS = ("critical_del", "random_del")     # failed traces with a cliff, one request per trace
SCOPES = ("all", "first")                        # every cliff | the first cliff of each trace
CORRECTNESS = ("correct", "failed")              # ungradable traces are kept in data, not summarised


# --- shared rollout loop ----------------------------------------------------------------------------

def _resample_by_problem(requests: list[dict], traces: list[dict], golds: dict[str, Gold],
                         backend: Backend, tokenizer, n: int, sampling: Sampling,
                         prefix_of: Callable[[dict, Sequence[int]], list[int]], seed_of: Callable[[dict], int],
                         desc: str, checkpoint: UnitCheckpoint | None = None) -> list[Resampled]:
    """`resample` for every request, one call per problem (resample grades against one gold); results
    in request order. `prefix_of(request, response_ids)` gives the response prefix to continue.

    With a `checkpoint`, each problem is a unit keyed by its prompts, prefixes, seeds, N, sampling and
    gold: a finished unit is read back instead of recomputed (a killed stage resumes), and its grading
    timeouts are added to this process's count (`grading.Grader.count_timeouts`) as if graded again."""
    by_trace = {t["trace_id"]: t for t in traces}
    groups: dict[str, list[int]] = defaultdict(list)
    for j, r in enumerate(requests):
        if r["trace_id"] not in by_trace:
            raise ValueError(f"request names trace {r['trace_id']!r}, which is not in the traces dataset")
        groups[r["problem_id"]].append(j)
    missing = sorted(set(groups) - set(golds))
    if missing:
        raise ValueError(f"no gold answer for problems {missing[:5]}")
    out: list[Resampled | None] = [None] * len(requests)
    for problem_id in tqdm(sorted(groups), desc=desc, unit="problem"):
        idx = groups[problem_id]
        prefixes = [(by_trace[requests[j]["trace_id"]]["prompt_ids"],
                     prefix_of(requests[j], by_trace[requests[j]["trace_id"]]["response_ids"])) for j in idx]
        gold = Gold(*golds[problem_id])
        budget, seeds = with_budget(sampling, gold.max_new_tokens), [seed_of(requests[j]) for j in idx]
        key = UnitCheckpoint.key(desc, problem_id, prefixes, seeds, n, budget, gold) if checkpoint is not None else None
        saved = checkpoint.get(key) if checkpoint is not None else None
        if saved is not None:
            results = [Resampled(*r) for r in saved]
            grading.grader().count_timeouts(sum(r.num_grading_timeouts for r in results))
        else:
            labels = [f"{desc} {requests[j]['trace_id']}" + (f" token {requests[j]['token_index']}"
                                                           if "token_index" in requests[j] else "") for j in idx]
            results = resample(backend, tokenizer, prefixes, n, budget, seeds, gold.answer, gold.answer_format,
                               labels=labels)
            if checkpoint is not None:
                checkpoint.put(key, [[r.num_rollouts, r.num_correct, r.num_generated_tokens, r.num_grading_timeouts]
                                     for r in results])
        for j, res in zip(idx, results):
            out[j] = res
    return out


# --- replication ------------------------------------------------------------------------------------

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
    results = _resample_by_problem(
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


# --- deletion ablation (protocol §5, RQ1) ------------------------------------------------------------

def _ablation_request(trace: dict, token_index: int, arm: str, is_first: bool | None, prefix_length: int) -> dict:
    return {"trace_id": trace["trace_id"], "problem_id": trace["problem_id"], "token_index": token_index, "arm": arm,
            "is_first": is_first, "is_correct": trace["is_correct"], "prefix_length": prefix_length}


def ablation_requests(traces: list[dict], cliffs: list[dict], trace_cliffs: list[dict], seed: int) -> list[dict]:
    """One request per (trace_id, token_index, arm): del and keep at every cliff; on failed traces with
    at least one cliff also critical_del (when the trace has a critical token) and random_del.

    Random-del deletes at a position drawn uniformly from [0, T) with a seed derived from
    (seed, "random_del", trace_id), so it does not depend on the other traces.
    """
    by_trace = {t["trace_id"]: t for t in traces}
    requests = []
    for c in sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"])):
        if c["trace_id"] not in by_trace:
            raise ValueError(f"cliffs name trace {c['trace_id']!r}, which is not in the traces dataset")
        trace, i = by_trace[c["trace_id"]], c["token_index"]
        if not 0 <= i < len(trace["response_ids"]):
            raise ValueError(f"cliff at token {i} is outside trace {c['trace_id']!r} "
                             f"({len(trace['response_ids'])} tokens)")
        requests.append(_ablation_request(trace, i, "del", c["is_first"], i))
        requests.append(_ablation_request(trace, i, "keep", c["is_first"], i + 1))
    with_cliffs = {c["trace_id"] for c in cliffs}
    for s in sorted(trace_cliffs, key=lambda s: s["trace_id"]):
        if s["trace_id"] not in with_cliffs or by_trace[s["trace_id"]]["is_correct"] is not False:
            continue
        trace = by_trace[s["trace_id"]]
        if s["critical_index"] is not None:
            requests.append(_ablation_request(trace, s["critical_index"], "critical_del", None, s["critical_index"]))
        rng = np.random.default_rng(request_seed(seed, "random_del", trace["trace_id"]))
        j = int(rng.integers(len(trace["response_ids"])))
        requests.append(_ablation_request(trace, j, "random_del", None, j))
    return requests


def run_ablation(requests: list[dict], traces: list[dict], golds: dict[str, Gold], backend: Backend,
                 tokenizer, n: int, sampling: Sampling, seed: int,
                 checkpoint: UnitCheckpoint | None = None) -> list[dict]:
    """N continuations from `prompt_ids + response_ids[:prefix_length]` per request; rows of ABLATION.

    Seeds: request_seed(seed, "ablation", trace_id, arm, token_index).
    """
    results = _resample_by_problem(
        requests, traces, golds, backend, tokenizer, n, sampling,
        prefix_of=lambda r, response: list(response[:r["prefix_length"]]),
        seed_of=lambda r: request_seed(seed, "ablation", r["trace_id"], r["arm"], r["token_index"]),
        desc="ablation", checkpoint=checkpoint)
    return [{"trace_id": r["trace_id"], "token_index": r["token_index"], "arm": r["arm"], "is_first": r["is_first"],
             "is_correct": r["is_correct"], "prefix_length": r["prefix_length"], "num_rollouts": res.num_rollouts,
             "num_correct": res.num_correct, "potential": res.num_correct / res.num_rollouts,
             "num_generated_tokens": res.num_generated_tokens}
            for r, res in zip(requests, results)]


def pass_at_k_curve(rows: list[dict], ks: Sequence[int]) -> list[dict]:
    """Rows of PASS_AT_K: the unbiased pass@k (stats.pass_at_k) averaged over instances, by scope ×
    trace correctness × arm (protocol §5). Groups without instances have no rows."""
    groups: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        if r["is_correct"] is None:
            continue
        correctness = "correct" if r["is_correct"] else "failed"
        scopes = SCOPES if r["arm"] in COMPARATORS or r["is_first"] else ("all",)
        for scope in scopes:
            groups[(scope, correctness, r["arm"])].append((r["num_rollouts"], r["num_correct"]))
    curve = []
    for scope in SCOPES:
        for correctness in CORRECTNESS:
            for arm in ARMS:
                counts = groups.get((scope, correctness, arm))
                if not counts:
                    continue
                for k in ks:
                    curve.append({"scope": scope, "correctness": correctness, "arm": arm, "k": int(k),
                                  "num_instances": len(counts),
                                  "pass_at_k": float(np.mean([pass_at_k(n, c, k) for n, c in counts]))})
    return curve


def ablation_metrics(curve: list[dict]) -> dict:
    """metrics/ablation.json: {scope: {correctness: {arm: {num_instances, "pass@k": ...}}}}, rounded."""
    out: dict = {}
    for r in curve:
        cell = out.setdefault(r["scope"], {}).setdefault(r["correctness"], {}).setdefault(
            r["arm"], {"num_instances": r["num_instances"]})
        cell[f"pass@{r['k']}"] = round(r["pass_at_k"], duck.NUM_DIGITS)
    return out


def pass_at_k_table(curve: list[dict], ks: Sequence[int]) -> tuple[list[str], list[list]]:
    """The pass@k table (one row per scope × correctness × arm, one column per k) for Markdown."""
    columns = ["scope", "correctness", "arm", "num_instances"] + [f"pass@{k}" for k in ks]
    rows = [[scope, correctness, arm, cell["num_instances"]] + [cell[f"pass@{k}"] for k in ks]
            for scope, by_correctness in ablation_metrics(curve).items()
            for correctness, by_arm in by_correctness.items()
            for arm, cell in by_arm.items()]
    return columns, rows


def pass_at_k_plot(curve: list[dict], ks: Sequence[int]) -> tuple[list[str], list[list]]:
    """plots/pass_at_k.csv: one row per k, one column `<scope>_<correctness>_<arm>` per curve (dvc plots
    draws one line per y column; it cannot split a long table by a column). Missing curves are empty."""
    series = [f"{scope}_{correctness}_{arm}" for scope in SCOPES for correctness in CORRECTNESS
              for arm in (ARMS if correctness == "failed" else ("del", "keep"))]
    values = {(f"{r['scope']}_{r['correctness']}_{r['arm']}", r["k"]): round(r["pass_at_k"], duck.NUM_DIGITS)
              for r in curve}
    return ["k"] + series, [[k] + [values.get((s, k)) for s in series] for k in ks]


# --- candidate replacement and CPM (protocol §5 RQ2/3, §6) -------------------------------------------

def candidate_rows(traces: list[dict], cliffs: list[dict], token_stats: pa.Table, potentials: pa.Table,
                   k: int) -> list[dict]:
    """One request per candidate at every cliff: the top-k of the stored top list at token i, plus the
    cliff token itself when it is outside the top-k (`candidate_rank` null, prob = exp(logprob)).

    The cliff token's request already carries its counts (the main rollout's potential at i); p_prev
    and its counts come from the potentials row at i-1. `token_stats` and `potentials` are tables
    (they can be large); only the traces with cliffs are materialised.
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
    reuses the main rollout's counts, as the paper does); rows of CANDIDATES.

    A candidate is a cliff iff the cliff test `test` (params `cliffs.test`; protocol §2, each side's own N)
    fires between p_prev and its potential; the cliff token is a cliff by definition. Seeds: request_seed(seed, "candidates",
    trace_id, token_index, candidate_id).
    """
    todo = [r for r in requests if not r["is_cliff_token"]]
    results = _resample_by_problem(
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


# --- the random-position control of Cliff-DPO -------------------------------------------------------

def control_requests(traces: list[dict], cliffs: list[dict], pairs_per_cliff: dict[tuple[str, int], int],
                     token_stats: pa.Table, all_cliff_keys: set[tuple[str, int]], top_k: int, seed: int) -> list[dict]:
    """For every cliff with m > 0 Cliff-DPO pairs, one position j of the same trace that is no cliff,
    drawn uniformly, with m alternatives drawn uniformly from its top-k (never the trace's token):
    the control pairs prefer each alternative over the trace's token at j, as many as at the cliff.

    Requests (one per prefix): `prev` (response_ids[:j]), `token` (response_ids[:j+1]) and each
    alternative c (response_ids[:j] + [c]). Draws are seeded by (seed, "control", trace_id, cliff).
    A trace whose positions are all cliffs or lack m alternatives gives no control for that cliff.
    """
    trace_ids = pa.array(sorted({t for t, _ in pairs_per_cliff}), pa.string())
    stats = token_stats.filter(pc.is_in(token_stats["trace_id"], value_set=trace_ids)).select(
        ["trace_id", "token_index", "token_id", "logprob", "top_ids", "top_probs"])
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
                    if (trace_id, j) not in all_cliff_keys and (trace_id, j) not in taken and len(alternatives(j)) >= m]
        if not eligible:
            log.warning("control: no eligible position in %s for the cliff at %d (%d pairs)", trace_id, i, m)
            continue
        rng = np.random.default_rng(request_seed(seed, "control", trace_id, i))
        j = int(eligible[int(rng.integers(len(eligible)))])
        taken.add((trace_id, j))
        alts = alternatives(j)
        chosen = sorted(int(x) for x in rng.choice(len(alts), size=m, replace=False))
        st = stats_by_key[(trace_id, j)]
        base = {"trace_id": trace_id, "problem_id": trace["problem_id"], "token_index": j, "cliff_index": i}
        own_rank = next((r for r, cid in enumerate(st["top_ids"][:top_k], 1) if cid == st["token_id"]), None)
        requests.append({**base, "kind": "prev", "candidate_id": None, "candidate_rank": None, "prob": None})
        requests.append({**base, "kind": "token", "candidate_id": int(st["token_id"]), "candidate_rank": own_rank,
                         "prob": math.exp(st["logprob"])})
        requests += [{**base, "kind": "alternative", "candidate_id": int(alts[x][1]), "candidate_rank": alts[x][0],
                      "prob": float(alts[x][2])} for x in chosen]
    return requests


def run_control(requests: list[dict], traces: list[dict], golds: dict[str, Gold], backend: Backend, tokenizer,
                n: int, sampling: Sampling, seed: int, checkpoint: UnitCheckpoint | None = None) -> list[dict]:
    """N rollouts per control request; rows of CONTROL (one per trace token / alternative, each with the
    position's p_prev). Seeds: request_seed(seed, "control", trace_id, token_index, kind, candidate_id)."""
    def prefix(r: dict, response) -> list[int]:
        j = r["token_index"]
        return list(response[:j]) + ([] if r["kind"] == "prev" else [r["candidate_id"]])

    results = _resample_by_problem(
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
                     # the prev rollouts are counted once, on the trace token's row
                     "num_generated_tokens": res.num_generated_tokens
                     + (before.num_generated_tokens if r["kind"] == "token" else 0)})
    return rows
