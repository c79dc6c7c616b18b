"""The DuckDB runner, the metrics SQL and the data checks, on a tiny hand-made seed.

Three traces: t1 correct with 2 cliffs (token 0: deterministic, early, infeasible, not replicated;
token 3: uncertain, mid), t2 failed with 1 (token 3: sampled_off, late), t3 ungradable with none.
Expected false cliffs per trace 0.3 / 0.2 / 0.1 (variances 0.25 / 0.16 / 0.09), feasible tested
positions 2 / 1 / 0. Expected numbers are worked out by hand in each test.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import pytest

from cliffdata import schema
from cliffdata.analysis import claims, duck, sandbox
from cliffdata.config.analysis import VerdictsConfig

H_STAR = 0.056

# trace -> (problem, is_correct, [(entropy, rank) per response token])
TRACES = {
    "t1": ("p1", True, [(0.01, 1), (0.02, 1), (0.30, 1), (0.50, 1), (0.01, 2), (0.00, 1)]),
    "t2": ("p2", False, [(0.04, 1), (0.70, 4), (0.20, 1), (0.90, 3)]),
    "t3": ("p3", None, [(0.03, 1), (0.03, 1), (0.60, 21), (0.10, 1), (0.00, 1)]),
}
# (trace, token_index, p_prev, potential, third, category, feasible, replicated)
CLIFFS = [
    ("t1", 0, 1.0, 0.5, "early", "deterministic", False, False),
    ("t1", 3, 0.75, 0.25, "mid", "uncertain", True, True),
    ("t2", 3, 0.5, 0.0, "late", "sampled_off", True, True),
]
# trace -> (its tested pairs' null firing probabilities as [(q, num_pairs)], num_feasible)
NOISE = {"t1": ([(0.1, 2), (0.5, 2)], 2), "t2": ([(0.2, 1)], 1), "t3": ([(0.05, 1), (0.4, 1)], 0)}
NUM_ROLLOUTS = 4


# The experiment datasets have their own seeds and breakers: test_experiments (ablation, candidates),
# test_dpo (dpo_pairs), test_cpm_shift (cpm_shift, study_cpm_shift), test_risk (risk_labels).
EXPERIMENT_DATASETS = {"ablation", "pass_at_k", "matched_controls", "control_traces", "candidates", "control",
                       "dpo_pairs", "dpo_eval", "cliff_count", "cpm_shift", "study_cpm_shift", "risk_labels"}


def seed_rows() -> dict[str, list[dict]]:
    """Rows of every dataset for the three seed traces, consistent with every check."""
    rows: dict[str, list[dict]] = {name: [] for name in schema.PATHS if name not in EXPERIMENT_DATASETS}
    cliffs_by_trace: dict[str, list[int]] = {}
    for trace_id, index, *_ in CLIFFS:
        cliffs_by_trace.setdefault(trace_id, []).append(index)
    for i, (trace_id, (problem_id, is_correct, tokens)) in enumerate(TRACES.items()):
        num_tokens = len(tokens)
        rows["problems"].append(dict(problem_id=problem_id, dataset="arith", question=f"q{i}", answer=str(i),
                                     answer_format="hash", prompt="p", family=None, level=None, source_index=i))
        rows["traces"].append(dict(trace_id=trace_id, problem_id=problem_id, sample_index=0, prompt_ids=[1, 2],
                                   response_ids=list(range(10, 10 + num_tokens)), response_text="x",
                                   extracted_answer="1", is_correct=is_correct, finish_reason="stop",
                                   num_tokens=num_tokens))
        for index, (entropy, rank) in enumerate(tokens):
            rows["token_stats"].append(dict(trace_id=trace_id, token_index=index, token_id=10 + index,
                                            logprob=-0.1, rank=rank, entropy=entropy, entropy_full=entropy + 0.05,
                                            greedy_token_id=10 + index if rank == 1 else 99, is_greedy=rank == 1,
                                            top_ids=[10 + index], top_probs=[0.9], sampler_prob=0.9, max_drop=0.1))
        for index in range(-1, num_tokens - 1):
            num_correct = (index + 2) % (NUM_ROLLOUTS + 1)
            rows["potentials"].append(dict(trace_id=trace_id, token_index=index, mode="exhaustive",
                                           num_rollouts=NUM_ROLLOUTS, num_correct=num_correct,
                                           potential=num_correct / NUM_ROLLOUTS, is_filled=False,
                                           num_generated_tokens=10))
        rows["rollout_traces"].append(dict(trace_id=trace_id, num_positions=num_tokens, num_rollouts=20,
                                           num_generated_tokens=100, wall_seconds=1.0, early_stop_index=None))
        indices = cliffs_by_trace.get(trace_id, [])
        rows["trace_cliffs"].append(dict(trace_id=trace_id, problem_id=problem_id, is_correct=is_correct,
                                         num_tokens=num_tokens, num_scored=num_tokens - 1, num_cliffs=len(indices),
                                         first_cliff_index=min(indices) if indices else None, critical_index=None,
                                         expected_false_cliffs=sum(q * n for q, n in NOISE[trace_id][0]),
                                         false_cliffs_variance=sum(q * (1 - q) * n for q, n in NOISE[trace_id][0]),
                                         null_fire_cells=[{"q": q, "num_pairs": n} for q, n in NOISE[trace_id][0]],
                                         num_feasible=NOISE[trace_id][1]))
    for trace_id, index, p_prev, potential, third, category, feasible, replicated in CLIFFS:
        problem_id, is_correct, tokens = TRACES[trace_id]
        entropy, rank = tokens[index]
        rows["cliffs"].append(dict(trace_id=trace_id, problem_id=problem_id, token_index=index, token_id=10 + index,
                                   is_correct=is_correct, p_prev=p_prev, potential=potential,
                                   num_rollouts_prev=NUM_ROLLOUTS, num_rollouts=NUM_ROLLOUTS,
                                   delta=p_prev - potential, is_first=index == min(cliffs_by_trace[trace_id]),
                                   relative_position=index / len(tokens), third=third, entropy=entropy, rank=rank,
                                   is_greedy=rank == 1, category=category, p_value=0.01, max_drop=0.5 if feasible else 0.01,
                                   feasible=feasible, fdr_significant=None))
        n_prev, n_curr = (4, 0) if replicated else (2, 2)
        rows["replicate"].append(dict(trace_id=trace_id, problem_id=problem_id, token_index=index, is_correct=is_correct,
                                      category=category, feasible=feasible, num_rollouts_prev=4, num_correct_prev=n_prev,
                                      num_rollouts=4, num_correct=n_curr, p_prev=n_prev / 4, potential=n_curr / 4,
                                      delta=(n_prev - n_curr) / 4, p_value=0.0 if replicated else 1.0,
                                      replicated=replicated, num_generated_tokens=80))
    return rows


def write_seed(root: Path, rows: dict[str, list[dict]]) -> Path:
    for name, dataset_rows in rows.items():
        schema.write(name, dataset_rows, root / schema.PATHS[name])
    return root


@pytest.fixture
def seed(tmp_path) -> Path:
    return write_seed(tmp_path, seed_rows())


@pytest.fixture
def empty(tmp_path) -> Path:
    return write_seed(tmp_path, {name: [] for name in schema.PATHS})


VERDICTS = VerdictsConfig(alpha=0.05, power=0.8, exact_limit=1024, resamples=1000, seed=0, max_smd=0.1)


def metrics_params(**overrides) -> dict:
    return {"include_empty_prefix": True, "entropy_threshold": H_STAR, "use_full_entropy": False, **overrides}


def by(table, key: str) -> dict[str, dict]:
    return {row.pop(key): row for row in table.to_pylist()}


# --- connect / run_sql_file -------------------------------------------------------------------------

def test_connect_makes_a_view_per_existing_dataset(seed, tmp_path):
    con = duck.connect(seed)
    assert duck.views(con) == set(schema.PATHS) - EXPERIMENT_DATASETS
    for name in set(schema.PATHS) - EXPERIMENT_DATASETS:
        assert con.sql(f"select * from {name}").columns == schema.SCHEMAS[name].names
    assert con.sql("select count(*) from token_stats").fetchall() == [(15,)]
    assert duck.views(duck.connect(seed, ["cliffs", "traces"])) == {"cliffs", "traces"}
    assert duck.views(duck.connect(tmp_path / "nowhere")) == set()
    with pytest.raises(ValueError, match="unknown datasets"):
        duck.connect(seed, ["cliff"])


def test_run_sql_file_rejects_unknown_names(seed):
    with pytest.raises(ValueError, match="no sql file 'nope'"):
        duck.run_sql_file(duck.connect(seed), "nope", {})


# --- occurrence -------------------------------------------------------------------------------------

def noise(pairs: int, traces: list[str], cliffs: int, share_cliffs_feasible, share_pairs_feasible) -> dict:
    """The noise-audit columns of an occurrence row over `traces`, by brute force: the false-cliff count's
    law from all 2^pairs outcomes of the traces' null pairs, its 2.5% and 97.5% quantiles, the excess
    cliffs − expected and its interval [cliffs − q97.5, cliffs − q2.5], all clipped at 0."""
    qs = [q for t in traces for q, n in NOISE[t][0] for _ in range(n)]
    law = [0.0] * (len(qs) + 1)
    for fired in itertools.product((0, 1), repeat=len(qs)):
        law[sum(fired)] += math.prod(q if f else 1 - q for q, f in zip(qs, fired))
    cdf = list(itertools.accumulate(law))
    lo, hi = (next(x for x, c in enumerate(cdf) if c >= prob - 1e-12) for prob in (0.025, 0.975))
    return dict(num_tested_pairs=pairs, expected_false_cliffs=sum(qs), excess_cliffs=max(cliffs - sum(qs), 0),
                excess_cliffs_lo=max(cliffs - hi, 0), excess_cliffs_hi=max(cliffs - lo, 0),
                share_cliffs_feasible=share_cliffs_feasible, share_pairs_feasible=share_pairs_feasible)


def test_occurrence_with_empty_prefix(seed):
    table = duck.run_sql_file(duck.connect(seed), "occurrence", {"include_empty_prefix": True})
    assert table.column("correctness").to_pylist() == ["correct", "failed", "ungradable", "all"]
    rows = by(table, "correctness")
    assert rows["correct"] == pytest.approx(dict(
        num_traces=1, num_traces_with_cliff=1, share_with_cliff=1.0, num_cliffs=2, cliffs_per_trace=2.0,
        num_tokens=6, cliffs_per_1k_tokens=2000 / 6, share_early=0.5, share_mid=0.5, share_late=0.0,
        num_first_cliffs=1, first_share_early=1.0, first_share_mid=0.0, first_share_late=0.0,
        **noise(5, ["t1"], 2, 1 / 2, 2 / 5)))
    assert rows["failed"] == pytest.approx(dict(
        num_traces=1, num_traces_with_cliff=1, share_with_cliff=1.0, num_cliffs=1, cliffs_per_trace=1.0,
        num_tokens=4, cliffs_per_1k_tokens=250.0, share_early=0.0, share_mid=0.0, share_late=1.0,
        num_first_cliffs=1, first_share_early=0.0, first_share_mid=0.0, first_share_late=1.0,
        **noise(3, ["t2"], 1, 1.0, 1 / 3)))
    assert rows["ungradable"] == pytest.approx(dict(
        num_traces=1, num_traces_with_cliff=0, share_with_cliff=0.0, num_cliffs=0, cliffs_per_trace=0.0,
        num_tokens=5, cliffs_per_1k_tokens=0.0, share_early=None, share_mid=None, share_late=None,
        num_first_cliffs=0, first_share_early=None, first_share_mid=None, first_share_late=None,
        **noise(4, ["t3"], 0, None, 0.0)))
    assert rows["all"] == pytest.approx(dict(
        num_traces=3, num_traces_with_cliff=2, share_with_cliff=2 / 3, num_cliffs=3, cliffs_per_trace=1.0,
        num_tokens=15, cliffs_per_1k_tokens=200.0, share_early=1 / 3, share_mid=1 / 3, share_late=1 / 3,
        num_first_cliffs=2, first_share_early=0.5, first_share_mid=0.0, first_share_late=0.5,
        **noise(12, ["t1", "t2", "t3"], 3, 2 / 3, 3 / 12)))


def test_occurrence_paper_mode_drops_token_0(seed):
    rows = by(duck.run_sql_file(duck.connect(seed), "occurrence", {"include_empty_prefix": False}), "correctness")
    # t1 keeps only its cliff at token 3 (mid), which becomes its first cliff
    assert rows["correct"] == pytest.approx(dict(
        num_traces=1, num_traces_with_cliff=1, share_with_cliff=1.0, num_cliffs=1, cliffs_per_trace=1.0,
        num_tokens=6, cliffs_per_1k_tokens=1000 / 6, share_early=0.0, share_mid=1.0, share_late=0.0,
        num_first_cliffs=1, first_share_early=0.0, first_share_mid=1.0, first_share_late=0.0,
        **noise(5, ["t1"], 1, 1.0, 2 / 5)))
    assert rows["all"] == pytest.approx(dict(
        num_traces=3, num_traces_with_cliff=2, share_with_cliff=2 / 3, num_cliffs=2, cliffs_per_trace=2 / 3,
        num_tokens=15, cliffs_per_1k_tokens=2000 / 15, share_early=0.0, share_mid=0.5, share_late=0.5,
        num_first_cliffs=2, first_share_early=0.0, first_share_mid=0.5, first_share_late=0.5,
        **noise(12, ["t1", "t2", "t3"], 2, 1.0, 3 / 12)))


# --- taxonomy ---------------------------------------------------------------------------------------

TAXONOMY_PARAMS = {"include_empty_prefix": True, "entropy_threshold": H_STAR, "use_full_entropy": False}


def test_taxonomy(seed):
    table = duck.run_sql_file(duck.connect(seed), "taxonomy", TAXONOMY_PARAMS)
    rows = by(table, "category")
    assert list(rows) == ["deterministic", "uncertain", "sampled_off", "other", "greedy"]
    # baseline over the 15 tokens (H* = 0.056): deterministic t1{0,1,5} t2{0} t3{0,1,4} = 7;
    # uncertain t1{2,3} t2{2} t3{3} = 4; sampled_off t2{1,3} t3{2} = 3; other t1{4} = 1 -> 14 three-way
    assert rows["deterministic"] == pytest.approx(dict(
        share_of="three_way", num_cliffs=1, cliff_share=1 / 3, baseline_count=7, baseline_share=0.5, ratio=2 / 3,
        feasible_share=0.0))
    assert rows["uncertain"] == pytest.approx(dict(
        share_of="three_way", num_cliffs=1, cliff_share=1 / 3, baseline_count=4, baseline_share=4 / 14,
        ratio=7 / 6, feasible_share=1.0))
    assert rows["sampled_off"] == pytest.approx(dict(
        share_of="three_way", num_cliffs=1, cliff_share=1 / 3, baseline_count=3, baseline_share=3 / 14,
        ratio=14 / 9, feasible_share=1.0))
    assert rows["other"] == dict(share_of="excluded", num_cliffs=0, cliff_share=None, baseline_count=1,
                                 baseline_share=None, ratio=None, feasible_share=None)
    # 2 of 3 cliffs greedy; 11 of 15 tokens rank 1
    assert rows["greedy"] == pytest.approx(dict(
        share_of="all", num_cliffs=2, cliff_share=2 / 3, baseline_count=11, baseline_share=11 / 15, ratio=10 / 11,
        feasible_share=0.5))


def test_taxonomy_paper_mode_and_full_entropy(seed):
    con = duck.connect(seed)
    rows = by(duck.run_sql_file(con, "taxonomy", {**TAXONOMY_PARAMS, "include_empty_prefix": False}), "category")
    assert [rows[c]["num_cliffs"] for c in ("deterministic", "uncertain", "sampled_off", "other")] == [0, 1, 1, 0]
    assert [rows[c]["cliff_share"] for c in ("deterministic", "uncertain", "sampled_off")] == [0.0, 0.5, 0.5]
    assert rows["greedy"]["cliff_share"] == 0.5
    # entropy_full = entropy + 0.05: only the two tokens with entropy 0 stay below H*
    rows = by(duck.run_sql_file(con, "taxonomy", {**TAXONOMY_PARAMS, "use_full_entropy": True}), "category")
    counts = [rows[c]["baseline_count"] for c in ("deterministic", "uncertain", "sampled_off", "other")]
    assert counts == [2, 9, 4, 0]
    assert rows["deterministic"]["baseline_share"] == pytest.approx(2 / 15)


# --- empty input ------------------------------------------------------------------------------------

def test_empty_tables_give_zero_counts(empty):
    con = duck.connect(empty)
    occurrence = by(duck.run_sql_file(con, "occurrence", {"include_empty_prefix": False}), "correctness")
    assert list(occurrence) == ["correct", "failed", "ungradable", "all"]
    for row in occurrence.values():
        assert {k: v for k, v in row.items() if k.startswith("num_")} == dict.fromkeys(
            ["num_traces", "num_traces_with_cliff", "num_cliffs", "num_tokens", "num_first_cliffs", "num_tested_pairs"], 0)
        zeros = {"expected_false_cliffs", "excess_cliffs", "excess_cliffs_lo", "excess_cliffs_hi"}
        assert {k: v for k, v in row.items() if k in zeros} == dict.fromkeys(zeros, 0)
        assert {v for k, v in row.items() if not k.startswith("num_") and k not in zeros} == {None}
    taxonomy = by(duck.run_sql_file(con, "taxonomy", TAXONOMY_PARAMS), "category")
    assert len(taxonomy) == 5
    for row in taxonomy.values():
        assert (row["num_cliffs"], row["baseline_count"]) == (0, 0)
        assert (row["cliff_share"], row["baseline_share"], row["ratio"]) == (None, None, None)
    assert set(duck.run_checks(con).values()) == {0}
    duck.write_metrics(empty, metrics_params())
    assert json.loads((empty / "metrics/occurrence.json").read_text())["all"]["num_traces"] == 0
    # the verdicts' units: no rows, and every direction then undecided or n/a, none decided
    units = claims.claim_units(con, True)
    assert units == {"cliffs": [], "traces": [], "answers": []}
    out = claims.directions(units, {}, [], VERDICTS)
    assert {v.verdict for s in out["cliff_sets"].values() for v in s} <= {"undecided", "n/a"} and not out["main"]


# --- write_metrics ----------------------------------------------------------------------------------

METRICS_FILES = [f"metrics/{name}.{ext}" for name in ("occurrence", "taxonomy") for ext in ("json", "csv", "md")]


def test_write_metrics_files(seed):
    out = duck.write_metrics(seed, metrics_params())
    occurrence = json.loads((seed / "metrics/occurrence.json").read_text())
    assert occurrence == out["occurrence"]
    assert occurrence["all"]["share_with_cliff"] == 0.666667
    assert occurrence["correct"]["cliffs_per_1k_tokens"] == 333.333333
    assert occurrence["ungradable"]["share_early"] is None
    taxonomy = json.loads((seed / "metrics/taxonomy.json").read_text())
    assert taxonomy == out["taxonomy"]
    assert taxonomy["sampled_off"]["ratio"] == 1.555556
    assert set(taxonomy) == {"deterministic", "uncertain", "sampled_off", "other", "greedy"}
    csv_lines = (seed / "metrics/occurrence.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:3] == ["correctness", "num_traces", "num_traces_with_cliff"]
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["correct", "failed", "ungradable", "all"]
    md_lines = (seed / "metrics/taxonomy.md").read_text().splitlines()
    assert md_lines[0] == ("| category | share_of | num_cliffs | cliff_share | baseline_count | baseline_share"
                           " | ratio | feasible_share |")
    assert md_lines[1] == "|---|---|---:|---:|---:|---:|---:|---:|"
    assert md_lines[2] == "| deterministic | three_way | 1 | 0.333333 | 7 | 0.5 | 0.666667 | 0.0 |"
    assert len(md_lines) == 7


def test_write_metrics_is_byte_stable(seed):
    duck.write_metrics(seed, metrics_params())
    first = {path: (seed / path).read_bytes() for path in METRICS_FILES}
    duck.write_metrics(seed, metrics_params())
    assert {path: (seed / path).read_bytes() for path in METRICS_FILES} == first


@pytest.mark.parametrize("params, message", [
    (metrics_params(extra=1), "params must be"),
    ({"include_empty_prefix": True}, "params must be"),
    (metrics_params(use_full_entropy="yes"), "use_full_entropy must be a bool"),
])
def test_write_metrics_rejects_bad_params(seed, params, message):
    with pytest.raises(ValueError, match=message):
        duck.write_metrics(seed, params)


def test_write_metrics_needs_its_datasets(tmp_path):
    with pytest.raises(ValueError, match="needs"):
        duck.write_metrics(tmp_path, metrics_params())


# --- checks -----------------------------------------------------------------------------------------

def _set(name: str, index: int, **values):
    def breaks(rows):
        rows[name][index].update(values)
    return breaks


def _duplicate(name: str):
    def breaks(rows):
        rows[name].append(copy.deepcopy(rows[name][0]))
    return breaks


# one way to break each check; every check file must have one
BREAKS = {
    **{f"unique_{name}": _duplicate(name) for name in schema.PATHS if name not in EXPERIMENT_DATASETS},
    "potentials_range": _set("potentials", 0, potential=1.5, num_correct=6, num_rollouts=4),
    "potentials_counts": _set("potentials", 0, num_correct=5, potential=1.25),
    "potentials_ratio": _set("potentials", 1, potential=0.9),
    "cliffs_delta": _set("cliffs", 0, delta=-0.5),
    "cliffs_probability_range": _set("cliffs", 1, p_prev=1.25, delta=1.0),
    "cliffs_category": _set("cliffs", 2, category="sampled-off"),
    "cliffs_category_greedy": _set("cliffs", 2, is_greedy=True, rank=1),
    "cliffs_is_first": _set("cliffs", 1, is_first=True),
    "trace_cliffs_num_cliffs": _set("trace_cliffs", 2, num_cliffs=1),
    "trace_cliffs_first_cliff": _set("trace_cliffs", 0, first_cliff_index=3),
    "token_stats_rank": _set("token_stats", 0, rank=22, is_greedy=False),
    "token_stats_is_greedy": _set("token_stats", 4, is_greedy=True),
    "token_stats_entropy": _set("token_stats", 0, entropy=-0.01),
    "cliffs_evidence": _set("cliffs", 0, p_value=1.5),
    "replicate_counts": _set("replicate", 0, num_correct=5),
}


def test_every_check_has_a_breaking_seed():
    core = {name for name, sql in duck.check_files().items()
            if not duck._referenced_datasets(sql) & EXPERIMENT_DATASETS}
    assert core == set(BREAKS)


def test_checks_pass_on_clean_seed(seed):
    con = duck.connect(seed)
    counts = duck.assert_checks(con)
    finite = {f"finite_{name}": 0 for name in seed_rows() if duck._float_columns(name)}
    assert counts == dict.fromkeys(BREAKS, 0) | finite


@pytest.mark.parametrize("name", sorted(n for n in seed_rows() if duck._float_columns(n)))
def test_a_non_finite_float_trips_its_datasets_check(tmp_path, name):
    """Every float column (lists included) of every dataset: NaN, inf or -inf trips finite_<dataset>, one
    violating row per column, each named."""
    rows = seed_rows()
    if not rows[name]:
        pytest.skip(f"the seed has no {name} rows")
    broken = []
    for j, (column, is_list) in enumerate(duck._float_columns(name)):
        row = next((r for r in rows[name] if r[column] is not None and (not is_list or r[column])), None)
        if row is None:
            continue
        value = (float("nan"), float("inf"), float("-inf"))[j % 3]
        row[column] = [*row[column][:-1], value] if is_list else value
        broken.append(column)
    con = duck.connect(write_seed(tmp_path, rows))
    assert broken and duck.run_checks(con)[f"finite_{name}"] == len(broken)
    with pytest.raises(ValueError) as failed:
        duck.assert_checks(con, num_examples=len(broken))
    assert all(f"'{column}'" in str(failed.value) for column in broken)


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_check_catches_broken_seed(tmp_path, check):
    rows = seed_rows()
    BREAKS[check](rows)
    con = duck.connect(write_seed(tmp_path, rows))
    counts = duck.run_checks(con)
    assert counts[check] >= 1
    with pytest.raises(ValueError, match=check):
        duck.assert_checks(con)


def test_checks_skip_missing_datasets(seed):
    (seed / schema.PATHS["cliffs"]).unlink()
    counts = duck.run_checks(duck.connect(seed))
    assert "unique_cliffs" not in counts and "trace_cliffs_num_cliffs" not in counts
    assert counts["unique_trace_cliffs"] == 0 and counts["unique_traces"] == 0


def test_assert_checks_shows_offending_rows(tmp_path):
    rows = seed_rows()
    _set("cliffs", 0, delta=-0.5)(rows)
    with pytest.raises(ValueError) as info:
        duck.assert_checks(duck.connect(write_seed(tmp_path, rows)))
    message = str(info.value)
    assert "1 of" in message and "cliffs_delta: 1 rows" in message and "'t1', 0, 1.0, 0.5, -0.5" in message


# --- readonly_query ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sql, kind", [
    ("delete from cliffs", "DELETE"),
    ("drop view cliffs", "DROP"),
    ("copy cliffs to 'x.csv'", "COPY"),
    ("create table t as select 1", "CREATE"),
    ("select 1; insert into cliffs select * from cliffs", "INSERT"),
    ("explain analyze copy cliffs to 'x.csv'", "COPY"),
    ("attach 'x.duckdb'", "ATTACH"),
    ("install httpfs", "LOAD"),
    ("set threads = 1", "SET"),
    ("pragma version", "PRAGMA"),
    # a PIVOT reads, but cannot hide a write around it
    ("create table t as pivot cliffs on category using count(*)", "CREATE"),
    ("insert into cliffs pivot cliffs on category using count(*)", "INSERT"),
    ("copy (pivot cliffs on category using count(*)) to 'x.csv'", "COPY"),
    ("explain analyze copy (pivot cliffs on category using count(*)) to 'x.csv'", "COPY"),
    ("explain analyze create table t as pivot cliffs on category using count(*)", "CREATE"),
])
@pytest.mark.parametrize("connect", [duck.connect, sandbox.connect_sandbox])
def test_readonly_query_refuses_writes(seed, monkeypatch, sql, kind, connect):
    monkeypatch.chdir(seed)
    con = connect(seed)
    with pytest.raises(ValueError, match=rf"^refused: .* is a {kind} statement; cliffdata sql is read-only$"):
        sandbox.readonly_query(con, sql)
    assert not (seed / "x.csv").exists() and not (seed / "x.duckdb").exists() and "t" not in duck.views(con)
    assert con.sql("select count(*) from cliffs").fetchall() == [(3,)]
    assert duck.views(con) == set(schema.PATHS) - EXPERIMENT_DATASETS


def test_readonly_query_reads(seed):
    con = duck.connect(seed)
    assert sandbox.readonly_query(con, "select count(*) as n from cliffs") == (["n"], [(3,)])
    columns, rows = sandbox.readonly_query(con, "select 1; select trace_id from trace_cliffs order by 1")
    assert (columns, rows) == (["trace_id"], [("t1",), ("t2",), ("t3",)])
    columns, rows = sandbox.readonly_query(con, "explain select * from cliffs")
    assert rows
    assert sandbox.readonly_query(con, "explain analyze select count(*) from cliffs")[1]


# --- PIVOT, the spill cap, streaming, dataset checks ------------------------------------------------

@pytest.mark.parametrize("sql", [
    "pivot cliffs on category using count(*)",
    "pivot cliffs on category in ('uncertain', 'deterministic') using count(*) group by trace_id",
    "unpivot (select trace_id, rank, token_id from cliffs) on rank, token_id into name k value v",
    "select * from (pivot cliffs on third using count(*)) order by all",
    "with p as (pivot cliffs on category using count(*) group by trace_id) select count(*) from p",
    "explain pivot cliffs on category using count(*)",
])
def test_readonly_query_reads_pivot(seed, sql):
    """A PIVOT whose values come from the data parses as several statements: it reads all the same."""
    con = sandbox.connect_sandbox(seed)
    assert sandbox.readonly_statements(con, sql) == [sql]
    assert sandbox.readonly_query(con, sql)[1]


def test_engine_caps_the_spill_folder(tmp_path, monkeypatch):
    """Past memory_limit a query spills to its folder, up to max_temp_directory_size (set with SET: given to
    duckdb.connect, DuckDB shows the cap and spills 240 MB past a 1 MB one); `close` removes the folder."""
    import tempfile

    import duckdb

    from cliffdata.config.analysis import AnalysisConfig

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spills = "select count(*) from (select md5(range::varchar) as s, range from range(2000000) order by s desc)"
    con = duck.engine(AnalysisConfig(threads=1, memory_limit="40MB", max_temp_directory_size="1MB"))
    assert con.sql("select current_setting('memory_limit'), current_setting('max_temp_directory_size')").fetchall() \
        == [("38.1 MiB", "976.5 KiB")]
    with pytest.raises(duckdb.OutOfMemoryException, match="max_temp_directory_size"):
        con.execute(spills).fetchall()
    assert len(list(tmp_path.glob("cliffdata-duckdb-*"))) == 1
    duck.close(con)
    assert list(tmp_path.glob("cliffdata-duckdb-*")) == []


def test_stream_hands_over_batches_and_stops_early(seed):
    import threading
    import time

    con = sandbox.connect_sandbox(seed)
    batches = sandbox.stream(con, "select range as i from range(25)", batch_rows=10)
    assert next(batches) == ["i"]
    assert [len(b) for b in batches] == [10, 10, 5]
    batches = sandbox.stream(con, "select range as i from range(1000000000000)", batch_rows=10)
    assert next(batches) == ["i"] and next(batches)[0] == (0,)
    batches.close()                                   # the rest is never computed; the worker is gone
    assert not [t for t in threading.enumerate() if t.name == "cliffdata-sql"]
    assert con.execute("select count(*) from cliffs").fetchall() == [(3,)]
    never_ends = "with recursive r(n) as (select 1 union all select n + 1 from r) select count(*) from r"
    start = time.monotonic()
    with pytest.raises(sandbox.TimeLimitExceeded, match="time limit of 0.5 s"):
        list(sandbox.stream(con, never_ends, time_limit=0.5))
    assert time.monotonic() - start < 1.5
    assert con.execute("select count(*) from cliffs").fetchall() == [(3,)]


def test_sandbox_takes_every_dataset_the_pipeline_writes(tmp_path):
    """Every dataset as schema.write writes it passes the sandbox's schema check (DuckDB's types of the
    file are the schema's)."""
    write_seed(tmp_path, {name: [] for name in schema.PATHS})
    con = sandbox.connect_sandbox(tmp_path)
    assert duck.views(con) == set(schema.PATHS)
