"""Can a cliff be predicted before any rollout? The risk models' out-of-fold predictions on held-out problems
against each single feature alone, as a JSON-able dict (metrics/risk.json) and a Markdown summary
(metrics/risk.md). docs/risk.md.

    metrics, model = evaluate_risk(schema.read("risk_labels", path), params.risk)

The population is the feasible tested positions (`feasible`: the token can carry a drop the test
detects), with every feature the models and baselines read known. The target is `is_cliff`. Scorers:

- `logistic`: the L2 logistic regression on `risk.features`;
- `boosting`: gradient boosting on the same features (`risk.boosting`);
- `probe`: a logistic regression on the projected hidden state alone, where the labels carry it
  (`risk_labels.hidden`);
- each `risk.baselines` feature alone, signed so that higher means riskier (config.risk.FEATURE_DIRECTIONS).

The models' scores are out of fold: `risk.folds` folds of problems, each row predicted by the model fit on
the other folds. Every interval resamples problems with replacement (the same draws for every scorer, so
differences between scorers are paired). `model` is the logistic regression fit on the whole population:
the one registered and whose coefficients metrics/risk.json shows.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import norm

from cliffdata.config.risk import FEATURE_DIRECTIONS, RiskConfig
from cliffdata.risk.metrics import Ranked, bootstrap, bootstrap_counts, interval, recall_at_budgets, reliability
from cliffdata.risk.model import (LinearRisk, feature_matrix, fit_boosting, fit_logistic, hidden_matrix, out_of_fold,
                                  problem_folds)

NUM_DIGITS = 6
MODELS = ("logistic", "boosting", "probe")


def population(labels: pa.Table, cfg: RiskConfig) -> tuple[pa.Table, dict]:
    """The feasible tested positions with every feature the scorers read, and the counts of what was left out."""
    names = list(dict.fromkeys([*cfg.features, *cfg.baselines]))
    feasible = pc.fill_null(labels["feasible"], False)
    known = feasible
    for name in names:
        known = pc.and_(known, pc.is_valid(labels[name]))
    kept = labels.filter(known)
    cliffs = labels["is_cliff"]
    counts = {"num_positions": labels.num_rows, "num_cliffs": _count(cliffs),
              "num_feasible": _count(feasible), "num_feasible_cliffs": _count(pc.and_(cliffs, feasible)),
              "num_infeasible_cliffs": _count(pc.and_(cliffs, pc.invert(feasible))),
              "num_unknown_feasibility": labels["feasible"].null_count,
              "num_missing_features": _count(feasible) - kept.num_rows}
    return kept, counts


def _count(mask) -> int:
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def evaluate_risk(labels: pa.Table, cfg: RiskConfig) -> tuple[dict, LinearRisk | None]:
    """metrics/risk.json's content (floats rounded, byte-stable for a seed) and the logistic model fit on
    the whole population (None when it holds no position)."""
    rows, counts = population(labels, cfg)
    y = np.asarray(rows["is_cliff"].to_numpy(zero_copy_only=False), dtype=bool) if rows.num_rows else np.zeros(0, bool)
    replicated = (np.asarray(pc.fill_null(rows["replicated"], False).to_numpy(zero_copy_only=False), dtype=bool)
                  & y) if rows.num_rows else np.zeros(0, bool)
    problems = rows["problem_id"].to_pylist()
    group = np.unique(np.asarray(problems, dtype=object), return_inverse=True)[1].reshape(-1).astype(np.int64) \
        if problems else np.zeros(0, np.int64)
    num_problems = int(group.max()) + 1 if len(group) else 0
    fold, num_folds = problem_folds(problems, cfg.folds, cfg.seed)
    X = feature_matrix(rows, cfg.features)
    H = hidden_matrix(rows) if rows.num_rows else None          # the labels' projected hidden states, if any
    scores: dict[str, np.ndarray] = {}
    if num_folds >= 2:
        scores["logistic"] = out_of_fold(lambda a, b: fit_logistic(a, b, cfg.features, cfg.inverse_l2), X, y, fold)
        if cfg.boosting is not None:
            scores["boosting"] = out_of_fold(lambda a, b: fit_boosting(a, b, cfg.boosting, cfg.seed), X, y, fold)
        if H is not None:
            names = [f"hidden_{j}" for j in range(H.shape[1])]
            scores["probe"] = out_of_fold(lambda a, b: fit_logistic(a, b, names, cfg.inverse_l2), H, y, fold)
    for name in cfg.baselines:
        scores[name] = FEATURE_DIRECTIONS[name] * feature_matrix(rows, [name])[:, 0]

    counts_draws = bootstrap_counts(num_problems, cfg.bootstrap_resamples, cfg.seed)
    z = float(norm.ppf(0.5 + cfg.level / 2))
    scorers, draws = {}, {}
    for name, score in scores.items():
        scorers[name], draws[name] = _scorer(score, y, replicated, group, counts_draws, cfg)
        if name in MODELS:
            scorers[name]["reliability"] = reliability(score, y, cfg.reliability_bins, z)
            scorers[name]["brier"] = float(np.mean((score - y) ** 2)) if len(y) else None
    for name in [m for m in MODELS if m in scores]:
        scorers[name]["auroc_minus_baseline"] = {b: _difference(draws[name], draws[b], scorers[name]["auroc"],
                                                               scorers[b]["auroc"], cfg.level) for b in cfg.baselines}
    model = fit_logistic(X, y, cfg.features, cfg.inverse_l2) if rows.num_rows else None
    metrics = {**counts, "num_population": rows.num_rows, "num_population_cliffs": int(y.sum()),
               "num_population_replicated": int(replicated.sum()), "num_problems": num_problems,
               "num_folds": num_folds if num_folds >= 2 else 0, "base_rate": float(y.mean()) if len(y) else None,
               "level": cfg.level, "bootstrap_resamples": cfg.bootstrap_resamples, "budgets": list(cfg.budgets),
               "scorers": scorers, "coefficients": _coefficients(model)}
    return _rounded(metrics), model


def _scorer(score: np.ndarray, y: np.ndarray, replicated: np.ndarray, group: np.ndarray, counts: np.ndarray,
            cfg: RiskConfig) -> tuple[dict, np.ndarray]:
    """One scorer's AUROC and average precision with their intervals, and its recall of all and of replicated
    cliffs at each budget; also its AUROC on every resample (for paired differences)."""
    ranked = Ranked(score) if len(score) else None
    point = {"auroc": ranked.auroc(y) if ranked else None,
             "auprc": ranked.average_precision(y) if ranked else None}
    auroc_draws = (bootstrap(lambda w: ranked.auroc(y, w), group, counts) if ranked
                   else np.full(len(counts), np.nan))
    ap_draws = (bootstrap(lambda w: ranked.average_precision(y, w), group, counts) if ranked
                else np.full(len(counts), np.nan))
    out = {}
    for key, values in (("auroc", auroc_draws), ("auprc", ap_draws)):
        lo, hi = interval(values, cfg.level) if point[key] is not None else (None, None)
        out.update({key: point[key], f"{key}_lo": lo, f"{key}_hi": hi})
    cliffs = recall_at_budgets(score, y, cfg.budgets)
    kept = recall_at_budgets(score, replicated, cfg.budgets)
    out["recall"] = {_budget(b): {"cliffs": cliffs[b], "replicated": kept[b]} for b in cfg.budgets}
    return out, auroc_draws


def _difference(a: np.ndarray, b: np.ndarray, point_a: float | None, point_b: float | None, level: float) -> dict:
    """AUROC(a) − AUROC(b) with its paired percentile interval (the same problems drawn for both)."""
    if point_a is None or point_b is None:
        return {"diff": None, "diff_lo": None, "diff_hi": None}
    lo, hi = interval(a - b, level)
    return {"diff": point_a - point_b, "diff_lo": lo, "diff_hi": hi}


def _budget(b: float) -> str:
    return f"{b:g}"


def _coefficients(model: LinearRisk | None) -> dict | None:
    if model is None:
        return None
    return {"intercept": model.intercept, **dict(zip(model.features, model.coef))}


def _rounded(value):
    if isinstance(value, float):
        return round(value, NUM_DIGITS) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    if isinstance(value, np.generic):
        return _rounded(value.item())
    return value


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_interval(cell: dict, key: str) -> str:
    if cell.get(key) is None:
        return "–"
    return f"{cell[key]:.3f} [{_cell(cell[f'{key}_lo'])}, {_cell(cell[f'{key}_hi'])}]"


def markdown(metrics: dict, model_name: str) -> str:
    """metrics/risk.md: the population, every scorer's AUROC / AUPRC with intervals and its recall at the
    budgets, the models' gains over each baseline, their reliability tables and the coefficients."""
    level = f"{100 * metrics['level']:g}%"
    lines = [f"# Cliff risk before any rollout: {model_name}", "",
             f"{metrics['num_positions']} tested positions, {metrics['num_cliffs']} cliffs; "
             f"{metrics['num_feasible']} feasible positions ({metrics['num_feasible_cliffs']} cliffs, "
             f"{metrics['num_infeasible_cliffs']} cliffs at infeasible tokens). Evaluated on "
             f"{metrics['num_population']} feasible positions with every feature known "
             f"({metrics['num_population_cliffs']} cliffs, {metrics['num_population_replicated']} replicated) of "
             f"{metrics['num_problems']} problems, {metrics['num_folds']} problem folds; base rate "
             f"{_cell(metrics['base_rate'])} (the AUPRC of a random order). Intervals: {level}, "
             f"{metrics['bootstrap_resamples']} resamples of problems.", ""]
    budgets = [_budget(b) for b in metrics["budgets"]]
    lines += ["| scorer | AUROC | AUPRC | " + " | ".join(f"recall@{b} (replicated)" for b in budgets) + " |",
              "|---|---|---|" + "---|" * len(budgets)]
    for name, cell in metrics["scorers"].items():
        recall = [f"{_cell(cell['recall'][b]['cliffs'])} ({_cell(cell['recall'][b]['replicated'])})" for b in budgets]
        lines.append(f"| {name} | {_with_interval(cell, 'auroc')} | {_with_interval(cell, 'auprc')} | "
                     + " | ".join(recall) + " |")
    models = [m for m in MODELS if m in metrics["scorers"]]
    if models:
        baselines = list(metrics["scorers"][models[0]]["auroc_minus_baseline"])
        lines += ["", "AUROC of each model minus each baseline's (paired over the same resamples):", "",
                  "| model | " + " | ".join(baselines) + " |", "|---|" + "---|" * len(baselines)]
        for m in models:
            diffs = metrics["scorers"][m]["auroc_minus_baseline"]
            lines.append(f"| {m} | " + " | ".join(_with_interval(diffs[b], "diff") for b in baselines) + " |")
    for m in models:
        lines += ["", f"Reliability of `{m}` (equal-count bins of predicted risk; Brier "
                      f"{_cell(metrics['scorers'][m]['brier'], 4)}):", "",
                  "| bin | positions | predicted | cliffs | observed | observed interval |", "|---:|---:|---:|---:|---:|---|"]
        for r in metrics["scorers"][m]["reliability"]:
            lines.append(f"| {r['bin']} | {r['num_positions']} | {_cell(r['predicted'], 4)} | {r['num_cliffs']} | "
                         f"{_cell(r['observed'], 4)} | [{_cell(r['observed_lo'], 4)}, {_cell(r['observed_hi'], 4)}] |")
    if metrics["coefficients"]:
        lines += ["", "Coefficients of the logistic model on all problems (standardised features):", "",
                  "| term | coefficient |", "|---|---:|"]
        lines += [f"| {k} | {_cell(v, 4)} |" for k, v in metrics["coefficients"].items()]
    return "\n".join(lines) + "\n"
