"""Experiments (protocol §5): ablation prefixes, pass@k curves, candidates and CPM, their SQL checks and
the entropy/rank SQL, on a hand-made world with a scripted backend (exact counts, no model).

World (prompt "Q?", gold 7, N = 64 main rollouts):
  p1#0  failed   "abcXefYhij"  cliffs at 3 (X, first; p 0.75 → 0.125) and 6 (Y; p 1.0 → 0.25), critical 8
  p2#0  correct  "klmnZpqrst"  cliff at 4 (Z, first; p 1.0 → 0.5)
  p2#1  failed   "uvwxyabcde"  no cliff
Candidates (top list at the cliff, probabilities at T = 1):
  p1#0@3  A .40 (greedy)  X .30  B .10  C .05  G .05      sampled_off: X has rank 2
  p1#0@6  Y .60 (greedy)  D .30  E .05  F .03  I .01      uncertain: Y is greedy
  p2#0@4  H .50 (greedy)  I .20  J .15  K .10  Z .05      sampled_off
Scripted candidate potentials (last prompt token): A 1, B .25, C 0, G .5, D .5, E 1, F 0, H 0, others 1.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from cliffdata import schema
from cliffdata.analysis import duck
from cliffdata.backends import Backend, Generation, Sampling, request_seed
from cliffdata.cliffs.stats import cliff_p_value, is_cliff, min_detectable_drop, pass_at_k, wilson_interval
from cliffdata.config.experiments import AblationConfig, CandidatesConfig
from cliffdata.config.load import _build
from cliffdata.experiments.ablation import (ablation_metrics, ablation_requests, pass_at_k_curve, pass_at_k_plot,
                                            pass_at_k_table, resilience, run_ablation)
from cliffdata.experiments.candidates import candidate_rows, run_candidates
from cliffdata.experiments.controls import control_requests, run_control
from project_cliffs import TEST
from test_sql import seed_rows, write_seed

ROOT = Path(__file__).resolve().parents[1]
SAMPLING = Sampling(temperature=0.7, max_new_tokens=8)
N_MAIN = 64
SEED = 3


class ExactBackend(Backend):
    """Exactly round(p·n) of n continuations answer correctly, p = potential(prompt_ids); records calls."""

    name = "exact"

    def __init__(self, correct_ids, wrong_ids, potential):
        self.correct_ids, self.wrong_ids, self.potential = tuple(correct_ids), tuple(wrong_ids), potential
        self.eos_token_ids = (2,)
        self.calls: list[list] = []

    def generate(self, requests, sampling):
        self.calls.append(list(requests))
        out = []
        for req in requests:
            num_correct = round(self.potential(req.prompt_ids) * req.n)
            seqs = tuple((self.correct_ids if j < num_correct else self.wrong_ids) + (2,) for j in range(req.n))
            out.append(Generation(seqs, ("stop",) * req.n))
        return out

    @property
    def requests(self):
        return [r for call in self.calls for r in call]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return lambda ch: tiny_tokenizer.convert_tokens_to_ids(ch)


@pytest.fixture(scope="module")
def enc(tiny_tokenizer):
    return lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)


# --- the hand-made world ------------------------------------------------------------------------------

TRACES = {  # trace_id -> (problem_id, is_correct, response text, critical_index)
    "p1#0": ("p1", False, "abcXefYhij", 8),
    "p2#0": ("p2", True, "klmnZpqrst", None),
    "p2#1": ("p2", False, "uvwxyabcde", None),
}
# main-rollout num_correct (of 64) at positions -1 … 8
MAIN_CORRECT = {
    "p1#0": [48, 48, 48, 48, 8, 40, 64, 16, 16, 16],
    "p2#0": [64, 64, 64, 64, 64, 32, 32, 32, 32, 32],
    "p2#1": [32] * 10,
}
# (trace_id, token_index, category, [(candidate, prob)], greedy)
CLIFFS = [
    ("p1#0", 3, "sampled_off", [("A", .40), ("X", .30), ("B", .10), ("C", .05), ("G", .05)], "A"),
    ("p1#0", 6, "uncertain", [("Y", .60), ("D", .30), ("E", .05), ("F", .03), ("I", .01)], "Y"),
    ("p2#0", 4, "sampled_off", [("H", .50), ("I", .20), ("J", .15), ("K", .10), ("Z", .05)], "H"),
]
CANDIDATE_POTENTIAL = {"A": 1.0, "B": 0.25, "C": 0.0, "G": 0.5, "D": 0.5, "E": 1.0, "F": 0.0, "H": 0.0}


@pytest.fixture(scope="module")
def world(tok, enc) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {name: [] for name in ("problems", "traces", "token_stats", "potentials",
                                                         "cliffs", "trace_cliffs")}
    special = {(t, i): (cands, greedy, category) for t, i, category, cands, greedy in CLIFFS}
    for k, problem_id in enumerate(("p1", "p2")):
        rows["problems"].append(dict(problem_id=problem_id, dataset="arith", question="q", answer="7",
                                     answer_format="hash", prompt="p", family=None, level=None, source_index=k))
    for trace_id, (problem_id, is_correct, text, critical) in TRACES.items():
        response = enc(text)
        rows["traces"].append(dict(trace_id=trace_id, problem_id=problem_id, sample_index=int(trace_id[-1]),
                                   prompt_ids=enc("Q?"), response_ids=response, response_text=text,
                                   extracted_answer=None, is_correct=is_correct, finish_reason="stop",
                                   num_tokens=len(response)))
        for i, token_id in enumerate(response):
            cands, greedy, category = special.get((trace_id, i), (None, None, None))
            if cands is None:
                top = [(text[i], 0.9)] + [(c, 0.02) for c in "LMNO"]
                greedy, category = text[i], "deterministic"
            else:
                top = cands
            prob = dict(top)[text[i]]
            rank = 1 if text[i] == greedy else [c for c, _ in top].index(text[i]) + 1
            # the rollout sampler (T < 1) sharpens the greedy uncertain token: 0.95, too sure to carry a detectable drop
            sampler_prob = 0.95 if category == "uncertain" else prob
            rows["token_stats"].append(dict(
                trace_id=trace_id, token_index=i, token_id=token_id, logprob=math.log(prob), rank=rank,
                entropy=0.01 if category == "deterministic" else 1.2, entropy_full=1.3, greedy_token_id=tok(greedy),
                is_greedy=rank == 1, top_ids=[tok(c) for c, _ in top], top_probs=[p for _, p in top],
                sampler_prob=sampler_prob, max_drop=1 - sampler_prob))
        for i, num_correct in zip(range(-1, len(response) - 1), MAIN_CORRECT[trace_id]):
            rows["potentials"].append(dict(trace_id=trace_id, token_index=i, mode="exhaustive", num_rollouts=N_MAIN,
                                           num_correct=num_correct, potential=num_correct / N_MAIN, is_filled=False,
                                           num_generated_tokens=0))
        indices = [i for t, i, *_ in CLIFFS if t == trace_id]
        rows["trace_cliffs"].append(dict(trace_id=trace_id, problem_id=problem_id, is_correct=is_correct,
                                         num_tokens=len(response), num_scored=len(response) - 1,
                                         num_cliffs=len(indices), first_cliff_index=min(indices, default=None),
                                         critical_index=critical, num_feasible=len(response) - 1,
                                         expected_false_cliffs=0.01, false_cliffs_variance=0.0099))
    for trace_id, i, category, _, _ in CLIFFS:
        problem_id, is_correct, text, _ = TRACES[trace_id]
        prev, cur = MAIN_CORRECT[trace_id][i], MAIN_CORRECT[trace_id][i + 1]
        st = next(s for s in rows["token_stats"] if s["trace_id"] == trace_id and s["token_index"] == i)
        rows["cliffs"].append(dict(
            trace_id=trace_id, problem_id=problem_id, token_index=i, token_id=tok(text[i]), is_correct=is_correct,
            p_prev=prev / N_MAIN, potential=cur / N_MAIN, num_rollouts_prev=N_MAIN, num_rollouts=N_MAIN,
            delta=(prev - cur) / N_MAIN, is_first=i == min(j for t, j, *_ in CLIFFS if t == trace_id),
            relative_position=i / len(text), third="mid", entropy=st["entropy"], rank=st["rank"],
            is_greedy=st["is_greedy"], category=category,
            p_value=float(cliff_p_value(prev, N_MAIN, cur, N_MAIN, TEST)), max_drop=st["max_drop"],
            feasible=st["max_drop"] >= min_detectable_drop(N_MAIN, N_MAIN, TEST), fdr_significant=None))
    return rows


@pytest.fixture(scope="module")
def golds(world):
    return {p["problem_id"]: (p["answer"], p["answer_format"]) for p in world["problems"]}


@pytest.fixture(scope="module")
def backend_factory(enc, tok):
    """A backend whose potential is scripted by the candidate (the last prompt token) or, for
    ablation prefixes, 0 once a cliff token (X or Z) is in the prefix."""
    by_id = {tok(c): p for c, p in CANDIDATE_POTENTIAL.items()}
    traps = {tok("X"), tok("Z")}

    def make(kind: str = "candidates") -> ExactBackend:
        if kind == "candidates":
            potential = lambda ids: by_id.get(ids[-1], 1.0)
        else:
            potential = lambda ids: 0.0 if traps & set(ids) else 1.0
        return ExactBackend(enc("#### 7"), enc("#### 3"), potential)

    return make


def table(name, rows):
    return schema.to_table(name, rows)


# --- ablation prefixes --------------------------------------------------------------------------------

def random_del_index(trace_id: str, num_tokens: int, seed: int = SEED) -> int:
    return int(np.random.default_rng(request_seed(seed, "random_del", trace_id)).integers(num_tokens))


def test_ablation_requests(world):
    requests = ablation_requests(world["traces"], world["cliffs"], world["trace_cliffs"], SEED)
    got = {(r["trace_id"], r["arm"], r["token_index"]): (r["prefix_length"], r["is_first"], r["is_correct"])
           for r in requests}
    j = random_del_index("p1#0", 10)
    assert got == {
        ("p1#0", "del", 3): (3, True, False), ("p1#0", "keep", 3): (4, True, False),
        ("p1#0", "del", 6): (6, False, False), ("p1#0", "keep", 6): (7, False, False),
        ("p1#0", "critical_del", 8): (8, None, False), ("p1#0", "random_del", j): (j, None, False),
        ("p2#0", "del", 4): (4, True, True), ("p2#0", "keep", 4): (5, True, True),
    }   # p2#1 is failed but has no cliff: no comparators
    assert len(requests) == len(got)


def test_random_del_is_seeded_per_trace(world):
    def position(seed, traces=world["traces"]):
        reqs = ablation_requests(traces, world["cliffs"], world["trace_cliffs"], seed)
        return next(r["token_index"] for r in reqs if r["arm"] == "random_del")

    assert position(SEED) == position(SEED)
    only = [t for t in world["traces"] if t["trace_id"] == "p1#0"]
    only_cliffs = [c for c in world["cliffs"] if c["trace_id"] == "p1#0"]
    alone = ablation_requests(only, only_cliffs, world["trace_cliffs"][:1], SEED)
    assert next(r["token_index"] for r in alone if r["arm"] == "random_del") == position(SEED)
    positions = {position(seed) for seed in range(20)}
    assert len(positions) > 3 and positions <= set(range(10))


def test_run_ablation_prefixes_seeds_and_counts(world, golds, backend_factory, tokenizer, enc):
    requests = ablation_requests(world["traces"], world["cliffs"], world["trace_cliffs"], SEED)
    backend = backend_factory("ablation")
    rows = run_ablation(requests, world["traces"], golds, backend, tokenizer, 8, SAMPLING, SEED)
    assert len(backend.calls) == 2                        # one resample call per problem
    traces = {t["trace_id"]: t for t in world["traces"]}
    expected = {}
    for r in requests:
        trace = traces[r["trace_id"]]
        response = trace["response_ids"]
        i = r["token_index"]
        prefix = {"del": response[:i], "keep": response[:i + 1], "critical_del": response[:8],
                  "random_del": response[:random_del_index(r["trace_id"], len(response))]}[r["arm"]]
        expected[(tuple(trace["prompt_ids"] + prefix), request_seed(SEED, "ablation", r["trace_id"], r["arm"], i))] = 8
    assert {(req.prompt_ids, req.seed): req.n for req in backend.requests} == expected
    by_key = {(r["trace_id"], r["arm"], r["token_index"]): r for r in rows}
    # the cliff token X (p1#0@3) and Z (p2#0@4) make every continuation wrong once they are in the prefix
    assert by_key[("p1#0", "del", 3)]["num_correct"] == 8 and by_key[("p1#0", "keep", 3)]["num_correct"] == 0
    assert by_key[("p1#0", "del", 6)]["num_correct"] == 0 and by_key[("p1#0", "critical_del", 8)]["num_correct"] == 0
    assert by_key[("p2#0", "del", 4)]["num_correct"] == 8 and by_key[("p2#0", "keep", 4)]["num_correct"] == 0
    resilient = [r for r in rows if r["arm"] == "del_resilient"]
    for r in rows:
        if r["arm"] == "del_resilient":
            continue
        assert r["num_rollouts"] == 8 and r["potential"] == r["num_correct"] / 8
        assert r["num_generated_tokens"] == 8 * (len(enc("#### 7")) + 1)   # answer + EOS
        assert r["num_reemitted"] == (0 if r["arm"] == "del" else None)    # no continuation starts with the cliff token
    # with no re-emission, del_resilient is del again, at no generated token
    assert [(r["trace_id"], r["token_index"], r["num_rollouts"], r["num_correct"], r["num_generated_tokens"])
            for r in resilient] == [(r["trace_id"], r["token_index"], 8, r["num_correct"], 0)
                                    for r in rows if r["arm"] == "del"]
    assert schema.to_table("ablation", rows).num_rows == len(requests) + len(resilient)


def test_matched_controls_are_estimated_afresh_in_rounds_until_one_is_within_a_step(world, golds, tokenizer):
    from cliffdata.config.experiments import ControlPoolConfig
    from cliffdata.experiments.ablation import choose_controls
    from cliffdata.experiments.matching import cliff_covariates, control_pool, nearest_candidates

    # p2#1's tokens made non-greedy: the non-greedy cliff p1#0@3 has candidates there
    stats = table("token_stats", [{**r, "is_greedy": False, "rank": 2, "sampler_prob": 0.3 + r["token_index"] / 100}
                                  if r["trace_id"] == "p2#1" else r for r in world["token_stats"]])
    cliffs = cliff_covariates([c for c in world["cliffs"] if c["is_correct"] is False], stats)
    pool = control_pool(world["traces"], {(c["trace_id"], c["token_index"]) for c in world["cliffs"]}, stats)
    cfg = ControlPoolConfig(num_samples=0, max_estimates=4, estimates_per_round=2)
    nearest = nearest_candidates(cliffs, pool, cfg.max_estimates)
    first, second = (nearest[(c["trace_id"], c["token_index"])] for c in cliffs)     # p1#0@3 (p 0.75), p1#0@6 (1.0)
    # scripted p[j-1]: the third candidate of the first cliff is its match (a second round), the first of the
    # second cliff its match (one round); every other prefix 0, more than a rollout step from either cliff
    target = {(first[2]["trace_id"], first[2]["token_index"]): 0.75,
              (second[0]["trace_id"], second[0]["token_index"]): 1.0}
    assert len(target) == 2 and not {(r["trace_id"], r["token_index"]) for r in first[:2]} & set(target)
    traces = {t["trace_id"]: t for t in world["traces"]}
    prefixes = {tuple(traces[t]["prompt_ids"] + traces[t]["response_ids"][:j]): p for (t, j), p in target.items()}
    backend = ExactBackend(enc_answer := tokenizer.encode("#### 7", add_special_tokens=False),
                           tokenizer.encode("#### 3", add_special_tokens=False), lambda ids: prefixes.get(tuple(ids), 0.0))
    pairs, rows = choose_controls(cliffs, pool, world["traces"], golds, backend, tokenizer, cfg, SAMPLING, SEED)
    assert [(m["trace_id"], m["token_index"], m["p_prev"]) for _, m in pairs] == [
        (*key, p) for key, p in target.items()]
    estimated = {(r["trace_id"], r["token_index"]) for r in rows}
    assert len([r for r in rows if r["cliff_index"] == 3]) == 4 and len([r for r in rows if r["cliff_index"] == 6]) == 2
    # each estimate: the prefix response_ids[:j], the cliff's N, its own seed, once
    expected = {(tuple(traces[t]["prompt_ids"] + traces[t]["response_ids"][:j]),
                 request_seed(SEED, "control_estimate", t, j, 64)) for t, j in estimated}
    assert sorted((req.prompt_ids, req.seed) for req in backend.requests) == sorted(expected)
    assert {req.n for req in backend.requests} == {64} and enc_answer
    assert sum(r["is_chosen"] for r in rows) == 2 and table("matched_controls", rows).num_rows == len(rows)


# --- pass@k -------------------------------------------------------------------------------------------

class ReemitBackend(ExactBackend):
    """ExactBackend whose first `reemit` continuations of every request start with `token` and answer wrong."""

    def __init__(self, inner: ExactBackend, token: int, reemit: int):
        super().__init__(inner.correct_ids, inner.wrong_ids, inner.potential)
        self.token, self.reemit = token, reemit

    def generate(self, requests, sampling):
        out = []
        for gen in super().generate(requests, sampling):
            seqs = tuple((self.token,) + self.wrong_ids + (2,) if j < self.reemit else s for j, s in enumerate(gen.token_ids))
            out.append(Generation(seqs, gen.finish_reasons))
        return out


def test_del_continuations_that_reemit_the_cliff_token(world, golds, backend_factory, tokenizer, tok):
    """3 of 8 del continuations draw the cliff token X again (p1#0@3): the del row counts them, and
    del_resilient holds the other 5, as if X were forbidden at the first step; at Y and Z nothing re-emits."""
    requests = ablation_requests(world["traces"], world["cliffs"], world["trace_cliffs"], SEED)
    rows = run_ablation(requests, world["traces"], golds, ReemitBackend(backend_factory("ablation"), tok("X"), 3),
                        tokenizer, 8, SAMPLING, SEED)
    by_key = {(r["trace_id"], r["arm"], r["token_index"]): r for r in rows}
    d, res = by_key[("p1#0", "del", 3)], by_key[("p1#0", "del_resilient", 3)]
    assert (d["num_reemitted"], d["num_correct"]) == (3, 5)              # the 3 re-emissions answer wrong
    assert (res["num_rollouts"], res["num_correct"], res["potential"], res["num_generated_tokens"]) == (5, 5, 1.0, 0)
    assert by_key[("p2#0", "del", 4)]["num_reemitted"] == 0 and by_key[("p2#0", "del_resilient", 4)]["num_rollouts"] == 8
    out = resilience(rows)
    assert out["failed"]["num_reemitted"] == 3 and out["failed"]["num_del_continuations"] == 16
    assert out["failed"]["del_resilient_pass_at_1"] == pytest.approx((1.0 + 0.0) / 2)
    assert out["failed"]["del_pass_at_1"] == pytest.approx((5 / 8 + 0.0) / 2)
    # every continuation re-emits: no del_resilient row (no draw to estimate it from)
    rows = run_ablation(requests, world["traces"], golds, ReemitBackend(backend_factory("ablation"), tok("X"), 8),
                        tokenizer, 8, SAMPLING, SEED)
    assert ("p1#0", "del_resilient", 3) not in {(r["trace_id"], r["arm"], r["token_index"]) for r in rows}


def ablation_row(trace_id, token_index, arm, is_first, is_correct, num_correct, n=8):
    return dict(trace_id=trace_id, token_index=token_index, arm=arm, is_first=is_first, is_correct=is_correct,
                prefix_length=token_index + (arm == "keep"), num_rollouts=n, num_correct=num_correct,
                potential=num_correct / n, num_generated_tokens=0)


def test_pass_at_k_curve_matches_the_estimator_and_is_monotone():
    rows = [ablation_row("a", 1, "del", True, False, 1), ablation_row("a", 1, "keep", True, False, 0),
            ablation_row("a", 5, "del", False, False, 6), ablation_row("a", 5, "keep", False, False, 2),
            ablation_row("a", 7, "critical_del", None, False, 3), ablation_row("a", 2, "random_del", None, False, 8),
            ablation_row("b", 0, "del", True, True, 8), ablation_row("b", 0, "keep", True, True, 4),
            ablation_row("c", 0, "del", True, None, 5)]       # ungradable: in data, not in the curves
    ks = [1, 2, 4, 8]
    curve = pass_at_k_curve(rows, ks)
    got = {(r["scope"], r["correctness"], r["arm"], r["k"]): (r["num_instances"], r["pass_at_k"]) for r in curve}
    groups = {("all", "failed", "del"): [1, 6], ("all", "failed", "keep"): [0, 2], ("first", "failed", "del"): [1],
              ("first", "failed", "keep"): [0], ("all", "correct", "del"): [8], ("all", "correct", "keep"): [4],
              ("first", "correct", "del"): [8], ("first", "correct", "keep"): [4],
              **{(scope, "failed", "critical_del"): [3] for scope in ("all", "first")},
              **{(scope, "failed", "random_del"): [8] for scope in ("all", "first")}}
    assert set(got) == {(*g, k) for g in groups for k in ks}
    for group, counts in groups.items():
        values = [got[(*group, k)][1] for k in ks]
        assert values == pytest.approx([np.mean([pass_at_k(8, c, k) for c in counts]) for k in ks], abs=1e-15)
        assert all(b >= a for a, b in zip(values, values[1:])), group
        assert {got[(*group, k)][0] for k in ks} == {len(counts)}
    # pass@1 is the mean potential; pass@8 is the share of instances with a correct continuation
    assert got[("all", "failed", "del", 1)][1] == pytest.approx(7 / 16)
    assert got[("all", "failed", "keep", 8)][1] == 0.5
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k_curve(rows, [16])


def test_pass_at_k_outputs(world):
    rows = [ablation_row("a", 1, "del", True, False, 1), ablation_row("a", 1, "keep", True, False, 0)]
    curve = pass_at_k_curve(rows, [1, 2])
    metrics = ablation_metrics(curve)
    assert metrics == {scope: {"failed": {"del": {"num_instances": 1, "pass@1": 0.125, "pass@2": 0.25},
                                          "keep": {"num_instances": 1, "pass@1": 0.0, "pass@2": 0.0}}}
                       for scope in ("all", "first")}
    columns, plot = pass_at_k_plot(curve, [1, 2])
    assert columns[:2] == ["k", "all_correct_del"] and "all_failed_random_del" in columns and len(columns) == 17
    assert {"all_failed_matched_del", "first_failed_matched_keep"} <= set(columns)
    assert plot[0][columns.index("all_failed_del")] == 0.125 and plot[1][columns.index("first_failed_keep")] == 0.0
    assert plot[0][columns.index("all_failed_critical_del")] is None
    columns, table_rows = pass_at_k_table(curve, [1, 2])
    assert columns == ["scope", "correctness", "arm", "num_instances", "pass@1", "pass@2"]
    assert table_rows[0] == ["all", "failed", "del", 1, 0.125, 0.25]


def test_config_validates():
    with pytest.raises(ValueError, match=r"ks must lie in \[1, num_rollouts=8\], got \[1, 16\]"):
        AblationConfig(num_rollouts=8, ks=(1, 16))
    with pytest.raises(ValueError, match="strictly increasing"):
        AblationConfig(num_rollouts=8, ks=(2, 1))
    with pytest.raises(ValueError, match="unknown keys"):
        _build(CandidatesConfig, {"topk": 3}, "params.candidates")
    cfg = _build(AblationConfig, {"num_rollouts": 4, "ks": [1, 2, 4], "sampling": {"temperature": 1}}, "params.ablation")
    assert cfg.ks == (1, 2, 4) and cfg.sampling.temperature == 1.0


# --- candidates and CPM -------------------------------------------------------------------------------

def run_world_candidates(world, golds, backend, tokenizer, k=5, n=16):
    requests = candidate_rows(world["traces"], world["cliffs"], table("token_stats", world["token_stats"]),
                              table("potentials", world["potentials"]), k)
    rows = run_candidates(requests, world["traces"], golds, backend, tokenizer, n, SAMPLING, SEED, TEST)
    return requests, rows


NON_GREEDY = {("p1#0", 0), ("p1#0", 1), ("p1#0", 5), ("p2#0", 1), ("p2#0", 2)}    # control positions may sit here


def non_greedy_stats(world) -> list[dict]:
    """The world's token statistics with the positions of NON_GREEDY made non-greedy: the trace's token
    second (0.3) behind another (0.5); every other non-cliff token of the world is greedy."""
    out = []
    for r in world["token_stats"]:
        if (r["trace_id"], r["token_index"]) in NON_GREEDY:
            ids = list(r["top_ids"])
            r = {**r, "top_ids": [ids[1], ids[0], *ids[2:]], "top_probs": [0.5, 0.3, 0.1, 0.05, 0.05],
                 "logprob": math.log(0.3), "rank": 2, "is_greedy": False, "greedy_token_id": ids[1]}
        out.append(r)
    return out


def run_world_control(world, golds, backend, tokenizer, pairs=None, top_k=5, n=16):
    pairs = {("p1#0", 3): 2, ("p1#0", 6): 1, ("p2#0", 4): 3} if pairs is None else pairs
    keys = {(c["trace_id"], c["token_index"]) for c in world["cliffs"]}
    requests = control_requests(world["traces"], world["cliffs"], pairs, table("token_stats", non_greedy_stats(world)),
                                keys, top_k, SEED)
    return requests, run_control(requests, world["traces"], golds, backend, tokenizer, n, SAMPLING, SEED, TEST)


def test_control_mirrors_the_pairs_at_random_non_cliff_positions(world, golds, backend_factory, tokenizer):
    """One control position per cliff with pairs, in the same trace, never a cliff, never a greedy token and
    never twice, with every top-k alternative (never the trace's token); seeded; the pairs take the
    alternatives that pass the cliff pairs' rule, in rank order, as many as the cliff gives."""
    from cliffdata.dpo.pairs import control_pairs

    backend = backend_factory()
    requests, rows = run_world_control(world, golds, backend, tokenizer)
    cliffs = {(c["trace_id"], c["token_index"]) for c in world["cliffs"]}
    positions = {(r["trace_id"], r["token_index"]): r["cliff_index"] for r in rows}
    assert sorted(positions.values()) == [3, 4, 6] and not set(positions) & cliffs and set(positions) <= NON_GREEDY
    for (trace_id, j), i in positions.items():
        assert (trace_id, i) in cliffs
        mine = [r for r in rows if (r["trace_id"], r["token_index"]) == (trace_id, j)]
        token = next(t for t in world["traces"] if t["trace_id"] == trace_id)["response_ids"][j]
        own = [r for r in mine if r["is_trace_token"]]
        assert len(own) == 1 and own[0]["candidate_id"] == token and own[0]["candidate_rank"] == 2
        alts = [r for r in mine if not r["is_trace_token"]]
        assert len(alts) == 4 and token not in {r["candidate_id"] for r in alts}
        assert all(r["num_rollouts"] == r["num_rollouts_prev"] == 16 for r in mine)
        assert all(r["is_cliff"] == bool(is_cliff(r["num_correct_prev"], 16, r["num_correct"], 16, TEST)) for r in mine)
    # the prev prefix is sampled once per position, its tokens counted once
    assert sum(r["kind"] == "prev" for r in requests) == 3
    assert len({r.seed for r in backend.requests}) == len(requests)
    again, _ = run_world_control(world, golds, backend_factory(), tokenizer)
    assert again == requests                                                 # seeded
    wanted = {("p1#0", 3): 2, ("p1#0", 6): 1, ("p2#0", 4): 3}
    pairs = control_pairs(rows, world["traces"], "cliff_1N", wanted)
    expected = []
    for (trace_id, j), i in sorted(positions.items()):
        alts = sorted((r for r in rows if (r["trace_id"], r["token_index"]) == (trace_id, j) and not r["is_trace_token"]),
                      key=lambda r: r["candidate_rank"])
        expected += [(trace_id, j, r["candidate_id"]) for r in alts if not r["is_cliff"]][:wanted[(trace_id, i)]]
    assert [(p["trace_id"], p["token_index"], p["chosen_id"]) for p in pairs] == expected and expected
    assert {p["category"] for p in pairs} == {"control"}
    for p in pairs:
        trace = next(t for t in world["traces"] if t["trace_id"] == p["trace_id"])
        assert p["rejected_id"] == trace["response_ids"][p["token_index"]]
        assert p["prompt_ids"] == trace["prompt_ids"] + trace["response_ids"][:p["token_index"]]
    # an alternative the test calls a cliff is never chosen, whatever its rank
    flagged = [{**r, "is_cliff": True} if not r["is_trace_token"] and r["candidate_rank"] == 1 else r for r in rows]
    assert all(p["chosen_rank"] != 1 for p in control_pairs(flagged, world["traces"], "cliff_1N", wanted))


def test_candidates_reuse_the_main_potential_for_the_cliff_token(world, golds, backend_factory, tokenizer, tok, enc):
    backend = backend_factory()
    requests, rows = run_world_candidates(world, golds, backend, tokenizer)
    assert len(rows) == 15 and len(backend.calls) == 2         # one resample call per problem
    traces = {t["trace_id"]: t for t in world["traces"]}
    expected = {}
    for r in rows:
        if r["is_cliff_token"]:
            main = MAIN_CORRECT[r["trace_id"]][r["token_index"] + 1]
            assert (r["num_rollouts"], r["num_correct"], r["num_generated_tokens"]) == (N_MAIN, main, 0)
            assert r["is_cliff"] is True
        else:
            assert r["num_rollouts"] == 16 and r["num_generated_tokens"] == 16 * (len(enc("#### 7")) + 1)
            t = traces[r["trace_id"]]
            prefix = t["prompt_ids"] + t["response_ids"][:r["token_index"]] + [r["candidate_id"]]
            expected[(tuple(prefix), request_seed(SEED, "candidates", r["trace_id"], r["token_index"],
                                                  r["candidate_id"]))] = 16
    # every other candidate got exactly one request of N; the cliff token none
    assert {(q.prompt_ids, q.seed): q.n for q in backend.requests} == expected
    assert len(backend.requests) == 12
    by_key = {(r["trace_id"], r["token_index"], r["candidate_id"]): r for r in rows}
    assert by_key[("p1#0", 3, tok("A"))]["is_greedy"] and by_key[("p1#0", 3, tok("A"))]["candidate_rank"] == 1
    assert by_key[("p1#0", 3, tok("B"))]["potential"] == 0.25
    assert by_key[("p1#0", 3, tok("X"))]["p_prev"] == 0.75 and by_key[("p1#0", 3, tok("X"))]["num_rollouts_prev"] == 64


def test_is_cliff_uses_each_sides_n(world, golds, backend_factory, tokenizer, tok):
    for n, expected_g in ((4, False), (16, False), (64, True)):
        _, rows = run_world_candidates(world, golds, backend_factory(), tokenizer, n=n)
        for r in rows:
            if not r["is_cliff_token"]:
                assert r["is_cliff"] == bool(is_cliff(r["num_correct_prev"], r["num_rollouts_prev"],
                                                      r["num_correct"], r["num_rollouts"], TEST))
        g = next(r for r in rows if r["trace_id"] == "p1#0" and r["candidate_id"] == tok("G"))
        # p_prev 48/64 = 0.75 vs G at 0.5: a drop of 0.25 is a cliff only with 64 rollouts on G's side too
        assert (g["num_rollouts_prev"], g["potential"], g["is_cliff"]) == (64, 0.5, expected_g)


def test_cliff_token_outside_the_top_k(world, golds, backend_factory, tokenizer, tok):
    _, rows = run_world_candidates(world, golds, backend_factory(), tokenizer, k=1, n=4)
    got = {(t, i): [(r["candidate_rank"], r["is_cliff_token"]) for r in rows
                    if (r["trace_id"], r["token_index"]) == (t, i)] for t, i, *_ in CLIFFS}
    assert got[("p1#0", 3)] == [(1, False), (None, True)]        # A in the top-1, X after it
    assert got[("p1#0", 6)] == [(1, True)]                       # Y is the top-1
    x = next(r for r in rows if r["candidate_id"] == tok("X"))
    assert x["prob"] == pytest.approx(0.30)                      # exp(logprob) from token_stats
    with pytest.raises(ValueError, match="top_k = 6 but token_stats stores only 5"):
        candidate_rows(world["traces"], world["cliffs"], table("token_stats", world["token_stats"]),
                       table("potentials", world["potentials"]), 6)


def write_world(root: Path, world: dict, experiment_rows: dict[str, list[dict]]) -> Path:
    for name, rows in world.items():
        schema.write(name, rows, root / schema.PATHS[name])
    for name, rows in experiment_rows.items():
        schema.write(name, rows, root / schema.PATHS[name])
    return root


def test_cpm_and_greedy_recovery_closed_form(tmp_path, world, golds, backend_factory, tokenizer):
    _, rows = run_world_candidates(world, golds, backend_factory(), tokenizer, k=5, n=16)
    con = duck.connect(write_world(tmp_path, world, {"candidates": rows}))
    by_category = {r.pop("category"): r for r in duck.run_sql_file(con, "cpm_by_category", {}).to_pylist()}
    assert list(by_category) == ["deterministic", "uncertain", "sampled_off", "other", "all"]
    # p1#0@3 (p_prev .75): X .30 + B (.25 of 16) .10 + C (0) .05 = .45; G (8/16) is not a cliff at N = 16
    # p2#0@4 (p_prev 1):   Z .05 + H (0) .50 = .55; I, J, K answer right
    # p1#0@6 (p_prev 1):   Y .60 + D (8/16) .30 + F (0) .03 = .93; E and I answer right
    cpm = {"p1#0@3": .45, "p2#0@4": .55, "p1#0@6": .93}        # over alternatives (no cliff token): .15, .50, .33
    # greedy replacement: A (p 1) at p1#0@3: (1 - .125) / (.75 - .125) = 1.4; H (p 0) at p2#0@4:
    # (0 - .5) / (1 - .5) = -1; at p1#0@6 the greedy token is the cliff token: null
    assert by_category["sampled_off"] == pytest.approx(dict(
        num_cliffs=2, cpm_mean=(.45 + .55) / 2, cpm_median=.5, cpm_alternatives_mean=(.15 + .50) / 2,
        cliff_candidates_mean=2 / 2 + 1 / 2, cliff_candidate_share=3 / 8, num_greedy_replacements=2,
        recovery_mean=0.2, recovery_median=0.2))
    assert by_category["uncertain"] == pytest.approx(dict(
        num_cliffs=1, cpm_mean=.93, cpm_median=.93, cpm_alternatives_mean=.33, cliff_candidates_mean=2.0,
        cliff_candidate_share=0.5, num_greedy_replacements=0, recovery_mean=None, recovery_median=None))
    assert by_category["all"]["cpm_mean"] == pytest.approx(sum(cpm.values()) / 3)
    assert by_category["deterministic"] == dict(
        num_cliffs=0, cpm_mean=None, cpm_median=None, cpm_alternatives_mean=None, cliff_candidates_mean=None,
        cliff_candidate_share=None, num_greedy_replacements=0, recovery_mean=None, recovery_median=None)
    # with N = 64, G (32/64 against 48/64) becomes a cliff: p1#0@3 gains .05
    _, rows = run_world_candidates(world, golds, backend_factory(), tokenizer, k=5, n=64)
    con = duck.connect(write_world(tmp_path, world, {"candidates": rows}))
    by_category = {r.pop("category"): r for r in duck.run_sql_file(con, "cpm_by_category", {}).to_pylist()}
    assert by_category["sampled_off"]["cpm_mean"] == pytest.approx((.50 + .55) / 2)


# --- checks -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def experiment_rows(world, golds, backend_factory, tokenizer) -> dict[str, list[dict]]:
    requests = ablation_requests(world["traces"], world["cliffs"], world["trace_cliffs"], SEED)
    ablation = run_ablation(requests, world["traces"], golds, backend_factory("ablation"), tokenizer,
                            8, SAMPLING, SEED)
    _, candidates = run_world_candidates(world, golds, backend_factory(), tokenizer)
    # a replicate table whose fresh counts differ from the main ones: the candidates (main counts) match
    # one source, as candidates_potentials asks
    replicate = [{**{k: c[k] for k in ("trace_id", "problem_id", "token_index", "is_correct", "category", "feasible")},
                  "num_rollouts_prev": 4, "num_correct_prev": 3, "num_rollouts": 4, "num_correct": 1, "p_prev": 0.75,
                  "potential": 0.25, "delta": 0.5, "p_value": 0.1, "replicated": False, "num_generated_tokens": 8}
                 for c in world["cliffs"]]
    # the matched control of p1#0@6 (p 1.0 at N 64): two candidates estimated, one within a step and chosen
    pool = [{**world["traces"][2], "trace_id": "p2#control0", "sample_index": 0}]
    matched = [{"cliff_trace_id": "p1#0", "cliff_index": 6, "trace_id": t, "token_index": j, "source": source,
                "relative_position": j / 10, "sampler_prob": 0.9, "is_greedy": True, "distance": d,
                "num_rollouts_prev": 64, "num_correct_prev": c, "p_prev": c / 64, "cliff_p_prev": 1.0, "is_chosen": chosen}
               for t, j, source, d, c, chosen in [("p2#1", 2, "failed", 0.1, 40, False),
                                                  ("p2#control0", 5, "pool", 0.3, 63, True)]]
    return {"ablation": ablation, "pass_at_k": pass_at_k_curve(ablation, [1, 2, 4, 8]),
            "matched_controls": matched, "control_traces": pool,
            "candidates": candidates, "control": run_world_control(world, golds, backend_factory(), tokenizer)[1],
            "replicate": replicate}


def _set(name: str, where: dict, **values):
    def breaks(rows):
        next(r for r in rows[name] if where.items() <= r.items()).update(values)
    return breaks


def _duplicate(name: str):
    def breaks(rows):
        rows[name].append(copy.deepcopy(rows[name][0]))
    return breaks


def _inflate_cpm(rows):
    for r in rows["candidates"]:
        if (r["trace_id"], r["token_index"]) == ("p1#0", 3) and r["is_cliff"]:
            r["prob"] = 0.6


BREAKS = {
    "unique_control": _duplicate("control"),
    "unique_ablation": _duplicate("ablation"),
    "unique_pass_at_k": _duplicate("pass_at_k"),
    "unique_candidates": _duplicate("candidates"),
    "unique_matched_controls": _duplicate("matched_controls"),
    "unique_control_traces": _set("control_traces", {}, trace_id="p2#9"),
    "matched_controls_chosen": _set("matched_controls", {"is_chosen": True}, num_correct_prev=60, p_prev=60 / 64),
    "ablation_counts": _set("ablation", {"arm": "del"}, num_correct=9, potential=9 / 8),
    "ablation_prefix": _set("ablation", {"arm": "keep", "token_index": 3}, prefix_length=3),
    "pass_at_k_monotone": _set("pass_at_k", {"scope": "all", "correctness": "failed", "arm": "del", "k": 8},
                               pass_at_k=0.01),
    "candidates_counts": _set("candidates", {"is_cliff_token": False}, prob=1.5),
    "candidates_cliff_token": _set("candidates", {"is_cliff_token": True}, is_cliff=False),
    "candidates_cpm_range": _inflate_cpm,
    "candidates_potentials": _set("candidates", {"is_cliff_token": True, "token_index": 6},
                                  num_correct=17, potential=17 / 64),
}


EXPERIMENT_DATASETS = {"ablation", "pass_at_k", "matched_controls", "control_traces", "candidates", "control"}


def experiment_checks() -> set[str]:
    return {name for name, sql in duck.check_files().items() if duck._referenced_datasets(sql) & EXPERIMENT_DATASETS}


def test_every_experiment_check_has_a_breaking_seed():
    assert experiment_checks() == set(BREAKS)


def test_checks_pass_on_produced_tables(tmp_path, world, experiment_rows):
    con = duck.connect(write_world(tmp_path, world, experiment_rows))
    counts = duck.assert_checks(con)
    assert set(BREAKS) <= set(counts) and set(counts.values()) == {0}   # the world is a valid upstream too


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_check_catches_broken_table(tmp_path, world, experiment_rows, check):
    rows = copy.deepcopy(experiment_rows)
    BREAKS[check](rows)
    con = duck.connect(write_world(tmp_path, world, rows))
    assert duck.run_checks(con)[check] >= 1
    with pytest.raises(ValueError, match=check):
        duck.assert_checks(con)


# the rules each check holds beyond its first breaking seed: (check, how the rows break)
MORE_BREAKS = [
    ("ablation_counts", _set("ablation", {"arm": "del"}, num_reemitted=None)),          # del counts its re-emissions
    ("ablation_counts", _set("ablation", {"arm": "keep"}, num_reemitted=0)),            # ... and only del
    ("ablation_counts", _set("ablation", {"arm": "del_resilient"}, num_generated_tokens=5)),
    ("ablation_prefix", _set("ablation", {"arm": "del_resilient"}, num_rollouts=7, num_correct=0, potential=0.0)),
    ("ablation_prefix", _set("ablation", {"arm": "keep"}, cliff_trace_id="p1#0", cliff_index=3)),
    ("ablation_prefix", _set("ablation", {"arm": "del", "token_index": 3}, arm="matched_del")),   # names no cliff
    ("unique_control_traces", _duplicate("control_traces")),
    ("matched_controls_chosen", _set("matched_controls", {"is_chosen": False}, p_prev=0.5)),        # not its counts
    ("matched_controls_chosen", _set("matched_controls", {"is_chosen": False}, is_chosen=True)),    # two chosen
    ("matched_controls_chosen", _set("matched_controls", {"is_chosen": True}, num_correct_prev=65, p_prev=65 / 64)),
]


@pytest.mark.parametrize("check,breaks", MORE_BREAKS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(MORE_BREAKS)])
def test_check_catches_more_broken_tables(tmp_path, world, experiment_rows, check, breaks):
    rows = copy.deepcopy(experiment_rows)
    breaks(rows)
    assert duck.run_checks(duck.connect(write_world(tmp_path, world, rows)))[check] >= 1


def test_checks_skip_missing_views(tmp_path, world, experiment_rows):
    candidate_checks = {name for name in BREAKS
                        if name.startswith(("candidates", "unique_candidates")) or name == "unique_control"}
    con = duck.connect(write_world(tmp_path, world, {"candidates": experiment_rows["candidates"],
                                                    "control": experiment_rows["control"]}))
    # without a replicate table the check of the candidates' count sources (main or fresh) does not run
    assert set(duck.run_checks(con)) & set(BREAKS) == candidate_checks - {"candidates_potentials"}
    # a stage checks only its own outs: the ablation stage does not see a (possibly stale) candidates table
    root = write_world(tmp_path, world, experiment_rows)
    ablation_con = duck.connect(root, ["ablation", "pass_at_k", "matched_controls", "control_traces"])
    assert {n for n in duck.run_checks(ablation_con) if not n.startswith("finite_")} == set(BREAKS) - candidate_checks
    assert duck.views(duck.connect(root, ["candidates", "cliffs"])) == {"candidates", "cliffs"}
    with pytest.raises(ValueError, match="unknown datasets"):
        duck.connect(root, ["candidate"])


# --- entropy / rank SQL on the seed of test_sql -----------------------------------------------------

ENTROPY_PARAMS = {"include_empty_prefix": True, "entropy_threshold": 0.056, "use_full_entropy": False}


def test_entropy_rank_on_the_sql_seed(tmp_path):
    con = duck.connect(write_seed(tmp_path, seed_rows()))
    rows = {r.pop("cell"): r for r in duck.run_sql_file(con, "entropy_rank", ENTROPY_PARAMS).to_pylist()}
    assert list(rows) == ["deterministic", "uncertain", "sampled_off", "other", "greedy", "not_greedy",
                          "low_entropy", "high_entropy", "all"]
    # 3 cliffs: (0.01, greedy), (0.50, greedy), (0.90, rank 3); 15 tokens: low+greedy 7, high+greedy 4,
    # high+not greedy 3, low+not greedy 1 (see test_sql.test_taxonomy)
    expected = {"deterministic": (1, 7), "uncertain": (1, 4), "sampled_off": (1, 3), "other": (0, 1),
                "greedy": (2, 11), "not_greedy": (1, 4), "low_entropy": (1, 8), "high_entropy": (2, 7), "all": (3, 15)}
    for cell, (num_cliffs, baseline_count) in expected.items():
        row = rows[cell]
        assert (row["num_cliffs"], row["baseline_count"]) == (num_cliffs, baseline_count), cell
        assert row["cliff_share"] == pytest.approx(num_cliffs / 3)
        assert row["baseline_share"] == pytest.approx(baseline_count / 15)
        assert row["ratio"] == pytest.approx((num_cliffs / 3) / (baseline_count / 15))
    assert (rows["greedy"]["entropy"], rows["greedy"]["greedy"]) == ("all", "greedy")
    # paper mode drops the cliff at token 0 (t1, deterministic)
    paper = {r["cell"]: r for r in duck.run_sql_file(con, "entropy_rank", {**ENTROPY_PARAMS,
                                                                           "include_empty_prefix": False}).to_pylist()}
    assert paper["deterministic"]["num_cliffs"] == 0 and paper["greedy"]["cliff_share"] == 0.5


def test_entropy_hist_on_the_sql_seed(tmp_path):
    con = duck.connect(write_seed(tmp_path, seed_rows()))
    params = {"include_empty_prefix": True, "use_full_entropy": False, "num_bins": 10, "max_entropy": 1.0}
    rows = duck.run_sql_file(con, "entropy_hist", params).to_pylist()
    assert [r["bin"] for r in rows] == list(range(10))
    assert [r["bin_start"] for r in rows] == pytest.approx([b / 10 for b in range(10)])
    # baseline entropies: eight below 0.1, then 0.1 0.2 0.3 0.5 0.6 0.7 0.9; cliffs 0.01 0.5 0.9
    assert [r["baseline_count"] for r in rows] == [8, 1, 1, 1, 0, 1, 1, 1, 0, 1]
    assert [r["num_cliffs"] for r in rows] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert sum(r["baseline_share"] for r in rows) == pytest.approx(1.0)
    assert rows[0]["cliff_share"] == pytest.approx(1 / 3) and rows[0]["baseline_share"] == pytest.approx(8 / 15)
    # values above max_entropy fall in the last bin
    rows = duck.run_sql_file(con, "entropy_hist", {**params, "num_bins": 2, "max_entropy": 0.4}).to_pylist()
    assert [r["baseline_count"] for r in rows] == [9, 6] and [r["num_cliffs"] for r in rows] == [1, 2]


# --- the stages, in process, on the world --------------------------------------------------------------

def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "pipeline" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_stage(name: str, monkeypatch, backend, tokenizer) -> None:
    """Run pipeline/<name>.py in the current folder with `backend` and `tokenizer` in place of the model's."""
    module = load_stage(name)
    monkeypatch.setattr(module, "open_backend", lambda engine, path, seed: backend)
    monkeypatch.setattr(module, "AutoTokenizer", SimpleNamespace(from_pretrained=lambda path: tokenizer))
    if hasattr(module, "pool_token_stats"):     # the control pool's covariates without a model: every other token greedy
        monkeypatch.setattr(module, "pool_token_stats", lambda model_dir, traces, cfg, sampling: [
            {"trace_id": t["trace_id"], "token_index": j, "token_id": token, "logprob": -1.0, "rank": 1 + j % 2,
             "entropy": 0.5, "entropy_full": 0.6, "greedy_token_id": token, "is_greedy": j % 2 == 0, "top_ids": [token],
             "top_probs": [0.4], "sampler_prob": 0.3, "max_drop": 0.7}
            for t in traces for j, token in enumerate(t["response_ids"])])
    module.main()


PARAMS = """
problems: {sources: [{dataset: arith, families: {add1: 1}, prompt: p}]}
prompts: {p: {instruction: "", shots: []}}
engine: {backend: vllm}
cliffs: {test: {delta0: 0.1, z: 1.645, min_rollouts: 8}, entropy: top20, entropy_boundary_p: 0.99,
         include_empty_prefix: true, critical_threshold: 0.05}
ablation:
  num_rollouts: 4
  seed: 0
  ks: [1, 2, 4]
  sampling: {temperature: 0.7, top_p: 1.0, top_k: 0, max_new_tokens: 8}
  control_pool: {num_samples: 2, max_estimates: 4, estimates_per_round: 2}
candidates:
  top_k: 3
  num_rollouts: 4
  seed: 0
  sampling: {temperature: 0.7, top_p: 1.0, top_k: 0, max_new_tokens: 8}
  fresh_estimates: false
entropy: {bins: 10, max_entropy: 1.5}
"""


@pytest.mark.parametrize("stage", ["ablation", "candidates"])
def test_stage_runs_on_the_world(tmp_path, monkeypatch, world, backend_factory, tokenizer, stage):
    write_world(tmp_path, world, {"replicate": []})
    (tmp_path / "params.yaml").write_text(PARAMS + "dpo_pairs: {top_k: 3}\n")   # <= candidates.top_k
    monkeypatch.chdir(tmp_path)
    run_stage(stage, monkeypatch, backend_factory("ablation" if stage == "ablation" else "candidates"), tokenizer)
    if stage == "ablation":
        metrics = json.loads((tmp_path / "metrics/ablation.json").read_text())
        assert metrics["all"]["failed"]["del"] == {"num_instances": 2, "pass@1": 0.5, "pass@2": 0.5, "pass@4": 0.5}
        assert metrics["all"]["failed"]["keep"]["pass@4"] == 0.0
        assert (tmp_path / "plots/pass_at_k.csv").read_text().splitlines()[0].startswith("k,all_correct_del,")
        assert pq.read_schema(tmp_path / schema.PATHS["ablation"]).equals(schema.ABLATION)
        assert (tmp_path / "metrics/ablation.md").read_text().startswith("| scope | correctness | arm |")
        # the matched controls: two pool traces per problem, sampled and estimated by the backend, where
        # every prefix without X or Z answers right: p1#0@6 (p 1) finds a control, p1#0@3 (p 0.75) none
        pool = pq.read_table(tmp_path / schema.PATHS["control_traces"]).to_pylist()
        assert sorted(t["trace_id"] for t in pool) == ["p1#control0", "p1#control1", "p2#control0", "p2#control1"]
        candidates = pq.read_table(tmp_path / schema.PATHS["matched_controls"]).to_pylist()
        traces = {t["trace_id"]: t for t in world["traces"] + pool}
        assert all(r["p_prev"] == (0.0 if {"X", "Z"} & set(traces[r["trace_id"]]["response_text"][:r["token_index"]])
                                   else 1.0) for r in candidates)
        assert len({r["cliff_index"] for r in candidates}) == 2
        balance = metrics["matched_control"]
        assert (balance["num_matched"], balance["num_unmatched"]) == (1, 1)
        chosen = [r for r in candidates if r["is_chosen"]]
        assert [(r["cliff_index"], r["num_rollouts_prev"]) for r in chosen] == [(6, 64)]
        rows = pq.read_table(tmp_path / schema.PATHS["ablation"]).to_pylist()
        assert {(r["trace_id"], r["token_index"], r["is_correct"]) for r in rows if r["arm"].startswith("matched")} == {
            (chosen[0]["trace_id"], chosen[0]["token_index"], False)}
    else:
        cpm = json.loads((tmp_path / "metrics/cpm.json").read_text())
        assert cpm["all"]["num_cliffs"] == 3
        assert not (tmp_path / "metrics/entropy_rank.json").exists()      # the entropy stage's, SQL only
        load_stage("entropy").main()
        assert json.loads((tmp_path / "metrics/entropy_rank.json").read_text())["all"]["num_cliffs"] == 3
        hist = (tmp_path / "plots/entropy_hist.csv").read_text().splitlines()
        assert hist[0] == "bin,bin_start,bin_end,num_cliffs,cliff_share,baseline_count,baseline_share"
        assert len(hist) == 11
        assert (tmp_path / "plots/cpm.csv").read_text().splitlines()[0].startswith("category,num_cliffs,cpm_mean")
    con = duck.connect(tmp_path)
    assert set(duck.run_checks(con).values()) == {0}


def test_a_study_models_stages_write_under_its_root_what_the_pipelines_model_writes(tmp_path, monkeypatch, world,
                                                                                     backend_factory, tokenizer):
    """`--model b` reads and writes under study/b/ (the shared problems the project's): the same files,
    byte for byte, that the pipeline's own model's run writes at its root; the working directory and
    schema.PATHS stay the project's."""
    import sys

    from cliffdata.study import Layout

    own, proj = tmp_path / "own", tmp_path / "proj"
    study = Layout(Path("study/b"))
    write_world(own, world, {})
    for name, rows in world.items():
        schema.write(name, rows, proj / study.data(name))
    params = PARAMS + "dpo_pairs: {top_k: 3}\n"
    (own / "params.yaml").write_text(params)
    (proj / "params.yaml").write_text(params + "study: {models: {b: {source: org/B-1B}}}\n")
    paths = dict(schema.PATHS)
    for root, argv in ((own, []), (proj, ["--model", "b"])):
        monkeypatch.chdir(root)
        monkeypatch.setattr(sys, "argv", [sys.argv[0], *argv])
        run_stage("candidates", monkeypatch, backend_factory("candidates"), tokenizer)
        load_stage("entropy").main()
        assert Path.cwd() == root and schema.PATHS == paths
    written = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
                            if p.is_file() and p.name != "params.yaml" and "problems" not in p.parts}
    assert written(proj) == {study.root / p: data for p, data in written(own).items()}
    assert {p.relative_to(proj) for p in (proj / "data").rglob("*") if p.is_file()} == {study.data("problems")}
    assert Path(schema.PATHS["candidates"]) in written(own)
    assert (proj / study.path(".cache/candidates")).is_dir() and not (proj / ".cache").exists()    # checkpoints


