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
from cliffdata.config.problems import PromptConfig
from cliffdata.grading import ANSWER_MARKER, answer_end, grade
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
                  checkpoint: UnitCheckpoint | None = None, tag: str | Sequence[str] = "", desc: str = "sample",
                  adapters: Sequence[str | None] | None = None) -> list[dict]:
    """K traces per problem with exact token ids, graded; rows follow `schema.TRACES`. A problem with its
    own `max_new_tokens` (its source's budget) is sampled with that budget instead of `sampling`'s.

    With a `checkpoint`, each problem's generations are a unit (keyed by `tag`, e.g. the adapter, and
    the prompt ids, seed, K and sampling), saved after every batch: a killed run resumes. `desc` labels the
    progress bar (e.g. the model being evaluated). `adapters` (one per problem, with `tag` one per problem
    too) has each problem sampled by that adapter of `backend` (None: the base), so one call can serve
    several models (dpo_eval)."""
    count = len(problems)
    tags = [tag] * count if isinstance(tag, str) else list(tag)
    models = [None] * count if adapters is None else list(adapters)
    if not len(tags) == len(models) == count:
        raise ValueError(f"sample_traces: {count} problems need as many tags and adapters, got {len(tags)}, {len(models)}")
    rows = []
    bar = tqdm(total=len(problems), desc=desc, unit="problem")
    for start in range(0, len(problems), batch_size):
        batch = problems[start:start + batch_size]
        prompt_ids = [encode_prompt(tokenizer, prompts[p["prompt"]], p["question"]) for p in batch]
        requests = [GenerationRequest(tuple(ids), n=num_samples, seed=request_seed(seed, p["problem_id"]), adapter=a)
                    for p, ids, a in zip(batch, prompt_ids, models[start:start + batch_size])]
        budgets = [with_budget(sampling, p.get("max_new_tokens")) for p in batch]
        keys = [UnitCheckpoint.key("sample", t, r.prompt_ids, r.n, r.seed, b) if checkpoint is not None else None
                for r, b, t in zip(requests, budgets, tags[start:start + batch_size])]
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
                trace_id = f"{p['problem_id']}#{j}"
                graded = grade(text, p["answer"], p["answer_format"], where=f"{desc} {trace_id}")
                rows.append({
                    "trace_id": trace_id, "problem_id": p["problem_id"], "sample_index": j,
                    "prompt_ids": ids, "response_ids": list(resp), "response_text": text,
                    "extracted_answer": graded.extracted, "is_correct": graded.is_correct, "finish_reason": reason,
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
    num_grading_timeouts: int = 0      # rollouts whose answer ran past grading.timeout_seconds (not correct)
    num_watched: int = 0               # continuations whose first token is the prefix's `watch` token
    num_watched_correct: int = 0       # ... and of those, the correct ones


STOP_AT_ANSWER = ("never", "exact", "first_box")


def _stop_strings(text: str, answer_format: str, first_box: bool) -> tuple[str, ...]:
    """The strings the next stretch of a continuation should stop at, so the answer's end is checked:
    `####`, then each newline after it (hash); with `first_box`, a box's opening, then each closing
    brace (boxed); nothing where no stop can end the answer (boxed without `first_box`)."""
    if answer_format == "hash":
        return ("\n",) if ANSWER_MARKER in text else (ANSWER_MARKER,)
    if not first_box:
        return ()
    return ("}",) if "\\boxed" in text or "\\fbox" in text else ("\\boxed", "\\fbox")


def resample(backend: Backend, tokenizer, prefixes: Sequence[tuple[Sequence[int], Sequence[int]]],
             n: int | Sequence[int], sampling: Sampling, seeds: Sequence[int], gold: str | Sequence[str],
             answer_format: str | Sequence[str], stop_at_answer: str = "never",
             adapters: Sequence[str | None] | None = None, labels: Sequence[str] | None = None,
             watch: Sequence[int | None] | None = None) -> list[Resampled]:
    """N continuations from each (prompt_ids, response_prefix_ids), graded; results in input order.

    `watch`: one token id (or None) per prefix; the continuations whose first token is it are counted,
    with how many of them are correct (`num_watched`, `num_watched_correct`): the rest are draws with
    that token forbidden at the first step (the deletion ablation's re-emission and del_resilient).

    `n`, `gold` and `answer_format` are one value for every prefix or one per prefix (the rollout
    scheduler packs prefixes of several traces into one call). `adapters`: one per prefix, the adapter
    of `backend` that continues it (None: the base model); None: every prefix as `backend` sends it.
    Correctness is judged on decode(response_prefix + continuation): the answer may already be in
    the prefix (protocol §1). Every generated token is counted, and so is every rollout whose answer ran
    out of grading time (`grading.Grader`), logged with the prefix's entry of `labels` (e.g. its trace
    and position).

    `stop_at_answer` (`rollouts.stop_at_answer`): `exact` ends a hash-format rollout once its answer
    can no longer change (`grading.answer_end`: the newline after the first number after the first
    `####`), `first_box` also ends a boxed one after its first non-empty box. A prefix that already
    holds its answer's end gets no rollouts at all (each of its n counts its own grade, 0 tokens). A
    continuation is generated in stretches that stop at the strings that can end the answer
    (`_stop_strings`); a stretch that stopped early and has not reached the answer's end goes on from
    its tokens with a fresh seed, request_seed(seed, continuation, stretch): the same distribution,
    since sampling depends only on the tokens so far. A backend that cannot stop at strings (HF, fake)
    generates to EOS, which grades the same.
    """
    if stop_at_answer not in STOP_AT_ANSWER:
        raise ValueError(f"rollouts.stop_at_answer must be one of {list(STOP_AT_ANSWER)}, got {stop_at_answer!r}")
    count = len(prefixes)
    ns = [n] * count if isinstance(n, int) else list(n)
    golds = [gold] * count if isinstance(gold, str) else list(gold)
    formats = [answer_format] * count if isinstance(answer_format, str) else list(answer_format)
    models = [None] * count if adapters is None else list(adapters)
    if not len(ns) == len(golds) == len(formats) == len(seeds) == len(models) == count:
        raise ValueError(f"resample: {count} prefixes need as many n, golds, formats, seeds and adapters, "
                         f"got {len(ns)}, {len(golds)}, {len(formats)}, {len(seeds)}, {len(models)}")
    if labels is not None and len(labels) != count:
        raise ValueError(f"resample: {count} prefixes need as many labels, got {len(labels)}")
    watched = [None] * count if watch is None else list(watch)
    if len(watched) != count:
        raise ValueError(f"resample: {count} prefixes need as many watched tokens, got {len(watched)}")
    if stop_at_answer == "never":
        requests = [GenerationRequest(tuple(prompt) + tuple(prefix), n=k, seed=s, adapter=a)
                    for (prompt, prefix), k, s, a in zip(prefixes, ns, seeds, models)]
        conts = [[list(c) for c in gen.token_ids] for gen in backend.generate(requests, sampling)]
    else:
        conts = _stretches(backend, tokenizer, prefixes, ns, sampling, seeds, formats, stop_at_answer == "first_box",
                           models)
    out = []
    for (_, prefix), cs, g, fmt, k, label, w in zip(prefixes, conts, golds, formats, ns, labels or ["resample"] * count,
                                                    watched):
        correct = timeouts = num_watched = watched_correct = 0
        for cont in cs:
            graded = grade(tokenizer.decode(list(prefix) + list(cont), skip_special_tokens=True), g, fmt, where=label)
            correct += graded.is_correct is True
            timeouts += graded.timed_out
            if w is not None and len(cont) and int(cont[0]) == w:
                num_watched += 1
                watched_correct += graded.is_correct is True
        out.append(Resampled(k, correct, sum(map(len, cs)), timeouts, num_watched, watched_correct))
    return out


def _stretches(backend: Backend, tokenizer, prefixes, ns: list[int], sampling: Sampling, seeds: Sequence[int],
               formats: list[str], first_box: bool, adapters: list[str | None]) -> list[list[list[int]]]:
    """The continuations of `resample` with stop at the answer's end: ns[j] per prefix, as token lists."""
    decode = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)
    conts: list[list[list[int]]] = [[] for _ in prefixes]
    first = []                                  # prefixes that need rollouts (the rest hold their answer)
    for j, ((prompt, prefix), k, fmt) in enumerate(zip(prefixes, ns, formats)):
        text = decode(prefix)
        if answer_end(text, fmt, first_box) is not None:
            conts[j] = [[] for _ in range(k)]
        else:
            first.append(j)
    requests = [GenerationRequest(tuple(prefixes[j][0]) + tuple(prefixes[j][1]), n=ns[j], seed=seeds[j],
                                  stop=_stop_strings(decode(prefixes[j][1]), formats[j], first_box),
                                  adapter=adapters[j]) for j in first]
    open_rows: list[tuple[int, int]] = []       # (prefix, continuation) still short of its answer's end
    for j, gen in zip(first, backend.generate(requests, sampling) if requests else []):
        conts[j] = [list(c) for c in gen.token_ids]
        open_rows += [(j, c) for c in range(len(conts[j]))]
    eos = set(backend.eos_token_ids)
    stretch = 1
    while True:
        waiting = []
        for j, c in open_rows:
            cont = conts[j][c]
            text = decode(list(prefixes[j][1]) + cont)
            if (cont and cont[-1] in eos) or len(cont) >= sampling.max_new_tokens \
                    or not _stop_strings(text, formats[j], first_box) or answer_end(text, formats[j], first_box) is not None:
                continue
            waiting.append((j, c, text))
        if not waiting:
            return conts
        requests = [GenerationRequest(tuple(prefixes[j][0]) + tuple(prefixes[j][1]) + tuple(conts[j][c]), n=1,
                                      seed=request_seed(seeds[j], c, stretch), stop=_stop_strings(text, formats[j], first_box),
                                      max_new_tokens=sampling.max_new_tokens - len(conts[j][c]), adapter=adapters[j])
                    for j, c, text in waiting]
        for (j, c, _), gen in zip(waiting, backend.generate(requests, sampling)):
            conts[j][c] += gen.token_ids[0]
        open_rows = [(j, c) for j, c, _ in waiting]
        stretch += 1
