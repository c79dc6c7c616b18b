"""A scripted, deterministic backend for tests: no model, answers drawn from a known potential.

Each continuation is the token ids of `correct_ids` with probability `potential(prompt_ids)` and of
`wrong_ids` otherwise, followed by EOS; the draw is seeded by the request seed and row index, so
equal requests give equal outputs. Tests set `potential` to put cliffs where they want them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cliffdata.backends.base import Backend, Generation, GenerationRequest, Sampling


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, correct_ids: Sequence[int] = (5,), wrong_ids: Sequence[int] = (6,), eos_token_id: int = 2,
                 potential: Callable[[Sequence[int]], float] | None = None):
        self.correct_ids = tuple(correct_ids)
        self.wrong_ids = tuple(wrong_ids)
        self.eos_token_ids = (eos_token_id,)
        self.potential = potential or (lambda ids: 0.5)

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        out = []
        for req in requests:
            if req.adapter is not None:
                raise ValueError(f"the fake backend has no adapters, got a request for {req.adapter!r}")
            p = float(self.potential(req.prompt_ids))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fake potential must be in [0, 1], got {p}")
            rng = np.random.default_rng([req.seed & 0xFFFFFFFF, req.seed >> 32])
            seqs, reasons = [], []
            for draw in rng.random(req.n):
                ids = list(self.correct_ids if draw < p else self.wrong_ids) + [self.eos_token_ids[0]]
                reason = "stop"
                limit = req.max_new_tokens or sampling.max_new_tokens
                if len(ids) > limit:
                    ids, reason = ids[:limit], "length"
                seqs.append(tuple(ids))
                reasons.append(reason)
            out.append(Generation(tuple(seqs), tuple(reasons)))
        return out