def test_candidates_stage_takes_p_prev_from_the_replicate_stage(tmp_path, monkeypatch, world, backend_factory,
                                                               tokenizer):
    """candidates.fresh_estimates: p_prev and the cliff token's counts are the replicate stage's, not the
    detection rollouts' (which selected the cliff); the candidates' own rollouts are unchanged."""
    write_world(tmp_path, world, {})
    again = {(c["trace_id"], c["token_index"]): (4, 3, 4, 1) for c in world["cliffs"]}
    schema.write("replicate", [{**{k: c[k] for k in ("trace_id", "problem_id", "token_index", "is_correct", "category",
                                                     "feasible")},
                                "num_rollouts_prev": 4, "num_correct_prev": 3, "num_rollouts": 4, "num_correct": 1,
                                "p_prev": 0.75, "potential": 0.25, "delta": 0.5, "p_value": 0.1, "replicated": False,
                                "num_generated_tokens": 8} for c in world["cliffs"]], tmp_path / schema.PATHS["replicate"])
    (tmp_path / "params.yaml").write_text(PARAMS.replace("fresh_estimates: false", "fresh_estimates: true")
                                          + "dpo_pairs: {top_k: 3}\n")
    monkeypatch.chdir(tmp_path)
    run_stage("candidates", monkeypatch, backend_factory("candidates"), tokenizer)
    rows = pq.read_table(tmp_path / schema.PATHS["candidates"]).to_pylist()
    assert {(r["num_rollouts_prev"], r["num_correct_prev"], r["p_prev"]) for r in rows} == {(4, 3, 0.75)}
    own = [r for r in rows if r["is_cliff_token"]]
    assert len(own) == len(again) and {(r["num_rollouts"], r["num_correct"]) for r in own} == {(4, 1)}
    assert all(r["num_rollouts"] == 4 for r in rows if not r["is_cliff_token"])


