"""`rollouts`: the potential search (its mode, N, sampler, the adaptive and fork searches' knobs), shards
and the Ray actor pool."""
from __future__ import annotations

from dataclasses import dataclass

from cliffdata.config.generate import SamplingConfig
from cliffdata.config.validate import check, check_range


@dataclass(frozen=True)
class AdaptiveParams:
    """`rollouts.adaptive`: see cliffdata/search/adaptive.py for what each knob does."""
    initial_rollouts: int = 8
    grid_points: int = 16
    min_stride: int = 4
    sweep_rollouts: int = 12
    flag_lr: float = 0.03
    refine_z: float = 1.0

    def __post_init__(self):
        check_range("initial_rollouts", self.initial_rollouts, 1)
        check_range("grid_points", self.grid_points, 2)
        check_range("min_stride", self.min_stride, 1)
        check_range("sweep_rollouts", self.sweep_rollouts, 0)       # 0 disables the sweep
        check_range("flag_lr", self.flag_lr, 0, lo_open=True)
        check_range("refine_z", self.refine_z, 0)


@dataclass(frozen=True)
class ForksParams:
    """`rollouts.forks`: the fork-aware search (cliffdata/search/forks.py)."""
    initial_rollouts: int = 4          # n on both sides of every fork, doubled while the pair is open
    z: float = 1.5                     # a fork's pair stays open while drop + z·SE > δ_min(N)

    def __post_init__(self):
        check_range("initial_rollouts", self.initial_rollouts, 1)
        check_range("z", self.z, 0)


@dataclass(frozen=True)
class RayParams:
    """`rollouts.ray`: the actor pool of `engine: ray` (cliffdata/search/ray_rollouts.py)."""
    address: str | None = None         # None: start a local Ray instance; "auto" or ray://host:10001: join a cluster
    num_actors: int = 2                # backend replicas (one per GPU on a cluster)
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0    # 1 on GPU nodes: Ray places one actor per GPU

    def __post_init__(self):
        check(self.num_actors >= 1, f"rollouts.ray.num_actors must be >= 1, got {self.num_actors}")
        check_range("num_cpus_per_actor", self.num_cpus_per_actor, 0)
        check_range("num_gpus_per_actor", self.num_gpus_per_actor, 0)


@dataclass(frozen=True)
class RolloutsConfig:
    mode: str = "forks"                # forks | adaptive | exhaustive (paper: every position, N each)
    num_rollouts: int = 16             # N per position (paper 64)
    seed: int = 0
    early_stop_zeros: int = 20         # stop after this many consecutive p = 0; 0 disables (protocol §3)
    score_empty_prefix: bool = True    # also score p[-1] (not in the paper)
    positions_per_batch: int = 32      # prefixes per engine call, packed from every trace of a wave
    traces_per_wave: int = 8           # traces whose searches share engine calls (and are checkpointed together)
    stop_at_answer: str = "never"      # never | exact (#### answers) | first_box (also after a first \\boxed{}); sampling.resample
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=96)
    adaptive: AdaptiveParams = AdaptiveParams()
    forks: ForksParams = ForksParams()
    shards: int = 1                    # trace shards balanced by expected cost: DVC stages rollouts@0 … (cliffdata/search/shards.py)
    shard_ids: tuple[int, ...] = (0,)  # [0 … shards-1]; DVC's matrix needs the list itself
    engine: str = "local"              # local | ray: a shard's traces over a Ray Data actor pool of backends
    ray: RayParams = RayParams()

    def __post_init__(self):
        check(self.mode in ("exhaustive", "adaptive", "forks"),
              f"rollouts.mode must be exhaustive|adaptive|forks, got {self.mode!r}")
        check(self.shards >= 1 and list(self.shard_ids) == list(range(self.shards)),
              f"rollouts.shard_ids must be [0 … shards-1] = {list(range(max(self.shards, 0)))}, got {list(self.shard_ids)}")
        check(self.engine in ("local", "ray"), f"rollouts.engine must be local|ray, got {self.engine!r}")
        check(self.num_rollouts >= 1, f"rollouts.num_rollouts must be >= 1, got {self.num_rollouts}")
        check(self.early_stop_zeros >= 0, f"rollouts.early_stop_zeros must be >= 0, got {self.early_stop_zeros}")
        check(self.positions_per_batch >= 1, f"rollouts.positions_per_batch must be >= 1, got {self.positions_per_batch}")
        check(self.traces_per_wave >= 1, f"rollouts.traces_per_wave must be >= 1, got {self.traces_per_wave}")
        check(self.stop_at_answer in ("never", "exact", "first_box"),
              f"rollouts.stop_at_answer must be never|exact|first_box, got {self.stop_at_answer!r}")
        check_range("seed", self.seed, 0)
        check(self.mode != "forks" or self.forks.initial_rollouts <= self.num_rollouts,
              f"rollouts.forks.initial_rollouts must be <= rollouts.num_rollouts, "
              f"got {self.forks.initial_rollouts} > {self.num_rollouts}")
        check(self.mode != "adaptive" or self.adaptive.initial_rollouts <= self.num_rollouts,
              f"rollouts.adaptive.initial_rollouts must be <= rollouts.num_rollouts, "
              f"got {self.adaptive.initial_rollouts} > {self.num_rollouts}")
