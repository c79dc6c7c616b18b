"""The deletion ablation (protocol §5, RQ1): continuations from `del` (`response_ids[:i]`, the cliff token
removed), `keep` (`response_ids[:i+1]`), and on failed traces `critical_del` (truncated before the critical
token) and `random_del` (`response_ids[:j]`, j uniform in [0, T), seeded per trace); pass@k curves of them.

Beyond the paper (`ablation.matched_control`): each cliff on a failed trace gets a matched control
position (experiments/matching.py: same greedy flag, nearest in relative position and sampler probability,
a fresh p̂[j−1] within a rollout step of the cliff's fresh p̂[i−1]; `choose_controls`) with its own
`matched_del` and `matched_keep` arms, so that the cliff's del − keep difference can be set against the
same difference where no cliff is. The control may sit in any trace, including the traces sampled for
the pool (`sample_control_traces`); its rows carry the cliff's trace correctness.

Re-emission: a del continuation may sample the cliff token again at its first step (`num_reemitted` on
the del row). The del continuations that do not are draws with the cliff token forbidden at that step
(rejection sampling: the rest of the sampler renormalised), so the `del_resilient` arm costs no rollout:
its row holds those continuations (N minus the re-emissions; no row when every one re-emitted) and no
generated tokens of its own. pass@k is not drawn for it (its N varies); `resilience` reports pass@1."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from cliffdata.analysis import duck
from cliffdata.backends import Backend, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.cliffs.stats import pass_at_k
from cliffdata.config.experiments import ControlPoolConfig
from cliffdata.experiments.matching import match_controls, matched_rows, nearest_candidates, next_estimates
from cliffdata.experiments.resample import resample_by_problem
from cliffdata.generate.sampling import Gold, sample_traces


ARMS = ("del", "keep", "critical_del", "random_del", "matched_del", "matched_keep")
COMPARATORS = ("critical_del", "random_del")     # failed traces with a cliff, one request per trace
MATCHED = ("matched_del", "matched_keep")        # one matched control position per cliff of a failed trace
RESILIENT = "del_resilient"                      # del continuations that did not re-emit the cliff token
SCOPES = ("all", "first")                        # every cliff | the first cliff of each trace
CORRECTNESS = ("correct", "failed")              # ungradable traces are kept in data, not summarised


def _ablation_request(trace: dict, token_index: int, arm: str, is_first: bool | None, prefix_length: int,
                      cliff: dict | None = None) -> dict:
    # a matched arm counts in its cliff's scope: the cliff's trace correctness, whatever trace the control sits in
    return {"trace_id": trace["trace_id"], "problem_id": trace["problem_id"], "token_index": token_index, "arm": arm,
            "is_first": is_first, "is_correct": trace["is_correct"] if cliff is None else cliff["is_correct"],
            "prefix_length": prefix_length,
            "cliff_trace_id": None if cliff is None else cliff["trace_id"],
            "cliff_index": None if cliff is None else cliff["token_index"]}


def ablation_requests(traces: list[dict], cliffs: list[dict], trace_cliffs: list[dict], seed: int,
                      matched: Sequence[tuple[dict, dict | None]] = (), pool_traces: Sequence[dict] = ()) -> list[dict]:
    """One request per (trace_id, token_index, arm): del and keep at every cliff; on failed traces with
    at least one cliff also critical_del (when the trace has a critical token) and random_del; and for
    every (cliff, control) of `matched` (matching.match_controls) matched_del and matched_keep at the
    control (in `traces` or `pool_traces`), carrying the cliff (`cliff_trace_id`, `cliff_index`), its
    `is_first` and its trace correctness.

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
    controls_in = {**by_trace, **{t["trace_id"]: t for t in pool_traces}}
    for cliff, control in matched:
        if control is None:
            continue
        trace, j = controls_in[control["trace_id"]], control["token_index"]
        requests.append(_ablation_request(trace, j, "matched_del", cliff["is_first"], j, cliff))
        requests.append(_ablation_request(trace, j, "matched_keep", cliff["is_first"], j + 1, cliff))
    return requests


def sample_control_traces(problems: list[dict], prompts: dict, tokenizer, backend: Backend, sampling: Sampling,
                          num_samples: int, seed: int, checkpoint: UnitCheckpoint | None = None) -> list[dict]:
    """`num_samples` traces per problem for the matched controls' pool (rows of `schema.TRACES`), drawn with
    the seed stream request_seed(seed, "control_pool") and named `<problem_id>#control<j>`, so that they
    never share an id or a draw with the sampled traces."""
    rows = sample_traces(problems, prompts, tokenizer, backend, sampling, num_samples,
                         request_seed(seed, "control_pool"), checkpoint=checkpoint, tag="control_pool",
                         desc="control pool")
    return [{**r, "trace_id": f"{r['problem_id']}#control{r['sample_index']}"} for r in rows]