def test_dpo_pairs_stage_on_the_world_and_its_fake_backend_refusal(tmp_path, monkeypatch, world, backend_factory,
                                                                   tokenizer):
    """candidates (scripted rollouts) -> dpo_pairs: one Parquet + TRL file per variant, pairs only at cliffs
    whose token is in the top-k, every chosen token a non-cliff candidate; engine.backend fake is refused."""
    write_world(tmp_path, {**world, "token_stats": non_greedy_stats(world)}, {})
    (tmp_path / "params.yaml").write_text(PARAMS + "dpo_pairs: {top_k: 3, heldout_fraction: 0.0}\n")
    monkeypatch.chdir(tmp_path)
    run_stage("candidates", monkeypatch, backend_factory("candidates"), tokenizer)
    with pytest.raises(FileNotFoundError, match="replicate"):           # the replicated variant needs its verdicts
        load_stage("dpo_pairs").main()
    schema.write("replicate", [{**{k: c[k] for k in ("trace_id", "problem_id", "token_index", "is_correct", "category",
                                                     "feasible")},
                                "num_rollouts_prev": 4, "num_correct_prev": 4, "num_rollouts": 4, "num_correct": 0,
                                "p_prev": 1.0, "potential": 0.0, "delta": 1.0, "p_value": 0.0,
                                "replicated": c["token_index"] != 6, "num_generated_tokens": 8} for c in world["cliffs"]],
                 tmp_path / schema.PATHS["replicate"])
    load_stage("dpo_pairs").main()
    summary = json.loads((tmp_path / "metrics/dpo_pairs.json").read_text())
    cands = pq.read_table(tmp_path / schema.PATHS["candidates"]).to_pylist()
    expected = [c for c in cands if c["candidate_rank"] is not None and c["candidate_rank"] <= 3
                and not c["is_cliff"] and any(o["is_cliff_token"] and o["candidate_rank"] is not None
                                              and o["trace_id"] == c["trace_id"] and o["token_index"] == c["token_index"]
                                              for o in cands)]
    pairs = pq.read_table(tmp_path / "data/dpo_pairs/all.parquet").to_pylist()
    assert summary["variants"]["all"]["num_pairs"] == len(pairs) == len(expected) > 0
    assert {(p["trace_id"], p["token_index"], p["chosen_id"]) for p in pairs} == \
        {(c["trace_id"], c["token_index"], c["candidate_id"]) for c in expected}
    trl = pq.read_table(tmp_path / "data/dpo_pairs/all.trl.parquet").to_pylist()
    assert [r["chosen_ids"] for r in trl] == [[p["chosen_id"]] for p in pairs]
    for variant in ("deterministic", "uncertain", "sampled_off", "uncertain_sampled_off", "replicated", "random"):
        assert (tmp_path / f"data/dpo_pairs/{variant}.parquet").exists()
    # replicated: the pairs of `all` at replicated cliffs; random: at most as many pairs as each cliff gives,
    # at non-cliff, non-greedy positions of its trace
    replicated = pq.read_table(tmp_path / "data/dpo_pairs/replicated.parquet").to_pylist()
    assert {(p["trace_id"], p["token_index"], p["chosen_id"]) for p in replicated} == \
        {(p["trace_id"], p["token_index"], p["chosen_id"]) for p in pairs if p["token_index"] != 6}
    control = pq.read_table(tmp_path / "data/dpo_pairs/random.parquet").to_pylist()
    assert 0 < len(control) <= len(pairs) and {p["category"] for p in control} == {"control"}
    assert {(p["trace_id"], p["token_index"]) for p in control} <= NON_GREEDY
    assert not {(p["trace_id"], p["token_index"]) for p in control} & {(c["trace_id"], c["token_index"]) for c in world["cliffs"]}
    assert set(duck.run_checks(duck.connect(tmp_path)).values()) == {0}

    (tmp_path / "params.yaml").write_text(PARAMS.replace("backend: vllm", "backend: fake")
                                          + "dpo_pairs: {top_k: 3}\n")
    with pytest.raises(SystemExit, match="refusing to build pairs .* fake"):
        load_stage("dpo_pairs").main()


