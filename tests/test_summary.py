"""metrics/summary.md: headline numbers from the stages' metrics beside the paper's, with the directions."""
from __future__ import annotations

import json

from cliffdata.summary import load_metrics, render_summary

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
    text = render_summary(load_metrics(tmp_path), "SmolLM2", "arith")
    assert "Different model, dataset and N" in text
    assert "| traces with >= 1 cliff, correct / failed | 0.0% / 44.4% |" in text
    assert "| Cliff-del pass@1 / pass@16 | 0.440 / 1.000 |" in text
    assert "Direction del > keep: **holds**" in text
    assert "| uncertain | 6 | 0.700 | 0.63-0.71 |" in text
    assert "deterministic > uncertain > sampled-off (over the categories present): **holds**" in text
    assert "| deterministic | 0 | = base (no training pairs) |" in text
    assert "| uncertain_sampled_off | 40 | 30.0% | +5.0 | [-2.0, +12.0] |" in text
    assert "beats deterministic-only: **holds**" in text


def test_summary_says_when_a_direction_does_not_hold_and_tolerates_missing_files(tmp_path):
    metrics = json.loads(json.dumps(METRICS))
    metrics["ablation"]["all"]["failed"]["keep"]["pass@16"] = 1.0
    metrics["cpm"]["sampled_off"]["cpm_mean"] = 0.9
    text = render_summary(metrics, "m", "d")
    assert "Direction del > keep: **does not hold**" in text
    assert "sampled-off (over the categories present): **does not hold**" in text
    assert "n/a" in render_summary({}, "m", "d")
