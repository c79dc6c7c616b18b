"""bench/adaptive.py: the binomial oracle, the true-cliff definition, PTS bisection, the curve library,
`--curves` parsing, determinism and an end-to-end run on small curves."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from cliffdata.stats import is_cliff

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_adaptive", ROOT / "bench/adaptive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_charges_remaining_length(bench):
    p = np.array([1.0] * 5 + [0.0] * 5)
    oracle = bench.BinomialOracle(p, np.random.default_rng(0))
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


def test_oracle_is_binomial(bench):
    oracle = bench.BinomialOracle(np.full(3, 0.3), np.random.default_rng(1))
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
def test_true_cliffs_by_hand(bench, p, expected):
    assert bench.true_cliffs(np.array(p)) == expected


def test_true_cliffs_match_a_loop_over_the_test(bench):
    p = np.random.default_rng(2).uniform(size=300)
    loop = [i for i in range(1, len(p))
            if is_cliff(round(64 * p[i - 1]), 64, round(64 * p[i]), 64, bench.TEST)]
    assert bench.true_cliffs(p) == loop


def test_pts_finds_a_single_big_drop(bench):
    p = np.array([1.0] * 37 + [0.0] * 63)
    oracle = bench.BinomialOracle(p, np.random.default_rng(0))
    evaluated, cliffs = bench.pts_search(oracle, list(range(100)))
    assert cliffs == [37]
    assert {36, 37} <= evaluated.keys()
    assert len(evaluated) <= 2 + 7                      # the ends and one midpoint per level
    assert oracle.num_rollouts == 20 * len(evaluated)


def test_pts_misses_a_dip_hidden_inside_an_interval(bench):
    p = np.ones(100)
    p[40:43] = 0.0                                      # a true cliff at 40, back up at 43
    assert bench.true_cliffs(p) == [40]
    oracle = bench.BinomialOracle(p, np.random.default_rng(0))
    evaluated, cliffs = bench.pts_search(oracle, list(range(100)))
    assert cliffs == []
    assert sorted(evaluated) == [0, 99]                 # equal ends: never bisected
    assert oracle.num_rollouts == 40


def test_curve_library(bench):
    curves = bench.make_curves(63, seed=0)
    assert [c["kind"] for c in curves[:9]] == list(bench.KINDS)
    lengths = np.array([len(c["p"]) for c in curves])
    assert lengths.min() >= 50 and lengths.max() <= 2000
    assert (lengths >= 200).mean() > 0.6
    for c in curves:
        p = c["p"]
        assert ((p >= 0) & (p <= 1)).all(), c["kind"]
        true = bench.true_cliffs(p)
        if c["kind"] in ("gradual_decline", "noisy_plateau", "no_cliff"):
            assert true == [], c["kind"]
            assert np.diff(p).min() >= (-0.05 if c["kind"] == "noisy_plateau" else -0.02), c["kind"]
        if c["kind"] in ("single_cliff", "drop_recovery", "near_threshold"):
            assert len(true) == 1, (c["kind"], true)
        if c["kind"] == "multi_cliff":
            assert 2 <= len(true) <= 3, true
        if c["kind"] == "no_cliff":
            assert np.diff(p).min() >= 0 and p[-1] == pytest.approx(1.0)


def test_exhaustive_recall_on_clean_single_cliffs(bench):
    rng = np.random.default_rng(5)
    curves = [{"kind": "single_cliff", "p": bench._single_cliff(rng, 200)} for _ in range(20)]
    report = bench.run_sim(curves, seed=0, methods=("exhaustive",))
    s = report["summary"]["all"]["exhaustive"]
    assert s["num_true_cliffs"] == 20
    assert s["recall"] >= 0.95
    assert s["num_rollouts"] == 20 * 200 * 64
    assert s["num_generated_tokens"] == 20 * 64 * (199 * 200 // 2)


def test_deterministic_for_a_seed(bench):
    curves = bench.make_curves(9, seed=3)
    runs = [json.dumps(bench.run_sim(curves, seed=3)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert json.dumps(bench.run_sim(curves, seed=4)) != runs[0]
    assert [c["p"].tolist() for c in bench.make_curves(9, seed=3)] == [c["p"].tolist() for c in curves]


def test_load_curves(bench, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"kind": "mine", "p": [0.9, 0.9, 0, 1]}, {"kind": "flat", "p": [0.5, 0.5]}]))
    curves = bench.load_curves(good)
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
def test_load_curves_rejects_bad_files(bench, tmp_path, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        bench.load_curves(bad)


def test_main_reports_a_bad_curves_file(bench, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"kind": "a", "p": [0.5, 2]}]')
    with pytest.raises(SystemExit) as e:
        bench.main(["--sim-only", "--curves", str(bad), "--json", str(tmp_path / "out.json")])
    assert e.value.code == 2
    assert "must lie in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_main_on_user_curves(bench, tmp_path):
    rng = np.random.default_rng(0)
    curves = [{"kind": "step", "p": [0.9] * 120 + [0.1] * 130},
              {"kind": "dip", "p": [1.0] * 100 + [0.0] * 2 + [1.0] * 118},
              {"kind": "flat", "p": (0.6 + rng.uniform(-0.02, 0.02, 60)).tolist()}]
    path = tmp_path / "curves.json"
    path.write_text(json.dumps(curves))
    out = tmp_path / "results" / "adaptive.json"
    bench.main(["--sim-only", "--curves", str(path), "--json", str(out), "--seed", "1"])
    report = json.loads(out.read_text())
    for key in ("recall_ratio", "false_cliffs_ratio", "token_ratio"):
        assert isinstance(report[key], float), key
    assert 0 < report["token_ratio"] < 1
    assert [t["kind"] for t in report["traces"]] == ["step", "dip", "flat"]
    assert [t["true_cliffs"] for t in report["traces"]] == [[120], [100], []]
    assert report["summary"]["length>=200"]["exhaustive"]["num_traces"] == 2
    assert report["traces"][1]["methods"]["pts"]["cliffs"] == []
    markdown = out.with_suffix(".md").read_text()
    assert "| length>=200 | adaptive |" in markdown
    assert "**true cliff**: position i with is_cliff(round(64·p[i−1]), 64" in markdown


def test_identity_curves_obey_the_sampler_identity(bench):
    """|p[i-1] - p[i]| <= max_drop = 1 - π at every token, forks at 5-20% of positions, and a true
    cliff only at a fork."""
    from cliffdata.stats import min_detectable_drop

    delta_min = min_detectable_drop(64, 64, bench.TEST)
    curves = bench.make_identity_curves(12, seed=2)
    for c in curves:
        p, max_drop = c["p"], 1.0 - c["sampler_prob"]
        assert np.all(np.abs(np.diff(p)) <= max_drop[1:] + 1e-12)
        assert 0.02 < np.mean(max_drop >= delta_min) < 0.25
        assert all(max_drop[i] >= delta_min for i in bench.true_cliffs(p))
    assert sum(len(bench.true_cliffs(c["p"])) for c in curves) > 0


def test_forks_run_only_on_curves_with_sampler_probabilities(bench, tmp_path):
    with_probs = bench.make_identity_curves(3, seed=1)
    path = tmp_path / "curves.json"
    path.write_text(json.dumps([{"kind": "plain", "p": [0.9] * 100 + [0.1] * 120}]
                               + [{"kind": c["kind"], "p": c["p"].tolist(), "sampler_prob": c["sampler_prob"].tolist()}
                                  for c in with_probs]))
    curves = bench.load_curves(path)
    assert "sampler_prob" not in curves[0] and all("sampler_prob" in c for c in curves[1:])
    report = bench.run_seeds(lambda s: curves, [0, 1])
    assert "forks" not in report["traces"][0]["methods"] and all("forks" in t["methods"] for t in report["traces"][1:])
    assert report["summary"]["all"]["forks"]["num_traces"] == 3
    assert len(report["per_seed"]["recall_ratio"]) == 2
    assert report["forks"]["token_ratio"] < 0.2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"kind": "x", "p": [0.5, 0.4], "sampler_prob": [0.5]}]))
    with pytest.raises(ValueError, match="sampler_prob"):
        bench.load_curves(bad)


def test_model_like_heldout_library(bench):
    curves = bench.make_model_like_curves(18, seed=0)
    assert [c["kind"] for c in curves[:6]] == list(bench.HELDOUT_MODEL_LIKE)
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
            need = bench._min_drop_counts(int(round(bench.EXHAUSTIVE_N * a)))
            need = need / bench.EXHAUSTIVE_N if need is not None else 0.3
            assert b == 0.0 or 0.9 * need - 1e-9 <= a - b <= 1.3 * need + 1e-9, (a, b, need)
    assert [c["p"].tolist() for c in bench.make_model_like_curves(18, seed=0)] == [c["p"].tolist() for c in curves]


def test_frontier_varies_only_the_screen_and_restores_the_params(bench, tmp_path):
    rng = np.random.default_rng(1)
    curves = [{"kind": "dip", "p": np.array([0.9] * 150 + [0.3] + [0.9] * 149)},
              {"kind": "step", "p": np.clip(0.8 - 0.5 * (np.arange(260) >= 130) + rng.uniform(-0.01, 0.01, 260), 0, 1)}]
    params_config = bench.ADAPTIVE_CONFIG
    settings = ((6, 0.2), (params_config.sweep_rollouts, params_config.flag_lr), (16, 0.01))
    frontier = bench.run_frontier({"small": lambda s: curves}, [0, 1], settings)
    assert bench.ADAPTIVE_CONFIG == params_config
    rows = frontier["settings"]
    assert [r["params"] for r in rows] == [False, True, False]
    # the params' row is what the plain comparison reports for the same seeds
    plain = bench.run_seeds(lambda s: curves, [0, 1], ("exhaustive", "adaptive"))
    assert rows[1]["libraries"]["small"]["token_ratio"] == pytest.approx(plain["token_ratio"], abs=1e-4)
    # a wider screen (more rollouts at every swept position, a lower flag bar) costs more
    tokens = [r["libraries"]["small"]["token_ratio"] for r in rows]
    assert tokens[0] < tokens[2] < 1
    bench.main(["--frontier", "--curves", str(_write(tmp_path, curves)), "--seeds", "1", "--json", str(tmp_path / "a.json")])
    assert "| sweep_rollouts | flag_lr |" in (tmp_path / "a_frontier.md").read_text()
    assert json.loads((tmp_path / "a_frontier.json").read_text())["seeds"] == [0]


def _write(tmp_path, curves):
    path = tmp_path / "curves.json"
    path.write_text(json.dumps([{"kind": c["kind"], "p": np.asarray(c["p"]).tolist()} for c in curves]))
    return path
