"""The streaming cliffs scan against the pandas reference (tests/cliffs_reference.py), on seeded synthetic
studies with many row groups, small chunks, folders of parts and two worker processes; and the
errors a file out of key order, a repeated key or an unknown trace give."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cliffdata import schema
from cliffdata.analysis.synthetic import write_study
from cliffdata.cliffs.find import _parts, cliff_tables
from cliffs_reference import find_cliffs_reference
from project_cliffs import CLIFFS, TEST, cliffs_config

CONFIGS = {
    "default": CLIFFS,
    "paper_fdr_full": cliffs_config(test={"min_rollouts": 16}, include_empty_prefix=False, fdr_q=0.05, entropy="full"),
    "loose": cliffs_config(test={"min_rollouts": 1, "delta0": 0.05, "z": 1.0}, fdr_q=0.2, critical_threshold=0.2),
}
SUMS = ("expected_false_cliffs", "false_cliffs_variance")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema, "ROW_GROUP_ROWS", 2048)         # many row groups in a small study
        sizes = write_study(root, rows=60_000, seed=3, traces_per_chunk=40)
    return root, sizes


def paths(root):
    return tuple(root / schema.PATHS[name] for name in ("traces", "potentials", "token_stats"))


def reference(root, cfg):
    tables = [schema.read(name, root / schema.PATHS[name]) for name in ("traces", "potentials", "token_stats")]
    cliffs, summaries = find_cliffs_reference(*tables, cfg)
    return schema.to_table("cliffs", cliffs), schema.to_table("trace_cliffs", summaries)


def assert_same(got, want):
    (cliffs, summaries), (ref_cliffs, ref_summaries) = got, want
    assert cliffs.num_rows > 0 and cliffs.equals(ref_cliffs)
    assert summaries.drop_columns(list(SUMS)).equals(ref_summaries.drop_columns(list(SUMS)))
    for name in SUMS:     # exact sums of q rounded to 2^-120 vs math.fsum: equal but for that rounding
        a, b = summaries[name].to_numpy(), ref_summaries[name].to_numpy()
        assert np.all(np.abs(a - b) <= summaries["num_scored"].to_numpy() * 2.0 ** -120)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scan_equals_the_reference(study, name):
    root, sizes = study
    assert pq.ParquetFile(root / schema.PATHS["potentials"]).metadata.num_row_groups > 10
    want = reference(root, CONFIGS[name])
    assert_same(cliff_tables(*paths(root), CONFIGS[name], chunk_rows=3000), want)
    if CONFIGS[name].fdr_q is not None:
        assert 0 < sum(want[0]["fdr_significant"].to_pylist()) < want[0].num_rows


@pytest.mark.integration
def test_two_workers_and_folders_of_parts_give_the_same_tables(study, tmp_path):
    root, _ = study
    cfg = CONFIGS["loose"]
    want = cliff_tables(*paths(root), cfg)
    assert len(_parts(paths(root)[0], paths(root)[1], 2)) == 2          # two trace ranges, one in a subprocess
    assert_same(cliff_tables(*paths(root), cfg, workers=2), want)
    # potentials and token_stats as folders of three parts each (DVC tracks the folder)
    for name in ("potentials", "token_stats"):
        table = pq.read_table(root / schema.PATHS[name])
        folder = tmp_path / schema.PATHS[name]
        folder.mkdir(parents=True)
        cuts = np.linspace(0, table.num_rows, 4).astype(int)
        for i, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
            pq.write_table(table.slice(lo, hi - lo), folder / f"part-{i:05d}.parquet")
    parts = (root / schema.PATHS["traces"], tmp_path / schema.PATHS["potentials"], tmp_path / schema.PATHS["token_stats"])
    assert_same(cliff_tables(*parts, cfg), want)


def test_exact_sums_match_fsum_on_the_embedded_shape():
    """A trace whose pairs have tiny and large q: the per-trace sums equal math.fsum of the terms."""
    from cliffdata.cliffs.stats import null_fire_conditional

    n = np.array([64] * 6 + [16] * 5)
    k = np.array([64, 63, 32, 31, 1, 0, 16, 15, 8, 7, 0])
    traces = schema.to_table("traces", [{"trace_id": "t#0", "problem_id": "x/1", "sample_index": 0, "prompt_ids": [],
                                         "response_ids": list(range(10)), "response_text": "", "extracted_answer": "",
                                         "is_correct": False, "finish_reason": "stop", "num_tokens": 10}])
    potentials = schema.to_table("potentials", [
        {"trace_id": "t#0", "token_index": i - 1, "mode": "exhaustive", "num_rollouts": int(n[i]),
         "num_correct": int(k[i]), "potential": k[i] / n[i], "is_filled": False, "num_generated_tokens": 0}
        for i in range(11)])
    stats = schema.to_table("token_stats", [
        {"trace_id": "t#0", "token_index": i, "token_id": i, "logprob": -0.1, "rank": 1, "entropy": 0.5,
         "entropy_full": 0.5, "greedy_token_id": i, "is_greedy": True, "top_ids": [], "top_probs": [],
         "sampler_prob": 0.5, "max_drop": 0.5} for i in range(10)])
    _, summaries = cliff_tables(traces, potentials, stats, cliffs_config(test={"min_rollouts": 1}))
    q = null_fire_conditional(k[:-1], n[:-1], k[1:], n[1:], TEST)
    assert summaries["expected_false_cliffs"][0].as_py() == math.fsum(q)
    assert summaries["false_cliffs_variance"][0].as_py() == math.fsum(q * (1 - q))


def _rewrite(path, table):
    pq.write_table(table, path)


def test_out_of_order_repeated_and_unknown_rows_are_named(study, tmp_path):
    root, _ = study
    traces, potentials, stats = paths(root)
    table = pq.read_table(potentials)
    bad = tmp_path / "potentials.parquet"
    swapped = pa.concat_tables([table.slice(1, 1), table.slice(0, 1), table.slice(2)])
    _rewrite(bad, swapped)
    first = table.slice(0, 1).to_pylist()[0]
    with pytest.raises(ValueError, match=rf"potentials: row \('{first['trace_id']}', token_index {first['token_index']}\)"
                                         r" repeats or comes before the row above it"):
        cliff_tables(traces, bad, stats, CLIFFS)
    _rewrite(bad, pa.concat_tables([table.slice(0, 5), table.slice(4)]))
    with pytest.raises(ValueError, match="repeats or comes before"):
        cliff_tables(traces, bad, stats, CLIFFS)
    unknown = table.slice(0, 3).to_pylist()
    for row in unknown:
        row["trace_id"] = "zzz/unknown#0"
    _rewrite(bad, pa.concat_tables([table, schema.to_table("potentials", unknown).cast(table.schema)]))
    with pytest.raises(ValueError, match="potentials names trace 'zzz/unknown#0', which is not in the traces dataset"):
        cliff_tables(traces, bad, stats, CLIFFS)


def test_synthetic_study_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert write_study(a, rows=5000, seed=7) == write_study(b, rows=5000, seed=7)
    for name in ("traces", "potentials", "token_stats"):
        assert (a / schema.PATHS[name]).read_bytes() == (b / schema.PATHS[name]).read_bytes()
    sizes = write_study(tmp_path / "c", rows=5000, seed=8)
    assert sizes["potential_rows"] >= 5000
    assert (tmp_path / "c" / schema.PATHS["potentials"]).read_bytes() != (a / schema.PATHS["potentials"]).read_bytes()


def test_sql_reads_a_folder_of_parts(study, tmp_path):
    """`cliffdata sql` (the sandboxed connection) and the stages' views read a dataset written as a
    folder of parts like a file; files outside the parts stay refused."""
    from cliffdata.analysis import sandbox

    root, sizes = study
    table = pq.read_table(root / schema.PATHS["potentials"])
    folder = tmp_path / schema.PATHS["potentials"]
    folder.mkdir(parents=True)
    pq.write_table(table.slice(0, 20_000), folder / "part-00000.parquet")
    pq.write_table(table.slice(20_000), folder / "part-00001.parquet")
    (folder / ".part-00002.parquet.x.tmp").write_bytes(b"unfinished")          # an interrupted write: not a part
    with sandbox.connect_sandbox(tmp_path) as con:
        (_, rows), = sandbox.readonly_results(con, "select count(*), count(distinct trace_id) from potentials")
        assert rows == [(table.num_rows, len(set(table["trace_id"].to_pylist())))]
        with pytest.raises(Exception, match="Permission|disabled|not allowed"):
            con.sql(f"select * from read_parquet('{root / schema.PATHS['potentials']}')").fetchall()
    assert schema.read("potentials", folder).num_rows == sizes["potential_rows"]


def test_traces_without_a_tested_pair():
    """A chunk with no adjacent scored pair (one position, or gaps only) still gives every trace its
    summary row (no lookup ever built)."""
    traces = schema.to_table("traces", [{"trace_id": f"t#{i}", "problem_id": "x/1", "sample_index": i, "prompt_ids": [],
                                         "response_ids": [1, 2, 3], "response_text": "", "extracted_answer": "",
                                         "is_correct": None, "finish_reason": "stop", "num_tokens": 3} for i in range(2)])
    potentials = schema.to_table("potentials", [
        {"trace_id": t, "token_index": i, "mode": "adaptive", "num_rollouts": 8, "num_correct": 0, "potential": 0.0,
         "is_filled": False, "num_generated_tokens": 0} for t, i in (("t#0", 1), ("t#1", 0), ("t#1", 2))])
    cliffs, summaries = cliff_tables(traces, potentials, schema.TOKEN_STATS.empty_table(), cliffs_config(fdr_q=0.1))
    assert cliffs.num_rows == 0
    assert summaries["num_scored"].to_pylist() == [0, 0] and summaries["expected_false_cliffs"].to_pylist() == [0.0, 0.0]
    assert summaries["critical_index"].to_pylist() == [1, 0]
