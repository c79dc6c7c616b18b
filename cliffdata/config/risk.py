"""`risk_labels` and `risk`: cliff risk before any rollout. `risk_labels` says which features the labels
carry beyond token_stats (the projected hidden state); `risk` which of them the models read, the problem
folds that keep a problem on one side of every split, and the evaluation's budgets, intervals and bins
(docs/risk.md). No field has a default: params.yaml is the only definition."""
from __future__ import annotations

from dataclasses import dataclass

from cliffdata.config.validate import check, check_range

# Every feature a risk model may use (columns of the risk_labels dataset, none needing a rollout), with the
# direction in which it scores risk when it stands alone as a baseline: +1 higher is riskier, -1 lower is.
FEATURE_DIRECTIONS: dict[str, int] = {
    "max_drop": +1,                    # 1 - pi_s(token): the largest true drop the token can carry
    "sampler_prob": -1,                # pi_s(token) under rollouts.sampling
    "greedy_sampler_prob": -1,         # pi_s(greedy token): how sure the sampler is of its own first choice
    "logprob": -1,                     # log p(token), T = 1
    "entropy": +1,                     # top-20 entropy
    "entropy_full": +1,                # full-vocabulary entropy
    "rank": +1,                        # tie-aware rank of the token (21: outside the top-20)
    "is_greedy": -1,
    "top_prob": -1,                    # p(greedy token), T = 1
    "margin": -1,                      # p(first) - p(second), T = 1
    "relative_position": +1,           # token_index / num_tokens (later: riskier, by convention only)
}


@dataclass(frozen=True, kw_only=True)
class HiddenConfig:
    """`risk_labels.hidden`: the model's hidden state at each tested token (a teacher-forced pass of models/base),
    cut down to `dim` numbers by a fixed Gaussian projection drawn from `seed`. `layer` indexes the
    model's hidden states: 0 is the embeddings, L (the number of layers) the last layer's output."""
    layer: int
    dim: int
    seed: int

    def __post_init__(self):
        check_range("layer", self.layer, 0)
        check_range("dim", self.dim, 1)
        check_range("seed", self.seed, 0)


@dataclass(frozen=True, kw_only=True)
class RiskLabelsConfig:
    """`risk_labels`: the projected hidden state at every tested token (`hidden`; null: none, and the risk
    stage has no probe)."""
    hidden: HiddenConfig | None


@dataclass(frozen=True, kw_only=True)
class BoostingConfig:
    """`risk.boosting`: a histogram gradient-boosted classifier on the same features (scikit-learn)."""
    max_iter: int
    learning_rate: float
    max_leaf_nodes: int

    def __post_init__(self):
        check_range("max_iter", self.max_iter, 1)
        check_range("learning_rate", self.learning_rate, 0, lo_open=True)
        check_range("max_leaf_nodes", self.max_leaf_nodes, 2)


@dataclass(frozen=True, kw_only=True)
class RiskConfig:
    """`risk`: the features of the logistic model (and of `boosting`), the single features scored alone
    against it (`baselines`), `folds` problem folds drawn from `seed` (which also seeds the bootstrap and the
    boosting), the L2 penalty's inverse strength `inverse_l2` (scikit-learn's C), `bootstrap_resamples`
    resamples of problems for intervals at `level`, the `budgets` (shares of the feasible tested positions,
    highest risk first) the recall is read at, and `reliability_bins` equal-count bins of the predicted
    risk. A linear probe on the hidden state runs where the labels carry it (`risk_labels.hidden`)."""
    features: tuple[str, ...]
    baselines: tuple[str, ...]
    folds: int
    seed: int
    inverse_l2: float
    boosting: BoostingConfig | None
    bootstrap_resamples: int
    level: float
    budgets: tuple[float, ...]
    reliability_bins: int

    def __post_init__(self):
        known = sorted(FEATURE_DIRECTIONS)
        for key in ("features", "baselines"):
            names = getattr(self, key)
            unknown = [n for n in names if n not in FEATURE_DIRECTIONS]
            check(not unknown, f"risk.{key}: unknown features {unknown} (known: {known})")
            check(len(set(names)) == len(names), f"risk.{key} names a feature twice, got {list(names)}")
        check(len(self.features) > 0, "risk.features must name at least one feature, got []")
        check_range("risk.folds", self.folds, 2)
        check_range("risk.seed", self.seed, 0)
        check_range("risk.inverse_l2", self.inverse_l2, 0, lo_open=True)
        check_range("risk.bootstrap_resamples", self.bootstrap_resamples, 1)
        check_range("risk.level", self.level, 0, 1, lo_open=True, hi_open=True)
        check(len(self.budgets) > 0 and list(self.budgets) == sorted(set(self.budgets))
              and all(0 < b <= 1 for b in self.budgets),
              f"risk.budgets must be strictly increasing shares in (0, 1], got {list(self.budgets)}")
        check_range("risk.reliability_bins", self.reliability_bins, 1)
