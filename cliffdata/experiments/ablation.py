"""The deletion ablation (protocol §5, RQ1): continuations from `del` (`response_ids[:i]`, the cliff token
removed), `keep` (`response_ids[:i+1]`), and on failed traces `critical_del` (truncated before the critical
token) and `random_del` (`response_ids[:j]`, j uniform in [0, T), seeded per trace); pass@k curves of them."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from cliffdata.analysis import duck
from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.cliffs.stats import pass_at_k
from cliffdata.experiments.resample import resample_by_problem
from cliffdata.generate.sampling import Gold


ARMS = ("del", "keep", "critical_del", "random_del")
COMPARATORS = ("critical_del", "random_del")     # failed traces with a cliff, one request per trace
SCOPES = ("all", "first")                        # every cliff | the first cliff of each trace
CORRECTNESS = ("correct", "failed")              # ungradable traces are kept in data, not summarised


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
    results = resample_by_problem(
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
