"""The search simulation (cliffdata/search/simulate.py, curves.py, pts.py): the binomial oracle, the
true-cliff definition, PTS bisection, the curve libraries, `--curves` parsing and determinism."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cliffdata.cliffs.stats import is_cliff
from cliffdata.config.load import load_params
from cliffdata.search import curves as library
from cliffdata.search.pts import pts_search
from cliffdata.search.simulate import EXHAUSTIVE_N, BinomialOracle, SearchSettings, run_seeds, run_sim, true_cliffs
from project_cliffs import TEST

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = SearchSettings.from_params(load_params(ROOT / "params.yaml"))


def test_oracle_charges_remaining_length():
    p = np.array([1.0] * 5 + [0.0] * 5)
    oracle = BinomialOracle(p, np.random.default_rng(0))
    out = oracle.rollouts([(0, 3), (9, 5), (4, 2), (7, 4)])
    # (num_correct, n · (T − 1 − i)) in request order; p is 0/1 so the counts are exact.
    assert out == [(3, 27), (0, 0), (2, 10), (0, 8)]
    assert oracle.num_rollouts == 14
    assert oracle.num_generated_tokens == 45
    assert oracle.rollouts([]) == []
    with pytest.raises(ValueError, match="token_index"):
        oracle.rollouts([(10, 1)])
    with pytest.raises(ValueError, match="n >= 0"):
        oracle.rollouts([(0, -1)])


def test_oracle_is_binomial():
    oracle = BinomialOracle(np.full(3, 0.3), np.random.default_rng(1))
    k = np.array([oracle.rollouts([(1, 64)])[0][0] for _ in range(2000)])
    assert abs(k.mean() - 64 * 0.3) < 0.3
    assert abs(k.var() - 64 * 0.3 * 0.7) < 1.5


@pytest.mark.parametrize("p, expected", [
    ([0.9, 0.9, 0.1, 0.1], [2]),
    ([1.0, 0.0], [1]),                      # SE = 0 is allowed
    ([32 / 64, 16 / 64], [1]),              # the smallest detectable drop from p = 0.5 (0.25)
    ([32 / 64, 17 / 64], []),               # one count less
    ([12 / 64, 0.0], [1]),                  # the smallest k_prev that admits a cliff (protocol §2)
    ([11 / 64, 0.0], []),
    ([0.1, 0.9, 0.2, 0.2, 0.95, 0.5], [2, 5]),
    ([0.5, 0.6, 0.7, 1.0], []),             # rises are never cliffs
    ([0.0, 0.0, 0.0], []),
])
def test_true_cliffs_by_hand(p, expected):
    assert true_cliffs(np.array(p), TEST) == expected


def test_true_cliffs_match_a_loop_over_the_test():
    p = np.random.default_rng(2).uniform(size=300)
    loop = [i for i in range(1, len(p))
            if is_cliff(round(64 * p[i - 1]), 64, round(64 * p[i]), 64, TEST)]
    assert true_cliffs(p, TEST) == loop


def test_pts_finds_a_single_big_drop():
    p = np.array([1.0] * 37 + [0.0] * 63)
    oracle = BinomialOracle(p, np.random.default_rng(0))
    evaluated, cliffs = pts_search(oracle, list(range(100)))
    assert cliffs == [37]
    assert {36, 37} <= evaluated.keys()
    assert len(evaluated) <= 2 + 7                      # the ends and one midpoint per level
    assert oracle.num_rollouts == 20 * len(evaluated)


def test_pts_misses_a_dip_hidden_inside_an_interval():
    p = np.ones(100)
    p[40:43] = 0.0                                      # a true cliff at 40, back up at 43
    assert true_cliffs(p, TEST) == [40]
    oracle = BinomialOracle(p, np.random.default_rng(0))
    evaluated, cliffs = pts_search(oracle, list(range(100)))
    assert cliffs == []
    assert sorted(evaluated) == [0, 99]                 # equal ends: never bisected
    assert oracle.num_rollouts == 40


def test_curve_library():
    curves = library.make_curves(63, seed=0, test=TEST)
    assert [c["kind"] for c in curves[:9]] == list(library.KINDS)
    lengths = np.array([len(c["p"]) for c in curves])
    assert lengths.min() >= 50 and lengths.max() <= 2000
    assert (lengths >= 200).mean() > 0.6
    for c in curves:
        p = c["p"]
        assert ((p >= 0) & (p <= 1)).all(), c["kind"]
        true = true_cliffs(p, TEST)
        if c["kind"] in ("gradual_decline", "noisy_plateau", "no_cliff"):
            assert true == [], c["kind"]
            assert np.diff(p).min() >= (-0.05 if c["kind"] == "noisy_plateau" else -0.02), c["kind"]
        if c["kind"] in ("single_cliff", "drop_recovery", "near_threshold"):
            assert len(true) == 1, (c["kind"], true)
        if c["kind"] == "multi_cliff":
            assert 2 <= len(true) <= 3, true
        if c["kind"] == "no_cliff":
            assert np.diff(p).min() >= 0 and p[-1] == pytest.approx(1.0)


def test_exhaustive_recall_on_clean_single_cliffs():
    rng = np.random.default_rng(5)
    curves = [{"kind": "single_cliff", "p": library._single_cliff(rng, 200, TEST)} for _ in range(20)]
    report = run_sim(curves, seed=0, settings=SETTINGS, methods=("exhaustive",))
    s = report["summary"]["all"]["exhaustive"]
    assert s["num_true_cliffs"] == 20
    assert s["recall"] >= 0.95
    assert s["num_rollouts"] == 20 * 200 * 64
    assert s["num_generated_tokens"] == 20 * 64 * (199 * 200 // 2)


def test_deterministic_for_a_seed():
    curves = library.make_curves(9, seed=3, test=TEST)
    runs = [json.dumps(run_sim(curves, seed=3, settings=SETTINGS)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert json.dumps(run_sim(curves, seed=4, settings=SETTINGS)) != runs[0]
    assert [c["p"].tolist() for c in library.make_curves(9, seed=3, test=TEST)] == [c["p"].tolist() for c in curves]


def test_load_curves(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"kind": "mine", "p": [0.9, 0.9, 0, 1]}, {"kind": "flat", "p": [0.5, 0.5]}]))
    curves = library.load_curves(good)
    assert [c["kind"] for c in curves] == ["mine", "flat"]
    assert curves[0]["p"].tolist() == [0.9, 0.9, 0.0, 1.0]


@pytest.mark.parametrize("text, message", [
    ("[{", "not valid JSON"),
    ('{"kind": "a", "p": [0.5, 0.5]}', "non-empty JSON list"),
    ("[]", "non-empty JSON list"),
    ('[{"kind": "a"}]', 'entry 0 must be an object with the keys "kind" and "p"'),
    ('[{"kind": "a", "p": [0.5, 0.5], "name": "x"}]', "with the keys"),
    ('[{"kind": 3, "p": [0.5, 0.5]}]', '"kind" must be a string'),
    ('[{"kind": "a", "p": [0.5, 0.5]}, {"kind": "b", "p": [0.5]}]', 'entry 1: "p" must be a list of at least 2'),
    ('[{"kind": "a", "p": [0.5, "x"]}]', "must be a list of at least 2 numbers"),
    ('[{"kind": "a", "p": [0.5, true]}]', "must be a list of at least 2 numbers"),
    ('[{"kind": "a", "p": [0.5, 1.5]}]', r"must lie in \[0, 1\], got p\[1\] = 1.5"),
    ('[{"kind": "a", "p": [NaN, 0.5]}]', r"must lie in \[0, 1\], got p\[0\] = nan"),
])
def test_load_curves_rejects_bad_files(tmp_path, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        library.load_curves(bad)


def test_identity_curves_obey_the_sampler_identity():
    """|p[i-1] - p[i]| <= max_drop = 1 - π at every token, forks at 5-20% of positions, and a true
    cliff only at a fork."""
    from cliffdata.cliffs.stats import min_detectable_drop

    delta_min = min_detectable_drop(64, 64, TEST)
    curves = library.make_identity_curves(12, seed=2, test=TEST)
    for c in curves:
        p, max_drop = c["p"], 1.0 - c["sampler_prob"]
        assert np.all(np.abs(np.diff(p)) <= max_drop[1:] + 1e-12)
        assert 0.02 < np.mean(max_drop >= delta_min) < 0.25
        assert all(max_drop[i] >= delta_min for i in true_cliffs(p, TEST))
    assert sum(len(true_cliffs(c["p"], TEST)) for c in curves) > 0


def test_forks_run_only_on_curves_with_sampler_probabilities(tmp_path):
    with_probs = library.make_identity_curves(3, seed=1, test=TEST)
    path = tmp_path / "curves.json"
    path.write_text(json.dumps([{"kind": "plain", "p": [0.9] * 100 + [0.1] * 120}]
                               + [{"kind": c["kind"], "p": c["p"].tolist(), "sampler_prob": c["sampler_prob"].tolist()}
                                  for c in with_probs]))
    curves = library.load_curves(path)
    assert "sampler_prob" not in curves[0] and all("sampler_prob" in c for c in curves[1:])
    report = run_seeds(lambda s: curves, [0, 1], SETTINGS)
    assert "forks" not in report["traces"][0]["methods"] and all("forks" in t["methods"] for t in report["traces"][1:])
    assert report["summary"]["all"]["forks"]["num_traces"] == 3
    assert len(report["per_seed"]["recall_ratio"]) == 2
    assert report["forks"]["token_ratio"] < 0.2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"kind": "x", "p": [0.5, 0.4], "sampler_prob": [0.5]}]))
    with pytest.raises(ValueError, match="sampler_prob"):
        library.load_curves(bad)


def test_model_like_heldout_library():
    curves = library.make_model_like_curves(18, seed=0, test=TEST)
    assert [c["kind"] for c in curves[:6]] == list(library.HELDOUT_MODEL_LIKE)
    lengths = np.array([len(c["p"]) for c in curves])
    assert lengths.min() >= 117 and lengths.max() <= 1500
    for c in curves:
        assert ((c["p"] >= 0) & (c["p"] <= 1)).all(), c["kind"]
    # truths seen through N rollouts are multiples of 1/N
    for c in curves:
        n = {"drift_n64": 64, "late_cliff_n64": 64, "dip_recover_n64": 64, "solved_then_lost_n48": 48}.get(c["kind"])
        if n:
            np.testing.assert_allclose(c["p"] * n, np.rint(c["p"] * n), atol=1e-9)
    # steps near the threshold: every fall is 0.9-1.3x the smallest the test detects from its level
    steps = [c for c in curves if c["kind"] == "threshold_steps"]
    for c in steps:
        falls = [(a, b) for a, b in zip(c["p"][:-1], c["p"][1:]) if b < a]
        assert 2 <= len(falls) <= 5
        for a, b in falls:
            need = library._min_drop_counts(int(round(EXHAUSTIVE_N * a)), TEST)
            need = need / EXHAUSTIVE_N if need is not None else 0.3
            assert b == 0.0 or 0.9 * need - 1e-9 <= a - b <= 1.3 * need + 1e-9, (a, b, need)
    assert [c["p"].tolist() for c in library.make_model_like_curves(18, seed=0, test=TEST)] == [c["p"].tolist() for c in curves]
