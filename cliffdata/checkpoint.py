"""Per-unit checkpoints of long stages: each finished unit's result as a small JSON file, keyed by a
digest of everything that determines it, so a killed stage resumes where it stopped and recomputes
no finished unit (`rollouts` has its own per-trace `rollouts.Checkpoint`).

    ckpt = UnitCheckpoint(f".cache/ablation/{fingerprint(params, inputs)}")
    key = UnitCheckpoint.key("ablation", problem_id, prefixes, n, sampling, seeds)
    value = ckpt.get(key)
    if value is None:
        value = compute()
        ckpt.put(key, value)
    ...
    ckpt.remove()                      # after the stage's outputs are written

The folder lives under `.cache/<stage>/` (outside DVC's outs, which DVC deletes before a run); its name
is the stage's fingerprint (params, input files, model, grading code), and each unit's key covers the
unit's own inputs, so nothing from another configuration is ever reused.

A unit file holds its payload and the payload's sha256 (`seal`). A unit that does not parse (a write
cut short by a full disk or a copy), is empty, or whose payload does not match its digest is logged
with its path, set aside as `<name>.corrupt-<n>` (`set_aside`; `remove` keeps those) and computed
again, so a damaged file costs one unit, never the stage. A unit without a digest cannot be told from
a garbled one and is treated the same way (computed again).
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

log = logging.getLogger(__name__)


class CorruptUnit(ValueError):
    """A checkpoint file that does not parse or does not match its digest."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seal(value: object) -> bytes:
    """The bytes of a unit file: `{"sha256": <digest of the payload>, "value": <payload>}`, the payload
    being `value` as compact JSON (dataclasses, tuples and numpy scalars made plain)."""
    payload = json.dumps(_plain(value), separators=(",", ":"))
    return f'{{"sha256":"{_sha256(payload)}","value":{payload}}}'.encode()


def unseal(data: bytes) -> object:
    """The value of a unit file written by `seal`; `CorruptUnit` (saying why) where it does not parse, has
    no digest, or its payload does not match the digest (the payload is compared as `seal` wrote it:
    compact JSON, which parses back to the same text)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptUnit(f"does not parse ({'empty' if not data else e})") from None
    if not isinstance(doc, dict) or set(doc) != {"sha256", "value"}:
        raise CorruptUnit("has no content digest")
    if _sha256(json.dumps(doc["value"], separators=(",", ":"))) != doc["sha256"]:
        raise CorruptUnit("does not match its content digest")
    return doc["value"]


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


class UnitCheckpoint:
    """Finished units under `folder`: `<key>.json` (`seal`ed), written atomically (temp file, fsync, rename)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0                                   # units answered from the folder (resume)
        self.misses = 0                                 # units computed in this run
        self.corrupt = 0                                # unit files set aside (counted in misses too)

    @staticmethod
    def key(*parts: object) -> str:
        """A digest of a unit's inputs (dataclasses, lists, dicts, numbers, strings)."""
        text = json.dumps(_plain(parts), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.json"))

    def get(self, key: str) -> object | None:
        """The saved value of unit `key`, or None (compute it): absent, or set aside as corrupt (`unseal`)."""
        path = self.folder / f"{key}.json"
        try:
            value = unseal(path.read_bytes())
        except FileNotFoundError:
            self.misses += 1
            return None
        except CorruptUnit as e:
            set_aside(path, str(e))
            self.misses += 1
            self.corrupt += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: object) -> None:
        write_atomic(self.folder / f"{key}.json", seal(value))

    def remove(self) -> None:
        """Delete the folder (this class created it), but for units set aside; after the stage's outputs
        are written."""
        remove_folder(self.folder)

    def report(self, stage: str) -> str:
        corrupt = f" ({self.corrupt} corrupt, set aside)" if self.corrupt else ""
        return f"{stage}: {self.hits} units resumed from {self.folder}, {self.misses} computed{corrupt}"


def stage_checkpoint(stage: str, *parts: object) -> UnitCheckpoint:
    """`.cache/<stage>/<fingerprint of parts>/`: pass everything the stage's units depend on that their
    own keys do not cover (params sections, input file digests, the model's `tree_digest`, grading code)."""
    return UnitCheckpoint(Path(".cache") / stage / UnitCheckpoint.key(stage, *parts)[:16])