# --- replication and cliffs.use -----------------------------------------------------------------------

def test_replicate_stage_on_the_world(tmp_path, monkeypatch, world, backend_factory, tokenizer):
    """Fresh rollouts on both sides of each cliff with the rollouts sampler: the scripted potential is 0 once
    X or Z is in the prefix, so the X and Z cliffs replicate (1 -> 0) and the Y cliff does not (0 -> 0,
    its prefix already holds X). `cliffs.use` then narrows what ablation works on."""
    write_world(tmp_path, world, {})
    (tmp_path / "params.yaml").write_text(
        PARAMS + "dpo_pairs: {top_k: 3}\nreplicate: {num_rollouts: 8, seed: 5}\n"
        "rollouts: {sampling: {temperature: 0.6, top_p: 0.95, top_k: 0, max_new_tokens: 7}}\n")
    monkeypatch.chdir(tmp_path)
    backend = backend_factory("ablation")
    run_stage("replicate", monkeypatch, backend, tokenizer)
    rows = pq.read_table(tmp_path / schema.PATHS["replicate"]).to_pylist()
    assert [(r["trace_id"], r["token_index"], r["replicated"]) for r in rows] == [
        ("p1#0", 3, True), ("p1#0", 6, False), ("p2#0", 4, True)]
    assert all(r["num_rollouts_prev"] == r["num_rollouts"] == 8 for r in rows)
    assert [(r["num_correct_prev"], r["num_correct"]) for r in rows] == [(8, 0), (0, 0), (8, 0)]
    assert rows[0]["p_value"] == 0.0 and rows[1]["p_value"] == 1.0
    # the rollouts sampler and a seed stream of its own, every request once per side
    sent = backend.requests
    assert len(sent) == 6 and {r.n for r in sent} == {8}
    assert {r.seed for r in sent} == {request_seed(5, "replicate", t, side, i)
                                      for t, i in [("p1#0", 3), ("p1#0", 6), ("p2#0", 4)] for side in ("prev", "curr")}
    metrics = json.loads((tmp_path / "metrics/replicate.json").read_text())
    assert metrics["all"]["num_cliffs"] == 3 and metrics["all"]["num_replicated"] == 2
    lo, hi = wilson_interval(2, 3)
    assert (metrics["all"]["rate_lo"], metrics["all"]["rate_hi"]) == (round(lo, 6), round(hi, 6))
    assert metrics["category=uncertain"]["rate"] == 0.0 and metrics["category=sampled_off"]["rate"] == 1.0
    assert metrics["feasible=false"]["num_cliffs"] == 1          # Y: the sampler gives it 0.95
    assert metrics["all"]["num_rollouts"] == 48
    # cliffs.use: replicated -> ablation on the X and Z cliffs only
    (tmp_path / "params.yaml").write_text(PARAMS.replace("critical_threshold: 0.05}", "critical_threshold: 0.05, use: replicated}")
                                          + "dpo_pairs: {top_k: 3}\n")
    run_stage("ablation", monkeypatch, backend_factory("ablation"), tokenizer)
    done = pq.read_table(tmp_path / schema.PATHS["ablation"]).to_pylist()
    assert {(r["trace_id"], r["token_index"]) for r in done if r["arm"] in ("del", "keep")} == {("p1#0", 3), ("p2#0", 4)}
    assert set(duck.run_checks(duck.connect(tmp_path)).values()) == {0}
    # the directions of the noise audit: RQ1 on each cliff set (no candidates here: no CPM)
    schema.write("candidates", [], tmp_path / schema.PATHS["candidates"])
    directions = {r["cliff_set"]: r for r in duck.run_sql_file(duck.connect(tmp_path), "directions", {}).to_pylist()}
    assert [directions[s]["num_cliffs"] for s in ("all", "feasible", "replicated")] == [3, 2, 2]
    assert directions["replicated"]["num_failed_cliffs"] == 1            # p1#0 token 3 (p2#0 is correct)
    assert (directions["replicated"]["del_pass_at_1"], directions["replicated"]["keep_pass_at_1"]) == (1.0, 0.0)
    assert directions["all"]["num_failed_cliffs"] == 1 and directions["all"]["cpm_uncertain"] is None
    # the verdicts' units: one row per cliff with its sets and arms (Y was not ablated under `use`)
    rows = duck.run_sql_file(duck.connect(tmp_path), "verdict_cliffs", {}).to_pylist()
    assert [(r["trace_id"], r["token_index"], r["replicated"], r["feasible"]) for r in rows] == [
        ("p1#0", 3, True, True), ("p1#0", 6, False, False), ("p2#0", 4, True, True)]
    assert (rows[0]["del_pass_at_1"], rows[0]["keep_pass_at_1"]) == (1.0, 0.0) and rows[1]["del_pass_at_1"] is None
    assert {r["cpm"] for r in rows} == {None}                            # no candidates: no CPM
    traces = duck.run_sql_file(duck.connect(tmp_path), "verdict_traces", {"include_empty_prefix": True}).to_pylist()
    assert [(t["trace_id"], t["is_correct"], t["has_cliff"]) for t in traces] == [
        ("p1#0", False, True), ("p2#0", True, True), ("p2#1", False, False)]


