"""Cliff-DPO preference pairs (protocol §6) from the `candidates` stage.

At a cliff at token i of a trace, the prompt is `prompt_ids + response_ids[:i]` (the del prefix), the
rejected token is the cliff token `response_ids[i]`, and each chosen token is a top-k candidate that is
*not* a cliff relative to p_prev by the protocol test (strategy `cliff_1N`); `cliff_hard` also asks for
`p_candidate >= p_prev`. A cliff whose token is outside the top-k gives no pairs (paper). The cliff
token's potential is the main rollout's (the candidates stage reuses it).

Category ablations are the same pairs filtered by the cliff's category (VARIANTS); `replicated` keeps
the pairs at cliffs whose test passed again on fresh rollouts (the replicate stage), and `random` is
the control: as many pairs as at each cliff, at a random non-cliff position of the same trace whose
token is not the greedy one, each preferring an alternative chosen by the cliff pairs' rule over the
trace's token there (`control_pairs`). If single-token DPO anywhere helps as much as at cliffs, the
cliffs are not what helps. The held-out split
is seeded and exact: per variant, the `heldout_fraction` of groups with the smallest
hash(seed, group) is held out, where a group is one pair (paper) or one cliff (`heldout_by: cliff`,
so no held-out pair shares its prefix with a training pair).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from cliffdata.backends import request_seed
from cliffdata.cliffs.taxonomy import CATEGORIES
from cliffdata.config.dpo import DPO_VARIANT_CATEGORIES

STRATEGIES = ("cliff_1N", "cliff_hard")
CONTROL = "control"                      # the category of the random-position control pairs
CONTROL_VARIANT = "random"               # the variant made of them
# variant -> the pair categories it keeps (and `replicated`: only pairs at replicated cliffs), from
# the one list in config.DPO_VARIANT_CATEGORIES
VARIANTS: dict[str, tuple[str, ...]] = {name: CATEGORIES if kept == ("*",) else kept
                                        for name, kept in DPO_VARIANT_CATEGORIES.items()}
SPLITS = ("train", "heldout")


def build_pairs(candidates: list[dict], cliffs: list[dict], traces: list[dict], strategy: str,
                top_k: int) -> list[dict]:
    """Pair rows (without split/variant) for every cliff whose token is in the top-k of its candidates.

    `candidates` are rows of `schema.CANDIDATES`; only candidates with `candidate_rank <= top_k` are
    considered (the stage may have stored more, e.g. top-20 for CPM).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"dpo_pairs.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if top_k < 1:
        raise ValueError(f"dpo_pairs.top_k must be >= 1, got {top_k}")
    by_trace = {t["trace_id"]: t for t in traces}
    by_cliff: dict[tuple[str, int], list[dict]] = {}
    for c in candidates:
        by_cliff.setdefault((c["trace_id"], c["token_index"]), []).append(c)
    pairs = []
    for cliff in sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"])):
        key = (cliff["trace_id"], cliff["token_index"])
        cands = by_cliff.get(key)
        if cands is None:
            raise ValueError(f"cliff {key} has no rows in the candidates dataset")
        trace = by_trace.get(cliff["trace_id"])
        if trace is None:
            raise ValueError(f"cliff {key} names a trace that is not in the traces dataset")
        top = [c for c in cands if c["candidate_rank"] is not None and c["candidate_rank"] <= top_k]
        rejected = [c for c in top if c["is_cliff_token"]]
        if not rejected:                     # the cliff token is outside the top-k: skipped (paper)
            continue
        rej = rejected[0]
        i = cliff["token_index"]
        prompt_ids = list(trace["prompt_ids"]) + list(trace["response_ids"][:i])
        for c in sorted(top, key=lambda c: c["candidate_rank"]):
            if c["is_cliff_token"] or c["is_cliff"]:
                continue
            if strategy == "cliff_hard" and c["potential"] < c["p_prev"]:
                continue
            if c["candidate_id"] == rej["candidate_id"]:
                raise ValueError(f"pair at {key}: chosen == rejected == {c['candidate_id']}")
            pairs.append({
                "trace_id": cliff["trace_id"], "problem_id": cliff["problem_id"], "token_index": i,
                "category": cliff["category"], "strategy": strategy, "is_correct": cliff["is_correct"],
                "prompt_ids": prompt_ids, "chosen_id": int(c["candidate_id"]), "rejected_id": int(rej["candidate_id"]),
                "chosen_rank": int(c["candidate_rank"]), "rejected_rank": int(rej["candidate_rank"]),
                "chosen_prob": float(c["prob"]), "rejected_prob": float(rej["prob"]),
                "chosen_potential": float(c["potential"]), "rejected_potential": float(rej["potential"]),
                "p_prev": float(c["p_prev"]),
            })
    return pairs


def pairs_per_cliff(pairs: Sequence[dict]) -> dict[tuple[str, int], int]:
    """How many pairs each cliff gives (the control mirrors it)."""
    counts: dict[tuple[str, int], int] = {}
    for p in pairs:
        counts[(p["trace_id"], p["token_index"])] = counts.get((p["trace_id"], p["token_index"]), 0) + 1
    return counts


