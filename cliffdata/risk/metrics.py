"""The risk evaluation's statistics: AUROC and average precision with row weights, the cluster bootstrap
over problems, recall at budgets of positions and the reliability table. numpy only.

Weights make one function serve the point estimate (weights 1) and every bootstrap resample (each row
weighted by the number of times its problem was drawn), so a resample never copies rows.

    ranked = Ranked(risk)
    ranked.auroc(y), ranked.average_precision(y)
    counts = bootstrap_counts(num_problems, 2000, seed)           # (B, G) draws of problems
    values = bootstrap(lambda w: ranked.auroc(y, w), problem_code, counts)
    interval(values, 0.95)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from cliffdata.cliffs.stats import wilson_interval


class Ranked:
    """Scores grouped into their distinct levels once (ties share a level), for weighted AUROC and average
    precision over many weightings."""

    def __init__(self, scores):
        scores = np.asarray(scores, dtype=np.float64)
        if np.isnan(scores).any():
            raise ValueError("scores must not be NaN")
        self.values, self.level = np.unique(scores, return_inverse=True)     # ascending levels
        self.level = self.level.reshape(-1)

    def _by_level(self, labels, weights) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(labels, dtype=bool)
        w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
        size = len(self.values)
        return (np.bincount(self.level, w * y, minlength=size), np.bincount(self.level, w * ~y, minlength=size))

    def auroc(self, labels, weights=None) -> float | None:
        """P(a positive scores above a negative) + ½ P(tie), positives and negatives weighted (Mann-Whitney);
        None without weight on both classes."""
        pos, neg = self._by_level(labels, weights)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos <= 0 or total_neg <= 0:
            return None
        below = np.cumsum(neg) - neg
        return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))

    def average_precision(self, labels, weights=None) -> float | None:
        """Σ over score thresholds, highest first, of (recall gained) × precision at that threshold (ties
        enter together): the area under the precision-recall steps; None without a weighted positive."""
        pos, neg = self._by_level(labels, weights)
        pos, neg = pos[::-1], neg[::-1]
        total = pos.sum()
        if total <= 0:
            return None
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        gain = pos > 0
        return float(np.sum(pos[gain] / total * tp[gain] / (tp[gain] + fp[gain])))


def auroc(scores, labels, weights=None) -> float | None:
    return Ranked(scores).auroc(labels, weights)


def average_precision(scores, labels, weights=None) -> float | None:
    return Ranked(scores).average_precision(labels, weights)


def bootstrap_counts(num_groups: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, num_groups): how often each group (problem) is drawn in each resample of num_groups
    draws with replacement."""
    rng = np.random.default_rng(seed)
    if num_groups == 0:
        return np.zeros((resamples, 0), dtype=np.int64)
    return rng.multinomial(num_groups, np.full(num_groups, 1.0 / num_groups), size=resamples)


def bootstrap(statistic: Callable[[np.ndarray], float | None], groups: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The statistic of each resample: `statistic(weights)` with each row weighted by its group's count
    (`groups`: each row's group code, 0 ... G-1). NaN where the statistic is undefined (None)."""
    groups = np.asarray(groups, dtype=np.int64)
    out = np.full(len(counts), np.nan)
    for b, row in enumerate(counts):
        value = statistic(row[groups].astype(np.float64))
        out[b] = np.nan if value is None else value
    return out


def interval(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """The percentile interval of the defined resamples at `level` (None, None when none is defined)."""
    defined = np.asarray(values, dtype=np.float64)
    defined = defined[~np.isnan(defined)]
    if len(defined) == 0:
        return None, None
    lo, hi = np.quantile(defined, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def recall_at_budgets(scores, targets, budgets: Sequence[float]) -> dict[float, float | None]:
    """For each budget b, the share of targets among the ceil(b · n) highest-scored positions, expected over a
    random order within the tie at the cut (a feature with many ties gets no credit for the order the
    rows happen to be in). None when there is no target."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    n, total = len(scores), int(targets.sum())
    if total == 0:
        return {b: None for b in budgets}
    ranked = Ranked(-scores)                              # ascending levels of -score: the highest score first
    size = np.bincount(ranked.level, minlength=len(ranked.values)).astype(np.float64)
    hits = np.bincount(ranked.level, targets.astype(np.float64), minlength=len(ranked.values))
    through = np.cumsum(size)                             # positions up to and including each level
    hits_before = np.cumsum(hits) - hits
    out = {}
    for b in budgets:
        k = min(n, math.ceil(b * n - 1e-9))
        cut = int(np.searchsorted(through, k, side="left"))     # the level the k-th position falls in
        before = through[cut] - size[cut]
        out[b] = float((hits_before[cut] + (k - before) / size[cut] * hits[cut]) / total) if k else 0.0
    return out


def reliability(predicted, observed, bins: int, z: float) -> list[dict]:
    """Predicted risk against the observed cliff rate in `bins` bins of about equal size (rows ordered by
    predicted risk, ties in row order): per bin its rows, mean prediction, cliffs, observed rate and that
    rate's Wilson interval at `z`. Equal-count bins: with rare cliffs, equal-width bins would put nearly
    every position in the first."""
    predicted = np.asarray(predicted, dtype=np.float64)
    observed = np.asarray(observed, dtype=bool)
    order = np.argsort(predicted, kind="stable")
    rows = []
    for number, part in enumerate(np.array_split(order, min(bins, len(order))) if len(order) else []):
        k, n = int(observed[part].sum()), len(part)
        lo, hi = wilson_interval(k, n, z)
        rows.append({"bin": number, "num_positions": n, "predicted_min": float(predicted[part].min()),
                     "predicted_max": float(predicted[part].max()), "predicted": float(predicted[part].mean()),
                     "num_cliffs": k, "observed": k / n, "observed_lo": lo, "observed_hi": hi})
    return rows
