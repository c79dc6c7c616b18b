"""Every setting is defined once. A config dataclass default is what the code falls back on when a
key is left out of params.yaml; where params.yaml sets the key, the two must agree, or the code and the
pipeline describe different settings (say `dpo_train.beta` 0.05 in the dataclass and 0.1 in
params.yaml). Also: no second dataclass or module constant for a params key in the library."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from cliffdata.config.load import parse_params
from cliffdata.config.params import Params

ROOT = Path(__file__).resolve().parents[1]


def mismatches(tp, default, value, where: str) -> list[str]:
    """Paths where a dataclass default (the class's, or the nested default instance's) differs from params.yaml."""
    out = []
    if not (dataclasses.is_dataclass(tp) and isinstance(value, dict)):
        return out
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        if f.name not in value:
            continue
        if default is not None:
            fallback = getattr(default, f.name)
        elif f.default is not dataclasses.MISSING:
            fallback = f.default
        elif f.default_factory is not dataclasses.MISSING:
            fallback = f.default_factory()
        elif dataclasses.is_dataclass(hints[f.name]):  # a required section: its own keys may still have defaults
            out += mismatches(hints[f.name], None, value[f.name], f"{where}.{f.name}".lstrip("."))
            continue
        else:
            continue                                 # required: params.yaml is the only definition
        path = f"{where}.{f.name}".lstrip(".")
        if dataclasses.is_dataclass(fallback):
            out += mismatches(type(fallback), fallback, value[f.name], path)
            continue
        if fallback is None and dataclasses.is_dataclass(next((a for a in typing.get_args(hints[f.name])
                                                               if a is not type(None)), None)):
            continue                                 # an optional section: None means "not configured"
        if isinstance(fallback, dict) or (isinstance(fallback, tuple) and fallback and dataclasses.is_dataclass(fallback[0])):
            continue                                 # collections of sources / prompts: no per-key fallback
        norm = (lambda x: list(x) if isinstance(x, tuple) else x)
        if norm(fallback) != norm(value[f.name]):
            out.append(f"{path}: code {fallback!r}, params.yaml {value[f.name]!r}")
    return out


def test_every_code_default_equals_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert mismatches(Params, None, params, "") == []


def test_the_check_finds_a_second_default(monkeypatch):
    """The test above can fail: a dataclass default that differs from params.yaml is reported with its path."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dpo_train"]["beta"] = 0.05
    params["rollouts"]["sampling"]["max_new_tokens"] = 1024
    params["cliffs"]["entropy"] = "full"                 # inside a required section (cliffs: its test has no default)
    assert mismatches(Params, None, params, "") == [
        "rollouts.sampling.max_new_tokens: code 96, params.yaml 1024", "cliffs.entropy: code 'top20', params.yaml 'full'",
        "dpo_train.beta: code 0.1, params.yaml 0.05"]


@pytest.mark.parametrize("pattern", [
    r"^class DPOHyper\b", r"^class AdaptiveConfig\b", r"^MIN_TEST_ROLLOUTS\s*=", r"^DELTA0\s*=", r"^Z\s*=",
    r"^TOP_K\s*=", r"^THREADS\s*=",
])
def test_no_second_definition_in_the_library(pattern):
    hits = [f"{p.relative_to(ROOT)}:{i + 1}" for folder in ("cliffdata", "pipeline", "bench")
            for p in sorted((ROOT / folder).rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines()) if re.match(pattern, line)]
    assert hits == []


def numeric_keys(tp, value, path=()):
    """(path, type) of every int / float key params.yaml sets, nested sections included."""
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        if not isinstance(value, dict) or f.name not in value:
            continue
        kind = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
        if dataclasses.is_dataclass(kind) and isinstance(value[f.name], dict):
            yield from numeric_keys(kind, value[f.name], (*path, f.name))
        elif kind in (int, float) and not isinstance(value[f.name], bool):
            yield (*path, f.name), kind


def test_no_numeric_key_takes_a_negative_value():
    """Counts, sizes, rates, thresholds and seeds are all >= 0: a negative value is an error naming the key."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = list(numeric_keys(Params, params))
    assert len(keys) > 60
    accepted = []
    for path, kind in keys:
        bad = yaml.safe_load((ROOT / "params.yaml").read_text())
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = -1 if kind is int else -0.5
        try:
            parse_params(bad)
        except ValueError as e:
            assert path[-1] in str(e), (path, str(e))
        else:
            accepted.append(".".join(path))
    assert accepted == []
