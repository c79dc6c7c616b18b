"""The cliff test (`cliffs.test`: δ0, z, min_rollouts) has one definition, params.yaml, and every stage that
decides a cliff gets it whole from there: the rollouts searches, the cliffs scan, replicate, candidates,
cliff_count, the report and the bench. With unusual values in params.yaml, each stage entrypoint (run in
process up to the call that takes the test) hands the library that very object, and on a tiny input the
library's decision is the one those values give, not the project's. No code has a default for it: a caller
that forgets it gets a TypeError, and params without it are refused at load time, naming the key."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import inspect
import re
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from cliffdata import schema
from cliffdata.cliffs import stats
from cliffdata.config.cliffs import CliffsConfig, CliffTest
from cliffdata.config.load import parse_params
from cliffdata.generate.sampling import Resampled
from project_cliffs import TEST as PROJECT
from report_fixtures import write_fixture
from test_cliffs import tables

ROOT = Path(__file__).resolve().parents[1]
UNUSUAL = {"delta0": 0.37, "z": 0.5, "min_rollouts": 3}
TEXTS = {"arith/a-0#0": ("Tom has 31 marbles and gets 28 more, so 31 - 28 = 3.\n#### 3", False, 12),
         "arith/a-1#0": ("23 + 48 = 71.\n#### 71", True, None)}
# 4/4 -> 2/4 (Δ = 0.5, SE = 0.25): a cliff for δ0 = 0.37, z = 0.5 (0.5 > 0.495) at a floor of 3, not for the
# project's δ0 = 0.1, z = 1.645 (0.5 < 0.511), whose floor of 8 does not even test it
FLIP = (4, 4, 2, 4)


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def unusual_params() -> dict:
    """The project's params.yaml with the unusual cliff test."""
    data = raw_params()
    data["cliffs"]["test"] = dict(UNUSUAL)
    return data


@pytest.fixture
def params():
    return parse_params(unusual_params())


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_tokenizer):
    """A project folder (the current directory) with the unusual params.yaml and the report fixture's
    datasets (problems, traces, token stats, potentials, cliffs, ...)."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(unusual_params(), sort_keys=False))
    write_fixture(tmp_path, tiny_tokenizer, TEXTS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Reached(Exception):
    """Raised by a recorder: the stage got as far as the call that takes the test."""


def recorder(calls: list, stop: bool = True, then=None):
    def record(*args, **kwargs):
        calls.append((args, kwargs))
        if stop:
            raise Reached
        return then(*args, **kwargs)
    return record


def first_call(monkeypatch, module, function: str):
    """Run a stage module's main() until it calls `function` (stopped there): that call's (args, kwargs)."""
    calls = []
    monkeypatch.setattr(module, function, recorder(calls))
    with pytest.raises(Reached):
        module.main()
    return calls[0]


def argument(call, name: str, function) -> object:
    """The value `function`'s parameter `name` got in a recorded call."""
    args, kwargs = call
    return inspect.signature(function).bind(*args, **kwargs).arguments[name]


def stage(name: str):
    """pipeline/<name>.py as a fresh module (its main() runs in process)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}_under_test", ROOT / "pipeline" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def offline(monkeypatch, module) -> None:
    """No model: the stage's tokenizer, model and backend are stand-ins (the recorded call comes first)."""
    loader = types.SimpleNamespace(from_pretrained=lambda *a, **k: types.SimpleNamespace(eval=lambda: None))
    for name in ("AutoTokenizer", "AutoModelForCausalLM"):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, loader)
    monkeypatch.setattr(module, "open_backend", lambda *a, **k: contextlib.nullcontext())


# --- no default anywhere; load-time errors ------------------------------------------------------------------

def test_the_project_params_hold_the_test():
    assert parse_params(raw_params()).cliffs.test == CliffTest(delta0=0.1, z=1.645, min_rollouts=8) == PROJECT


