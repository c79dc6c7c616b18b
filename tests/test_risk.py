"""Cliff risk before any rollout (cliffdata/risk/): the labels against the cliffs scan on a seeded world, the
greedy token's π_s against the sampler's own distribution, the hidden-state pass, the statistics against
scikit-learn and brute force, the cluster bootstrap on a closed form, the problem split, a planted signal
and a null, the SQL checks each caught by a broken seed, the MLflow registration and both stages in process."""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import runpy
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from cliffdata import schema
from cliffdata.analysis import duck
from cliffdata.cliffs.find import cliff_tables
from cliffdata.cliffs.stats import min_detectable_drop
from cliffdata.config.generate import SamplingConfig
from cliffdata.config.load import parse_params
from cliffdata.config.risk import BoostingConfig, HiddenConfig, RiskConfig
from cliffdata.risk import metrics
from cliffdata.risk.evaluate import evaluate_risk, markdown
from cliffdata.cliffs.find import cliff_test_pairs
from cliffdata.risk.labels import greedy_sampler_probs, label_tables, replicated_by_cliff
from cliffdata.risk.model import LinearRisk, feature_matrix, fit_logistic, out_of_fold, problem_folds
from project_cliffs import CLIFFS, cliffs_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLING = SamplingConfig(temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=8)
VOCAB = 30                                 # token ids 0 … 29: inside the tiny tokenizer's vocabulary
RISK = RiskConfig(features=("max_drop", "greedy_sampler_prob", "margin", "entropy", "rank", "is_greedy",
                            "relative_position"),
                  baselines=("max_drop", "entropy", "rank"), folds=5, seed=0, inverse_l2=1.0,
                  boosting=BoostingConfig(max_iter=20, learning_rate=0.1, max_leaf_nodes=7),
                  bootstrap_resamples=200, level=0.95, budgets=(0.05, 0.1, 0.2, 0.5), reliability_bins=5)


# --- a seeded world: traces, token statistics as the teacher-forced pass writes them, potentials ----------------

def token_row(rng, trace_id: str, index: int, logits: np.ndarray, sampling: SamplingConfig) -> dict:
    """A token_stats row for a token drawn from softmax(logits), with π_s under `sampling` (temperature only)."""
    p = np.exp(logits - logits.max())
    p /= p.sum()
    token = int(rng.choice(len(p), p=p))
    order = np.argsort(-p, kind="stable")
    pi = p ** (1 / sampling.temperature)
    pi /= pi.sum()
    rank = 1 + int(np.sum(p > p[token] + 1e-9))
    return {"trace_id": trace_id, "token_index": index, "token_id": token, "logprob": float(np.log(p[token])),
            "rank": rank if rank <= 20 else 21, "entropy": float(-np.sum(p[order[:20]] * np.log(p[order[:20]]))),
            "entropy_full": float(-np.sum(p * np.log(p))), "greedy_token_id": int(order[0]), "is_greedy": rank == 1,
            "top_ids": order[:20].tolist(), "top_probs": p[order[:20]].astype(np.float32).tolist(),
            "sampler_prob": float(pi[token]), "max_drop": float(1 - pi[token])}


