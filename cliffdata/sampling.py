"""Sample K traces per problem and grade them; `resample` is the one rollout helper every stage uses.

A trace stores the exact sampled ids; a rollout is graded on `decode(prefix_ids + continuation)`
with special tokens skipped (protocol §1), so an answer already in the prefix counts.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tqdm.auto import tqdm

from cliffdata.backends import Backend, Generation, GenerationRequest, Sampling, request_seed
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config import PromptConfig
from cliffdata.grading import grade
from cliffdata.prompts import encode_prompt

log = logging.getLogger(__name__)


class Gold(NamedTuple):
    """What grading and the token budget need of a problem (a `problems` row)."""
    answer: str
    answer_format: str
    max_new_tokens: int | None = None  # the source's budget; None: the stage's own sampling.max_new_tokens


def golds_by_problem(problems: Sequence[dict]) -> dict[str, Gold]:
    return {p["problem_id"]: Gold(p["answer"], p["answer_format"], p.get("max_new_tokens")) for p in problems}


def with_budget(sampling: Sampling, max_new_tokens: int | None) -> Sampling:
    """`sampling` with a problem's own token budget (problems.sources[].max_new_tokens), when it has one."""
    return sampling if max_new_tokens is None else dataclasses.replace(sampling, max_new_tokens=max_new_tokens)


def sample_traces(problems: list[dict], prompts: dict[str, PromptConfig], tokenizer, backend: Backend,
                  sampling: Sampling, num_samples: int, seed: int, batch_size: int = 64,
                  checkpoint: UnitCheckpoint | None = None, tag: str = "", desc: str = "sample") -> list[dict]:
    """K traces per problem with exact token ids, graded; rows follow `schema.TRACES`. A problem with its
    own `max_new_tokens` (its source's budget) is sampled with that budget instead of `sampling`'s.

    With a `checkpoint`, each problem's generations are a unit (keyed by `tag`, e.g. the adapter, and
    the prompt ids, seed, K and sampling), saved after every batch: a killed run resumes. `desc` labels the
    progress bar (e.g. the model being evaluated)."""
    rows = []
    bar = tqdm(total=len(problems), desc=desc, unit="problem")
    for start in range(0, len(problems), batch_size):
        batch = problems[start:start + batch_size]
        prompt_ids = [encode_prompt(tokenizer, prompts[p["prompt"]], p["question"]) for p in batch]
        requests = [GenerationRequest(tuple(ids), n=num_samples, seed=request_seed(seed, p["problem_id"]))
                    for p, ids in zip(batch, prompt_ids)]
        budgets = [with_budget(sampling, p.get("max_new_tokens")) for p in batch]
        keys = [UnitCheckpoint.key("sample", tag, r.prompt_ids, r.n, r.seed, b) if checkpoint is not None else None
                for r, b in zip(requests, budgets)]
        gens: list = [None] * len(batch)
        for j, key in enumerate(keys):
            saved = checkpoint.get(key) if checkpoint is not None else None
            if saved is not None:
                gens[j] = Generation(tuple(tuple(t) for t in saved["token_ids"]), tuple(saved["finish_reasons"]))
        for budget in sorted({b for b, g in zip(budgets, gens) if g is None}, key=lambda b: b.max_new_tokens):
            idx = [j for j, (b, g) in enumerate(zip(budgets, gens)) if g is None and b == budget]   # one call per budget
            for j, gen in zip(idx, backend.generate([requests[j] for j in idx], budget)):
                gens[j] = gen
                if checkpoint is not None:
                    checkpoint.put(keys[j], {"token_ids": gen.token_ids, "finish_reasons": gen.finish_reasons})
        for p, ids, gen in zip(batch, prompt_ids, gens):
            for j, (resp, reason) in enumerate(zip(gen.token_ids, gen.finish_reasons)):
                text = tokenizer.decode(list(resp), skip_special_tokens=True)
                extracted, is_correct = grade(text, p["answer"], p["answer_format"])
                rows.append({
                    "trace_id": f"{p['problem_id']}#{j}", "problem_id": p["problem_id"], "sample_index": j,
                    "prompt_ids": ids, "response_ids": list(resp), "response_text": text,
                    "extracted_answer": extracted, "is_correct": is_correct, "finish_reason": reason,
                    "num_tokens": len(resp),
                })
        bar.update(len(batch))
    bar.close()
    return rows


@dataclass(frozen=True)
class Resampled:
    num_rollouts: int
    num_correct: int
    num_generated_tokens: int


def resample(backend: Backend, tokenizer, prefixes: Sequence[tuple[Sequence[int], Sequence[int]]],
             n: int | Sequence[int], sampling: Sampling, seeds: Sequence[int], gold: str | Sequence[str],
             answer_format: str | Sequence[str]) -> list[Resampled]:
    """N continuations from each (prompt_ids, response_prefix_ids), graded; results in input order.

    `n`, `gold` and `answer_format` are one value for every prefix or one per prefix (the rollout
    scheduler packs prefixes of several traces into one call).
    Correctness is judged on decode(response_prefix + continuation): the answer may already be in
    the prefix (protocol §1). Every generated token is counted.
    """
    count = len(prefixes)
    ns = [n] * count if isinstance(n, int) else list(n)
    golds = [gold] * count if isinstance(gold, str) else list(gold)
    formats = [answer_format] * count if isinstance(answer_format, str) else list(answer_format)
    if not len(ns) == len(golds) == len(formats) == len(seeds) == count:
        raise ValueError(f"resample: {count} prefixes need as many n, golds, formats and seeds, "
                         f"got {len(ns)}, {len(golds)}, {len(formats)}, {len(seeds)}")
    requests = [GenerationRequest(tuple(prompt) + tuple(prefix), n=k, seed=s)
                for (prompt, prefix), k, s in zip(prefixes, ns, seeds)]
    out = []
    for (_, prefix), gen, g, fmt in zip(prefixes, backend.generate(requests, sampling), golds, formats):
        correct = 0
        for cont in gen.token_ids:
            text = tokenizer.decode(list(prefix) + list(cont), skip_special_tokens=True)
            correct += grade(text, g, fmt).is_correct is True
        out.append(Resampled(len(gen.token_ids), correct, gen.num_tokens))
    return out