def test_no_code_default_for_the_test():
    with pytest.raises(TypeError):
        CliffTest()
    with pytest.raises(TypeError):
        CliffTest(delta0=0.1, z=1.645)
    with pytest.raises(TypeError):
        CliffsConfig()
    with pytest.raises(TypeError):
        stats.is_cliff(*FLIP)                  # a caller that forgets the test
    assert not hasattr(stats, "_TEST")


def _users():
    from cliffdata.cliffs import find
    from cliffdata.dpo import cliff_count
    from cliffdata.experiments import candidates, replicate
    from cliffdata.publish.report import data
    from cliffdata.search import adaptive, base, forks, ray_rollouts, rollouts

    return [stats.is_cliff, stats.cliff_matrix, stats.detect_cliffs, stats.cliff_p_value, stats.null_fire_probability,
            stats.null_fire_conditional, stats.min_detectable_drop, adaptive.needed_moves, adaptive.adaptive_steps,
            adaptive.adaptive_search, forks.fork_positions, forks.fork_steps, forks.fork_search,
            base.cliffs_from_evaluated, rollouts.trace_search, rollouts.search_wave, rollouts.estimate_potentials,
            rollouts.run_rollouts, ray_rollouts.run_rollouts_ray, ray_rollouts.RolloutActor, find.CliffLookup,
            replicate.run_replicate, candidates.run_candidates, find.cliff_tables, find.find_cliffs,
            cliff_count.count_cliffs, data.load_report_data]


@pytest.mark.parametrize("function", _users(), ids=lambda f: f"{f.__module__}.{f.__qualname__}")
def test_every_user_takes_the_test_without_a_default(function):
    parameters = inspect.signature(function).parameters
    name = "test" if "test" in parameters else "cliffs" if "cliffs" in parameters else "cfg"
    assert parameters[name].default is inspect.Parameter.empty, f"{function.__qualname__}({name}=...) has a default"


@pytest.mark.parametrize("change, message", [
    (lambda d: d["cliffs"]["test"].update(delta0=1.5), r"^cliffs\.test\.delta0 must be in \[0, 1\), got 1\.5$"),
    (lambda d: d["cliffs"]["test"].update(delta0=-0.1), r"^cliffs\.test\.delta0 must be in \[0, 1\), got -0\.1$"),
    (lambda d: d["cliffs"]["test"].update(z=0), r"^cliffs\.test\.z must be in \(0, inf\), got 0\.0$"),
    (lambda d: d["cliffs"]["test"].update(min_rollouts=0), r"^cliffs\.test\.min_rollouts must be in \[1, inf\), got 0$"),
    (lambda d: d["cliffs"]["test"].update(min_rollouts=2.5), r"^cliffs\.test\.min_rollouts: expected int, got 2\.5$"),
    (lambda d: d["cliffs"]["test"].pop("z"), r"^cliffs\.test\.z: missing \(required\)$"),
    (lambda d: d["cliffs"]["test"].update(alpha=0.05), r"^cliffs\.test: unknown keys \['alpha'\]"),
    (lambda d: d["cliffs"].pop("test"), r"^cliffs\.test: missing \(required\)$"),
    (lambda d: d.pop("cliffs"), r"^cliffs: missing \(required\)$"),
    (lambda d: d["cliffs"].update(delta0=0.1), r"^cliffs: unknown keys \['delta0'\]"),      # the test is nested
    (lambda d: d["cliffs"].update(use_empty_prefix=True), r"^cliffs: unknown keys \['use_empty_prefix'\]"),
])
def test_params_without_a_valid_test_are_refused_naming_the_key(change, message):
    data = raw_params()
    change(data)
    with pytest.raises(ValueError, match=message):
        parse_params(data)


def test_the_test_is_one_for_every_study_model():
    data = raw_params()
    data["study"] = {"models": {"b": {"source": "org/B-1B", "overrides": {"cliffs.test.z": 1.0}}}}
    with pytest.raises(ValueError, match=r"study\.models\.b\.overrides: 'cliffs\.test\.z' is not a key of"):
        parse_params(data)


@pytest.mark.parametrize("mode, key, n0", [("forks", "rollouts.forks.initial_rollouts", 4),
                                           ("adaptive", "rollouts.adaptive.initial_rollouts", 8)])