# --- a damaged checkpoint unit and grading timeouts through the replicate stage -------------------------

REPLICATE_PARAMS = ("dpo_pairs: {top_k: 3}\nreplicate: {num_rollouts: 8, seed: 5}\n"
                    "rollouts: {sampling: {temperature: 0.6, top_p: 0.95, top_k: 0, max_new_tokens: 7}}\n")
REPLICATED = [("p1#0", 3, 8, 0), ("p1#0", 6, 0, 0), ("p2#0", 4, 8, 0)]      # (trace, token, correct prev, correct)


class Killed(Exception):
    pass


class KilledAfter(ExactBackend):
    """An ExactBackend whose process is killed after `calls` engine calls (one problem's unit each)."""

    def __init__(self, inner: ExactBackend, calls: int):
        super().__init__(inner.correct_ids, inner.wrong_ids, inner.potential)
        self.limit = calls

    def generate(self, requests, sampling):
        if len(self.calls) >= self.limit:
            raise Killed("killed")
        return super().generate(requests, sampling)


def replicated(tmp_path) -> list[tuple]:
    rows = pq.read_table(tmp_path / schema.PATHS["replicate"]).to_pylist()
    return [(r["trace_id"], r["token_index"], r["num_correct_prev"], r["num_correct"]) for r in rows]