def control_pairs(control: Sequence[dict], traces: Sequence[dict], strategy: str,
                  per_cliff: dict[tuple[str, int], int]) -> list[dict]:
    """Pair rows of the `random` control from CONTROL rows: at each control position, the alternatives that
    pass the rule of the cliff pairs (not a cliff relative to p_prev; `cliff_hard`: also potential >=
    p_prev), in rank order, as many as the cliff it mirrors gives (`per_cliff`, pairs_per_cliff of the
    cliff pairs), each chosen over the trace's token (category `control`)."""
    by_trace = {t["trace_id"]: t for t in traces}
    by_position: dict[tuple[str, int], list[dict]] = {}
    for r in control:
        by_position.setdefault((r["trace_id"], r["token_index"]), []).append(r)
    pairs = []
    for (trace_id, j), rows in sorted(by_position.items()):
        trace = by_trace.get(trace_id)
        if trace is None:
            raise ValueError(f"control position {(trace_id, j)} names a trace that is not in the traces dataset")
        own = [r for r in rows if r["is_trace_token"]]
        if len(own) != 1:
            raise ValueError(f"control position {(trace_id, j)} has {len(own)} trace-token rows (want 1)")
        rej = own[0]
        wanted = per_cliff.get((trace_id, rej["cliff_index"]), 0)
        prompt_ids = list(trace["prompt_ids"]) + list(trace["response_ids"][:j])
        kept = [c for c in sorted((r for r in rows if not r["is_trace_token"]), key=lambda r: r["candidate_rank"])
                if not c["is_cliff"] and not (strategy == "cliff_hard" and c["potential"] < c["p_prev"])]
        for c in kept[:wanted]:
            pairs.append({
                "trace_id": trace_id, "problem_id": c["problem_id"], "token_index": j, "category": CONTROL,
                "strategy": strategy, "is_correct": trace["is_correct"], "prompt_ids": prompt_ids,
                "chosen_id": int(c["candidate_id"]), "rejected_id": int(rej["candidate_id"]),
                "chosen_rank": int(c["candidate_rank"]), "rejected_rank": rej["candidate_rank"],
                "chosen_prob": float(c["prob"]), "rejected_prob": float(rej["prob"]),
                "chosen_potential": float(c["potential"]), "rejected_potential": float(rej["potential"]),
                "p_prev": float(c["p_prev"]),
            })
    return pairs


def variant_pairs(pairs: Sequence[dict], variant: str, heldout_fraction: float, seed: int,
                  heldout_by: str = "pair", replicated: set[tuple[str, int]] | None = None) -> list[dict]:
    """The pairs of one variant with `variant` and `split` set (exact, seeded held-out split). Variant
    `replicated` needs `replicated`, the (trace_id, token_index) of the cliffs that replicated."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Cliff-DPO variant {variant!r} (known: {sorted(VARIANTS)})")
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"dpo_pairs.heldout_fraction must be in [0, 1), got {heldout_fraction}")
    if heldout_by not in ("pair", "cliff"):
        raise ValueError(f"dpo_pairs.heldout_by must be pair|cliff, got {heldout_by!r}")
    if variant == "replicated" and replicated is None:
        raise ValueError("the replicated variant needs the replicate stage's verdicts")
    rows = [dict(p, variant=variant) for p in pairs if p["category"] in VARIANTS[variant]
            and (variant != "replicated" or (p["trace_id"], p["token_index"]) in replicated)]

    def group(p: dict) -> tuple:
        base = (p["trace_id"], p["token_index"])
        return base if heldout_by == "cliff" else (*base, p["chosen_id"])

    groups = sorted({group(p) for p in rows}, key=lambda g: (request_seed(seed, "heldout", *g), g))
    heldout = set(groups[:math.floor(heldout_fraction * len(groups) + 0.5)])
    for p in rows:
        p["split"] = "heldout" if group(p) in heldout else "train"
    return rows


def check_pairs(rows: Sequence[dict], where: str) -> None:
    """Refuse rows a trainer would silently mis-learn from: chosen == rejected, empty prompts."""
    for n, p in enumerate(rows):
        if p["chosen_id"] == p["rejected_id"]:
            raise ValueError(f"{where}: row {n} ({p['trace_id']}, token {p['token_index']}): "
                             f"chosen_id == rejected_id == {p['chosen_id']}")
        if not p["prompt_ids"]:
            raise ValueError(f"{where}: row {n} ({p['trace_id']}, token {p['token_index']}): empty prompt_ids")


def to_trl(rows: Sequence[dict]) -> list[dict]:
    """TRL's pre-tokenised preference format: prompt_ids / chosen_ids / rejected_ids (one token each)."""
    return [{"prompt_ids": list(p["prompt_ids"]), "chosen_ids": [p["chosen_id"]], "rejected_ids": [p["rejected_id"]],
             "split": p["split"], "trace_id": p["trace_id"], "token_index": p["token_index"]} for p in rows]