def world(seed: int, num_problems: int, length: int, n_choices=(4, 8, 16, 16, 16)) -> dict[str, pa.Table]:
    """`num_problems` problems with one trace each of `length` tokens; potentials at -1 … length-2 with N drawn
    from `n_choices` (some below cliffs.test.min_rollouts: untested pairs), a gap in every third trace
    (non-adjacent positions), and a true potential that sometimes falls; replicate rows for every cliff."""
    rng = np.random.default_rng(seed)
    traces, stats, pots = [], [], []
    for j in range(num_problems):
        tid, pid = f"p{j:03d}#0", f"arith/p{j:03d}"
        rows = [token_row(rng, tid, i, rng.normal(0, rng.choice([0.5, 2.0, 4.0]), VOCAB), SAMPLING) for i in range(length)]
        stats += rows
        traces.append({"trace_id": tid, "problem_id": pid, "sample_index": 0, "prompt_ids": [5, 6, 7],
                       "response_ids": [r["token_id"] for r in rows], "response_text": "", "extracted_answer": None,
                       "is_correct": bool(j % 2), "finish_reason": "stop", "num_tokens": length})
        level = 0.9
        for index in range(-1, length - 1):
            if j % 3 == 0 and index == length // 2:
                continue
            level = level * 0.3 if rng.random() < 0.2 else min(1.0, level + 0.05)
            n = int(rng.choice(n_choices))
            k = int(rng.binomial(n, level))
            pots.append({"trace_id": tid, "token_index": index, "mode": "forks", "num_rollouts": n, "num_correct": k,
                         "potential": k / n, "is_filled": False, "num_generated_tokens": 0})
    traces, stats, pots = (schema.to_table(name, rows) for name, rows in
                           (("traces", traces), ("token_stats", stats), ("potentials", pots)))
    cliffs, trace_cliffs = cliff_tables(traces, pots, stats, CLIFFS)
    replicate = [{"trace_id": c["trace_id"], "problem_id": c["problem_id"], "token_index": c["token_index"],
                  "is_correct": c["is_correct"], "category": c["category"], "feasible": c["feasible"],
                  "num_rollouts_prev": 16, "num_correct_prev": 12, "num_rollouts": 16, "num_correct": 2 if i % 2 else 10,
                  "p_prev": 0.75, "potential": 2 / 16 if i % 2 else 10 / 16, "delta": 0.625 if i % 2 else 0.125,
                  "p_value": 0.0 if i % 2 else 0.9, "replicated": bool(i % 2), "num_generated_tokens": 0}
                 for i, c in enumerate(cliffs.to_pylist())]
    return {"traces": traces, "token_stats": stats, "potentials": pots, "cliffs": cliffs,
            "trace_cliffs": trace_cliffs, "replicate": schema.to_table("replicate", replicate)}


def labels_of(w: dict[str, pa.Table], cfg=CLIFFS, project=None, chunk_rows: int = 64) -> pa.Table:
    tables = list(label_tables(w["traces"], w["potentials"], w["token_stats"], replicated_by_cliff(w["replicate"]),
                               cfg, SAMPLING, project, chunk_rows=chunk_rows))
    return pa.concat_tables(tables) if tables else schema.RISK_LABELS.empty_table()


@pytest.fixture(scope="module")
def seeded():
    return world(0, 20, 14)


# --- labels --------------------------------------------------------------------------------------------------

def test_tested_pairs_follow_the_scans_rule():
    codes = [0, 0, 0, 0, 0, 1, 1, 1]
    index = [-1, 0, 1, 3, 4, 0, 1, 2]
    n = [16, 16, 4, 16, 16, 16, 8, 16]
    # 0→1: both 16 (tested); 1: N 4 (not); 3: gap from 1 (not); 4: tested; 5: new trace; 6, 7: N 8 >= 8
    assert cliff_test_pairs(codes, index, n, 8).tolist() == [1, 4, 6, 7]
    assert cliff_test_pairs(codes, index, n, 17).tolist() == []
    assert cliff_test_pairs([0], [0], [16], 1).tolist() == []


@pytest.mark.parametrize("include_empty_prefix", [True, False])
def test_labels_are_the_scans_pairs_and_cliffs(seeded, include_empty_prefix):
    """Every trace has as many labels as the cliffs scan tested pairs, and the labels' cliffs (with their
    p-values and feasibility) are the cliffs dataset's, read in chunks of a few traces."""
    cfg = cliffs_config(include_empty_prefix=include_empty_prefix)
    cliffs, summary = cliff_tables(seeded["traces"], seeded["potentials"], seeded["token_stats"], cfg)
    labels = labels_of(seeded, cfg)
    assert labels.schema == schema.RISK_LABELS and labels.equals(schema.to_table("risk_labels", labels))
    per_trace = {}
    for t in labels["trace_id"].to_pylist():
        per_trace[t] = per_trace.get(t, 0) + 1
    assert per_trace == {r["trace_id"]: r["num_scored"] for r in summary.to_pylist() if r["num_scored"]}
    rows = labels.to_pylist()
    found = {(r["trace_id"], r["token_index"]): r for r in rows if r["is_cliff"]}
    expected = {(c["trace_id"], c["token_index"]): c for c in cliffs.to_pylist()}
    assert found.keys() == expected.keys() and len(expected) >= 5
    for key, c in expected.items():
        assert found[key]["p_value"] == c["p_value"] and found[key]["feasible"] == c["feasible"]
        assert found[key]["p_prev"] == c["p_prev"] and found[key]["relative_position"] == c["relative_position"]
    assert (min(r["token_index"] for r in rows) == 0) == include_empty_prefix      # token 0 against p[-1]
    # replication only on cliffs, from the replicate rows; feasibility on every row with a max_drop
    assert all(r["replicated"] is None for r in rows if not r["is_cliff"])
    assert {r["replicated"] for r in found.values()} == {True, False}
    floor = min_detectable_drop(16, 16, CLIFFS.test)
    assert all(r["feasible"] == (r["max_drop"] >= floor) for r in rows if r["num_rollouts"] == 16 == r["num_rollouts_prev"])
    assert {r["feasible"] for r in rows} == {True, False}
    assert labels_of(seeded, cfg, chunk_rows=1 << 20).equals(labels)        # the chunking changes nothing


