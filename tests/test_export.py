"""Exports read back by their consumers: `datasets.load_from_disk` (potentials), TRL's preference
collator (pairs), the PTS v2 field list (cliff events); and the `cliffdata export` command."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from cliffdata import schema
from cliffdata.publish import export

ROOT = Path(__file__).resolve().parents[1]
from cliffdata.cli import main
from report_fixtures import write_fixture

TEXTS = {
    "arith/a-0#0": ("Tom has 31 marbles and gets 28 more, so 31 - 28 = 3.\n#### 3", False, 24),
    "arith/a-1#0": ("23 + 48 = 71.\n#### 71", True, None),
}
QUESTIONS = {"arith/a-0": "Tom has 31 marbles. Tom gets 28 more marbles. How many marbles does Tom have now?"}


@pytest.mark.parametrize("mode", ["exhaustive", "adaptive"])
def test_potentials_round_trip_with_datasets(tmp_path, tiny_tokenizer, mode):
    import datasets

    traces = write_fixture(tmp_path, tiny_tokenizer, TEXTS, mode=mode)
    counts = export.export_potentials(tmp_path, tmp_path / "out")
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(ds) == 2 and counts["num_traces"] == 2 and counts["num_cliffs"] == 1
    pots = schema.read("potentials", tmp_path / schema.PATHS["potentials"]).to_pylist()
    for row in ds:
        ids = traces[row["trace_id"]]["response_ids"]
        assert row["response_ids"] == ids and len(row["values"]) == len(row["num_rollouts"]) == len(ids)
        expected = {p["token_index"]: p for p in pots if p["trace_id"] == row["trace_id"]}
        for i, value in enumerate(row["values"]):
            if i in expected:
                assert value == expected[i]["potential"] and row["num_rollouts"][i] == expected[i]["num_rollouts"]
            else:
                assert value is None and row["num_rollouts"][i] == 0
        assert row["values"][-1] is None                                  # the full response is not scored
        assert row["empty_prefix_value"] == expected[-1]["potential"]
        cliff_at = TEXTS[row["trace_id"]][2]
        assert [i for i, c in enumerate(row["is_cliff"]) if c] == ([] if cliff_at is None else [cliff_at])
        assert row["cliff_category"][cliff_at] == "sampled_off" if cliff_at is not None else True
    assert sum(v is not None for r in ds for v in r["values"]) == counts["num_labelled"]
    card = (tmp_path / "out/README.md").read_text()
    assert card.startswith("---\n") and f"{counts['num_labelled']} token positions" in card and mode in card


def test_pts_events_validate_against_the_field_list(tmp_path, tiny_tokenizer):
    traces = write_fixture(tmp_path, tiny_tokenizer, TEXTS, questions=QUESTIONS)
    events = export.pts_events(tmp_path, tiny_tokenizer, "HuggingFaceTB/SmolLM2-135M-Instruct",
                               timestamp="2026-01-01T00:00:00")
    export.write_jsonl(events, tmp_path / "cliffs.jsonl")
    lines = (tmp_path / "cliffs.jsonl").read_text().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    export.validate_pts_event(event)
    assert set(event) == set(export.PTS_V2_FIELDS) | set(export.PTS_V1_FIELDS)
    text = TEXTS["arith/a-0#0"][0]
    assert event["query"] == QUESTIONS["arith/a-0"]
    trace = traces["arith/a-0#0"]
    prompt = tiny_tokenizer.decode(trace["prompt_ids"], skip_special_tokens=False)
    # PTS's conventions: context = the decoded prompt + response prefix, position absolute; ours in metadata
    assert event["context"] == event["pivot_context"] == prompt + text[:24]
    assert event["metadata"]["response_context"] == text[:24] and event["metadata"]["response_position"] == 24
    assert event["label"] == event["pivot_token"] == text[24]
    assert event["pivot_token_id"] == event["token_id"] == trace["response_ids"][24]
    assert (event["prob_before"], event["prob_after"]) == (14 / 16, 1 / 16)
    assert event["prob_delta"] == pytest.approx(-13 / 16) and event["score"] == pytest.approx(13 / 16)
    assert event["is_positive"] is False and event["position"] == len(trace["prompt_ids"]) + 24
    # the negative event's counterpart: the best measured alternative that is not a cliff (potential 13/16)
    greedy = (trace["response_ids"][24] + 1) % len(tiny_tokenizer)
    assert event["metadata"]["chosen_token_id"] == greedy and event["metadata"]["chosen_prob"] == 13 / 16
    assert event["metadata"]["chosen_token"] == tiny_tokenizer.decode([greedy])
    assert event["metadata"]["cliff_category"] == "sampled_off" and "sampled_off" in event["tags"]


@pytest.mark.parametrize("change, match", [
    (lambda e: e.pop("query"), "lacks fields"),
    (lambda e: e.update(extra=1), "unknown fields"),
    (lambda e: e.update(prob_delta=0.5), "inconsistent"),
    (lambda e: e.update(event_id="token_evt_000000000000"), "event_id"),
    (lambda e: e.update(granularity="sentence"), "granularity"),
    (lambda e: e.update(position="3"), "position"),
    (lambda e: e.update(category="sampled_off"), "category"),
])
def test_pts_validator_rejects(tmp_path, tiny_tokenizer, change, match):
    write_fixture(tmp_path, tiny_tokenizer, TEXTS)
    (event,) = export.pts_events(tmp_path, tiny_tokenizer, "m")
    change(event)
    with pytest.raises(ValueError, match=match):
        export.validate_pts_event(event)


# --- PTS's documented v2 contract (codelion/pts: docs/dataset_schema_v2.md, pts/events.py, pts/exporters.py),
# reimplemented here: nothing of PTS is vendored or imported.

PTS_REQUIRED = ("event_id", "event_type", "granularity", "visibility", "model_id", "task_type", "query", "context",
                "label", "score", "search_method")


def pts_load(lines: list[str]) -> list[dict]:
    """EventStorage.load: one JSON object a line; v2 when event_type and granularity are present (required
    fields or the line is skipped); unknown keys go into metadata (metadata wins); first event_id wins."""
    known = set(export.PTS_V2_FIELDS)
    events, seen = [], set()
    for line in filter(None, (x.strip() for x in lines)):
        record = json.loads(line)
        if not ("event_type" in record and "granularity" in record):
            continue
        if any(f not in record for f in PTS_REQUIRED):
            continue
        extra = {k: v for k, v in record.items() if k not in known}
        event = {k: v for k, v in record.items() if k in known}
        event["metadata"] = {**extra, **(record.get("metadata") or {})}
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            events.append(event)
    return events


def pts_export_dpo(events: list[dict], min_prob_delta: float = 0.1) -> tuple[list[dict], int]:
    """EventExporter.export_dpo without an oracle: pivotal_token events with |prob_delta| >= min; a positive
    one pairs with metadata.rejected_token, a negative one with metadata.chosen_token (else skipped);
    prompt = context. Returns the pairs and the number skipped (balance off)."""
    pairs, skipped = [], 0
    for e in events:
        if e["event_type"] != "pivotal_token" or e.get("prob_delta") is None or abs(e["prob_delta"]) < min_prob_delta:
            continue
        meta = e["metadata"]
        if e.get("is_positive"):
            other = meta.get("rejected_token")
            pair = (e["label"], other, e.get("prob_after"), meta.get("rejected_prob"))
        else:
            other = meta.get("chosen_token")
            pair = (other, e["label"], meta.get("chosen_prob"), e.get("prob_after"))
        if other is None:
            skipped += 1
            continue
        pairs.append({"prompt": e["context"], "chosen": pair[0], "rejected": pair[1],
                      "metadata": {"original_query": e["query"], "prob_chosen": pair[2], "prob_rejected": pair[3],
                                   "prob_delta": e["prob_delta"], "event_id": e["event_id"],
                                   "counterpart_verified": pair[2] is not None and pair[3] is not None}})
    return pairs, skipped


def test_pts_reads_our_export_and_its_dpo_exporter_pairs_every_measured_cliff(tmp_path, tiny_tokenizer):
    texts = {**TEXTS, "arith/a-2#0": ("So 5 + 5 = 11.\n#### 11", False, 9), "arith/a-3#0": ("12 - 4 = 9.\n#### 9", False, 7)}
    questions = {**QUESTIONS, "arith/a-2": "What is 5 + 5?", "arith/a-3": "What is 12 - 4?"}
    traces = write_fixture(tmp_path, tiny_tokenizer, texts, questions=questions)
    # one cliff whose candidates are all cliffs: no counterpart, PTS skips it
    cands = schema.read("candidates", tmp_path / schema.PATHS["candidates"]).to_pylist()
    for r in cands:
        if r["trace_id"] == "arith/a-3#0" and not r["is_cliff_token"]:
            r.update(num_correct=0, potential=0.0, is_cliff=True)
    schema.write("candidates", cands, tmp_path / schema.PATHS["candidates"])
    export.write_jsonl(export.pts_events(tmp_path, tiny_tokenizer, "m"), tmp_path / "cliffs.jsonl")
    events = pts_load((tmp_path / "cliffs.jsonl").read_text().splitlines())
    assert len(events) == 3
    for e in events:
        trace = traces[e["metadata"]["trace_id"]]
        assert questions[trace["problem_id"]] in e["context"]                  # the question is in the prompt
        assert e["position"] == len(trace["prompt_ids"]) + e["metadata"]["response_position"]
        assert tiny_tokenizer.encode(e["context"], add_special_tokens=False) == \
            list(trace["prompt_ids"]) + list(trace["response_ids"][:e["metadata"]["response_position"]])
        assert e["event_id"] == export.pts_event_id("m", e["query"], e["context"], e["label"])
    pairs, skipped = pts_export_dpo(events)
    measured = [e for e in events if "chosen_token" in e["metadata"]]
    assert len(pairs) == len(measured) == 2 and skipped == 1
    for pair in pairs:
        event = next(e for e in events if e["event_id"] == pair["metadata"]["event_id"])
        assert pair["prompt"] == event["context"] and pair["rejected"] == event["label"]
        assert pair["chosen"] == event["metadata"]["chosen_token"] != pair["rejected"]
        assert pair["metadata"]["prob_chosen"] > pair["metadata"]["prob_rejected"]      # the measured alternative
        assert pair["metadata"]["counterpart_verified"] is True


def pairs_table() -> pa.Table:
    return pa.table({
        "trace_id": ["t1", "t1", "t2"], "token_index": pa.array([4, 4, 0], pa.int32()),
        "category": ["uncertain", "uncertain", "sampled_off"],
        "prompt_ids": pa.array([[1, 2, 3, 7], [1, 2, 3, 7], [1, 2]], pa.list_(pa.int32())),
        "chosen_id": pa.array([11, 12, 13], pa.int32()), "rejected_id": pa.array([20, 20, 21], pa.int32()),
        "split": ["train", "train", "heldout"],
    })


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_pairs_feed_trl_preference_collator(tmp_path, suffix):
    import datasets
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    out = tmp_path / f"pairs{suffix}"
    export.write_pairs(export.trl_pairs(pairs_table()), out)
    ds = datasets.load_dataset("json" if suffix == ".jsonl" else "parquet", data_files=str(out), split="train")
    assert ds.column_names[:3] == ["prompt_ids", "chosen_ids", "rejected_ids"] and len(ds) == 3
    batch = DataCollatorForPreference(pad_token_id=0)([ds[i] for i in range(len(ds))])
    assert tuple(batch["input_ids"].shape) == (6, 5)                 # chosen rows, then rejected rows
    # exactly one completion token per row: the chosen, then the rejected token
    assert batch["completion_mask"].sum(dim=1).tolist() == [1] * 6
    completion = (batch["input_ids"] * batch["completion_mask"]).sum(dim=1).tolist()
    assert completion == [11, 12, 13, 20, 20, 21]
    assert batch["input_ids"][2].tolist() == [1, 2, 13, 0, 0]


def test_pairs_split_and_missing_columns():
    assert export.trl_pairs(pairs_table(), "heldout")["chosen_ids"].to_pylist() == [[13]]
    with pytest.raises(ValueError, match="chosen_id"):
        export.trl_pairs(pairs_table().drop_columns(["chosen_id"]))
    with pytest.raises(ValueError, match=".jsonl or .parquet"):
        export.write_pairs(export.trl_pairs(pairs_table()), Path("pairs.csv"))


@pytest.mark.integration
def test_cli_export(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    import datasets

    write_fixture(tmp_path, tiny_tokenizer, TEXTS)
    tiny_tokenizer.save_pretrained(tmp_path / "models/base")
    pairs = tmp_path / "data/dpo_pairs/all.parquet"
    schema.write_table(pairs_table(), pairs)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "pts", "--out", "x/cliffs.jsonl", "--model-id", "m"]) == 0
    export.validate_pts_event(json.loads(Path("x/cliffs.jsonl").read_text().splitlines()[0]))
    assert main(["export", "potentials", "--out", "x/potentials"]) == 0
    assert len(datasets.load_from_disk("x/potentials")) == 2
    assert main(["export", "pairs", "--out", "x/pairs.jsonl", "--pairs", str(pairs), "--split", "train"]) == 0
    assert len(Path("x/pairs.jsonl").read_text().splitlines()) == 2
    assert main(["export", "pairs", "--out", "x/p.jsonl", "--pairs", "nowhere.parquet"]) == 2
    out = capsys.readouterr()
    assert "1 PTS v2 pivotal-token events" in out.out and "no pairs at nowhere.parquet" in out.err


@pytest.mark.integration
def test_cli_export_of_a_study_model(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    """`--model NAME` exports a study model's datasets (under study/NAME/, the project's problems)
    with its own source as the PTS model id and its name on the dataset card."""
    import datasets
    import yaml

    write_fixture(tmp_path, tiny_tokenizer, TEXTS)
    study_texts = dict(list(TEXTS.items())[:1])
    write_fixture(tmp_path / "study/b", tiny_tokenizer, study_texts)
    (tmp_path / "study/b" / schema.PATHS["problems"]).unlink()           # a study model reads the project's
    tiny_tokenizer.save_pretrained(tmp_path / "study/b/models/base")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["study"] = {"models": {"b": {"source": "org/B-1B"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "pts", "--model", "b", "--out", "x/b.jsonl"]) == 0
    events = [json.loads(line) for line in Path("x/b.jsonl").read_text().splitlines()]
    assert events and {e["model_id"] for e in events} == {"org/B-1B"}
    assert main(["export", "potentials", "--model", "b", "--out", "x/b-potentials"]) == 0
    assert len(datasets.load_from_disk("x/b-potentials")) == len(study_texts)
    assert "(b)" in Path("x/b-potentials/README.md").read_text()
    assert main(["export", "pts", "--model", "nope", "--out", "x/n.jsonl"]) == 2
    assert main(["export", "pairs", "--model", "b", "--out", "x/p.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "--model nope: study.models has no such model (known: b)" in err and "Cliff-DPO pairs" in err


@pytest.fixture
def repo(tmp_path, tiny_tokenizer, monkeypatch):
    """A git repository with the datasets, a pipeline output (dvc.yaml), tracked files and a user's file."""
    import subprocess

    write_fixture(tmp_path, tiny_tokenizer, TEXTS)
    tiny_tokenizer.save_pretrained(tmp_path / "models/base")
    schema.write_table(pairs_table(), tmp_path / "data/dpo_pairs/all.parquet")
    (tmp_path / "README.md").write_text("# the project\n")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text("stages:\n  summary:\n    cmd: echo\n    outs: [summary/]\n"
                                       "    metrics: [{metrics/summary.json: {cache: false}}]\n")
    (tmp_path / "notes.jsonl").write_text('{"mine": 1}\n')
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "README.md", "params.yaml", "dvc.yaml"], check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git/" not in str(p.relative_to(root)) + "/"}


