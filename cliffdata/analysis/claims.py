"""The paper's directions as verdicts (analysis/verdicts.py) on this run's units: metrics/verdicts.json
and the summary's verdict table.

    units = claim_units(con, include_empty_prefix)    # verdict_cliffs.sql, verdict_traces.sql, dpo_eval
    out = directions(units, dpo_pairs_metrics, seeds, cfg)
    out["main"]                                       # [Verdict]: occurrence, del > keep, CPM order, Cliff-DPO
    out["cliff_sets"]["replicated"]                   # RQ1 and CPM again on each cliff set, by the same rules

Units: RQ1's del − keep difference is averaged within a problem (a problem's traces and cliffs are not
independent), occurrence counts traces, the CPM comparison takes cliffs, the Cliff-DPO claims take
seeds (each seed's accuracy difference; the per-problem paired test of one seed is shown beside it
but does not decide). The paper's effect sizes come from protocol §8; where the paper gives none on
the scale a test uses, the units needed are computed at this run's own effect and say so.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

import duckdb
import numpy as np

from cliffdata.analysis import duck
from cliffdata.analysis.verdicts import (UNDECIDED, Verdict, count_verdict, group_verdict, not_applicable,
                                         paired_verdict, seed_verdict)
from cliffdata.config.analysis import VerdictsConfig

# protocol §8, on the scale each test uses
PAPER_EFFECTS = {
    # share of traces with a cliff, failed vs correct, for the paper's smallest model (Qwen3-0.6B)
    "occurrence": ((0.321, 0.162), "paper, Qwen3-0.6B: 32.1% vs 16.2% of traces"),
    # Cliff-DPO: the best gain over the base model
    "dpo_gain": (0.066, "paper: up to +6.6 points"),
}
CLIFF_SETS = ("all", "feasible", "replicated")


def claim_units(con: duckdb.DuckDBPyConnection, include_empty_prefix: bool) -> dict[str, list[dict]]:
    """The rows the verdicts resample, from the views present: per cliff (verdict_cliffs.sql), per graded
    trace (verdict_traces.sql; `cliffs.include_empty_prefix` as in the occurrence table), per eval
    answer (dpo_eval)."""
    present = duck.views(con)
    cliffs = (duck.run_sql_file(con, "verdict_cliffs", {}).to_pylist()
              if {"cliffs", "replicate", "ablation", "candidates"} <= present else [])
    traces = (duck.run_sql_file(con, "verdict_traces", {"include_empty_prefix": include_empty_prefix})
              .to_pylist() if {"cliffs", "trace_cliffs"} <= present else [])
    answers = (con.sql("select model, problem_id, coalesce(is_correct, false) as is_correct from dpo_eval "
                       "order by model, problem_id").to_arrow_table().to_pylist() if "dpo_eval" in present else [])
    return {"cliffs": cliffs, "traces": traces, "answers": answers}


def _in_set(row: dict, cliff_set: str) -> bool:
    return cliff_set == "all" or (cliff_set == "feasible" and bool(row["feasible"])) or \
        (cliff_set == "replicated" and bool(row["replicated"]))


def _counts(rows: list[dict]) -> dict:
    return {"cliffs": len(rows), "traces": len({r["trace_id"] for r in rows}),
            "problems": len({r["problem_id"] for r in rows})}


def _problem_means(rows: list[dict], difference) -> list[float]:
    """One unit per problem: the mean of `difference(row)` over the problem's rows, problems in id order."""
    by_problem: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(difference(r))
    return [float(np.mean(v)) for _, v in sorted(by_problem.items())]


def del_keep(rows: list[dict], cfg: VerdictsConfig) -> Verdict:
    """RQ1 on failed traces: Cliff-del pass@1 above Cliff-keep pass@1, one difference per problem."""
    rows = [r for r in rows if r["is_correct"] is False and r["del_pass_at_1"] is not None
            and r["keep_pass_at_1"] is not None]
    units = _problem_means(rows, lambda r: r["del_pass_at_1"] - r["keep_pass_at_1"])
    return paired_verdict("Cliff-del pass@1 > Cliff-keep pass@1 (failed traces)", units, cfg, bounds=(-1.0, 1.0),
                          unit="problem", n=_counts(rows), effect=float(np.mean(units)) if units else None,
                          effect_source="this run's effect; the paper gives pass@64 only")


