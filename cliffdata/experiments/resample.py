"""The rollout loop every experiment shares: `sampling.resample` for a list of requests, one call per
problem (its gold), with a per-problem checkpoint unit."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from cliffdata import grading
from cliffdata.backends import Backend, Sampling
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.generate.sampling import Gold, Resampled, resample, with_budget


def resample_by_problem(requests: list[dict], traces: list[dict], golds: dict[str, Gold],
                        backend: Backend, tokenizer, n: int, sampling: Sampling,
                        prefix_of: Callable[[dict, Sequence[int]], list[int]], seed_of: Callable[[dict], int],
                        desc: str, checkpoint: UnitCheckpoint | None = None,
                        watch_of: Callable[[dict, Sequence[int]], int | None] | None = None) -> list[Resampled]:
    """`resample` for every request, one call per problem (resample grades against one gold); results
    in request order. `prefix_of(request, response_ids)` gives the response prefix to continue;
    `watch_of(request, response_ids)` the token whose first-step draws resample counts (or None).

    With a `checkpoint`, each problem is a unit keyed by its prompts, prefixes, seeds, N, sampling and
    gold: a finished unit is read back instead of recomputed (a killed stage resumes), and its grading
    timeouts are added to this process's count (`grading.Grader.count_timeouts`) as if graded again."""
    by_trace = {t["trace_id"]: t for t in traces}
    groups: dict[str, list[int]] = defaultdict(list)
    for j, r in enumerate(requests):
        if r["trace_id"] not in by_trace:
            raise ValueError(f"request names trace {r['trace_id']!r}, which is not in the traces dataset")
        groups[r["problem_id"]].append(j)
    missing = sorted(set(groups) - set(golds))
    if missing:
        raise ValueError(f"no gold answer for problems {missing[:5]}")
    out: list[Resampled | None] = [None] * len(requests)
    for problem_id in tqdm(sorted(groups), desc=desc, unit="problem"):
        idx = groups[problem_id]
        prefixes = [(by_trace[requests[j]["trace_id"]]["prompt_ids"],
                     prefix_of(requests[j], by_trace[requests[j]["trace_id"]]["response_ids"])) for j in idx]
        gold = Gold(*golds[problem_id])
        budget, seeds = with_budget(sampling, gold.max_new_tokens), [seed_of(requests[j]) for j in idx]
        watch = None if watch_of is None else [
            watch_of(requests[j], by_trace[requests[j]["trace_id"]]["response_ids"]) for j in idx]
        parts = (desc, problem_id, prefixes, seeds, n, budget, gold) + (() if watch is None else (watch,))
        key = UnitCheckpoint.key(*parts) if checkpoint is not None else None
        saved = checkpoint.get(key) if checkpoint is not None else None
        if saved is not None:
            results = [Resampled(*r) for r in saved]
            grading.grader().count_timeouts(sum(r.num_grading_timeouts for r in results))
        else:
            labels = [f"{desc} {requests[j]['trace_id']}" + (f" token {requests[j]['token_index']}"
                                                           if "token_index" in requests[j] else "") for j in idx]
            results = resample(backend, tokenizer, prefixes, n, budget, seeds, gold.answer, gold.answer_format,
                               labels=labels, watch=watch)
            if checkpoint is not None:
                checkpoint.put(key, [[r.num_rollouts, r.num_correct, r.num_generated_tokens, r.num_grading_timeouts]
                                     + ([] if watch is None else [r.num_watched, r.num_watched_correct])
                                     for r in results])
        for j, res in zip(idx, results):
            out[j] = res
    return out