def test_labels_name_a_tested_token_without_token_stats(seeded):
    broken = dict(seeded, token_stats=seeded["token_stats"].slice(0, 5))
    with pytest.raises(ValueError, match="token_stats has no row for the tested token at trace 'p000#0'"):
        labels_of(broken)


def sampler_pi(logits, sampling: SamplingConfig) -> np.ndarray:
    """π_s over the vocabulary as token_stats computes it (the engines' filter)."""
    import torch

    from cliffdata.generate.token_stats import sampler_logprobs

    return sampler_logprobs(torch.tensor(np.asarray(logits)[None, :]), sampling)[0].exp().numpy()


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=0.7), SamplingConfig(temperature=1.3, top_k=5),
                                      SamplingConfig(temperature=0.6, top_k=20, top_p=0.8),
                                      SamplingConfig(temperature=0.0)])
def test_greedy_sampler_prob_is_pi_s_of_the_greedy_token(sampling):
    """From the trace token's π_s, its logprob and the top-20 list: the greedy token's π_s as the sampler's own
    distribution gives it, for kept tokens (the ratio) and for tokens the sampler cuts (the top list)."""
    rng = np.random.default_rng(1)
    rows, expected = [], []
    for _ in range(40):
        logits = rng.normal(0, rng.choice([0.5, 3.0]), 200)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        token = int(order[rng.integers(0, 30)])
        pi = sampler_pi(logits, sampling)
        rows.append((token == order[0], np.log(p[token]), pi[token], p[order[:20]].astype(np.float32).tolist()))
        expected.append(pi[order[0]])
    same, logprob, sampler_prob, top = (list(c) for c in zip(*rows))
    got = greedy_sampler_probs(same, logprob, sampler_prob, pa.array(top, pa.list_(pa.float32())), sampling)
    if sampling.temperature > 0:
        assert any(s == 0 for s in sampler_prob) == (sampling.top_k > 0)      # the cut tokens are exercised
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-9)
    unknown = greedy_sampler_probs([False], [-1.0], [float("nan")], pa.array([[0.5]], pa.list_(pa.float32())), sampling)
    assert np.isnan(unknown).all()


