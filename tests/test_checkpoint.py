"""Checkpoint units that do not parse or verify (a write cut short, a garbled or empty file) are set aside,
named in the log, and computed again: `checkpoint.UnitCheckpoint` (sample, replicate, ablation, candidates,
dpo_eval) and `rollouts.Checkpoint` (rollouts, cliff_count), through a resumed `run_rollouts`."""
from __future__ import annotations

import json
import logging

import pytest

from cliffdata.backends import Sampling, make_backend
from cliffdata.checkpoint import CorruptUnit, UnitCheckpoint, seal, unseal
from cliffdata.config.generate import SamplingConfig
from cliffdata.config.search import RolloutsConfig
from cliffdata.search.rollouts import Checkpoint, run_rollouts
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
    assert unseal(seal({"a": [1.5, None, "é"]})) == {"a": [1.5, None, "é"]}
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


# --- rollouts: a finished trace is a potentials file and its done mark -----------------------------------

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
    doc["value"]["cost"]["num_rollouts"] += 1
    return json.dumps(doc, separators=(",", ":")).encode()


MARK_DAMAGE = {"truncated": truncate, "garbled": garble_mark, "empty": empty}
POTENTIALS_DAMAGE = {"truncated": truncate, "garbled": lambda data: data[:-40] + bytes(40), "empty": empty}


@pytest.mark.parametrize("part,damage", [("json", d) for d in MARK_DAMAGE.values()]
                         + [("parquet", d) for d in POTENTIALS_DAMAGE.values()],
                         ids=[f"mark_{k}" for k in MARK_DAMAGE] + [f"potentials_{k}" for k in POTENTIALS_DAMAGE])
def test_rollouts_resume_searches_a_damaged_trace_again(tmp_path, tiny_tokenizer, world, part, damage, caplog):
    be, traces, golds, config = world
    full, full_costs = run_rollouts(traces, golds, be, tiny_tokenizer, config, SAMPLING, Checkpoint(tmp_path / "a"), TEST)
    ckpt = Checkpoint(tmp_path / "a")
    assert len(ckpt.done()) == len(traces)
    name = Checkpoint.key(traces[3])                              # the last wave's second trace
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
