"""Risk models: P(the cliff test fires at a token) from features of the token that need no rollout, fit so
that no problem has positions on both sides of a split.

    X = feature_matrix(labels, cfg.features)                      # (n, f)
    fold = problem_folds(labels["problem_id"].to_pylist(), cfg.folds, cfg.seed)
    risk = out_of_fold(lambda a, b: fit_logistic(a, b, cfg.features, cfg.inverse_l2), X, y, fold)

A model is fit on standardised features (each feature's mean and SD over the training rows), so its
coefficients compare across features. A training set with one class only (no cliff, or nothing but cliffs)
gets the constant model at the smoothed rate (k + 1/2) / (n + 1): there is nothing to separate.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cliffdata.config.risk import BoostingConfig


@dataclass(frozen=True)
class LinearRisk:
    """A logistic model on standardised features: P = σ(intercept + Σ_j coef_j · (x_j − mean_j) / scale_j)."""
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n,) risks of (n, f) features in `features` order."""
        z = (np.asarray(X, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(self.intercept + z @ np.asarray(self.coef))

    def to_dict(self) -> dict:
        """JSON-able: the registered model's config and metrics/risk.json's coefficients."""
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "coef": list(self.coef), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict) -> LinearRisk:
        return cls(tuple(d["features"]), tuple(d["mean"]), tuple(d["scale"]), tuple(d["coef"]), float(d["intercept"]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))        # no overflow at large |x|


def _constant_logit(y: np.ndarray) -> float:
    rate = (float(np.sum(y)) + 0.5) / (len(y) + 1.0)
    return math.log(rate / (1.0 - rate))


def fit_logistic(X: np.ndarray, y: np.ndarray, features: Sequence[str], inverse_l2: float) -> LinearRisk:
    """L2-penalised logistic regression (scikit-learn, C = `inverse_l2`) on the standardised columns of X."""
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    if X.shape[1] != len(features):
        raise ValueError(f"{X.shape[1]} feature columns for {len(features)} feature names {list(features)}")
    mean = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
    scale = X.std(axis=0) if len(X) else np.ones(X.shape[1])
    scale = np.where(scale > 0, scale, 1.0)                  # a constant column carries nothing: coefficient ~0
    if y.all() or not y.any():
        return LinearRisk(tuple(features), tuple(mean.tolist()), tuple(scale.tolist()), (0.0,) * len(features),
                          _constant_logit(y))
    fit = LogisticRegression(C=inverse_l2, max_iter=1000).fit((X - mean) / scale, y)
    return LinearRisk(tuple(features), tuple(mean.tolist()), tuple(scale.tolist()),
                      tuple(float(c) for c in fit.coef_[0]), float(fit.intercept_[0]))


@dataclass
class BoostedRisk:
    """A histogram gradient-boosted classifier (scikit-learn), or the constant rate where one class is all
    the training set holds."""
    classifier: object | None
    constant: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.classifier is None:
            return np.full(len(X), self.constant)
        return self.classifier.predict_proba(np.asarray(X, dtype=np.float64))[:, 1]


def fit_boosting(X: np.ndarray, y: np.ndarray, cfg: BoostingConfig, seed: int) -> BoostedRisk:
    """`risk.boosting`'s classifier on the raw features (trees need no scaling); no early stopping, so the fit
    is the same for a seed whatever the size."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return BoostedRisk(None, float(_sigmoid(_constant_logit(y))))
    clf = HistGradientBoostingClassifier(max_iter=cfg.max_iter, learning_rate=cfg.learning_rate,
                                         max_leaf_nodes=cfg.max_leaf_nodes, early_stopping=False, random_state=seed)
    return BoostedRisk(clf.fit(np.asarray(X, dtype=np.float64), y), 0.0)


def feature_matrix(labels: pa.Table, features: Sequence[str]) -> np.ndarray:
    """(n, f) float64 of risk_labels columns (booleans as 0 / 1, nulls as NaN)."""
    columns = []
    for name in features:
        column = labels[name].combine_chunks() if labels.num_rows else pa.array([], labels.schema.field(name).type)
        if pa.types.is_boolean(column.type):
            column = column.cast(pa.float64())
        columns.append(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    return np.column_stack(columns) if columns else np.zeros((labels.num_rows, 0))


def hidden_matrix(labels: pa.Table) -> np.ndarray | None:
    """(n, dim) float64 of the projected hidden states; None when a row has none (risk_labels.hidden off)."""
    column = labels["hidden_projection"].combine_chunks() if labels.num_rows else None
    if column is None or column.null_count:
        return None
    lengths = set(column.value_lengths().to_numpy(zero_copy_only=False).tolist())
    if len(lengths) != 1:
        raise ValueError(f"risk_labels: hidden projections of several lengths {sorted(lengths)}")
    dim = lengths.pop()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)


def problem_folds(problem_ids: Sequence[str], folds: int, seed: int) -> tuple[np.ndarray, int]:
    """(fold of each row, number of folds): the distinct problems in a random order drawn from `seed`, dealt
    round-robin into min(folds, number of problems) folds, so every problem's rows share one fold and the
    folds hold as many problems as they can (rows are not balanced: problems differ in length)."""
    problems, code = np.unique(np.asarray(problem_ids, dtype=object), return_inverse=True)
    k = min(folds, len(problems))
    order = np.random.default_rng(seed).permutation(len(problems))
    fold_of_problem = np.empty(len(problems), dtype=np.int64)
    fold_of_problem[order] = np.arange(len(problems)) % max(k, 1)
    return fold_of_problem[code.reshape(-1)].astype(np.int64), k


def out_of_fold(fit: Callable[[np.ndarray, np.ndarray], object], X: np.ndarray, y: np.ndarray,
                fold: np.ndarray) -> np.ndarray:
    """Each row's risk from the model fit on every other fold (`fit(X, y)` returns an object with
    `predict(X)`): every prediction is for a problem the model never saw."""
    out = np.full(len(y), np.nan)
    for f in np.unique(fold):
        test = fold == f
        model = fit(X[~test], y[~test])
        out[test] = model.predict(X[test])
    return out