def test_cliff_count_n_must_fit_the_rollouts_search(mode, key, n0):
    """cliff_count runs the rollouts search (mode and settings of `rollouts`) at cliff_count.num_rollouts."""
    data = raw_params()
    data["rollouts"]["mode"] = mode
    data["cliff_count"]["num_rollouts"] = n0 - 1
    with pytest.raises(ValueError, match=rf"^cliff_count\.num_rollouts must be >= {re.escape(key)} = {n0} .*got {n0 - 1}$"):
        parse_params(data)
    data["cliff_count"]["num_rollouts"] = n0
    assert parse_params(data).cliff_count.num_rollouts == n0
    data["rollouts"]["mode"] = "exhaustive"                  # no starting n: any N >= 1
    data["cliff_count"]["num_rollouts"] = 1
    assert parse_params(copy.deepcopy(data)).cliff_count.num_rollouts == 1


def test_the_empty_prefix_has_one_name_in_params_and_sql(params):
    from cliffdata.cliffs.taxonomy import sql_params

    off = dataclasses.replace(params.cliffs, include_empty_prefix=False)
    assert sql_params(off)["include_empty_prefix"] is False and sql_params(params.cliffs)["include_empty_prefix"] is True
    sql = "\n".join(p.read_text() for p in sorted((ROOT / "cliffdata/analysis/sql").glob("*.sql")))
    assert "$include_empty_prefix" in sql and "empty_prefix" not in sql.replace("$include_empty_prefix", "")


# --- each user gets params' test ----------------------------------------------------------------------------

def test_the_flip_input_tells_the_two_tests_apart(params):
    assert bool(stats.is_cliff(*FLIP, params.cliffs.test)) and not bool(stats.is_cliff(*FLIP, PROJECT))


def test_rollouts_stage_searches_with_params_test(project, params, monkeypatch):
    module = stage("rollouts")
    offline(monkeypatch, module)
    traces = schema.read("traces", schema.PATHS["traces"]).to_pylist()
    monkeypatch.setattr(module, "max_drops_of", lambda path, ids: {t["trace_id"]: {} for t in traces})
    forks, runs = [], []
    monkeypatch.setattr(module, "fork_positions", recorder(forks, stop=False, then=module.fork_positions))
    monkeypatch.setattr(module, "run_rollouts", recorder(runs))
    with pytest.raises(Reached):
        module.main()
    from cliffdata.search.forks import fork_positions
    from cliffdata.search.rollouts import run_rollouts

    assert argument(runs[0], "test", run_rollouts) == params.cliffs.test
    assert forks and all(argument(c, "test", fork_positions) == params.cliffs.test for c in forks)


@pytest.mark.parametrize("mode", ["forks", "adaptive"])
def test_the_searches_decide_by_the_test_they_are_given(params, monkeypatch, mode):
    """Every cliff decision and δ_min of a search (through the rollouts scheduler's `trace_search`) uses the
    given test's δ0 and z; its confirmation at full N screens from the search's starting n or the test's floor."""
    from cliffdata.search import adaptive, base, forks
    from cliffdata.search.rollouts import trace_search

    seen = []
    for module in (base, adaptive, forks):
        for name in ("is_cliff", "min_detectable_drop", "cliff_matrix"):
            if hasattr(module, name):
                real = getattr(module, name)
                monkeypatch.setattr(module, name, lambda *a, _real=real, **k: seen.append(a[-1]) or _real(*a, **k))
    cfg = dataclasses.replace(params.rollouts, mode=mode, num_rollouts=16)
    trace = {"trace_id": "t#0", "response_ids": list(range(30))}
    search = trace_search(trace, cfg, params.cliffs.test, dict.fromkeys(range(30), 0.9))
    rng = np.random.default_rng(0)
    potential = np.where(np.arange(-1, 29) < 15, 0.9, 0.1)
    base.run_search(search, types.SimpleNamespace(rollouts=lambda requests: [
        (int(rng.binomial(n, potential[i + 1])), 0) for i, n in requests]))
    test = params.cliffs.test
    n0 = cfg.forks.initial_rollouts if mode == "forks" else cfg.adaptive.initial_rollouts
    assert seen and all(isinstance(t, CliffTest) and (t.delta0, t.z) == (test.delta0, test.z) for t in seen)
    assert {t.min_rollouts for t in seen} <= {test.min_rollouts, min(n0, test.min_rollouts)}