def test_hidden_states_and_projection(tiny_model):
    """The state at response token i is the causal pass's at that token (the same from the prefix ending there),
    the projection is fixed by its seed, and a layer past the model's is named."""
    from cliffdata.risk.hidden import HiddenProjector, hidden_states, projection_matrix

    prompt, response = [5, 6, 7], [10, 11, 12, 13, 14]
    full = hidden_states(tiny_model, prompt, response, 2)                      # (5, 128)
    head = hidden_states(tiny_model, prompt, response[:3], 2)
    assert full.shape == (5, 128)
    np.testing.assert_allclose(full[:3], head, atol=1e-4)
    cfg = HiddenConfig(layer=1, dim=4, seed=3)
    project = HiddenProjector(tiny_model, {"t": (prompt, response)}, cfg)
    got = project("t", np.array([1, 4]))
    want = hidden_states(tiny_model, prompt, response, 1)[[1, 4]] @ projection_matrix(128, 4, 3)
    assert got.dtype == np.float32 and got.shape == (2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(projection_matrix(128, 4, 3), projection_matrix(128, 4, 4))
    with pytest.raises(ValueError, match="risk_labels.hidden.layer must be at most 2"):
        hidden_states(tiny_model, prompt, response, 3)


# --- statistics -----------------------------------------------------------------------------------------

def test_auroc_and_average_precision_against_references():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        scores = rng.integers(0, 6, n).astype(float)                          # many ties
        y = rng.random(n) < 0.3
        if y.all() or not y.any():
            continue
        w = rng.integers(0, 4, n).astype(float)
        pairs = [(a, b) for a in np.flatnonzero(y) for b in np.flatnonzero(~y)]
        mann_whitney = sum((scores[a] > scores[b]) + 0.5 * (scores[a] == scores[b]) for a, b in pairs) / len(pairs)
        assert metrics.auroc(scores, y) == pytest.approx(mann_whitney)
        assert metrics.auroc(scores, y) == pytest.approx(roc_auc_score(y, scores))
        assert metrics.average_precision(scores, y) == pytest.approx(average_precision_score(y, scores))
        if w[y].sum() and w[~y].sum():
            assert metrics.auroc(scores, y, w) == pytest.approx(roc_auc_score(y, scores, sample_weight=w))
            assert metrics.average_precision(scores, y, w) == pytest.approx(
                average_precision_score(y, scores, sample_weight=w))
    assert metrics.auroc([1.0, 2.0], [True, True]) is None and metrics.average_precision([1.0], [False]) is None


def test_cluster_bootstrap_has_the_closed_form_variance_of_a_mean():
    """Clusters of equal size: the weighted mean over a resample is (1/G) Σ c_g x̄_g with multinomial counts c,
    whose variance is Σ (x̄_g − x̄)² / G²."""
    rng = np.random.default_rng(3)
    G, m = 30, 4
    x = rng.normal(0, 1, (G, m)) + rng.normal(0, 2, (G, 1))
    groups = np.repeat(np.arange(G), m)
    counts = metrics.bootstrap_counts(G, 20000, seed=0)
    values = metrics.bootstrap(lambda w: float(np.sum(w * x.ravel()) / np.sum(w)), groups, counts)
    means = x.mean(axis=1)
    assert np.var(values) == pytest.approx(np.sum((means - means.mean()) ** 2) / G ** 2, rel=0.05)
    assert (counts.sum(axis=1) == G).all()


def test_cluster_bootstrap_of_identical_problems_is_a_point():
    """Every problem holds the same rows: any resample gives the point estimate, and so does the interval."""
    scores = np.tile([0.1, 0.4, 0.5, 0.8], 10)
    y = np.tile([False, True, False, True], 10)
    groups = np.repeat(np.arange(10), 4)
    ranked = metrics.Ranked(scores)
    values = metrics.bootstrap(lambda w: ranked.auroc(y, w), groups, metrics.bootstrap_counts(10, 300, 1))
    assert metrics.interval(values, 0.95) == pytest.approx((0.75, 0.75))
    assert metrics.interval(np.full(3, np.nan), 0.95) == (None, None)


def test_recall_at_budgets_is_the_expectation_over_tie_orders():
    scores = np.array([3, 2, 2, 2, 1, 1, 0, 0], dtype=float)
    targets = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=bool)
    got = metrics.recall_at_budgets(scores, targets, [0.125, 0.25, 0.5, 1.0])
    for budget, value in got.items():
        k = math.ceil(budget * len(scores))
        # brute force: the mean over every order of the rows that keeps the scores descending
        orders = [p for p in itertools.permutations(range(8)) if all(scores[a] >= scores[b] for a, b in zip(p, p[1:]))]
        assert value == pytest.approx(np.mean([targets[list(p[:k])].sum() / targets.sum() for p in orders]))
    assert metrics.recall_at_budgets(scores, np.zeros(8, bool), [0.5]) == {0.5: None}


def test_reliability_bins_split_the_rows_by_predicted_risk():
    predicted = np.linspace(0, 1, 23)
    observed = predicted > 0.5
    rows = metrics.reliability(predicted, observed, 5, 1.96)
    assert [r["num_positions"] for r in rows] == [5, 5, 5, 4, 4] and rows[0]["num_cliffs"] == 0
    assert rows[-1]["observed"] == 1.0 and all(r["observed_lo"] <= r["observed"] <= r["observed_hi"] for r in rows)
    assert [r["predicted_max"] <= s["predicted_min"] for r, s in zip(rows, rows[1:])] == [True] * 4


# --- the problem split and the models -----------------------------------------------------------------------

