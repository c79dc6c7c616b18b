"""bench/dip_bound.py: its populations are true cliffs, its likelihood ratio is the depth average of
binomial ratios (scipy), and its screen's two limits (never closes / closes everything) are exact."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from cliffdata.cliffs.stats import is_cliff

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bound():
    spec = importlib.util.spec_from_file_location("bench_dip_bound", ROOT / "bench/dip_bound.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["high", "mid"])
def test_populations_are_true_cliffs_in_their_ranges(bound, name):
    level, dip = bound.population(name, 3000, np.random.default_rng(0))
    spec = bound.POPULATIONS[name]
    assert 0 < len(level) <= 3000
    assert ((level >= spec["plateau"][0]) & (level <= spec["plateau"][1])).all()
    depth = level - dip
    assert (depth <= spec["depth"][1] + 1e-12).all() and (dip >= 0).all()
    assert is_cliff(np.rint(64 * level), 64, np.rint(64 * dip), 64, bound.TEST).all()


def test_likelihood_ratio_is_the_depth_average_of_binomial_ratios(bound):
    level = np.array([0.9, 0.6, 0.95])
    k = np.array([3, 5, 6])
    got = bound.likelihood_ratio(k, 6, level, (0.25, 0.7))
    d = np.linspace(0.25, 0.7, bound.DEPTH_GRID)
    expected = [np.mean(binom.pmf(kk, 6, np.clip(lv - d, 0, 1)) / binom.pmf(kk, 6, lv)) for kk, lv in zip(k, level)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_screen_limits(bound):
    rng = np.random.default_rng(1)
    level, dip = bound.population("high", 4000, rng)
    stages = bound.SCHEDULES["doubling 4-8-16-32-64"]
    # a threshold no ratio reaches closes every position after its first stage: that stage's cost, no dip found
    cost, fired = bound.screen(level, dip, stages, np.inf, bound.POPULATIONS["high"]["depth"], rng)
    assert cost == stages[0] / 64 and fired == 0.0
    # threshold 0 never closes: N rollouts everywhere, and the detection rate is exhaustive's (same law)
    cost, fired = bound.screen(level, dip, stages, 0.0, bound.POPULATIONS["high"]["depth"], rng)
    exhaustive = is_cliff(rng.binomial(64, level), 64, rng.binomial(64, dip), 64, bound.TEST).mean()
    assert cost == 1.0
    assert abs(fired - exhaustive) < 4 * np.sqrt(exhaustive * (1 - exhaustive) / len(level)) + 1e-9