def del_keep_matched(rows: list[dict], cfg: VerdictsConfig, balance: dict | None = None) -> Verdict:
    """RQ1 against the matched control: a cliff's del − keep difference above the same difference at its
    matched non-cliff position (experiments/matching.py), one difference per problem of the cliff. With
    `balance` (metrics/ablation.json `matched_control`) a covariate whose |SMD| reaches `cfg.max_smd`, or
    has none, leaves the verdict undecided whatever the test says: the controls are not like the cliffs."""
    claim = "Cliff-del − keep > matched-del − keep (failed traces)"
    rows = [r for r in rows if r["is_correct"] is False and None not in (
        r["del_pass_at_1"], r["keep_pass_at_1"], r.get("matched_del_pass_at_1"), r.get("matched_keep_pass_at_1"))]
    if not rows:
        return not_applicable(claim, "no cliff with a matched control (ablation.matched_control)")
    units = _problem_means(rows, lambda r: (r["del_pass_at_1"] - r["keep_pass_at_1"])
                           - (r["matched_del_pass_at_1"] - r["matched_keep_pass_at_1"]))
    v = paired_verdict(claim, units, cfg, bounds=(-2.0, 2.0), unit="problem", n=_counts(rows),
                       effect=float(np.mean(units)), effect_source="this run's effect; the paper has no matched arm")
    off = sorted(k for k, c in ((balance or {}).get("covariates") or {}).items()
                 if c["smd"] is None or abs(c["smd"]) >= cfg.max_smd)
    if off:
        v = dataclasses.replace(v, verdict=UNDECIDED, reason=f"matched controls unbalanced (|SMD| >= {cfg.max_smd} or "
                                                             f"undefined: {', '.join(off)})")
    return v


def cpm_order(rows: list[dict], cfg: VerdictsConfig) -> list[Verdict]:
    """RQ2/3: mean CPM deterministic > uncertain > sampled-off, each leg on its own, read on the CPM over
    alternatives (the cliff token's own probability left out: it defines the category, so the paper's
    CPM partly restates it). A leg without cliffs on one side, or whose deterministic cliffs are all
    infeasible by the sampler identity, is n/a."""
    rows = [r for r in rows if r["cpm_alternatives"] is not None]
    by = {c: [r for r in rows if r["category"] == c] for c in ("deterministic", "uncertain", "sampled_off")}
    source = "this run's effect; the paper gives CPM with the cliff token only"
    out = []
    claim = "CPM over alternatives: deterministic > uncertain"
    if not by["deterministic"]:
        out.append(not_applicable(claim, "no deterministic cliffs"))
    elif not any(r["feasible"] for r in by["deterministic"]):
        out.append(not_applicable(claim, "deterministic cliffs infeasible by the sampler identity (no detectable "
                                         "drop at their tokens)", _counts(by["deterministic"])))
    else:
        a, b = [r["cpm_alternatives"] for r in by["deterministic"]], [r["cpm_alternatives"] for r in by["uncertain"]]
        out.append(group_verdict(claim, a, b, cfg, bounds=(-1.0, 1.0), unit="cliff",
                                 n=_counts(by["deterministic"] + by["uncertain"]),
                                 effect=float(np.mean(a) - np.mean(b)) if a and b else None, effect_source=source))
    a, b = [r["cpm_alternatives"] for r in by["uncertain"]], [r["cpm_alternatives"] for r in by["sampled_off"]]
    out.append(group_verdict("CPM over alternatives: uncertain > sampled-off", a, b, cfg, bounds=(-1.0, 1.0),
                             unit="cliff", n=_counts(by["uncertain"] + by["sampled_off"]),
                             effect=float(np.mean(a) - np.mean(b)) if a and b else None, effect_source=source))
    return out


def occurrence(traces: list[dict], cfg: VerdictsConfig) -> Verdict:
    """RQ1: failed traces hold a cliff more often than correct ones (traces as units)."""
    failed = [t for t in traces if t["is_correct"] is False]
    correct = [t for t in traces if t["is_correct"] is True]
    (p1, p2), source = PAPER_EFFECTS["occurrence"]
    return count_verdict("share of traces with a cliff: failed > correct",
                         sum(t["has_cliff"] for t in failed), len(failed), sum(t["has_cliff"] for t in correct),
                         len(correct), cfg, unit="trace",
                         n={"traces": len(traces), "problems": len({t["problem_id"] for t in traces}),
                            "failed": len(failed), "correct": len(correct)},
                         effect=(p1, p2), effect_source=source)