def test_problem_folds_keep_every_problem_on_one_side():
    problems = [f"p{i % 13}" for i in range(200)]
    fold, k = problem_folds(problems, 5, seed=4)
    assert k == 5 and set(fold.tolist()) == set(range(5))
    by_problem = {}
    for p, f in zip(problems, fold.tolist()):
        assert by_problem.setdefault(p, f) == f
    assert sorted(np.bincount(list(by_problem.values())).tolist()) == [2, 2, 3, 3, 3]
    assert (problem_folds(problems, 5, seed=4)[0] == fold).all() and not (problem_folds(problems, 5, 5)[0] == fold).all()
    assert problem_folds(["a", "b", "a"], 5, 0)[1] == 2
    # out_of_fold never fits on a row of the problem it predicts
    code = np.array([int(p[1:]) for p in problems], dtype=float)

    class Spy:
        def __init__(self, X, y):
            self.seen = set(X[:, 0].tolist())

        def predict(self, X):
            assert not self.seen & set(X[:, 0].tolist())
            return np.zeros(len(X))

    out_of_fold(Spy, code[:, None], np.zeros(200, bool), fold)


def test_logistic_model_round_trips_and_a_single_class_is_a_constant():
    rng = np.random.default_rng(5)
    X = rng.normal(0, 1, (300, 2)) * [1.0, 10.0]
    y = X[:, 0] + rng.normal(0, 0.5, 300) > 1
    model = fit_logistic(X, y, ["a", "b"], 1.0)
    assert model.coef[0] > 1 and abs(model.coef[1]) < 0.5
    again = LinearRisk.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict(X), model.predict(X))
    flat = fit_logistic(X, np.zeros(300, bool), ["a", "b"], 1.0)
    np.testing.assert_allclose(flat.predict(X), 0.5 / 301)


# --- evaluation on planted labels ---------------------------------------------------------------------

def label_row(trace_id: str, problem_id: str, index: int, is_cliff: bool, **features) -> dict:
    """A risk_labels row consistent with every check: a drop for a cliff, none otherwise."""
    pi = features.pop("sampler_prob", 0.5)
    row = {"trace_id": trace_id, "problem_id": problem_id, "token_index": index, "token_id": 10, "is_correct": False,
           "num_rollouts_prev": 16, "num_correct_prev": 12, "num_rollouts": 16, "num_correct": 2 if is_cliff else 12,
           "p_prev": 0.75, "potential": 0.125 if is_cliff else 0.75, "delta": 0.625 if is_cliff else 0.0,
           "p_value": 0.0 if is_cliff else 1.0, "is_cliff": is_cliff, "feasible": 1 - pi >= 0.3125,
           "replicated": (index % 2 == 0) if is_cliff else None, "sampler_prob": pi, "max_drop": 1 - pi,
           "greedy_sampler_prob": max(pi, 0.6), "logprob": math.log(pi), "entropy": 1.0, "entropy_full": 1.5,
           "rank": 1 if pi >= 0.6 else 2, "is_greedy": pi >= 0.6, "top_prob": max(pi, 0.6), "margin": 0.2,
           "relative_position": index / 40, "hidden_projection": None}
    row.update(features)
    return row


def planted(seed: int, signal: bool, num_problems: int = 40, per_problem: int = 30) -> pa.Table:
    """Feasible positions (π_s <= 0.6875): with `signal`, cliffs exactly at the tokens of lowest π_s; without,
    cliffs at random, whatever the features say."""
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(num_problems):
        for i in range(per_problem):
            pi = float(rng.uniform(0.05, 0.65))
            cliff = pi < 0.15 if signal else bool(rng.random() < 0.15)
            rows.append(label_row(f"q{j}#0", f"arith/q{j}", i, cliff, sampler_prob=pi,
                                  entropy=float(rng.uniform(0.2, 2.0)), rank=int(rng.integers(1, 5)),
                                  margin=float(rng.uniform(0, 0.3)), greedy_sampler_prob=max(pi, float(rng.uniform(0.3, 1)))))
    return schema.to_table("risk_labels", rows)


