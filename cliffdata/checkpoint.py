"""Per-unit checkpoints of long stages: each finished unit's result as a small sealed JSON file, optionally
with a Parquet table attached, keyed by a digest of everything that determines it, so a killed stage
resumes where it stopped and recomputes no finished unit. One class serves every stage: a problem of
`sample`, `replicate`, `ablation`, `candidates`; a (model, problem) pair of `dpo_eval`; a trace of
`rollouts` and `cliff_count` (its cost row as the value, its potentials as the table).

    ckpt = UnitCheckpoint(f".cache/ablation/{fingerprint(params, inputs)}")
    key = UnitCheckpoint.key("ablation", problem_id, prefixes, n, sampling, seeds)
    value = ckpt.get(key)
    if value is None:
        value = compute()
        ckpt.put(key, value)           # ckpt.put(key, value, table): a unit with a table
    ...
    ckpt.remove()                      # after the stage's outputs are written

The folder lives under `.cache/<stage>/` (outside DVC's outs, which DVC deletes before a run); its name
is the stage's fingerprint (params, input files, model, grading code), and each unit's key covers the
unit's own inputs, so nothing from another configuration is ever reused.

A unit is `<key>.json`: its payload and the payload's sha256 (`seal`). A unit with a table writes
`<key>.parquet` first and then `<key>.json`, whose sealed mark also holds the table file's sha256: the
mark is the unit's done mark, so a unit killed between the two writes is not done. Both writes are
atomic (temp file, fsync, rename). A unit that does not parse (a write cut short by a full disk or a
copy), is empty, or whose payload does not match its digest, and a unit whose table is missing or holds
other bytes than its mark names, is logged with its path, set aside as `<name>.corrupt-<n>` (`set_aside`,
its table with it; `remove` keeps those) and computed again, so a damaged file costs one unit, never
the stage. A unit without a digest cannot be told from a garbled one and is treated the same way.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cliffdata import schema

log = logging.getLogger(__name__)


class CorruptUnit(ValueError):
    """A checkpoint file that does not parse or does not match its digest."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(payload: str, table_sha256: str | None) -> str:
    return _sha256(payload if table_sha256 is None else table_sha256 + payload)


def seal(value: object, table_sha256: str | None = None) -> bytes:
    """The bytes of a unit file: `{"sha256": <digest of the payload>, "value": <payload>}`, the payload
    being `value` as compact JSON (dataclasses, tuples and numpy scalars made plain). A unit with a table
    also holds the table file's sha256, `{"sha256": ..., "table_sha256": ..., "value": ...}`, and its
    digest covers both (the sha256 of the table's digest followed by the payload)."""
    payload = json.dumps(_plain(value), separators=(",", ":"))
    digest = _digest(payload, table_sha256)
    if table_sha256 is None:
        return f'{{"sha256":"{digest}","value":{payload}}}'.encode()
    return f'{{"sha256":"{digest}","table_sha256":"{table_sha256}","value":{payload}}}'.encode()