@pytest.mark.parametrize("what, out, refusal", [
    ("potentials", ".", "is or contains the repository"),
    ("potentials", "..", "is or contains the repository"),
    ("pts", "params.yaml", "a file git tracks"),
    ("pts", "README.md", "a file git tracks"),
    ("pts", "data/cliffs/cliffs.parquet", "overlaps"),
    ("pts", "data/new.jsonl", "overlaps"),
    ("potentials", "models", "overlaps"),
    ("pts", "metrics/summary.json", "an output of the pipeline"),
    ("potentials", "summary/x", "an output of the pipeline"),
    ("pts", "notes.jsonl", "not a file cliffdata export wrote"),
    ("pairs", "data/dpo_pairs/all.parquet", "overlaps"),
    ("pts", "link-to-cliffs.jsonl", "symbolic link"),
    ("pts", "data-link/x.jsonl", "overlaps"),
    ("pts", "x", "exists and is not a file"),
])
@pytest.mark.integration
def test_export_refuses_what_it_must_not_replace(repo, capsys, what, out, refusal):
    """`cliffdata export` never writes over the repository, its datasets, a tracked file, a pipeline output,
    a file it did not write, or through a link; it exits 2 naming the path and changes nothing."""
    (repo / "link-to-cliffs.jsonl").symlink_to(repo / "data/cliffs/cliffs.parquet")
    (repo / "data-link").symlink_to(repo / "data")
    (repo / "x").mkdir()
    before = snapshot(repo)
    assert main(["export", what, "--out", out, "--model-id", "m"] if what == "pts" else
                ["export", what, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cliffdata export: ") and refusal in err, err
    assert snapshot(repo) == before


@pytest.mark.integration
def test_export_pairs_refuses_its_own_input(repo, capsys):
    mine = repo / "exports/pairs.parquet"
    assert main(["export", "pairs", "--out", str(mine)]) == 0
    before = mine.read_bytes()
    assert main(["export", "pairs", "--pairs", str(mine), "--out", "exports/pairs.parquet"]) == 2
    assert "own input" in capsys.readouterr().err and mine.read_bytes() == before


@pytest.mark.integration
def test_export_replaces_only_its_own_output_atomically(repo, capsys, monkeypatch):
    """A second export replaces the first (files and folders); an export edited since, or a folder with
    someone else's file in it, is refused; a write that fails leaves the previous export and no temporary."""
    import datasets

    for what, out in (("pts", "exports/cliffs.jsonl"), ("pairs", "exports/pairs.jsonl"),
                      ("potentials", "exports/potentials")):
        args = ["export", what, "--out", out] + (["--model-id", "m"] if what == "pts" else [])
        assert main(args) == 0
        assert main(args) == 0                                         # its own output: replaced
    assert len(datasets.load_from_disk("exports/potentials")) == 2
    assert (repo / "exports/.cliffs.jsonl.cliffdata").is_file()
    with open(repo / "exports/pairs.jsonl", "a") as f:
        f.write('{"hand": "edited"}\n')
    assert main(["export", "pairs", "--out", "exports/pairs.jsonl"]) == 2
    assert "hand" in (repo / "exports/pairs.jsonl").read_text()
    (repo / "exports/potentials/my-analysis.ipynb").write_text("{}")
    assert main(["export", "potentials", "--out", "exports/potentials"]) == 2
    assert "my-analysis.ipynb was not written by it" in capsys.readouterr().err
    (repo / "exports/potentials/my-analysis.ipynb").unlink()

    before = {p: (repo / p).read_bytes() for p in ("exports/cliffs.jsonl", "exports/potentials/README.md")}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dumps", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["export", "pts", "--out", "exports/cliffs.jsonl", "--model-id", "m"])
    monkeypatch.setattr(export, "potential_rows", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["export", "potentials", "--out", "exports/potentials"])
    assert {p: (repo / p).read_bytes() for p in before} == before
    assert [p.name for p in (repo / "exports").iterdir() if ".tmp-" in p.name] == []