def test_cliffs_stage_scans_with_params_cliffs(project, params, monkeypatch):
    from cliffdata.cliffs.find import cliff_tables

    module = stage("cliffs")
    call = first_call(monkeypatch, module, "cliff_tables")
    assert argument(call, "cfg", cliff_tables) == params.cliffs


def test_the_scan_decides_by_the_test_and_its_floor(params):
    from cliffdata.cliffs.find import cliff_tables

    counts = [(4, 4), (4, 4), (2, 4)]                         # positions -1, 0, 1: token 1 is FLIP
    traces, potentials, token_stats = tables({"a#0": counts}, {"a#0": [(0.0, 1)] * 3}, {"a#0": False})
    found, _ = cliff_tables(traces, potentials, token_stats, params.cliffs)
    assert found["token_index"].to_pylist() == [1]
    for test in (PROJECT, dataclasses.replace(PROJECT, min_rollouts=1)):    # the floor, then δ0 and z
        found, _ = cliff_tables(traces, potentials, token_stats, dataclasses.replace(params.cliffs, test=test))
        assert found.num_rows == 0


def test_replicate_stage_replicates_with_params_test(project, params, monkeypatch):
    from cliffdata.experiments.replicate import run_replicate as real

    module = stage("replicate")
    offline(monkeypatch, module)
    call = first_call(monkeypatch, module, "run_replicate")
    assert argument(call, "test", real) == params.cliffs.test


CLIFF = {"trace_id": "t#0", "problem_id": "p", "token_index": 3, "is_correct": False, "category": "uncertain",
         "feasible": True}


def test_replication_decides_by_the_test(params, monkeypatch):
    from cliffdata.experiments import replicate

    fresh = [Resampled(4, 4, 0), Resampled(4, 2, 0)]         # prev side, curr side: FLIP
    monkeypatch.setattr(replicate, "resample_by_problem", lambda requests, *a, **k: fresh)
    verdict = {name: replicate.run_replicate([], [CLIFF], {}, None, None, 4, None, 0, test)[0]["replicated"]
               for name, test in (("params", params.cliffs.test), ("project", PROJECT))}
    assert verdict == {"params": True, "project": False}


def test_candidates_stage_tests_candidates_with_params_test(project, params, monkeypatch):
    from cliffdata.experiments.candidates import run_candidates as real

    module = stage("candidates")
    offline(monkeypatch, module)
    monkeypatch.setattr(module, "candidate_rows", lambda *a, **k: [])      # the fixture stores a top-3
    call = first_call(monkeypatch, module, "run_candidates")
    assert argument(call, "test", real) == params.cliffs.test


def test_a_candidate_is_a_cliff_by_the_test(params, monkeypatch):
    from cliffdata.experiments import candidates

    monkeypatch.setattr(candidates, "resample_by_problem", lambda requests, *a, **k: [Resampled(4, 2, 0)])
    request = {"trace_id": "t#0", "problem_id": "p", "token_index": 3, "candidate_id": 9, "is_cliff_token": False,
               "num_correct_prev": 4, "num_rollouts_prev": 4}
    verdict = {name: candidates.run_candidates([request], [], {}, None, None, 4, None, 0, test)[0]["is_cliff"]
               for name, test in (("params", params.cliffs.test), ("project", PROJECT))}
    assert verdict == {"params": True, "project": False}


