"""cliffdata.problems and the `problems` stage, on tiny files written here (no network, no hub)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cliffdata import schema
from cliffdata.config.problems import ProblemsConfig, SourceConfig
from cliffdata.problems import generate_arith, load_problems, stratified_sample
from project_cliffs import TEST

REPO = Path(__file__).resolve().parents[1]


def write_rows(path: Path, records: list[dict]) -> Path:
    """Write records as JSONL or Parquet, by the suffix of `path`."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def load(*sources: SourceConfig, root: Path, on_bad_row: str = "error") -> tuple[list[dict], dict]:
    return load_problems(ProblemsConfig(sources=sources, on_bad_row=on_bad_row), root=root)


GSM8K = [
    {"question": "Q zero?", "answer": "Some work.\n#### 1,234"},
    {"question": "Q one?", "answer": "12 #### 3 more work #### 7"},
    {"question": "Q two?", "answer": "#### -5"},
]
MATH500 = [
    {"problem": "P a", "answer": "\\frac{1}{2}", "level": 1, "subject": "Algebra", "unique_id": "test/algebra/1.json"},
    {"problem": "P b", "answer": "1,2", "level": 3, "subject": "Geometry", "unique_id": "test/geometry/7.json"},
]


# --- loaders ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_gsm8k(tmp_path, suffix):
    write_rows(tmp_path / f"gsm8k{suffix}", GSM8K)
    rows, stats = load(SourceConfig(dataset="gsm8k", path=f"gsm8k{suffix}", prompt="p"), root=tmp_path)
    assert [r["problem_id"] for r in rows] == ["gsm8k/00000", "gsm8k/00001", "gsm8k/00002"]
    assert [r["answer"] for r in rows] == ["1234", "7", "-5"]
    assert rows[0] == {"problem_id": "gsm8k/00000", "dataset": "gsm8k", "question": "Q zero?", "answer": "1234",
                       "answer_format": "hash", "prompt": "p", "family": None, "level": None, "source_index": 0,
                       "max_new_tokens": None}
    assert set(rows[0]) == set(schema.PROBLEMS.names)
    assert stats["num_by_dataset"] == {"gsm8k": 3} and stats["num_skipped"] == 0
    schema.to_table("problems", rows)  # fits the schema


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_gsm1k_plain_answers(tmp_path, suffix):
    records = [{"question": "A?", "answer": "1,000"}, {"question": "B?", "answer": "x #### 42"},
               {"question": "C?", "answer": "3"}]
    write_rows(tmp_path / f"gsm1k{suffix}", records)
    rows, _ = load(SourceConfig(dataset="gsm1k", path=f"gsm1k{suffix}", answer_format="boxed"), root=tmp_path)
    assert [r["answer"] for r in rows] == ["1000", "42", "3"]
    assert {r["answer_format"] for r in rows} == {"boxed"}


def test_gsm1k_numeric_answer(tmp_path):
    write_rows(tmp_path / "g.jsonl", [{"question": "A?", "answer": 17}, {"question": "B?", "answer": 2.0}])
    rows, _ = load(SourceConfig(dataset="gsm1k", path="g.jsonl"), root=tmp_path)
    assert [r["answer"] for r in rows] == ["17", "2"]


def test_gsm8k_answer_without_hash_is_bad(tmp_path):
    write_rows(tmp_path / "g.jsonl", [{"question": "A?", "answer": "42"}])
    with pytest.raises(ValueError, match=r"g\.jsonl line 1: field 'answer' no '####'"):
        load(SourceConfig(dataset="gsm8k", path="g.jsonl"), root=tmp_path)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_math500(tmp_path, suffix):
    write_rows(tmp_path / f"m{suffix}", MATH500)
    rows, stats = load(SourceConfig(dataset="math500", path=f"m{suffix}"), root=tmp_path)
    assert [r["problem_id"] for r in rows] == ["math500/test/algebra/1.json", "math500/test/geometry/7.json"]
    assert [r["answer"] for r in rows] == ["\\frac{1}{2}", "1,2"]  # no comma stripping outside GSM
    assert [(r["level"], r["family"]) for r in rows] == [("1", "Algebra"), ("3", "Geometry")]
    assert {r["answer_format"] for r in rows} == {"boxed"}
    assert stats["num_by_family"] == {"Algebra": 1, "Geometry": 1}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_aime(tmp_path, suffix):
    records = [{"problem": "Find x.", "answer": 70, "id": "2025-I-1"},
               {"problem": "Find y.", "answer": 588, "id": "2025-I-2"}]
    write_rows(tmp_path / f"a{suffix}", records)
    rows, _ = load(SourceConfig(dataset="aime", path=f"a{suffix}"), root=tmp_path)
    assert [(r["problem_id"], r["answer"], r["question"]) for r in rows] == [
        ("aime/2025-I-1", "70", "Find x."), ("aime/2025-I-2", "588", "Find y.")]


