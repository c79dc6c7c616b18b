"""Seeds as an axis (cliffdata/seeds.py): the saved experiments read from `dvc exp show --json`, the
per-seed rows, the spread over seeds against scipy, and what each level runs."""
import numpy as np
import pytest
from scipy import stats

from cliffdata import seeds


def exp_rev(name: str, seed: int, accuracy: dict, cliffs: int) -> dict:
    """One experiment as `dvc exp show --json` gives it (the parts seeds reads)."""
    return {"rev": f"{seed:040d}", "name": name, "data": {
        "params": {"params.yaml": {"data": {"dpo_train": {"seed": seed}, "sample": {"seed": 0}}}},
        "metrics": {"metrics/dpo_eval.json": {"data": {"models": {m: {"accuracy": a} for m, a in accuracy.items()}}},
                    "metrics/headline.json": {"data": {"headline": {"cliffs": cliffs, "dpo_all": accuracy["all"],
                                                                    "rollout_tokens": None}}}}}}


SHOW = [{"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
        {"rev": "a" * 40, "name": "main", "data": {}, "error": None, "experiments": [
            {"name": "seeds-training-0", "revs": [exp_rev("seeds-training-0", 0, {"base": .40, "all": .50, "random": .41,
                                                                                  "uncertain_sampled_off": .48}, 5)]},
            {"name": "seeds-training-1", "revs": [exp_rev("seeds-training-1", 1, {"base": .40, "all": .46, "random": .43,
                                                                                  "uncertain_sampled_off": .45}, 5)]},
            {"name": "seeds-chain-0", "revs": [exp_rev("seeds-chain-0", 0, {"base": .38, "all": .47, "random": .40,
                                                                            "uncertain_sampled_off": .44}, 7)]},
            {"name": "tuned-lr", "revs": [exp_rev("tuned-lr", 3, {"base": .4, "all": .9, "random": .4,
                                                                  "uncertain_sampled_off": .9}, 1)]}]}]


def test_running_and_failed_experiments_are_not_read():
    running = {"name": "seeds-chain-2", "executor": {"state": "running", "name": "tempdir", "local": None},
               "revs": [exp_rev("seeds-chain-2", 2, {"base": .4, "all": .5, "random": .4, "uncertain_sampled_off": .5}, 5)]}
    failed = {"name": "seeds-chain-3", "revs": [{**exp_rev("seeds-chain-3", 3, {"base": .4, "all": .5, "random": .4,
                                                                            "uncertain_sampled_off": .5}, 5),
                                                 "error": {"msg": "stage failed"}}]}
    doc = [{**SHOW[1], "experiments": SHOW[1]["experiments"] + [running, failed]}]
    assert {r["name"] for r in seeds.flatten_show(doc)} == {e["name"] for e in SHOW[1]["experiments"]}


def test_saved_seeds_become_rows_by_level():
    rows = seeds.seed_rows(list(seeds.flatten_show(SHOW)))
    assert [r["seed"] for r in rows["training"]] == [0, 1] and [r["seed"] for r in rows["chain"]] == [0]
    first = rows["training"][0]
    assert first["all-random"] == pytest.approx(0.09) and first["uncertain_sampled_off-base"] == pytest.approx(0.08)
    assert "uncertain_sampled_off-deterministic" not in first           # no deterministic adapter: no difference
    assert "cliffs" not in first                  # a training seed stops at dpo_eval: the headline is the baseline's
    chain = rows["chain"][0]
    assert chain["cliffs"] == 7 and "rollout_tokens" not in chain         # null headline figures are left out
    assert first["accuracy"]["base"] == 0.40 and first["baseline"] == "aaaaaaa"


def test_spread_is_the_t_interval_over_seeds():
    x = [0.09, 0.03, 0.12, -0.01, 0.05]
    s = seeds.spread(x, 0.05)
    lo, hi = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert (s["n"], s["mean"], s["sd"]) == (5, pytest.approx(np.mean(x)), pytest.approx(np.std(x, ddof=1)))
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert seeds.spread([0.1], 0.05) == {"n": 1, "mean": 0.1, "sd": None, "ci_low": None, "ci_high": None}


def test_summary_and_page():
    out = seeds.summarize(seeds.seed_rows(list(seeds.flatten_show(SHOW))), 0.05)
    assert out["training"]["spread"]["all-random"]["n"] == 2 and out["chain"]["spread"]["all-random"]["sd"] is None
    page = seeds.markdown(out)
    assert "## training: 2 seeds (0, 1)" in page and "| all-random | 2 | 0.06 |" in page


def test_run_skips_saved_seeds_and_sets_every_seed_of_its_level(monkeypatch):
    calls = []
    monkeypatch.setattr(seeds, "saved_names", lambda dvc=None: ["seeds-chain-0"])
    monkeypatch.setattr(seeds.subprocess, "run", lambda cmd, check: calls.append(cmd))
    assert seeds.run("chain", [0, 1], dvc="dvc") == ["seeds-chain-1"]
    [cmd] = calls
    assert cmd[:6] == ["dvc", "exp", "run", "--temp", "-n", "seeds-chain-1"] and cmd[-1] == "summary"
    assert {c for c in cmd if c.startswith("-S")} == {f"-S{k}=1" for k in seeds.LEVELS["chain"][0]}
    calls.clear()
    seeds.run("training", [4], dvc="dvc")
    assert calls[0][-2:] == ["-Sdpo_train.seed=4", "dpo_eval"]


def test_every_seed_param_exists():
    """The params each level sets exist in params.yaml (a typo would make DVC add a new key)."""
    from cliffdata.config.load import read_yaml

    data = read_yaml("params.yaml")
    for keys, _ in seeds.LEVELS.values():
        for key in keys:
            node = data
            for part in key.split("."):
                node = node[part]
            assert isinstance(node, int), key


def test_seeds_of_other_params_do_not_count():
    records = list(seeds.flatten_show(SHOW))
    own = seeds.fingerprint({"dpo_train": {"seed": 9}, "sample": {"seed": 3}})
    assert [r["seed"] for r in seeds.seed_rows(records, own)["training"]] == [0, 1]
    assert seeds.seed_rows(records, seeds.fingerprint({"dpo_train": {"beta": 0.5}}))["training"] == []
    # one name saved on two commits: the newest counts once
    twice = records + [dict(records[0], baseline="c" * 40)]
    assert [r["baseline"] for r in seeds.seed_rows(twice, own)["training"]] == ["aaaaaaa", "aaaaaaa"]


def test_the_fingerprint_ignores_the_seeds_only():
    from cliffdata.config.load import read_yaml

    data = read_yaml("params.yaml")
    other_seed = __import__("copy").deepcopy(data)
    other_seed["dpo_train"]["seed"], other_seed["sample"]["seed"] = 7, 9
    other_param = __import__("copy").deepcopy(data)
    other_param["dpo_train"]["beta"] = 0.5
    assert seeds.fingerprint(data) == seeds.fingerprint(other_seed) != seeds.fingerprint(other_param)
    # the matched control changes no figure the seeds record; the ablation's other params do
    pool = __import__("copy").deepcopy(data)
    pool["ablation"]["control_pool"]["num_samples"], pool["ablation"]["matched_control"] = 3, False
    arms = __import__("copy").deepcopy(data)
    arms["ablation"]["num_rollouts"] = 8
    assert seeds.fingerprint(data) == seeds.fingerprint(pool) != seeds.fingerprint(arms)


def test_the_summary_depends_on_every_section_the_fingerprint_reads():
    """dvc.yaml's summary stage lists every params section the fingerprint reads (all but `study` and the risk
    stages'), so a change the fingerprint sees re-runs the summary, and adding a study model or changing the
    risk evaluation does not."""
    import yaml
    from cliffdata.config.load import read_yaml

    listed = set(yaml.safe_load(open("dvc.yaml"))["stages"]["summary"]["params"])
    assert listed == set(read_yaml("params.yaml")) - set(seeds.UNFINGERPRINTED)
    data = read_yaml("params.yaml")
    assert seeds.fingerprint(data) == seeds.fingerprint({**data, "study": {"models": {"b": {"source": "x"}}}})
    assert seeds.fingerprint(data) == seeds.fingerprint({k: v for k, v in data.items() if k not in ("risk", "risk_labels")})
