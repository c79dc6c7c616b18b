"""Generation backends behind one interface: `fake`, `hf` and `vllm` (imported only when chosen)."""
from __future__ import annotations

from cliffdata.backends.base import (AdapterView, Backend, Generation, GenerationRequest, Sampling,
                                    request_seed)


def make_backend(name: str, model_path: str | None = None, **kwargs) -> Backend:
    """Build a backend by name; heavy imports happen here, not at package import."""
    if name == "fake":
        from cliffdata.backends.fake import FakeBackend
        return FakeBackend(**kwargs)
    if name == "hf":
        from cliffdata.backends.hf import HFBackend
        return HFBackend(model_path, **kwargs)
    if name == "vllm":
        from cliffdata.backends.vllm import VLLMBackend
        return VLLMBackend(model_path, **kwargs)
    raise ValueError(f"backend must be one of fake, hf, vllm; got {name!r}")


def open_backend(engine, model_path: str, seed: int = 0, adapters: dict[str, str] | None = None) -> Backend:
    """The backend that params' `engine` section names, for the model folder `model_path`.

    `adapters` maps names to LoRA adapter folders; a request with `adapter = name` runs on that adapter
    (vLLM: `engine.lora` merged, each adapter's weights swapped in for its calls, or native, one `LoRARequest`
    per adapter with a unique id; HF: PEFT adapters on the same base).
    `engine.dtype: auto` is resolved for this machine (`config.resolve_dtype`).
    """
    engine = engine.resolved()
    if engine.backend == "hf":
        return make_backend("hf", model_path, dtype=engine.dtype, max_batch=engine.hf_max_batch, adapters=adapters)
    if engine.backend == "vllm":
        return make_backend("vllm", model_path, dtype=engine.dtype, seed=seed, enforce_eager=engine.enforce_eager,
                            max_model_len=engine.max_model_len, enable_prefix_caching=engine.enable_prefix_caching,
                            gpu_memory_utilization=engine.gpu_memory_utilization, block_size=engine.block_size,
                            adapters=adapters, lora=engine.lora)
    raise ValueError(f"engine.backend {engine.backend!r} cannot run a real model (fake is for tests)")


__all__ = ["open_backend", "AdapterView", "Backend", "Generation", "GenerationRequest", "Sampling", "make_backend", "request_seed"]
