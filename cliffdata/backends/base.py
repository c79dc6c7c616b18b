"""The backend interface: token ids in, sampled token ids out, in request order.

The engine knows nothing about tokenization or grading: callers pass prompt token ids and get the
sampled continuation ids with a finish reason (`stop` at EOS, `length` at the token limit).
"""
from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from cliffdata.config.generate import SamplingConfig as Sampling  # one type: the params' sampling is what engines take


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    n: int = 1
    seed: int = 0               # per-request seed; backends that cannot honour it say so
    adapter: str | None = None  # name of a LoRA adapter the backend was opened with; None = the base model
    # strings that end a continuation early (the string is kept in it). A backend that cannot stop at
    # strings generates on to EOS or the limit: callers must accept either (resample's rounds do).
    stop: tuple[str, ...] = ()
    max_new_tokens: int | None = None   # this request's token limit; None: the sampling's max_new_tokens


@dataclass(frozen=True)
class Generation:
    token_ids: tuple[tuple[int, ...], ...]    # n continuations, each ending at EOS (included) or the limit
    finish_reasons: tuple[str, ...]           # "stop" | "length"

    @property
    def num_tokens(self) -> int:
        return sum(len(t) for t in self.token_ids)


def request_seed(*parts: object) -> int:
    """A 63-bit seed derived from its parts (e.g. global seed, trace id, position)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Backend(ABC):
    """Generate continuations. Results come back in request order."""

    name: str = "base"
    #: whether equal requests with equal seeds give equal outputs (the resume guarantee relies on it)
    deterministic: bool = True
    eos_token_ids: tuple[int, ...] = ()

    @abstractmethod
    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        ...

    def batch_key(self, adapter: str | None) -> object:
        """Requests whose adapters have equal keys may share one engine call: a scheduler that packs
        requests of several models (cliff_count, dpo_eval) packs by it. By default one adapter per call;
        vLLM serves every adapter in one call and the base apart (`VLLMBackend.batch_key`)."""
        return adapter

    def close(self) -> None:
        """Release the engine (processes, memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AdapterView(Backend):
    """A backend seen through one of its LoRA adapters: every request is sent with `adapter = name`.

    Lets code written for a plain backend (sampling, rollouts, resample) run on an adapter of a backend
    opened with several (one vLLM engine serves the base and every adapter). Closing the view does not
    close the backend.
    """

    def __init__(self, backend: Backend, adapter: str | None):
        self.backend, self.adapter = backend, adapter
        self.name = f"{backend.name}:{adapter}"
        self.deterministic = backend.deterministic
        self.eos_token_ids = backend.eos_token_ids

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        return self.backend.generate([dataclasses.replace(r, adapter=self.adapter) for r in requests], sampling)

    def batch_key(self, adapter: str | None) -> object:
        return self.backend.batch_key(self.adapter)


def group_by_adapter(requests: list[GenerationRequest], key=lambda adapter: adapter) -> list[tuple[object, list[int]]]:
    """Request indices grouped by `key(adapter)` (by default the adapter itself), groups in order of first
    appearance: the engine calls of a backend that runs one group per call."""
    groups: dict[object, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(key(r.adapter), []).append(i)
    return list(groups.items())
