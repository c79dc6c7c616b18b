"""Checkpoint units that do not parse or verify (a write cut short, a garbled or empty file, an attached
table missing or changed) are set aside, named in the log, and computed again: `checkpoint.UnitCheckpoint`,
with JSON units (sample, replicate, ablation, candidates, dpo_eval) and units with a Parquet table
(rollouts, cliff_count), the latter also through a resumed `run_rollouts`."""
from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cliffdata.backends import Sampling, make_backend
from cliffdata.checkpoint import CorruptUnit, UnitCheckpoint, seal, unseal
from cliffdata.config.generate import SamplingConfig
from cliffdata.config.search import RolloutsConfig
from cliffdata.search.rollouts import run_rollouts, trace_key
from project_cliffs import TEST

UNIT = [[16, 3, 120, 0], [16, 16, 96, 0]]          # an experiment unit: (n, correct, tokens, timeouts) per prefix


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garble(data: bytes) -> bytes:
    """Valid JSON with the digest kept and one count changed: parses, does not verify."""
    doc = json.loads(data)
    doc["value"][0][1] += 1
    return json.dumps(doc, separators=(",", ":")).encode()


def empty(data: bytes) -> bytes:
    return b""


def without_digest(data: bytes) -> bytes:
    return json.dumps(json.loads(data)["value"], separators=(",", ":")).encode()


DAMAGE = {"truncated": truncate, "garbled": garble, "empty": empty, "without_digest": without_digest}


def test_a_unit_carries_the_digest_of_its_payload(tmp_path):
    ckpt = UnitCheckpoint(tmp_path / "ckpt")
    key = UnitCheckpoint.key("replicate", "p1", [1, 2], 16)
    ckpt.put(key, UNIT)
    doc = json.loads((ckpt.folder / f"{key}.json").read_bytes())
    assert doc["value"] == UNIT and len(doc["sha256"]) == 64
    assert UnitCheckpoint(ckpt.folder).get(key) == UNIT
    assert unseal(seal({"a": [1.5, None, "é"]})) == ({"a": [1.5, None, "é"]}, None)
    assert unseal(seal(UNIT, "ab" * 32)) == (UNIT, "ab" * 32)
    with pytest.raises(CorruptUnit, match="does not match its content digest"):
        unseal(garble(seal(UNIT)))


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_unit_is_set_aside_and_computed_again(tmp_path, damage, caplog):
    ckpt = UnitCheckpoint(tmp_path / "ckpt")
    key = UnitCheckpoint.key("replicate", "p1", [1, 2], 16)
    ckpt.put(key, UNIT)
    path = ckpt.folder / f"{key}.json"
    bad = damage(path.read_bytes())
    path.write_bytes(bad)

    resumed = UnitCheckpoint(ckpt.folder)
    with caplog.at_level(logging.WARNING, logger="cliffdata.checkpoint"):
        assert resumed.get(key) is None                           # computed again, never a stale or broken value
    assert (resumed.hits, resumed.misses, resumed.corrupt) == (0, 1, 1)
    aside = ckpt.folder / f"{key}.json.corrupt-1"
    assert aside.read_bytes() == bad and not path.exists()        # set aside as it was, not deleted
    assert str(path) in caplog.text and aside.name in caplog.text
    assert "(1 corrupt, set aside)" in resumed.report("replicate")
    resumed.put(key, UNIT)                                       # the recomputed unit
    assert UnitCheckpoint(ckpt.folder).get(key) == UNIT
    assert len(resumed) == 1                                     # set-aside files are not units

    path.write_bytes(b"{")                                       # damaged again: the next free name
    assert UnitCheckpoint(ckpt.folder).get(key) is None
    assert (ckpt.folder / f"{key}.json.corrupt-2").read_bytes() == b"{"

    resumed.remove()                                             # the stage's outputs are written
    assert sorted(p.name for p in ckpt.folder.iterdir()) == [f"{key}.json.corrupt-1", f"{key}.json.corrupt-2"]
    clean = UnitCheckpoint(tmp_path / "clean")
    clean.put(key, UNIT)
    clean.remove()
    assert not clean.folder.exists()


# --- a unit with a table: `<key>.parquet`, then its sealed mark `<key>.json` naming the table's sha256 ------

TABLE = pa.table({"token_index": pa.array([0, 1, 2], pa.int32()), "potential": [0.5, 0.25, None]})
COST = {"num_rollouts": 24, "wall_seconds": 0.5}


def test_a_unit_with_a_table_resumes_with_the_table_equal(tmp_path):
    ckpt = UnitCheckpoint(tmp_path / "ckpt")
    key = UnitCheckpoint.key("rollouts", "p/0#0")
    ckpt.put(key, COST, TABLE)
    doc = json.loads((ckpt.folder / f"{key}.json").read_bytes())
    assert doc["value"] == COST and len(doc["table_sha256"]) == 64
    resumed = UnitCheckpoint(ckpt.folder)
    assert resumed.done() == {key}
    assert resumed.get(key) == COST and resumed.table(key).equals(TABLE)
    assert (resumed.hits, resumed.misses, resumed.corrupt) == (1, 0, 0)
    assert len(resumed) == 1                                     # one unit, not two


def test_a_table_without_its_mark_is_not_a_unit(tmp_path):
    ckpt = UnitCheckpoint(tmp_path / "ckpt")
    key = UnitCheckpoint.key("rollouts", "p/0#0")
    ckpt.put(key, COST, TABLE)
    (ckpt.folder / f"{key}.json").unlink()                      # killed between the two writes
    assert ckpt.get(key) is None and ckpt.done() == set() and ckpt.corrupt == 0
    ckpt.put(key, COST, TABLE)                                   # computed again, over the table left behind
    assert UnitCheckpoint(ckpt.folder).get(key) == COST


