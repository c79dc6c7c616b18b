"""`dpo_pairs`, `dpo_train`, `dpo_eval` and `cliff_count`: Cliff-DPO (protocol §6) and its variants."""
from __future__ import annotations

from dataclasses import dataclass

from cliffdata.config.problems import SourceConfig
from cliffdata.config.validate import check, check_range


# Cliff-DPO variants, the one list: name -> the cliff categories whose pairs it keeps ("*": all four;
# "control": the random-position control pairs, cliffdata.dpo.pairs). `replicated` keeps the pairs of
# `all` at replicated cliffs only.
DPO_VARIANT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "all": ("*",),
    "deterministic": ("deterministic",),
    "uncertain": ("uncertain",),
    "sampled_off": ("sampled_off",),
    "uncertain_sampled_off": ("uncertain", "sampled_off"),
    "replicated": ("*",),
    "random": ("control",),
}
DPO_VARIANTS = tuple(DPO_VARIANT_CATEGORIES)


@dataclass(frozen=True)
class DPOPairsConfig:
    """`dpo_pairs`: Cliff-DPO preference pairs from the candidates (protocol §6)."""
    strategy: str = "cliff_1N"         # cliff_1N (paper) | cliff_hard (chosen also needs p_cand >= p_prev)
    top_k: int = 10                    # paper 10; at most candidates.top_k
    heldout_fraction: float = 0.1      # paper 0.1
    heldout_by: str = "pair"           # pair (paper) | cliff (no held-out pair shares a prefix with training)
    seed: int = 42                     # paper 42

    def __post_init__(self):
        check(self.strategy in ("cliff_1N", "cliff_hard"), f"dpo_pairs.strategy must be cliff_1N|cliff_hard, got {self.strategy!r}")
        check(self.top_k >= 1, f"dpo_pairs.top_k must be >= 1, got {self.top_k}")
        check(0 <= self.heldout_fraction < 1, f"dpo_pairs.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        check(self.heldout_by in ("pair", "cliff"), f"dpo_pairs.heldout_by must be pair|cliff, got {self.heldout_by!r}")
        check_range("seed", self.seed, 0)


@dataclass(frozen=True)
class DPOTrainConfig:
    """`dpo_train`: single-token DPO with LoRA, one run per variant (cliffdata/dpo/train.py)."""
    variants: tuple[str, ...] = DPO_VARIANTS
    beta: float = 0.1                  # paper 0.05
    learning_rate: float = 2e-4        # paper 5e-6, cosine
    warmup_ratio: float = 0.1          # paper 0.1
    batch_size: int = 8                # paper: effective batch 64
    epochs: int = 8                    # paper 1
    append_eos: bool = False           # paper true (reference code); false = the exact single-token loss
    lora_r: int = 8                    # paper 32
    lora_alpha: int = 16               # paper 64
    lora_dropout: float = 0.05         # paper 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")   # paper: + gate_proj, up_proj, down_proj
    seed: int = 0
    threads: int = 1                   # torch threads (1 on a shared CPU: oversubscription is 10x slower)
    workers: int = 2                   # processes training variants side by side (each `threads` threads; 1: in-process)
    max_grad_norm: float = 1.0         # gradient clipping (the reference: 1.0)

    def __post_init__(self):
        unknown = sorted(set(self.variants) - set(DPO_VARIANTS))
        check(not unknown and len(self.variants) > 0,
              f"dpo_train.variants must be a non-empty subset of {DPO_VARIANTS}, got {list(self.variants)}")
        check(self.beta > 0, f"dpo_train.beta must be > 0, got {self.beta}")
        check(self.learning_rate > 0, f"dpo_train.learning_rate must be > 0, got {self.learning_rate}")
        check(self.batch_size >= 1 and self.epochs >= 1,
              f"dpo_train.batch_size and epochs must be >= 1, got {self.batch_size}, {self.epochs}")
        check(self.lora_r >= 1, f"dpo_train.lora_r must be >= 1, got {self.lora_r}")
        check_range("warmup_ratio", self.warmup_ratio, 0, 1, hi_open=True)
        check_range("lora_alpha", self.lora_alpha, 1)
        check_range("lora_dropout", self.lora_dropout, 0, 1, hi_open=True)
        check(len(self.target_modules) > 0, "target_modules is empty")
        check_range("threads", self.threads, 1)
        check_range("workers", self.workers, 1)
        check_range("seed", self.seed, 0)
        check_range("max_grad_norm", self.max_grad_norm, 0, lo_open=True)


@dataclass(frozen=True)
class DPOEvalConfig:
    """`dpo_eval`: greedy accuracy of the base model and every adapter on problems disjoint from training."""
    sources: tuple[SourceConfig, ...] = ()
    max_new_tokens: int = 256
    bootstrap_resamples: int = 2000
    seed: int = 0
    metric: str = "eval_accuracy"      # logged to each adapter's training run; `cliffdata promote` ranks by it

    def __post_init__(self):
        check(len(self.sources) > 0, "dpo_eval.sources is empty")
        check(self.bootstrap_resamples >= 100, f"dpo_eval.bootstrap_resamples must be >= 100, got {self.bootstrap_resamples}")
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("seed", self.seed, 0)


@dataclass(frozen=True)
class CliffCountConfig:
    """`cliff_count`: cliffs per trace before and after Cliff-DPO (one trace per problem, no early stop)."""
    num_problems: int = 8              # the first n dpo_eval problems (paper: all)
    num_rollouts: int = 16             # paper 64; the other rollout settings come from `rollouts` (>= its search's initial n)
    seed: int = 0

    def __post_init__(self):
        check(self.num_problems >= 1, f"cliff_count.num_problems must be >= 1, got {self.num_problems}")
        check(self.num_rollouts >= 1, f"cliff_count.num_rollouts must be >= 1, got {self.num_rollouts}")
        check_range("seed", self.seed, 0)