def _per_problem(answers: list[dict]) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = defaultdict(dict)
    for a in answers:
        out[a["model"]][a["problem_id"]] = bool(a["is_correct"])
    return out


def dpo_claim(claim: str, better: str, worse: str, answers: dict[str, dict[str, bool]],
              seeds: list[dict[str, float]], cfg: VerdictsConfig, seed_level: str = "") -> Verdict:
    """Adapter `better` above `worse` in eval accuracy: decided over seeds (each seed's accuracy
    difference); this run's per-problem paired test is attached as detail."""
    per_seed = [s[better] - s[worse] for s in seeds if better in s and worse in s]
    effect, source = PAPER_EFFECTS["dpo_gain"]
    problems = sorted(set(answers.get(better, {})) & set(answers.get(worse, {})))
    v = seed_verdict(claim, per_seed, cfg, n={"eval_problems": len(problems)}, effect=effect, effect_source=source,
                     level=seed_level)
    if problems:
        diffs = [float(answers[better][p]) - float(answers[worse][p]) for p in problems]
        one = paired_verdict(claim, diffs, cfg, bounds=(-1.0, 1.0), unit="eval problem",
                             n={"eval_problems": len(problems)}, effect=effect, effect_source=source)
        v = dataclasses.replace(v, detail={"one_seed_paired": one.record()})
    return v


def dpo_claims(answers: list[dict], variant_pairs: dict[str, int], seeds: list[dict[str, float]],
               cfg: VerdictsConfig, seed_level: str = "") -> list[Verdict]:
    """Cliff-DPO: uncertain + sampled-off training beats the base model and deterministic-only training;
    cliff pairs beat the random-position control. A variant trained on no pairs is n/a, never the base."""
    by_model = _per_problem(answers)
    out = []
    for claim, better, worse in (("Cliff-DPO uncertain + sampled-off > base", "uncertain_sampled_off", "base"),
                                 ("Cliff-DPO uncertain + sampled-off > deterministic", "uncertain_sampled_off",
                                  "deterministic"),
                                 ("Cliff-DPO at cliffs > at random positions (control)", "all", "random")):
        missing = [v for v in (better, worse) if v != "base" and not variant_pairs.get(v)]
        if missing:
            out.append(not_applicable(claim, f"no {missing[0]} pairs"))
        elif better not in by_model or worse not in by_model:
            out.append(not_applicable(claim, f"{better if better not in by_model else worse} was not evaluated"))
        else:
            out.append(dpo_claim(claim, better, worse, by_model, seeds, cfg, seed_level))
    return out


def directions(units: dict[str, list[dict]], variant_pairs: dict[str, int], seeds: list[dict[str, float]],
               cfg: VerdictsConfig, balance: dict | None = None, seed_level: str = "") -> dict:
    """Every direction's verdict: `main` (the summary's table) and `cliff_sets` (RQ1 and the CPM order on
    all / feasible / replicated cliffs, by the same rules); `balance`: the matched controls' covariate
    balance (metrics/ablation.json `matched_control`); `seed_level`: what the `seeds` varied."""
    main = [occurrence(units["traces"], cfg)] if units["traces"] else []
    if units["cliffs"]:
        main += [del_keep(units["cliffs"], cfg), del_keep_matched(units["cliffs"], cfg, balance),
                 *cpm_order(units["cliffs"], cfg)]
    if units["answers"]:
        main += dpo_claims(units["answers"], variant_pairs, seeds, cfg, seed_level)
    sets = {}
    for name in CLIFF_SETS:
        rows = [r for r in units["cliffs"] if _in_set(r, name)]
        sets[name] = [del_keep(rows, cfg), *cpm_order(rows, cfg)]
    return {"main": main, "cliff_sets": sets}


def records(out: dict) -> dict:
    """metrics/verdicts.json: the verdicts as plain records."""
    return {"main": [v.record() for v in out["main"]],
            "cliff_sets": {k: [v.record() for v in vs] for k, vs in out["cliff_sets"].items()}}