def test_a_planted_signal_is_found_and_a_null_is_not():
    found, model = evaluate_risk(planted(0, signal=True), RISK)
    for name in ("logistic", "boosting", "max_drop"):
        cell = found["scorers"][name]
        assert cell["auroc"] > 0.97 and cell["auroc_lo"] > 0.9, (name, cell)
        assert cell["recall"]["0.2"]["cliffs"] > 0.9
    assert found["scorers"]["logistic"]["auroc_minus_baseline"]["entropy"]["diff_lo"] > 0.2
    assert found["coefficients"]["max_drop"] > 1 and model.features == RISK.features
    assert found["num_folds"] == 5 and found["num_problems"] == 40 and found["num_population"] == 1200

    null, _ = evaluate_risk(planted(1, signal=False), RISK)
    for name in ("logistic", "max_drop", "entropy", "rank"):
        cell = null["scorers"][name]
        assert cell["auroc_lo"] < 0.5 < cell["auroc_hi"], (name, cell)
    rel = null["scorers"]["logistic"]["reliability"]
    assert sum(r["num_positions"] for r in rel) == 1200 and len(rel) == RISK.reliability_bins
    assert evaluate_risk(planted(1, signal=False), RISK)[0] == null                 # byte-stable for a seed
    text = markdown(null, "tiny")
    assert "| logistic |" in text and "Reliability of `logistic`" in text and "recall@0.05" in text


def test_evaluation_of_degenerate_labels():
    """No label, no feasible position, one problem, a feature unknown: counts, and no number that cannot be
    computed."""
    out, model = evaluate_risk(schema.RISK_LABELS.empty_table(), RISK)
    assert out["num_positions"] == 0 and out["base_rate"] is None and model is None
    assert "# Cliff risk before any rollout: tiny" in markdown(out, "tiny")
    infeasible = schema.to_table("risk_labels", [label_row("a#0", "arith/a", i, i == 3, sampler_prob=0.9)
                                                 for i in range(6)])
    out, model = evaluate_risk(infeasible, RISK)
    assert out["num_population"] == 0 and out["num_infeasible_cliffs"] == 1 and model is None
    assert out["scorers"]["max_drop"]["auroc"] is None and out["coefficients"] is None
    one = schema.to_table("risk_labels", [label_row("a#0", "arith/a", i, i == 3, sampler_prob=0.3, margin=None if i == 0 else 0.2)
                                          for i in range(6)])
    out, model = evaluate_risk(one, RISK)
    assert out["num_folds"] == 0 and "logistic" not in out["scorers"] and out["num_missing_features"] == 1
    assert out["scorers"]["entropy"]["auroc"] == 0.5 and model is not None
    json.dumps(out, allow_nan=False)
    markdown(out, "tiny")


def test_the_probe_reads_the_hidden_projection_where_the_labels_carry_it():
    labels = planted(3, signal=True, num_problems=20, per_problem=20)
    assert "probe" not in evaluate_risk(labels, RISK)[0]["scorers"]
    rows = labels.to_pylist()
    rng = np.random.default_rng(0)
    for r in rows:
        r["hidden_projection"] = [float(r["is_cliff"]) + float(rng.normal(0, 0.3)), float(rng.normal())]
    out, _ = evaluate_risk(schema.to_table("risk_labels", rows), dataclasses.replace(RISK, boosting=None))
    assert out["scorers"]["probe"]["auroc"] > 0.9 and "boosting" not in out["scorers"]


# --- params ----------------------------------------------------------------------------------------------

def test_the_risk_section_is_validated():
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert parse_params(data).risk.features[0] == "max_drop"
    for key, value, message in [("features", ["max_drop", "nope"], "unknown features"),
                                ("baselines", ["rank", "rank"], "names a feature twice"),
                                ("budgets", [0.5, 0.1], "strictly increasing"), ("folds", 1, "risk.folds")]:
        bad = copy.deepcopy(data)
        bad["risk"][key] = value
        with pytest.raises(ValueError, match=message):
            parse_params(bad)
    bad = copy.deepcopy(data)
    del bad["risk"]["level"]
    with pytest.raises(ValueError, match="risk.level: missing"):
        parse_params(bad)
    data["risk_labels"]["hidden"] = data["risk"]["boosting"] = None
    assert parse_params(data).risk_labels.hidden is None and parse_params(data).risk.boosting is None
    data["risk_labels"]["hidden"] = {"layer": 1, "dim": 0, "seed": 0}
    with pytest.raises(ValueError, match="risk_labels.hidden.dim must be in"):
        parse_params(data)


# --- the SQL checks -------------------------------------------------------------------------------------

def checked_root(tmp_path: Path, labels: list[dict], cliffs: pa.Table) -> Path:
    schema.write("risk_labels", labels, tmp_path / schema.PATHS["risk_labels"])
    schema.write("cliffs", cliffs, tmp_path / schema.PATHS["cliffs"])
    return tmp_path


