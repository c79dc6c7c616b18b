"""metrics/summary.md: headline numbers from the stages' metrics beside the paper's, with the directions."""
from __future__ import annotations

import json

from cliffdata.analysis import claims
from cliffdata.analysis.summary import load_metrics, render_summary
from cliffdata.config.analysis import VerdictsConfig

CFG = VerdictsConfig(alpha=0.05, power=0.8, exact_limit=65536, resamples=1000, seed=0, max_smd=0.1)


def verdicts(del_minus_keep: float, cpm_gap: float, num: int = 8) -> dict:
    """Verdict records of `num` failed-trace cliffs (one per problem) whose del - keep difference and
    uncertain - sampled-off CPM gap are the given ones."""
    cliffs = [{"trace_id": f"t{i}", "problem_id": f"q{i}", "is_correct": False, "feasible": True,
               "replicated": i % 2 == 0, "category": "uncertain" if i % 2 else "sampled_off",
               "del_pass_at_1": 0.5 + del_minus_keep / 2 + 0.01 * i, "keep_pass_at_1": 0.5 - del_minus_keep / 2,
               "cpm_alternatives": 0.5 + (cpm_gap / 2 if i % 2 else -cpm_gap / 2) + 0.001 * i} for i in range(num)]
    units = {"cliffs": cliffs, "traces": [], "answers": []}
    return claims.records(claims.directions(units, {}, [], CFG))

METRICS = {
    "occurrence": {"correct": {"share_with_cliff": 0.0, "num_traces": 6},
                   "failed": {"share_with_cliff": 0.444444, "num_traces": 18},
                   "all": {"cliffs_per_trace": 0.416667, "cliffs_per_1k_tokens": 13.37}},
    "ablation": {"all": {"failed": {"del": {"num_instances": 10, "pass@1": 0.44, "pass@16": 1.0},
                                    "keep": {"num_instances": 10, "pass@1": 0.1, "pass@16": 0.3}}}},
    "cpm": {"deterministic": {"num_cliffs": 0, "cpm_mean": None}, "uncertain": {"num_cliffs": 6, "cpm_mean": 0.7},
            "sampled_off": {"num_cliffs": 4, "cpm_mean": 0.36}},
    "dpo_pairs": {"variants": {"deterministic": {"num_train": 0}, "uncertain_sampled_off": {"num_train": 40}}},
    "dpo_eval": {"models": {"base": {"accuracy": 0.25},
                            "uncertain_sampled_off": {"accuracy": 0.3, "diff_to_base": 0.05,
                                                      "diff_ci_low": -0.02, "diff_ci_high": 0.12}}},
}


def test_summary_reports_numbers_and_directions(tmp_path):
    for name, content in METRICS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    text = render_summary(load_metrics(tmp_path), "SmolLM2", "arith", verdicts(0.4, 0.3))
    assert "Different model, dataset and N" in text
    assert "| traces with >= 1 cliff, correct / failed | 0.0% / 44.4% |" in text
    assert "| Cliff-del pass@1 / pass@16 | 0.440 / 1.000 |" in text
    assert "Direction del > keep (pass@1, problems as units): **supported**" in text
    assert "| uncertain | 6 | 0.700 | n/a | 0.63-0.71 |" in text
    assert "on the CPM over alternatives: deterministic > uncertain: **n/a**; uncertain > sampled-off: **supported**" in text
    assert "| deterministic | 0 | = base (no training pairs) |" in text
    assert "| uncertain_sampled_off | 40 | 30.0% | +5.0 | [-2.0, +12.0] |" in text
    assert "## Verdicts" in text and "| CPM over alternatives: deterministic > uncertain | n/a |" in text
    assert "Matched-del" not in text                     # no matched control in these metrics
    matched = json.loads(json.dumps(METRICS))
    matched["ablation"]["matched_control"] = {
        "num_matched": 9, "num_unmatched": 1, "covariates": {"p_prev": {"smd": 0.03}, "is_greedy": {"smd": 0.0},
                                                              "sampler_prob": {"smd": None}}}
    matched["ablation"]["all"]["failed"]["matched_del"] = {"pass@1": 0.2}
    text = render_summary(matched, "SmolLM2", "arith", verdicts(0.4, 0.3))
    assert "| Matched-del / Matched-keep pass@1 (a non-cliff position per cliff) | 0.200 / n/a | |" in text
    assert "| matched controls: 9 of 10 cliffs; standardized mean differences | p_prev +0.03, is_greedy +0.00, " \
           "sampler_prob n/a | |" in text
    assert "All 2 testable directions are decided at this size." in text
    matched["ablation"]["matched_control"]["control_sources"] = {"failed": 2, "correct": 0, "ungradable": 0, "pool": 7}
    text = render_summary(matched, "SmolLM2", "arith", verdicts(0.4, 0.3))
    assert "| matched controls: 9 of 10 cliffs (2 in failed, 7 in pool traces); standardized mean differences |" in text


