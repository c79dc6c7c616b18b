"""params.yaml parsing: the shipped file parses; unknown keys and bad values are errors naming them."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cliffdata.config import parse_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_parse(raw):
    p = parse_params(raw)
    assert p.rollouts.early_stop_zeros == 20
    assert p.cliffs.delta0 == 0.1 and p.cliffs.z == 1.645
    assert p.token_stats.top_k == 20


@pytest.mark.parametrize("path,value,match", [
    (("rollouts", "num_rolouts"), 8, "unknown keys \\['num_rolouts'\\]"),
    (("rollouts", "num_rollouts"), 0, "got 0"),
    (("engine", "backend"), "sglang", "got 'sglang'"),
    (("rollouts", "engine"), "dask", "rollouts.engine must be local|ray, got 'dask'"),
    (("cliffs", "entropy"), "top10", "got 'top10'"),
    (("rollouts", "sampling", "top_p"), 1.5, "got 1.5"),
    (("sample", "num_samples"), "two", "expected int, got 'two'"),
])
def test_bad_params_are_errors(raw, path, value, match):
    data = copy.deepcopy(raw)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=match):
        parse_params(data)


def test_unknown_prompt_name_is_an_error(raw):
    data = copy.deepcopy(raw)
    data["problems"]["sources"][0]["family_prompts"]["word1"] = "nope"
    with pytest.raises(ValueError, match="nope"):
        parse_params(data)