TABLE_DAMAGE = {"changed": lambda path: path.write_bytes(path.read_bytes()[:-40] + bytes(40)),
                "rewritten": lambda path: pq.write_table(TABLE.slice(1), path),
                "missing": lambda path: path.unlink(),
                "other_digest": lambda path: path.with_suffix(".json").write_bytes(seal(COST, "0" * 64))}


@pytest.mark.parametrize("damage", TABLE_DAMAGE.values(), ids=TABLE_DAMAGE.keys())
def test_a_unit_whose_table_does_not_verify_is_set_aside_with_its_mark(tmp_path, damage, caplog):
    ckpt = UnitCheckpoint(tmp_path / "ckpt")
    key = UnitCheckpoint.key("rollouts", "p/0#0")
    ckpt.put(key, COST, TABLE)
    mark, table = ckpt.folder / f"{key}.json", ckpt.folder / f"{key}.parquet"
    damage(table)
    had_table = table.exists()

    resumed = UnitCheckpoint(ckpt.folder)
    with caplog.at_level(logging.WARNING, logger="cliffdata.checkpoint"):
        assert resumed.get(key) is None                           # not done: computed again
    assert (resumed.hits, resumed.misses, resumed.corrupt) == (0, 1, 1)
    assert resumed.done() == set() and not mark.exists() and not table.exists()
    aside = sorted([f"{key}.json.corrupt-1"] + ([f"{key}.parquet.corrupt-1"] if had_table else []))
    assert sorted(p.name for p in ckpt.folder.iterdir()) == aside
    assert str(mark) in caplog.text and f"{key}.json.corrupt-1" in caplog.text

    resumed.put(key, COST, TABLE)                                # the recomputed unit
    again = UnitCheckpoint(ckpt.folder)
    assert again.get(key) == COST and again.table(key).equals(TABLE)
    again.remove()                                               # the files set aside stay
    assert sorted(p.name for p in ckpt.folder.iterdir()) == aside


# --- rollouts: a finished trace is a unit, its cost row sealed and its potentials attached -----------------

TRAP = 70
SAMPLING = Sampling(temperature=0.7, max_new_tokens=8)


@pytest.fixture
def world(tiny_tokenizer):
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    be = make_backend("fake", correct_ids=enc("#### 7"), wrong_ids=enc("#### 3"), eos_token_id=2,
                      potential=lambda ids: 0.05 if TRAP in ids else 0.6)
    traces = [{"trace_id": f"p/{k}#0", "problem_id": "p", "prompt_ids": [1, 24, 22],
               "response_ids": [40 + k, 41, TRAP, 42, 2] if k % 2 else [40 + k, 41, 2]} for k in range(4)]
    config = RolloutsConfig(mode="exhaustive", num_rollouts=8, positions_per_batch=2, traces_per_wave=2,
                            sampling=SamplingConfig(temperature=0.7, max_new_tokens=8))
    return be, traces, {"p": ("7", "hash")}, config


def garble_mark(data: bytes) -> bytes:
    doc = json.loads(data)
    doc["value"]["num_rollouts"] += 1
    return json.dumps(doc, separators=(",", ":")).encode()


MARK_DAMAGE = {"truncated": truncate, "garbled": garble_mark, "empty": empty}
POTENTIALS_DAMAGE = {"truncated": truncate, "garbled": lambda data: data[:-40] + bytes(40), "empty": empty}


@pytest.mark.parametrize("part,damage", [("json", d) for d in MARK_DAMAGE.values()]
                         + [("parquet", d) for d in POTENTIALS_DAMAGE.values()],
                         ids=[f"mark_{k}" for k in MARK_DAMAGE] + [f"potentials_{k}" for k in POTENTIALS_DAMAGE])
def test_rollouts_resume_searches_a_damaged_trace_again(tmp_path, tiny_tokenizer, world, part, damage, caplog):
    be, traces, golds, config = world
    full, full_costs = run_rollouts(traces, golds, be, tiny_tokenizer, config, SAMPLING, UnitCheckpoint(tmp_path / "a"),
                                    TEST)
    ckpt = UnitCheckpoint(tmp_path / "a")
    assert len(ckpt.done()) == len(traces)
    name = trace_key(traces[3])                              # the last wave's second trace
    path = ckpt.folder / f"{name}.{part}"
    path.write_bytes(damage(path.read_bytes()))

    calls, generate = [], be.generate
    be.generate = lambda requests, sampling: calls.append(requests) or generate(requests, sampling)
    with caplog.at_level(logging.WARNING, logger="cliffdata.checkpoint"):
        table, costs = run_rollouts(traces, golds, be, tiny_tokenizer, config, SAMPLING, ckpt, TEST)
    assert table.equals(full)
    assert [{k: v for k, v in c.items() if k != "wall_seconds"} for c in costs] == \
        [{k: v for k, v in c.items() if k != "wall_seconds"} for c in full_costs]
    # the damaged trace's wave (traces 2 and 3) was searched again, the first wave was not
    assert {r.prompt_ids[3] for call in calls for r in call if len(r.prompt_ids) > 3} == {42, 43}
    assert str(path) in caplog.text
    assert sorted(p.name for p in ckpt.folder.glob(f"{name}.*.corrupt-*")) == [f"{name}.json.corrupt-1",
                                                                               f"{name}.parquet.corrupt-1"]
    ckpt.remove()
    assert sorted(p.name for p in ckpt.folder.iterdir()) == [f"{name}.json.corrupt-1", f"{name}.parquet.corrupt-1"]