def test_aime_question_field_and_upper_id(tmp_path):
    write_rows(tmp_path / "a.jsonl", [{"question": "Q1", "answer": "1", "ID": 7}, {"question": "Q2", "answer": "2"}])
    rows, _ = load(SourceConfig(dataset="aime", path="a.jsonl"), root=tmp_path)
    assert [(r["problem_id"], r["question"], r["answer_format"]) for r in rows] == [
        ("aime/7", "Q1", "boxed"), ("aime/00001", "Q2", "boxed")]


def test_hub_id_goes_to_load_dataset(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"question": "Hub?", "answer": "#### 5"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows, _ = load(SourceConfig(dataset="gsm8k", path="openai/gsm8k", name="main", split="train"), root=tmp_path)
    assert calls == [("openai/gsm8k", "main", "train")]
    assert [(r["problem_id"], r["answer"]) for r in rows] == [("gsm8k/00000", "5")]


def test_missing_file_is_not_a_hub_id(tmp_path):
    with pytest.raises(ValueError, match=r"'raw/gsm1k\.jsonl' does not exist"):
        load(SourceConfig(dataset="gsm1k", path="raw/gsm1k.jsonl"), root=tmp_path)


def test_unsupported_suffix(tmp_path):
    (tmp_path / "g.csv").write_text("question,answer\n")
    with pytest.raises(ValueError, match=r"got '\.csv'"):
        load(SourceConfig(dataset="gsm1k", path="g.csv"), root=tmp_path)


# --- subsets and ids -------------------------------------------------------------------------------

def gsm_file(tmp_path: Path, n: int = 50) -> str:
    write_rows(tmp_path / "g.jsonl", [{"question": f"Q{i}?", "answer": f"#### {i}"} for i in range(n)])
    return "g.jsonl"


def test_gsm_subset_seeded_in_source_order_with_stable_ids(tmp_path):
    path = gsm_file(tmp_path)
    full, _ = load(SourceConfig(dataset="gsm1k", path=path), root=tmp_path)
    a, stats = load(SourceConfig(dataset="gsm1k", path=path, subset=10, seed=1), root=tmp_path)
    b, _ = load(SourceConfig(dataset="gsm1k", path=path, subset=10, seed=1), root=tmp_path)
    c, _ = load(SourceConfig(dataset="gsm1k", path=path, subset=10, seed=2), root=tmp_path)
    assert a == b and a != c and len(a) == 10
    indices = [r["source_index"] for r in a]
    assert indices == sorted(indices) and len(set(indices)) == 10
    assert all(r == full[r["source_index"]] for r in a)  # same ids and content as without a subset
    assert stats["sources"][0] == {"dataset": "gsm1k", "path": path, "num_rows": 50, "num_skipped": 0,
                                        "num_problems": 10}


def test_math500_subset_stratified_by_level(tmp_path):
    sizes = {1: 10, 2: 20, 3: 30, 4: 25, 5: 15}
    records = [{"problem": f"P{level}-{i}", "answer": "1", "level": level, "unique_id": f"test/x/{level}-{i}.json"}
               for level, n in sizes.items() for i in range(n)]
    records = records[::2] + records[1::2]  # levels interleaved in the file
    write_rows(tmp_path / "m.parquet", records)
    full, _ = load(SourceConfig(dataset="math500", path="m.parquet"), root=tmp_path)
    rows, _ = load(SourceConfig(dataset="math500", path="m.parquet", subset=20, seed=3), root=tmp_path)
    again, _ = load(SourceConfig(dataset="math500", path="m.parquet", subset=20, seed=3), root=tmp_path)
    other, _ = load(SourceConfig(dataset="math500", path="m.parquet", subset=20, seed=4), root=tmp_path)
    assert rows == again and rows != other
    assert Counter(r["level"] for r in rows) == {"1": 2, "2": 4, "3": 6, "4": 5, "5": 3}
    assert [r["source_index"] for r in rows] == sorted(r["source_index"] for r in rows)
    by_id = {r["problem_id"]: r for r in full}
    assert all(by_id[r["problem_id"]] == r for r in rows)


def test_stratified_sample_largest_remainder():
    strata = ["1"] * 10 + ["2"] * 20 + ["3"] * 30 + ["4"] * 25 + ["5"] * 15
    # exact shares 1, 2, 3, 2.5, 1.5: the leftover row goes to the first of the tied remainders
    picks = stratified_sample(strata, 10, seed=0)
    assert Counter(strata[i] for i in picks) == {"1": 1, "2": 2, "3": 3, "4": 3, "5": 1}
    # shares 0.67, 1.33, 2: the largest remainder (0.67) wins
    strata = ["a"] * 2 + ["b"] * 4 + ["c"] * 6
    assert Counter(strata[i] for i in stratified_sample(strata, 4, seed=0)) == {"a": 1, "b": 1, "c": 2}
    assert stratified_sample(strata, 12, seed=5) == list(range(12))


def test_aime_subset_is_first_n(tmp_path):
    write_rows(tmp_path / "a.jsonl", [{"problem": f"P{i}", "answer": str(i)} for i in range(6)])
    rows, _ = load(SourceConfig(dataset="aime", path="a.jsonl", subset=3), root=tmp_path)
    assert [r["problem_id"] for r in rows] == ["aime/00000", "aime/00001", "aime/00002"]


def test_subset_larger_than_source(tmp_path):
    path = gsm_file(tmp_path, n=5)
    with pytest.raises(ValueError, match="5 usable rows, fewer than subset 6"):
        load(SourceConfig(dataset="gsm1k", path=path, subset=6), root=tmp_path)


def test_duplicate_ids_across_sources(tmp_path):
    write_rows(tmp_path / "m.jsonl", MATH500)
    src = SourceConfig(dataset="math500", path="m.jsonl")
    with pytest.raises(ValueError, match=r"duplicate problem_id 'math500/test/algebra/1\.json'.*sources\[1\]"):
        load(src, src, root=tmp_path)


def test_duplicate_id_within_one_source_names_both_rows(tmp_path):
    """The error names the source and both rows, not the same source twice."""
    rows = [MATH500[0], MATH500[1], {**MATH500[1], "unique_id": MATH500[0]["unique_id"]}]
    write_rows(tmp_path / "m.jsonl", rows)
    with pytest.raises(ValueError, match=r"duplicate problem_id 'math500/test/algebra/1\.json': problems.sources\[0\] "
                                         r"\(math500 'm.jsonl'\) row 0 and problems.sources\[0\] \(math500 'm.jsonl'\) row 2"):
        load(SourceConfig(dataset="math500", path="m.jsonl"), root=tmp_path)


def test_empty_or_all_skipped_source_is_an_error(tmp_path):
    """A problems file with zero rows, or with every row skipped, is an error, not a silent success."""
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"problems.sources\[0\] \(gsm8k 'empty.jsonl'\): no problems \(0 rows read"):
        load(SourceConfig(dataset="gsm8k", path="empty.jsonl"), root=tmp_path)
    write_rows(tmp_path / "bad.jsonl", [{"question": "q"}, {"answer": "#### 1"}])
    with pytest.raises(ValueError, match=r"no problems \(2 rows read, 2 skipped as bad\)"):
        load(SourceConfig(dataset="gsm8k", path="bad.jsonl"), root=tmp_path, on_bad_row="skip")