def unseal(data: bytes) -> tuple[object, str | None]:
    """The value of a unit file written by `seal` and its table's sha256 (None: a unit without a table);
    `CorruptUnit` (saying why) where it does not parse, has no digest, or its payload does not match the
    digest (the payload is compared as `seal` wrote it: compact JSON, which parses back to the same text)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptUnit(f"does not parse ({'empty' if not data else e})") from None
    if not isinstance(doc, dict) or set(doc) - {"table_sha256"} != {"sha256", "value"}:
        raise CorruptUnit("has no content digest")
    table_sha256 = doc.get("table_sha256")
    if table_sha256 is not None and not isinstance(table_sha256, str):
        raise CorruptUnit("has no table digest")
    if _digest(json.dumps(doc["value"], separators=(",", ":")), table_sha256) != doc["sha256"]:
        raise CorruptUnit("does not match its content digest")
    return doc["value"], table_sha256


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync, and rename it over `path`: a reader sees the old
    file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_aside(path: Path, reason: str) -> Path:
    """Rename a checkpoint file that does not parse or verify to `<name>.corrupt-<n>` beside it (the first
    free n; kept for inspection, never deleted) and log a warning naming it and `reason`."""
    n = 1
    while (target := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, target)
    log.warning("checkpoint %s %s: set aside as %s; its unit is computed again", path, reason, target.name)
    return target


def remove_folder(folder: Path) -> None:
    """Delete a checkpoint folder after its stage's outputs are written, except the files set aside in it
    (then the folder stays, holding only those, and a warning names it)."""
    kept = sorted(folder.glob("*.corrupt-*"))
    if not kept:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in folder.iterdir():
        if path in kept:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    log.warning("checkpoint %s: removed, but for %d files set aside as corrupt", folder, len(kept))


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):                          # numpy scalars
        return value.item()
    return value


_ABSENT = object()          # `_read` of a unit that is not done (a saved value may be any JSON, null too)


class UnitCheckpoint:
    """Finished units under `folder`: `<key>.json` (`seal`ed), and for a unit with a table `<key>.parquet`
    before it, each written atomically (temp file, fsync, rename)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0                                   # units answered from the folder (resume)
        self.misses = 0                                 # units `get` found absent or set aside
        self.corrupt = 0                                # units set aside (by `get`: counted in misses too)

    @staticmethod
    def key(*parts: object) -> str:
        """A digest of a unit's inputs (dataclasses, lists, dicts, numbers, strings)."""
        text = json.dumps(_plain(parts), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.json"))

    def get(self, key: str) -> object | None:
        """The saved value of unit `key`, or None (compute it): absent, or set aside as corrupt (`unseal`;
        a unit with a table also where the table is missing or holds other bytes)."""
        value = self._read(key)
        if value is _ABSENT:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def done(self) -> set[str]:
        """Keys of the finished units whose files verify (the others are set aside)."""
        return {p.stem for p in sorted(self.folder.glob("*.json")) if self._read(p.stem) is not _ABSENT}

    def table(self, key: str) -> pa.Table:
        """The table attached to unit `key`, which `get` or `done` found finished."""
        return pq.read_table(self.folder / f"{key}.parquet")

    def put(self, key: str, value: object, table: pa.Table | None = None) -> None:
        """Save unit `key`: its `table` first (where it has one), then the sealed `value` naming the table's
        sha256, so a unit whose mark is on disk has its whole table."""
        table_sha256 = None
        if table is not None:
            path = self.folder / f"{key}.parquet"
            schema.write_table(table, path)
            table_sha256 = schema.file_digest(path)
        write_atomic(self.folder / f"{key}.json", seal(value, table_sha256))

    def _read(self, key: str) -> object:
        """The value of unit `key`, or `_ABSENT`: no mark, or its files set aside (counted in `corrupt`)."""
        mark, table = self.folder / f"{key}.json", self.folder / f"{key}.parquet"
        try:
            value, table_sha256 = unseal(mark.read_bytes())
            if table_sha256 is not None and not table.exists():
                raise CorruptUnit(f"names a table, and {table.name} is missing")
            if table_sha256 is not None and schema.file_digest(table) != table_sha256:
                raise CorruptUnit(f"names a table that {table.name} does not hold")
        except FileNotFoundError:
            return _ABSENT
        except CorruptUnit as e:
            set_aside(mark, str(e))
            if table.exists():
                set_aside(table, f"belongs to {mark.name}, which {e}")
            self.corrupt += 1
            return _ABSENT
        return value

    def remove(self) -> None:
        """Delete the folder (this class created it), but for units set aside; after the stage's outputs
        are written."""
        remove_folder(self.folder)

    def report(self, stage: str) -> str:
        corrupt = f" ({self.corrupt} corrupt, set aside)" if self.corrupt else ""
        return f"{stage}: {self.hits} units resumed from {self.folder}, {self.misses} computed{corrupt}"


def stage_checkpoint(stage: str, *parts: object, root: Path) -> UnitCheckpoint:
    """`<root>/.cache/<stage>/<fingerprint of parts>/`, `root` being the model's (`study.Layout.root`: `.`
    for the pipeline's own model): pass everything the stage's units depend on that their own keys do
    not cover (params sections, input file digests, the model's `tree_digest`, grading code)."""
    return UnitCheckpoint(Path(root) / ".cache" / stage / UnitCheckpoint.key(stage, *parts)[:16])