def test_summary_prints_contradicted_and_undecided_and_tolerates_missing_files():
    text = render_summary(METRICS, "m", "d", verdicts(-0.4, 0.0))
    assert "Direction del > keep (pass@1, problems as units): **contradicted**" in text
    assert "uncertain > sampled-off: **undecided**" in text
    assert "**1 of 2 testable directions are decided at this size, 1 undecided**" in text and "smoke" not in text
    small = render_summary(METRICS, "m", "d", verdicts(0.4, 0.3, num=4))        # four problems decide nothing
    assert "Direction del > keep (pass@1, problems as units): **undecided**" in small
    assert "**2 of 2 testable directions are undecided at this size**" in small and "a smoke run" in small
    assert "n/a" in render_summary({}, "m", "d") and "## Verdicts" not in render_summary({}, "m", "d")


AUDIT = {
    "occurrence": {"correct": {"num_traces": 8, "num_cliffs": 1, "num_tested_pairs": 400, "expected_false_cliffs": 1.2,
                               "excess_cliffs": -0.2, "excess_cliffs_lo": -2.1, "excess_cliffs_hi": 1.7,
                               "share_cliffs_feasible": 0.0, "share_pairs_feasible": 0.1},
                   "failed": {"num_traces": 16, "num_cliffs": 9, "num_tested_pairs": 800, "expected_false_cliffs": 2.5,
                              "excess_cliffs": 6.5, "excess_cliffs_lo": 3.4, "excess_cliffs_hi": 9.6,
                              "share_cliffs_feasible": 0.777778, "share_pairs_feasible": 0.12},
                   "all": {"num_traces": 24, "num_cliffs": 10, "num_tested_pairs": 1200, "expected_false_cliffs": 3.7,
                           "excess_cliffs": 6.3, "excess_cliffs_lo": 2.6, "excess_cliffs_hi": 10.0,
                           "share_cliffs_feasible": 0.7, "share_pairs_feasible": 0.11}},
    "taxonomy": {"deterministic": {"num_cliffs": 2, "feasible_share": 0.0},
                 "uncertain": {"num_cliffs": 5, "feasible_share": 0.8}},
    "replicate": {"all": {"num_cliffs": 10, "num_replicated": 6, "rate": 0.6, "rate_lo": 0.31, "rate_hi": 0.83,
                          "num_rollouts": 320, "num_generated_tokens": 9000},
                  "category=uncertain": {"num_cliffs": 5, "num_replicated": 4, "rate": 0.8, "rate_lo": 0.38,
                                         "rate_hi": 0.96}},
    "directions": {"all": {"num_cliffs": 10, "del_pass_at_1": 0.4, "keep_pass_at_1": 0.1, "del_pass_at_n": 1.0,
                           "keep_pass_at_n": 0.3, "cpm_deterministic": None, "cpm_uncertain": 0.6,
                           "cpm_sampled_off": 0.3, "num_deterministic": 0, "num_uncertain": 5, "num_sampled_off": 3},
                   "replicated": {"num_cliffs": 6, "del_pass_at_1": 0.2, "keep_pass_at_1": 0.25, "del_pass_at_n": 0.9,
                                  "keep_pass_at_n": 0.5, "cpm_deterministic": None, "cpm_uncertain": 0.5,
                                  "cpm_sampled_off": 0.55, "num_deterministic": 0, "num_uncertain": 4,
                                  "num_sampled_off": 2}},
    "dpo_eval": {"models": {"base": {"accuracy": 0.25}, "random": {"accuracy": 0.45},
                            "all": {"accuracy": 0.4, "diff_to_control": -0.05, "control_ci_low": -0.15,
                                    "control_ci_high": 0.05}}},
    "dpo_pairs": {"variants": {"all": {"num_train": 12}, "random": {"num_train": 12}}},
}


