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
    """Finished units under `folder`: `<key>.json`, written atomically (temp file, fsync, rename)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0                                   # units answered from the folder (resume)
        self.misses = 0                                 # units computed in this run

    @staticmethod
    def key(*parts: object) -> str:
        """A digest of a unit's inputs (dataclasses, lists, dicts, numbers, strings)."""
        text = json.dumps(_plain(parts), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.json"))

    def get(self, key: str) -> object | None:
        path = self.folder / f"{key}.json"
        if not path.exists():
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(path.read_text())

    def put(self, key: str, value: object) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(_plain(value), f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        """Delete the folder (this class created it); after the stage's outputs are written."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def report(self, stage: str) -> str:
        return f"{stage}: {self.hits} units resumed from {self.folder}, {self.misses} computed"


def stage_checkpoint(stage: str, *parts: object) -> UnitCheckpoint:
    """`.cache/<stage>/<fingerprint of parts>/`: pass everything the stage's units depend on that their
    own keys do not cover (params sections, input file digests, the model's `tree_digest`, grading code)."""
    return UnitCheckpoint(Path(".cache") / stage / UnitCheckpoint.key(stage, *parts)[:16])