def _set(cliff: bool, **values):
    """Change the first row that is (or is not) a cliff."""
    def breaks(rows):
        next(r for r in rows if r["is_cliff"] == cliff).update(values)
    return breaks


BREAKS = {
    "unique_risk_labels": lambda rows: rows.append(copy.deepcopy(rows[0])),
    "risk_labels_probability_range": _set(False, greedy_sampler_prob=0.0),     # below the token's own pi_s
    "risk_labels_counts": _set(False, num_correct=40),
    "risk_labels_verdicts": _set(False, replicated=True),                      # a replication without a cliff
    "risk_labels_cliffs": _set(True, is_cliff=False, replicated=None),         # a cliff of the cliffs dataset lost
}


def risk_checks() -> set[str]:
    return {n for n, sql in duck.check_files().items() if "risk_labels" in duck._referenced_datasets(sql)}


def test_every_risk_check_has_a_breaking_seed():
    assert risk_checks() == set(BREAKS)


def test_risk_checks_pass_on_the_labels(tmp_path, seeded):
    labels = labels_of(seeded)
    counts = duck.assert_checks(duck.connect(checked_root(tmp_path, labels.to_pylist(), seeded["cliffs"])))
    assert {n: counts[n] for n in BREAKS} == dict.fromkeys(BREAKS, 0) and counts["finite_risk_labels"] == 0


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_risk_check_catches_a_broken_seed(tmp_path, seeded, check):
    """A small valid seed (three positions, two cliffs and the cliffs dataset's rows of those two), then one
    change that breaks exactly the rule of `check`."""
    labels = labels_of(seeded).to_pylist()
    rows = sorted([r for r in labels if not r["is_cliff"]][:3] + [r for r in labels if r["is_cliff"]][:2],
                  key=lambda r: (r["trace_id"], r["token_index"]))
    keys = {(r["trace_id"], r["token_index"]) for r in rows}
    cliffs = schema.to_table("cliffs", [c for c in seeded["cliffs"].to_pylist() if (c["trace_id"], c["token_index"]) in keys])
    assert all(duck.run_checks(duck.connect(checked_root(tmp_path, rows, cliffs)))[n] == 0 for n in BREAKS)
    BREAKS[check](rows)
    con = duck.connect(checked_root(tmp_path, rows, cliffs))
    assert duck.run_checks(con)[check] >= 1
    with pytest.raises(ValueError, match=check):
        duck.assert_checks(con)


# --- MLflow and the stages ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite store for the module's MLflow tests (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.slow
def test_the_registered_model_predicts_as_the_fitted_one(tmp_path, monkeypatch, mlflow_uri):
    import mlflow
    import pandas as pd

    from cliffdata.risk.registry import register_risk_model, risk_model_name

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.chdir(tmp_path)
    _, model = evaluate_risk(planted(0, signal=True, num_problems=10, per_problem=10), RISK)
    name = risk_model_name("SmolLM2-135M Instruct")
    assert name == "cliff-risk-smollm2-135m-instruct"
    record = register_risk_model(model, name, {"risk": {"folds": 5}}, {"auroc": 0.9, "none": None}, {"stage": "risk"},
                                 root=tmp_path)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{record['version']}")
    assert [c.name for c in loaded.metadata.get_input_schema().inputs] == list(RISK.features)
    frame = pd.DataFrame({f: np.linspace(0, 1, 7) for f in RISK.features})
    X = frame[list(RISK.features)].to_numpy()
    np.testing.assert_allclose(loaded.predict(frame)["risk"].to_numpy(), model.predict(X))
    run = mlflow.MlflowClient(mlflow_uri).get_run(record["run_id"])
    assert run.data.params["risk.folds"] == "5" and run.data.metrics == {"auroc": 0.9}


