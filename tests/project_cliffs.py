"""The project's cliff settings (params.yaml `cliffs`), for tests that decide cliffs as the pipeline does.
The cliff test has no code default, so tests read it where the stages do: from params.yaml."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cliffdata.config.cliffs import CliffsConfig, CliffTest
from cliffdata.config.load import load_params

CLIFFS: CliffsConfig = load_params(Path(__file__).resolve().parents[1] / "params.yaml").cliffs
TEST: CliffTest = CLIFFS.test


def cliffs_config(test: dict | None = None, **changes) -> CliffsConfig:
    """CLIFFS with some keys changed; `test`: keys of its cliff test to change (e.g. {"min_rollouts": 1})."""
    return dataclasses.replace(CLIFFS, test=dataclasses.replace(TEST, **(test or {})), **changes)