def units(tmp_path) -> list[Path]:
    return sorted((tmp_path / ".cache/replicate").glob("*/*.json"))


DAMAGED = {"truncated": lambda data: data[: len(data) // 2],
           "garbled": lambda data: data.replace(b'"value":[[8,8,', b'"value":[[8,7,'),
           "empty": lambda data: b""}


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED.keys())
def test_replicate_resume_recomputes_a_damaged_unit(tmp_path, monkeypatch, world, backend_factory, tokenizer, damage,
                                                    caplog, capsys):
    """A killed replicate run leaves one finished unit (problem p1); damaged, it is set aside with a warning
    naming it and computed again, and the stage writes what an uninterrupted run does."""
    write_world(tmp_path, world, {})
    (tmp_path / "params.yaml").write_text(PARAMS + REPLICATE_PARAMS)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Killed):
        run_stage("replicate", monkeypatch, KilledAfter(backend_factory("ablation"), calls=1), tokenizer)
    [unit] = units(tmp_path)
    data = unit.read_bytes()
    assert damage(data) != data
    unit.write_bytes(damage(data))

    backend = backend_factory("ablation")
    with caplog.at_level(logging.WARNING, logger="cliffdata.checkpoint"):
        run_stage("replicate", monkeypatch, backend, tokenizer)
    assert replicated(tmp_path) == REPLICATED
    assert len(backend.calls) == 2                                  # both problems computed, p1 again
    assert str(Path(".cache/replicate") / unit.parent.name / unit.name) in caplog.text
    assert unit.with_name(f"{unit.name}.corrupt-1").read_bytes() == damage(data)     # set aside, kept
    assert "replicate: 0 units resumed" in capsys.readouterr().out