@pytest.mark.integration
def test_both_stages_run_in_process(tmp_path, monkeypatch, tiny_model_dir, mlflow_uri, capsys):
    """risk_labels then risk on a seeded world with the tiny model as models/base: the labels pass their checks
    against the cliffs, carry the hidden projection, and the risk stage writes its metrics and registers."""
    w = world(4, 16, 12, n_choices=(16,))
    for name in ("traces", "token_stats", "potentials", "cliffs", "trace_cliffs", "replicate"):
        schema.write(name, w[name], tmp_path / schema.PATHS[name])
    shutil.copytree(tiny_model_dir, tmp_path / "models/base")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"] = {"source": "models/base"}
    params["rollouts"]["sampling"] = dataclasses.asdict(SAMPLING)
    params["risk_labels"]["hidden"] = {"layer": 1, "dim": 3, "seed": 0}
    params["risk"].update(bootstrap_resamples=50, boosting={"max_iter": 5, "learning_rate": 0.1, "max_leaf_nodes": 3})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.chdir(tmp_path)

    runpy.run_path(str(ROOT / "pipeline/risk_labels.py"), run_name="__main__")
    labels = schema.read("risk_labels", tmp_path / schema.PATHS["risk_labels"])
    assert labels.num_rows == sum(w["trace_cliffs"]["num_scored"].to_pylist())
    assert {len(h) for h in labels["hidden_projection"].to_pylist()} == {3}

    runpy.run_path(str(ROOT / "pipeline/risk.py"), run_name="__main__")
    found = json.loads((tmp_path / "metrics/risk.json").read_text())
    assert found["num_positions"] == labels.num_rows and {"logistic", "boosting", "probe", "max_drop"} <= set(found["scorers"])
    assert (tmp_path / "metrics/risk.md").read_text().startswith("# Cliff risk before any rollout: base")
    record = json.loads((tmp_path / "runs/risk.json").read_text())
    assert record["registered_model"] == "cliff-risk-base" and record["version"] >= 1

    # `cliffdata risk` on a trace: every token scored; at the tokens the rollouts tested, the features and
    # the risk are the labels' through the fitted model, beside the measured drop and verdict
    from cliffdata.cli import main as cli
    from cliffdata.risk.model import LinearRisk

    model = LinearRisk.from_dict(record["model"])
    trace_id = labels["trace_id"][0].as_py()
    capsys.readouterr()                          # the stages' own output
    assert cli(["risk", trace_id, "--format", "json"]) == 0
    scored = {r["token_index"]: r for r in json.loads(capsys.readouterr().out)}
    trace = next(t for t in w["traces"].to_pylist() if t["trace_id"] == trace_id)
    assert sorted(scored) == list(range(len(trace["response_ids"])))
    tested = [r for r in labels.to_pylist() if r["trace_id"] == trace_id]
    expected = model.predict(np.array([[float(r[f]) for f in model.features] for r in tested]))
    assert {r["feasible"] for r in tested} == {True, False}
    for r, risk in zip(tested, expected):
        got = scored[r["token_index"]]
        # a token the sampler identity clears is not the model's to score: risk 0
        assert got["feasible"] is r["feasible"] and got["risk"] == pytest.approx(risk if r["feasible"] else 0.0, rel=1e-12)
        assert got["max_drop"] == pytest.approx(r["max_drop"])
        assert (got["measured_drop"], got["cliff"]) == (pytest.approx(r["delta"]), r["is_cliff"])
    assert cli(["risk", trace_id, "--top", "2", "--format", "json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert [r["risk"] for r in top] == sorted((r["risk"] for r in scored.values()), reverse=True)[:2]
    # new text: one model pass; its statistics are the token_stats stage's for the same ids
    from cliffdata.generate.token_stats import compute_token_stats
    from cliffdata.prompts import encode_prompt
    from cliffdata.config.load import load_params
    from cliffdata.risk.labels import token_features
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert cli(["risk", "--question", "What is 2 + 3?", "--response", "2 + 3 = 5", "--format", "json"]) == 0
    text = json.loads(capsys.readouterr().out)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "models/base")
    response = tokenizer.encode("2 + 3 = 5", add_special_tokens=False)
    prompt = encode_prompt(tokenizer, load_params().prompts[params["problems"]["sources"][0]["prompt"]], "What is 2 + 3?")
    offline = schema.to_table("token_stats", compute_token_stats(
        AutoModelForCausalLM.from_pretrained(tmp_path / "models/base").eval(),
        [{"trace_id": "t", "prompt_ids": prompt, "response_ids": response}], 20, SAMPLING))
    features = token_features(offline, np.arange(len(response)) / len(response), SAMPLING)
    X = feature_matrix(pa.table(features), model.features)
    feasible = np.array([r["feasible"] for r in text])
    assert len(text) == len(response) and feasible.any()
    assert [r["risk"] for r in text] == pytest.approx(np.where(feasible, model.predict(X), 0.0).tolist(), rel=1e-9)
    assert cli(["risk", "no-such-trace"]) == 2 and "no trace 'no-such-trace'" in capsys.readouterr().err