# --- bad rows --------------------------------------------------------------------------------------

def bad_jsonl(tmp_path: Path) -> str:
    lines = ['{"question": "A?", "answer": "#### 1"}', "", '{"question": "B?"}', '{"question": "C?", "answer": "#',
             '{"question": "  ", "answer": "#### 4"}', '{"question": "E?", "answer": "#### 5"}']
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    return "bad.jsonl"


def test_missing_answer_names_file_line_and_field(tmp_path):
    path = bad_jsonl(tmp_path)
    with pytest.raises(ValueError, match=r"bad\.jsonl line 3: field 'answer' missing"):
        load(SourceConfig(dataset="gsm8k", path=path), root=tmp_path)


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "A?", "answer": "#### 1"}\n{"question": "B?", "ans\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: invalid JSON"):
        load(SourceConfig(dataset="gsm8k", path="bad.jsonl"), root=tmp_path)


@pytest.mark.parametrize("line, message", [("[1, 2]", "expected a JSON object"), ("\xff\xfe", "invalid JSON")])
def test_other_unreadable_lines(tmp_path, line, message):
    (tmp_path / "bad.jsonl").write_bytes(line.encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl line 1: {message}"):
        load(SourceConfig(dataset="gsm8k", path="bad.jsonl"), root=tmp_path)


def test_parquet_bad_row_names_row_and_field(tmp_path):
    write_rows(tmp_path / "m.parquet", [MATH500[0], {"problem": "P", "answer": None, "level": 2}])
    with pytest.raises(ValueError, match=r"m\.parquet row 1: field 'answer' missing"):
        load(SourceConfig(dataset="math500", path="m.parquet"), root=tmp_path)


def test_aime_without_problem_or_question(tmp_path):
    write_rows(tmp_path / "a.jsonl", [{"answer": "1"}])
    with pytest.raises(ValueError, match=r"a\.jsonl line 1: field 'problem/question' missing"):
        load(SourceConfig(dataset="aime", path="a.jsonl"), root=tmp_path)


def test_unreadable_parquet(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"x\.parquet: not a readable Parquet file"):
        load(SourceConfig(dataset="gsm8k", path="x.parquet"), root=tmp_path)


def test_skip_mode_counts_skips_and_keeps_ids(tmp_path):
    path = bad_jsonl(tmp_path)
    rows, stats = load(SourceConfig(dataset="gsm8k", path=path), root=tmp_path, on_bad_row="skip")
    assert [(r["problem_id"], r["question"], r["source_index"]) for r in rows] == [
        ("gsm8k/00000", "A?", 0), ("gsm8k/00004", "E?", 4)]
    assert stats["num_skipped"] == 3
    assert [(s["where"], s["field"]) for s in stats["skipped"]] == [
        ("bad.jsonl line 3", "answer"), ("bad.jsonl line 4", None), ("bad.jsonl line 5", "question")]
    assert [s["reason"] for s in stats["skipped"]][0::2] == ["missing", "empty"]
    assert stats["sources"][0]["num_rows"] == 5
    json.dumps(stats)  # serialisable for metrics/problems.json


# --- the arith generator ---------------------------------------------------------------------------

ALL_FAMILIES = {"add1": 20, "add2": 20, "mul21": 20, "word1": 20, "word2": 20}


def arith(families: dict[str, int], seed: int = 0, **kw) -> list[dict]:
    return generate_arith(SourceConfig(dataset="arith", families=families, seed=seed, **kw))


def expected_answer(family: str, question: str) -> tuple[int, list[int]]:
    """Recompute the answer from the question text; also return its operands for range checks."""
    patterns = {
        "add1": r"What is (\d+) \+ (\d+)\?",
        "add2": r"What is (\d+) \+ (\d+)\?",
        "mul21": r"What is (\d+) \* (\d+)\?",
        "word1": r"(\w+) has (\d+) (\w+)\. \1 gets (\d+) more \3\. How many \3 does \1 have now\?",
        "word2": r"(\w+) has (\d+) (\w+)\. \1 buys (\d+) bags with (\d+) \3 in each bag\. "
                 r"How many \3 does \1 have now\?",
    }
    match = re.fullmatch(patterns[family], question)
    assert match, (family, question)
    nums = [int(g) for g in match.groups() if g.isdigit()]
    if family == "mul21":
        return nums[0] * nums[1], nums
    if family == "word2":
        return nums[0] + nums[1] * nums[2], nums
    return nums[0] + nums[1], nums


RANGES = {"add1": [(2, 9), (2, 9)], "add2": [(10, 99), (10, 99)], "mul21": [(11, 49), (2, 9)],
          "word1": [(5, 40), (3, 30)], "word2": [(5, 40), (2, 5), (2, 9)]}


def test_arith_answers_are_correct():
    rows = arith(ALL_FAMILIES)
    assert Counter(r["family"] for r in rows) == ALL_FAMILIES
    for r in rows:
        answer, nums = expected_answer(r["family"], r["question"])
        assert r["answer"] == str(answer), r
        assert all(lo <= x <= hi for x, (lo, hi) in zip(nums, RANGES[r["family"]], strict=True)), r
        assert r["problem_id"] == f"arith/{r['family']}-{r['source_index']:05d}"
        assert (r["dataset"], r["answer_format"], r["level"]) == ("arith", "hash", None)


def test_arith_deterministic_per_seed():
    assert arith(ALL_FAMILIES, seed=0) == arith(ALL_FAMILIES, seed=0)
    assert arith(ALL_FAMILIES, seed=0) != arith(ALL_FAMILIES, seed=1)
    assert arith(dict(reversed(ALL_FAMILIES.items()))) == arith(ALL_FAMILIES)


def test_arith_families_are_independent():
    alone = arith({"word1": 10})
    assert [r for r in arith({"add1": 5, "word1": 10, "mul21": 3}) if r["family"] == "word1"] == alone
    assert arith({"word1": 15})[:10] == alone  # a larger count extends the same list


def test_arith_questions_unique_within_family():
    rows = arith({"add1": 64, "mul21": 200})  # add1 has exactly 64 distinct questions
    for family in ("add1", "mul21"):
        questions = [r["question"] for r in rows if r["family"] == family]
        assert len(questions) == len(set(questions))
    with pytest.raises(ValueError, match=r"families.add1 must be in \[0, 64\] \(the family's distinct questions\), got 65"):
        arith({"add1": 65})


def test_arith_prompts_and_bad_families():
    rows = arith({"add2": 2, "word1": 2}, prompt="base", family_prompts={"word1": "w1"})
    assert {(r["family"], r["prompt"]) for r in rows} == {("add2", "base"), ("word1", "w1")}
    with pytest.raises(ValueError, match=r"families.sub1: no such arith family"):
        arith({"sub1": 3})
    with pytest.raises(ValueError, match=r"family_prompts name families \['mul21'\]"):
        arith({"add1": 3}, family_prompts={"mul21": "x"})


def test_arith_through_load_problems(tmp_path):
    rows, stats = load(SourceConfig(dataset="arith", families={"add1": 3, "word2": 2}), root=tmp_path)
    assert stats["num_by_family"] == {"add1": 3, "word2": 2} and stats["num_by_dataset"] == {"arith": 5}


# --- the stage -------------------------------------------------------------------------------------

def run_stage() -> None:
    spec = importlib.util.spec_from_file_location("pipeline_problems", REPO / "pipeline" / "problems.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()


def test_stage_writes_byte_stable_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    write_rows(tmp_path / "raw" / "gsm1k.jsonl", [{"question": f"Q{i}?", "answer": str(i)} for i in range(8)])
    params = {
        "problems": {"on_bad_row": "error", "sources": [
            {"dataset": "arith", "seed": 0, "families": {"word1": 4, "add2": 3},
             "family_prompts": {"word1": "oneshot"}, "prompt": "plain"},
            {"dataset": "gsm1k", "path": "raw/gsm1k.jsonl", "subset": 5, "seed": 42, "prompt": "plain"},
        ]},
        "prompts": {"oneshot": {"instruction": "Answer after ####.",
                                "shots": [{"question": "What is 1 + 1?", "answer": "#### 2"}]},
                    "plain": {"instruction": "Answer after ####."}},
        "cliffs": {"test": dataclasses.asdict(TEST)},          # every params file holds the cliff test
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, metrics = tmp_path / "data/problems/problems.parquet", tmp_path / "metrics/problems.json"

    run_stage()
    first = out.read_bytes(), metrics.read_bytes()
    run_stage()
    assert (out.read_bytes(), metrics.read_bytes()) == first

    table = schema.read("problems", out)
    assert table.num_rows == 12
    assert table.column("problem_id").to_pylist() == sorted(table.column("problem_id").to_pylist())
    stats = json.loads(metrics.read_text())
    assert stats["num_by_dataset"] == {"arith": 7, "gsm1k": 5}
    assert "12 problems" in capsys.readouterr().out


def test_a_question_past_max_chars_is_a_bad_row(tmp_path):
    """A 10 MB question is refused naming the file, line and field and the limit (`problems.max_chars`), or
    skipped and counted with `on_bad_row: skip`; the limit is the param's."""
    huge = "How many? " * 1_048_576
    write_rows(tmp_path / "g.jsonl", [GSM8K[0], {"question": huge, "answer": "#### 1"}, GSM8K[2],
                                      {"question": "Q?", "answer": "#### " + "9" * 30}])
    src = SourceConfig(dataset="gsm8k", path="g.jsonl")
    with pytest.raises(ValueError, match=r"g\.jsonl line 2: field 'question' 10,485,759 characters, more than "
                                         r"problems.max_chars = 20,000"):
        load(src, root=tmp_path)
    rows, stats = load_problems(ProblemsConfig(sources=(src,), on_bad_row="skip", max_chars=20), root=tmp_path)
    assert [r["source_index"] for r in rows] == [0, 2]
    assert [(s["where"], s["field"]) for s in stats["skipped"]] == [("g.jsonl line 2", "question"),
                                                                    ("g.jsonl line 4", "answer")]
    with pytest.raises(ValueError, match=r"problems.max_chars must be in \[1, inf\), got 0"):
        ProblemsConfig(sources=(src,), max_chars=0)
