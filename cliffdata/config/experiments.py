"""`replicate`, `ablation`, `candidates` and `cpm_shift`: the experiments on cliffs (protocol §5)."""
from __future__ import annotations

from dataclasses import dataclass

from cliffdata.config.generate import SamplingConfig
from cliffdata.config.validate import check, check_range


@dataclass(frozen=True)
class ReplicateConfig:
    """`replicate`: fresh rollouts on both sides of every cliff, with the rollouts stage's sampler
    (`rollouts.sampling`) and another seed stream; `replicated` = the cliff test passes again."""
    num_rollouts: int = 16             # N per side (keep it = rollouts.num_rollouts: the test again at its N; paper 64)
    seed: int = 0

    def __post_init__(self):
        check_range("num_rollouts", self.num_rollouts, 1)
        check_range("seed", self.seed, 0)


@dataclass(frozen=True)
class ControlPoolConfig:
    """`ablation.control_pool`: where the matched controls are drawn from (experiments/matching.py)."""
    num_samples: int = 8               # traces per problem sampled for the pool (`sample.sampling`); 0: the run's own
    max_estimates: int = 32            # per cliff, at most this many nearest positions get a fresh p[j-1]
    estimates_per_round: int = 8       # estimated per round, nearest first, for the cliffs still without a control

    def __post_init__(self):
        check_range("ablation.control_pool.num_samples", self.num_samples, 0)
        check_range("ablation.control_pool.max_estimates", self.max_estimates, 1)
        check_range("ablation.control_pool.estimates_per_round", self.estimates_per_round, 1, self.max_estimates)


@dataclass(frozen=True)
class AblationConfig:
    """`ablation`: N continuations per prefix and the ks of the pass@k curve (protocol §5, RQ1)."""
    num_rollouts: int = 16             # paper 64
    seed: int = 0
    ks: tuple[int, ...] = (1, 2, 4, 8, 16)   # paper 1, 2, 4, ..., 64
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=96)
    matched_control: bool = True       # beyond the paper: matched_del / matched_keep at a matched non-cliff position
    control_pool: ControlPoolConfig = ControlPoolConfig()

    def __post_init__(self):
        check(self.num_rollouts >= 1, f"ablation.num_rollouts must be >= 1, got {self.num_rollouts}")
        check_range("seed", self.seed, 0)
        check(len(self.ks) > 0 and list(self.ks) == sorted(set(self.ks)),
              f"ablation.ks must be strictly increasing and non-empty, got {list(self.ks)}")
        check(self.ks[0] >= 1 and self.ks[-1] <= self.num_rollouts,
              f"ablation.ks must lie in [1, num_rollouts={self.num_rollouts}], got {list(self.ks)}")


@dataclass(frozen=True)
class CandidatesConfig:
    """`candidates`: top-k replacements at each cliff, N rollouts each (protocol §5, §6)."""
    top_k: int = 20                    # paper: 20 for CPM, 10 for Cliff-DPO; at most token_stats.top_k
    num_rollouts: int = 16             # paper 64
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=96)
    fresh_estimates: bool = True       # p[i-1] and the cliff token's potential from the replicate stage (paper: false)

    def __post_init__(self):
        check(self.top_k >= 1, f"candidates.top_k must be >= 1, got {self.top_k}")
        check(self.num_rollouts >= 1, f"candidates.num_rollouts must be >= 1, got {self.num_rollouts}")
        check_range("seed", self.seed, 0)


@dataclass(frozen=True)
class CPMShiftConfig:
    """`cpm_shift`: the source's cliff sets read by other models with the same tokenizer (protocol §5 RQ3).

    Each eval model is `base`, `adapter:<variant>` (models/adapters/<variant>), `champion` (the
    registry alias of cliffdata promote; falls back to `fallback` when there is none), or an HF id / path.
    """
    eval_models: tuple[str, ...] = ("champion",)
    fallback: str = "adapter:uncertain_sampled_off"
    top_k: int = 20                    # the eval model's top-k; C members outside it count 0 (paper 20)

    def __post_init__(self):
        check(len(self.eval_models) > 0, "cpm_shift.eval_models is empty")
        check(self.top_k >= 1, f"cpm_shift.top_k must be >= 1, got {self.top_k}")
