"""Evaluation of Cliff-DPO adapters: held-out problems, greedy accuracy, and a paired bootstrap interval
of each adapter's accuracy difference to the base model (protocol §6).

    problems = eval_problems(eval_sources, training_problems)
    rows = evaluate_models(backend, tokenizer, problems, prompts, ["base", "uncertain"], max_new_tokens=128)
    summary = accuracy_summary(rows, baseline="base", num_resamples=2000, seed=0)
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cliffdata.backends import Backend, Sampling
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config.model import BASE_MODEL
from cliffdata.config.problems import ProblemsConfig, PromptConfig, SourceConfig
from cliffdata.generate.sampling import sample_traces
from cliffdata.problems import load_problems

BASE = BASE_MODEL                        # the base model among evaluated models (config.BASE_MODEL)


def eval_problems(sources: Sequence[SourceConfig], training_problems: Sequence[dict],
                  prompts: dict[str, PromptConfig] | None = None) -> tuple[list[dict], int]:
    """The problems of `sources` (`dpo_eval.sources`) with every question that also appears in training removed.

    Returns (problems, number removed). Training on a split that is also evaluated is refused by
    construction (protocol §6): overlap is dropped, and an empty result is an error.
    """
    rows, _ = load_problems(ProblemsConfig(sources=tuple(sources)), prompts=prompts)
    seen = {p["question"].strip() for p in training_problems}
    kept = [p for p in rows if p["question"].strip() not in seen]
    if not kept:
        raise ValueError(f"dpo_eval: all {len(rows)} evaluation problems also appear in training; "
                         f"use another seed or dataset for dpo_eval.sources")
    return kept, len(rows) - len(kept)


def same_adapters(digests: dict[str, str]) -> dict[str, str]:
    """Each model (name -> its adapter's weight digest, in order) -> the first model with the same digest:
    itself unless an earlier one has the same weights (variants trained on the same pairs)."""
    first: dict[str, str] = {}
    return {m: first.setdefault(d, m) for m, d in digests.items()}


def evaluate_models(backend: Backend, tokenizer, problems: list[dict], prompts: dict[str, PromptConfig],
                    models: Sequence[str], max_new_tokens: int, checkpoint: UnitCheckpoint | None = None,
                    adapter_digests: dict[str, str] | None = None) -> list[dict]:
    """One greedy response per problem and model (`base` or an adapter name of `backend`); DPO_EVAL rows,
    model by model in `models` order. Models that `backend.batch_key` lets share an engine call are
    sampled together (vLLM: every adapter in one call, the base apart), 64 problems per model per call.
    With a `checkpoint`, each (model, problem) is a unit; `adapter_digests` key an adapter's units by its
    weights, and adapters with equal digests (e.g. variants trained on the same pairs) are decoded once:
    greedy decoding of the same weights gives the same rows."""
    greedy = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)
    adapter_of = {m: None if m == BASE else m for m in models}
    same_as = same_adapters({m: d for m, d in (adapter_digests or {}).items() if m in models and d})
    groups: dict[object, list[str]] = {}
    for model in models:
        if same_as.get(model, model) == model:
            groups.setdefault(backend.batch_key(adapter_of[model]), []).append(model)
    by_model: dict[str, list[dict]] = {}
    for group in groups.values():
        units = [(m, p) for m in group for p in problems]
        traces = sample_traces([p for _, p in units], prompts, tokenizer, backend, greedy, num_samples=1, seed=0,
                               batch_size=64 * len(group), checkpoint=checkpoint,
                               tag=[f"{m}:{(adapter_digests or {}).get(m, '')}" for m, _ in units],
                               adapters=[adapter_of[m] for m, _ in units], desc=f"dpo_eval {', '.join(group)}")
        for (model, _), t in zip(units, traces):
            by_model.setdefault(model, []).append(
                {"model": model, "problem_id": t["problem_id"], "response_ids": t["response_ids"],
                 "extracted_answer": t["extracted_answer"], "is_correct": t["is_correct"],
                 "num_tokens": t["num_tokens"]})
    return [dict(row, model=model) for model in models for row in by_model.get(same_as.get(model, model), [])]


def paired_bootstrap(base: np.ndarray, other: np.ndarray, num_resamples: int, seed: int,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Accuracy difference `mean(other) - mean(base)` over the same problems and its percentile interval
    from `num_resamples` paired resamples of problems."""
    base, other = np.asarray(base, float), np.asarray(other, float)
    if base.shape != other.shape or base.ndim != 1 or len(base) == 0:
        raise ValueError(f"paired_bootstrap needs two equal, non-empty 1-d arrays, got {base.shape} and {other.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(num_resamples, len(base)))
    diffs = other[idx].mean(1) - base[idx].mean(1)
    alpha = (1 - level) / 2
    return float(other.mean() - base.mean()), float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))


def accuracy_summary(rows: list[dict], baseline: str = BASE, num_resamples: int = 2000,
                     seed: int = 0, control: str | None = None) -> dict[str, dict]:
    """Per model: accuracy (ungradable counts as not correct), counts, and the paired bootstrap 95%
    interval of the difference to `baseline` (problems both evaluated); with `control` (a model that
    was evaluated, e.g. the `random` Cliff-DPO variant), also the difference to it and its interval."""
    by_model: dict[str, dict[str, bool | None]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["problem_id"]] = r["is_correct"]
    if baseline not in by_model:
        raise ValueError(f"no rows for the baseline model {baseline!r}")
    problems = sorted(by_model[baseline])
    base = np.array([by_model[baseline][p] is True for p in problems])
    out = {}
    for model in sorted(by_model, key=lambda m: (m != baseline, m)):
        labels = by_model[model]
        if sorted(labels) != problems:
            raise ValueError(f"model {model!r} was evaluated on other problems than {baseline!r}")
        correct = np.array([labels[p] is True for p in problems])
        cell = {"num_problems": len(problems), "num_correct": int(correct.sum()),
                "num_ungradable": sum(labels[p] is None for p in problems), "accuracy": float(correct.mean())}
        if model != baseline:
            diff, lo, hi = paired_bootstrap(base, correct, num_resamples, seed)
            cell.update(diff_to_base=diff, diff_ci_low=lo, diff_ci_high=hi)
        if control in by_model and model not in (baseline, control):
            reference = np.array([by_model[control][p] is True for p in problems])
            diff, lo, hi = paired_bootstrap(reference, correct, num_resamples, seed)
            cell.update(diff_to_control=diff, control_ci_low=lo, control_ci_high=hi)
        out[model] = cell
    return out


def trained_variants(variants, root: str | Path = ".") -> dict[str, dict]:
    """Run records (runs/dpo_train/<variant>.json) of the variants whose adapter saw at least one pair;
    an adapter without pairs equals the base model and is not evaluated again."""
    out = {}
    for v in variants:
        record = json.loads((Path(root) / f"runs/dpo_train/{v}.json").read_text())
        if json.loads((Path(root) / f"metrics/dpo_train/{v}.json").read_text())["num_train_pairs"] > 0:
            out[v] = record
    return out
