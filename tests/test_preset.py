"""Params presets: params-gpu.yaml stays valid against params.yaml, and DVC's own `-S` parser applies
its overrides to exactly the merged params."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cliffdata.config.load import parse_params
from cliffdata.preset import merge, overrides

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_preset_through_dvc_set_param(tmp_path):
    from dvc.utils.hydra import apply_overrides

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "params-gpu.yaml").read_text())
    merged = merge(base, overlay)
    params = parse_params(merged)
    assert params.model.source.startswith("Qwen/Qwen3") and params.rollouts.num_rollouts == 64
    assert params.engine.block_size is None and params.rollouts.mode == "exhaustive"

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    apply_overrides(path, overrides(base, overlay))            # what `dvc exp run -S ...` does
    assert yaml.safe_load(path.read_text()) == merged
    assert merged["rollouts"]["adaptive"] == base["rollouts"]["adaptive"]   # untouched keys survive the merge


def test_merge_refuses_new_keys_and_strings_hydra_cannot_hold():
    with pytest.raises(ValueError, match="rollouts.shardz: not in params.yaml"):
        merge({"rollouts": {"shards": 1}}, {"rollouts": {"shardz": 2}})
    assert merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2, 3]}}) == {"a": {"b": 1, "c": [2, 3]}}
    with pytest.raises(ValueError, match="backslashes"):
        overrides({"p": {"i": "x"}}, {"p": {"i": "\\boxed{}"}})