def test_cliff_count_stage_counts_with_params_cliffs(project, params, monkeypatch):
    from cliffdata.dpo.cliff_count import count_cliffs

    module = stage("cliff_count")
    offline(monkeypatch, module)
    monkeypatch.setattr(module, "eval_problems", lambda *a, **k: ([], 0))
    monkeypatch.setattr(module, "trained_variants", lambda variants: {})
    call = first_call(monkeypatch, module, "count_cliffs")
    assert argument(call, "cliffs", count_cliffs) == params.cliffs


def test_cliff_count_searches_and_finds_with_the_test(params, monkeypatch):
    from cliffdata.dpo import cliff_count
    from cliffdata.search.rollouts import run_rollouts

    monkeypatch.setattr(cliff_count, "sample_traces", lambda *a, **k: [])
    monkeypatch.setattr(cliff_count, "compute_token_stats", lambda *a, **k: [])
    runs, finds = [], []
    monkeypatch.setattr(cliff_count, "run_rollouts", recorder(
        runs, stop=False, then=lambda *a, **k: (schema.POTENTIALS.empty_table(), [])))
    find_cliffs = cliff_count.find_cliffs
    monkeypatch.setattr(cliff_count, "find_cliffs", recorder(finds, stop=False, then=find_cliffs))
    backend = types.SimpleNamespace(name="fake", deterministic=True, eos_token_ids=[2])
    cliff_count.count_cliffs({"base": None}, backend, object(), None, [], {}, None, 0, params.rollouts,
                             params.rollouts.sampling, params.cliffs, 5, None)
    assert argument(runs[0], "test", run_rollouts) == params.cliffs.test
    assert argument(finds[0], "cfg", find_cliffs) == params.cliffs


def test_report_reads_params_cliffs(project, params, monkeypatch, tiny_tokenizer):
    from cliffdata.publish.report import load_report_data
    from cliffdata.publish.report.data import trace_payload

    module = stage("report")
    call = first_call(monkeypatch, module, "load_report_data")
    assert argument(call, "cliffs", load_report_data) == params.cliffs
    data = load_report_data(project, params.cliffs)
    assert data.test == params.cliffs.test
    assert trace_payload(data, "arith/a-0#0", tiny_tokenizer)["min_n"] == UNUSUAL["min_rollouts"]


def test_cli_report_reads_the_test_from_params_or_refuses(project, params, monkeypatch, tmp_path_factory, capsys):
    import cliffdata.publish.report
    from cliffdata.cli import main

    calls = []

    def record(root, cliffs, problems_root=None):
        calls.append(cliffs)
        raise ValueError("reached")

    monkeypatch.setattr(cliffdata.publish.report, "load_report_data", record)
    monkeypatch.setattr(cliffdata.publish.report, "check_out_dir", lambda out, root=None: None)     # asks git: a process
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    assert main(["report", "--root", str(project), "--out", str(elsewhere / "site")]) == 2    # ROOT/params.yaml
    assert calls == [params.cliffs]
    assert main(["report", "--root", str(elsewhere)]) == 2
    err = capsys.readouterr().err
    assert f"{elsewhere / 'params.yaml'} not found" in err and "cliffs.test" in err and calls == [params.cliffs]


def test_bench_takes_the_test_from_params(params, monkeypatch):
    import cliffdata.config.load
    from cliffdata.search.simulate import true_cliffs

    monkeypatch.setattr(cliffdata.config.load, "load_params", lambda path="params.yaml": params)
    modules = {}
    for name in ("adaptive", "dip_bound"):
        spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", ROOT / "bench" / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
        assert modules[name].TEST == params.cliffs.test
    assert modules["adaptive"].SETTINGS.test == params.cliffs.test      # what every simulated search decides by
    # 32/64 -> 9/64 (Δ = 0.36): a true cliff for the project's test, not for δ0 = 0.37
    assert bool(stats.is_cliff(32, 64, 9, 64, PROJECT))
    assert true_cliffs(np.array([0.5, 0.14]), modules["adaptive"].TEST) == []
    level, dip = modules["dip_bound"].population("high", 400, np.random.default_rng(0))
    assert len(level) and stats.is_cliff(np.rint(64 * level), 64, np.rint(64 * dip), 64, params.cliffs.test).all()