@pytest.mark.integration
def test_grading_timeouts_reach_the_replicate_metrics(tmp_path, monkeypatch, world, tokenizer, enc, caplog):
    """A wrong rollout that answers a factorial no grader finishes: each is ungradable within
    grading.timeout_seconds, logged with its trace, and counted in metrics/replicate.json, the same after
    a resume (a unit read back brings its count)."""
    write_world(tmp_path, world, {})
    (tmp_path / "params.yaml").write_text(PARAMS + REPLICATE_PARAMS + "grading: {timeout_seconds: 0.5}\n")
    monkeypatch.chdir(tmp_path)
    traps = {enc("X")[0], enc("Z")[0]}
    make = lambda: ExactBackend(enc("#### 7"), enc(" so the answer is $99999999!$"),
                                lambda ids: 0.0 if traps & set(ids) else 1.0)
    with caplog.at_level(logging.WARNING, logger="cliffdata.grading"):
        run_stage("replicate", monkeypatch, make(), tokenizer)
    assert replicated(tmp_path) == REPLICATED                       # timeouts are not correct
    wrong = sum(16 - prev - cur for _, _, prev, cur in REPLICATED)
    assert json.loads((tmp_path / "metrics/replicate.json").read_text())["num_grading_timeouts"] == wrong == 32
    assert "replicate p1#0 token 3: answer '99999999!'" in caplog.text

    with pytest.raises(Killed):
        run_stage("replicate", monkeypatch, KilledAfter(make(), calls=1), tokenizer)
    run_stage("replicate", monkeypatch, make(), tokenizer)
    assert json.loads((tmp_path / "metrics/replicate.json").read_text())["num_grading_timeouts"] == 32