def choose_controls(cliffs: list[dict], pool: list[dict], traces: list[dict], golds: dict[str, Gold],
                    backend: Backend, tokenizer, cfg: ControlPoolConfig, sampling: Sampling, seed: int,
                    checkpoint: UnitCheckpoint | None = None) -> tuple[list[tuple[dict, dict | None]], list[dict]]:
    """The matched control of each cliff (`cliffs` with their covariates, matching.cliff_covariates) from
    `pool` (matching.control_pool, over `traces`). Each cliff's `cfg.max_estimates` nearest candidates are
    estimated in rounds of `cfg.estimates_per_round`, nearest first, while it has no control: a fresh
    p̂[j−1] from N = the cliff's num_rollouts_prev continuations of `response_ids[:j]` under `sampling`
    (seeds request_seed(seed, "control_estimate", trace_id, j, N)); matching.match_controls picks.
    The pairs, and the rows of `schema.MATCHED_CONTROLS`."""
    nearest = nearest_candidates(cliffs, pool, cfg.max_estimates)
    estimates: dict[tuple[str, int, int], tuple[int, int]] = {}
    pairs = match_controls(cliffs, nearest, estimates, seed)
    for round_ in range(-(-cfg.max_estimates // cfg.estimates_per_round)):
        wanted = next_estimates(pairs, nearest, estimates, cfg.estimates_per_round)
        if not wanted:
            break
        for n, requests in wanted.items():
            results = resample_by_problem(
                requests, traces, golds, backend, tokenizer, n, sampling,
                prefix_of=lambda r, response: list(response[:r["token_index"]]),
                seed_of=lambda r, n=n: request_seed(seed, "control_estimate", r["trace_id"], r["token_index"], n),
                desc=f"control estimates {round_ + 1}", checkpoint=checkpoint)
            for r, res in zip(requests, results):
                estimates[(r["trace_id"], r["token_index"], n)] = (res.num_correct, res.num_rollouts)
        pairs = match_controls(cliffs, nearest, estimates, seed)
    return pairs, matched_rows(cliffs, nearest, estimates, pairs)


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
       desc="ablation", checkpoint=checkpoint,
       watch_of=lambda r, response: int(response[r["token_index"]]) if r["arm"] == "del" else None)
    rows = []
    for r, res in zip(requests, results):
        row = {"trace_id": r["trace_id"], "token_index": r["token_index"], "arm": r["arm"], "is_first": r["is_first"],
               "is_correct": r["is_correct"], "prefix_length": r["prefix_length"],
               "cliff_trace_id": r["cliff_trace_id"], "cliff_index": r["cliff_index"], "num_rollouts": res.num_rollouts,
               "num_correct": res.num_correct, "potential": res.num_correct / res.num_rollouts,
               "num_reemitted": res.num_watched if r["arm"] == "del" else None,
               "num_generated_tokens": res.num_generated_tokens}
        rows.append(row)
        kept = res.num_rollouts - res.num_watched
        if r["arm"] == "del" and kept > 0:
            correct = res.num_correct - res.num_watched_correct
            rows.append({**row, "arm": RESILIENT, "num_rollouts": kept, "num_correct": correct,
                         "potential": correct / kept, "num_reemitted": None, "num_generated_tokens": 0})
    return rows


def resilience(rows: list[dict]) -> dict:
    """metrics/ablation.json `resilience`, per trace correctness (all cliffs): how often del continuations
    re-emit the cliff token, and pass@1 (mean potential over cliffs) of del, del_resilient and keep side
    by side, over the cliffs that have all three."""
    by_cliff: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["arm"] in ("del", "keep", RESILIENT) and r["is_correct"] is not None:
            by_cliff[(r["trace_id"], r["token_index"])][r["arm"]] = r
    out = {}
    for correctness in CORRECTNESS:
        cells = [arms for arms in by_cliff.values() if "del" in arms
                 and ("correct" if arms["del"]["is_correct"] else "failed") == correctness]
        if not cells:
            continue
        conts = sum(a["del"]["num_rollouts"] for a in cells)
        again = sum(a["del"]["num_reemitted"] for a in cells)
        full = [a for a in cells if RESILIENT in a and "keep" in a]
        mean = (lambda arm: round(float(np.mean([a[arm]["potential"] for a in full])), duck.NUM_DIGITS)
                if full else None)
        out[correctness] = {"num_cliffs": len(cells), "num_del_continuations": conts, "num_reemitted": again,
                            "reemitted_share": round(again / conts, duck.NUM_DIGITS),
                            "num_cliffs_with_resilient": len(full), "del_pass_at_1": mean("del"),
                            "del_resilient_pass_at_1": mean(RESILIENT), "keep_pass_at_1": mean("keep")}
    return out


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
