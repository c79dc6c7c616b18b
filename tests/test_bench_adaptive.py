"""bench/adaptive.py: its command line on small curves (the simulation itself: tests/test_simulate.py), a
bad `--curves` file, and the frontier of the adaptive search's screen knobs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from cliffdata.search.simulate import run_seeds

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_adaptive", ROOT / "bench/adaptive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_frontier_varies_only_the_screen_and_leaves_the_params(bench, tmp_path):
    rng = np.random.default_rng(1)
    curves = [{"kind": "dip", "p": np.array([0.9] * 150 + [0.3] + [0.9] * 149)},
              {"kind": "step", "p": np.clip(0.8 - 0.5 * (np.arange(260) >= 130) + rng.uniform(-0.01, 0.01, 260), 0, 1)}]
    params_config = bench.SETTINGS.adaptive
    settings = ((6, 0.2), (params_config.sweep_rollouts, params_config.flag_lr), (16, 0.01))
    frontier = bench.run_frontier({"small": lambda s: curves}, [0, 1], settings)
    assert bench.SETTINGS.adaptive == params_config
    rows = frontier["settings"]
    assert [r["params"] for r in rows] == [False, True, False]
    # the params' row is what the plain comparison reports for the same seeds
    plain = run_seeds(lambda s: curves, [0, 1], bench.SETTINGS, ("exhaustive", "adaptive"))
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
