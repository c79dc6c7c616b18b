"""Verdicts (analysis/verdicts.py, analysis/claims.py): the exact tests against brute force and scipy,
their intervals against their own decisions, the units needed against closed forms, and the rate of
`supported` on simulated null data sets."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from cliffdata.analysis import claims
from cliffdata.analysis.verdicts import (CONTRADICTED, NOT_APPLICABLE, SUPPORTED, UNDECIDED, count_verdict,
                                         group_units_needed, min_group_units, min_paired_units, paired_units_needed,
                                         paired_verdict, permutation_interval, permutation_p, proportion_units_needed,
                                         seed_verdict, sign_flip_interval, sign_flip_p)
from cliffdata.config.analysis import VerdictsConfig

CFG = VerdictsConfig(alpha=0.05, power=0.8, exact_limit=65536, resamples=4000, seed=0, max_smd=0.1)
FAST = VerdictsConfig(alpha=0.05, power=0.8, exact_limit=4096, resamples=1000, seed=0, max_smd=0.1)


def brute_sign_flip(x):
    x = np.asarray(x, float)
    obs = abs(x.mean())
    flips = [abs(np.mean(np.array(s) * x)) >= obs - 1e-9 for s in itertools.product([-1, 1], repeat=len(x))]
    return sum(flips) / len(flips)


@pytest.mark.parametrize("x", [[0.3, 0.1, 0.5, 0.2], [0.3, -0.1, 0.5, 0.0, -0.2, 0.4, 0.1], [1, 1, 1, 1, 1, 1]])
def test_sign_flip_matches_brute_force_and_scipy(x):
    assert sign_flip_p(x, CFG) == pytest.approx(brute_sign_flip(x))
    ref = stats.permutation_test((np.asarray(x, float),), np.mean, permutation_type="samples",
                                 alternative="two-sided", n_resamples=np.inf)
    assert sign_flip_p(x, CFG) == pytest.approx(ref.pvalue)


def test_sign_flip_smallest_p_and_the_units_it_needs():
    assert sign_flip_p([0.4, 0.2, 0.3, 0.1], CFG) == pytest.approx(2 / 16)     # four units can never reach 0.05
    assert min_paired_units(0.05) == 6 and 2 / 2 ** 6 < 0.05 <= 2 / 2 ** 5
    assert min_group_units(0.05) == 4 and 2 / math.comb(8, 4) < 0.05 <= 2 / math.comb(6, 3)


def test_permutation_matches_scipy():
    a, b = [0.7, 0.66, 0.9, 0.55], [0.2, 0.4, 0.31, 0.5, 0.1]
    ref = stats.permutation_test((np.array(a), np.array(b)), lambda u, v: np.mean(u) - np.mean(v),
                                 permutation_type="independent", alternative="two-sided", n_resamples=np.inf)
    assert permutation_p(a, b, CFG) == pytest.approx(ref.pvalue)


def test_intervals_agree_with_their_tests():
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.normal(0.15, 0.3, size=rng.integers(6, 12))
        lo, hi = sign_flip_interval(x, CFG, (-2.0, 2.0))
        assert lo <= x.mean() <= hi
        assert (lo > 0 or hi < 0) == (sign_flip_p(x, CFG) < CFG.alpha)
        a, b = rng.normal(0.2, 0.2, 5), rng.normal(0.0, 0.2, 5)
        lo, hi = permutation_interval(a, b, CFG, (-1.0, 1.0))
        assert (lo > 0 or hi < 0) == (permutation_p(a, b, CFG) < CFG.alpha)
    # four units reject no shift at all: the interval is the whole range
    assert sign_flip_interval([0.4, 0.2, 0.3, 0.1], CFG, (-1.0, 1.0)) == (-1.0, 1.0)


def test_units_needed_closed_forms():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert paired_units_needed(0.1, 0.5, CFG) == math.ceil((z * 5) ** 2)
    assert paired_units_needed(0.9, 0.1, CFG) == min_paired_units(0.05)          # the exact test's floor
    assert group_units_needed(0.385, 0.3, CFG) == max(math.ceil(2 * (z * 0.3 / 0.385) ** 2), 4)
    assert paired_units_needed(0.1, None, CFG) is None
    p1, p2 = 0.321, 0.162
    bar = (p1 + p2) / 2
    n = (stats.norm.ppf(0.975) * math.sqrt(2 * bar * (1 - bar))
         + stats.norm.ppf(0.8) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    assert proportion_units_needed(p1, p2, CFG) == math.ceil(n)


def test_verdict_values():
    strong = [0.5, 0.4, 0.6, 0.3, 0.45, 0.55, 0.35, 0.5]
    assert paired_verdict("c", strong, CFG, bounds=(-1, 1), unit="problem", n={}).verdict == SUPPORTED
    assert paired_verdict("c", [-v for v in strong], CFG, bounds=(-1, 1), unit="problem", n={}).verdict == CONTRADICTED
    assert paired_verdict("c", [0.0] * 10, CFG, bounds=(-1, 1), unit="problem", n={}).verdict == UNDECIDED  # a tie
    assert paired_verdict("c", [], CFG, bounds=(-1, 1), unit="problem", n={}).verdict == UNDECIDED
    v = count_verdict("c", 30, 40, 5, 40, CFG, unit="trace", n={})
    assert v.verdict == SUPPORTED and v.p == pytest.approx(stats.fisher_exact([[30, 10], [5, 35]]).pvalue)
    assert v.interval[0] > 1


def test_seed_verdict_one_seed_is_undecided_and_k_seeds_give_the_t_interval():
    assert seed_verdict("c", [0.14], CFG, n={}).verdict == UNDECIDED
    x = np.array([0.05, 0.12, 0.09, 0.02, 0.11])
    v = seed_verdict("c", list(x), CFG, n={})
    ref = stats.ttest_1samp(x, 0.0)
    lo, hi = ref.confidence_interval(0.95)
    assert v.p == pytest.approx(ref.pvalue) and v.interval == pytest.approx((lo, hi))
    assert v.verdict == SUPPORTED and v.n["seeds"] == 5


def _null_del_keep(rng: np.random.Generator, n: int, rollouts: int = 16) -> list[dict]:
    """n cliffs on failed traces, one per problem, whose del and keep prefixes share one true potential."""
    p = rng.uniform(0.0, 1.0, n)
    d, k = rng.binomial(rollouts, p) / rollouts, rng.binomial(rollouts, p) / rollouts
    return [{"trace_id": f"t{i}", "problem_id": f"q{i}", "is_correct": False, "del_pass_at_1": d[i],
             "keep_pass_at_1": k[i]} for i in range(n)]


@pytest.mark.parametrize("n", [4, 20])
def test_null_data_sets_rarely_print_supported(n):
    """1,000 simulated data sets with no true effect: del > keep, the CPM order and occurrence each print
    `supported` in at most 5% of them."""
    rng = np.random.default_rng(n)
    supported = {"del_keep": 0, "cpm": 0, "occurrence": 0}
    for _ in range(1000):
        supported["del_keep"] += claims.del_keep(_null_del_keep(rng, n), FAST).verdict == SUPPORTED
        cpm = rng.beta(2, 2, n)
        rows = [{"trace_id": f"t{i}", "problem_id": f"q{i}", "category": "uncertain" if i % 4 == 0 else "sampled_off",
                 "feasible": True, "cpm_alternatives": cpm[i]} for i in range(n)]
        supported["cpm"] += claims.cpm_order(rows, FAST)[1].verdict == SUPPORTED
        traces = [{"trace_id": f"t{i}", "problem_id": f"q{i}", "is_correct": bool(i % 2),
                   "has_cliff": bool(rng.random() < 0.25)} for i in range(5 * n)]
        supported["occurrence"] += claims.occurrence(traces, FAST).verdict == SUPPORTED
    assert all(count <= 50 for count in supported.values()), supported


def test_a_true_effect_is_found_at_twenty_units():
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(200):
        rows = _null_del_keep(rng, 20)
        for r in rows:
            r["del_pass_at_1"] = min(1.0, r["del_pass_at_1"] + 0.3)
        found += claims.del_keep(rows, FAST).verdict == SUPPORTED
    assert found >= 180


def test_cpm_legs_that_cannot_be_tested_are_na():
    rows = [{"trace_id": "t1", "problem_id": "q1", "category": "uncertain", "feasible": True, "cpm_alternatives": 0.6},
            {"trace_id": "t2", "problem_id": "q2", "category": "sampled_off", "feasible": True, "cpm_alternatives": 0.3}]
    det, _ = claims.cpm_order(rows, CFG)
    assert det.verdict == NOT_APPLICABLE and det.reason == "no deterministic cliffs"
    rows.append({"trace_id": "t3", "problem_id": "q3", "category": "deterministic", "feasible": False,
                 "cpm_alternatives": 0.99})
    det, _ = claims.cpm_order(rows, CFG)
    assert det.verdict == NOT_APPLICABLE and "infeasible" in det.reason


def test_dpo_claims_never_stand_the_base_in_for_a_missing_variant():
    answers = [{"model": m, "problem_id": f"q{i}", "is_correct": (i + j) % 3 == 0}
               for j, m in enumerate(["base", "uncertain_sampled_off", "all", "random"]) for i in range(12)]
    out = claims.dpo_claims(answers, {"uncertain_sampled_off": 4, "all": 6, "random": 6, "deterministic": 0},
                            [{"base": 0.4, "uncertain_sampled_off": 0.5, "all": 0.5, "random": 0.4}], CFG)
    by = {v.claim: v for v in out}
    assert by["Cliff-DPO uncertain + sampled-off > deterministic"].verdict == NOT_APPLICABLE
    assert by["Cliff-DPO uncertain + sampled-off > deterministic"].reason == "no deterministic pairs"
    base = by["Cliff-DPO uncertain + sampled-off > base"]
    assert base.verdict == UNDECIDED and base.n["seeds"] == 1 and "one_seed_paired" in base.detail
    seeds = [{"base": 0.40, "uncertain_sampled_off": u, "all": 0.5, "random": 0.41} for u in (0.45, 0.47, 0.46, 0.48)]
    out = claims.dpo_claims(answers, {"uncertain_sampled_off": 4, "all": 6, "random": 6}, seeds, CFG,
                            "training seeds, pairs fixed")
    v = {v.claim: v for v in out}["Cliff-DPO uncertain + sampled-off > base"]
    assert v.verdict == SUPPORTED and v.test == "t-interval over training seeds, pairs fixed"


def test_del_keep_against_the_matched_control():
    rows = [{"trace_id": f"t{i}", "problem_id": f"q{i}", "is_correct": False, "del_pass_at_1": 0.6, "keep_pass_at_1": 0.1,
             "matched_del_pass_at_1": 0.3 + 0.01 * i, "matched_keep_pass_at_1": 0.3} for i in range(8)]
    v = claims.del_keep_matched(rows, CFG)
    assert v.verdict == SUPPORTED and v.n["problems"] == 8 and v.estimate == pytest.approx(0.5 - 0.035)
    # the same difference at the control as at the cliff: undecided, never supported
    same = [{**r, "matched_del_pass_at_1": 0.6, "matched_keep_pass_at_1": 0.1} for r in rows]
    assert claims.del_keep_matched(same, CFG).verdict == UNDECIDED
    no_control = [{**r, "matched_del_pass_at_1": None} for r in rows]
    assert claims.del_keep_matched(no_control, CFG).verdict == NOT_APPLICABLE


def test_an_unbalanced_matched_control_decides_nothing():
    rows = [{"trace_id": f"t{i}", "problem_id": f"q{i}", "is_correct": False, "del_pass_at_1": 0.6, "keep_pass_at_1": 0.1,
             "matched_del_pass_at_1": 0.3, "matched_keep_pass_at_1": 0.3 - 0.01 * i} for i in range(8)]
    balanced = {"covariates": {"p_prev": {"smd": 0.05}, "is_greedy": {"smd": 0.0}}}
    assert claims.del_keep_matched(rows, CFG, balanced).verdict == SUPPORTED
    off = claims.del_keep_matched(rows, CFG, {"covariates": {"p_prev": {"smd": -0.4}, "is_greedy": {"smd": None}}})
    assert off.verdict == UNDECIDED and off.p < 0.05 and "is_greedy, p_prev" in off.reason