def test_summary_noise_audit_and_the_control():
    text = render_summary(AUDIT, "m", "d", verdicts(0.4, 0.3))
    assert "## Noise audit" in text
    assert "| failed | 800 | 9 | 2.50 | 6.50 [3.40, 9.60] | 77.8% | 12.0% |" in text
    assert "| deterministic | 2 | 0.0% | n/a |" in text
    assert "| uncertain | 5 | 80.0% | 4/5 = 80.0% [38.0%, 96.0%] |" in text
    assert "| cost | 320 rollouts, 9000 generated tokens |" in text
    # the re-check rows carry each cliff set's verdicts (8 problems in `all`, 4 replicated: too few)
    assert "| all | 10 | 0.400 / 0.100 | 1.000 / 0.300 | supported | n/a / 0.600 / 0.300 (0/5/3) | n/a; supported |" in text
    assert "| replicated | 6 | 0.200 / 0.250 | 0.900 / 0.500 | undecided | n/a / 0.500 / 0.550 (0/4/2) | n/a; undecided |" in text
    assert "pairs at cliffs 40.0% vs random positions 45.0% (-5.0 points, paired 95% interval [-15.0, +5.0])" in text
    assert "DPO anywhere: **n/a** (decided over training seeds)" in text
    # without the noise-audit metrics (no expected false cliffs, no replication) there is no audit section
    assert "Noise audit" not in render_summary({"occurrence": METRICS["occurrence"]}, "m", "d")


def test_headline_is_flat_under_one_key():
    """metrics/headline.json: what `make exps` keeps of `dvc exp show` (missing stages give nulls)."""
    from cliffdata.analysis.summary import headline

    out = headline({**AUDIT, "ablation": METRICS["ablation"], "cpm": METRICS["cpm"], "rollouts": {"num_generated_tokens": 9}})
    assert list(out) == ["headline"] and all(not isinstance(v, dict) for v in out["headline"].values())
    h = out["headline"]
    assert (h["cliffs"], h["expected_false_cliffs"], h["replication_rate"]) == (10, 3.7, 0.6)
    assert (h["del_pass_at_1"], h["cpm_uncertain"], h["dpo_random"], h["rollout_tokens"]) == (0.44, 0.7, 0.45, 9)
    assert set(headline({})["headline"].values()) == {None}


def test_summary_seed_section():
    from cliffdata.seeds import spread

    assert "stay undecided until `make seeds`" in render_summary(METRICS, "m", "d")
    seeds = {"params_fingerprint": "0123456789abcdef", "training": {"seeds": [{"seed": 0}, {"seed": 1}, {"seed": 2}],
                          "spread": {"all-random": spread([0.1, 0.0, 0.05], 0.05)}}, "chain": {"seeds": [], "spread": {}}}
    text = render_summary(METRICS, "m", "d", None, seeds)
    assert "| training | 3 | all-random | 0.050 | 0.050 | [-0.074, +0.174] |" in text and "| chain |" not in text
