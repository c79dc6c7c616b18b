"""Reading `params.yaml`: plain YAML data built into `Params`, recursively, where an unknown key, a wrong
type or an out-of-range value is an error naming `section.key`.

    params = load_params("params.yaml")
    params.rollouts.num_rollouts
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from cliffdata.config.params import Params
from cliffdata.config.validate import INT_MAX, INT_MIN


def _build(tp: Any, value: Any, where: str) -> Any:
    """Build `tp` from plain YAML data, recursively; unknown keys raise."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        fields = dataclasses.fields(tp)
        names = {f.name for f in fields}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{_path(where)}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
        required = [f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING and f.name not in value]
        if required:
            raise ValueError(f"{_path(where + '.' + required[0])}: missing (required)")
        kwargs = {k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except ValueError as e:
            raise ValueError(_with_path(str(e), where, names)) from None
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], value, where)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(_build(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return {k: _build(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is not bool and isinstance(value, bool))):
        raise ValueError(f"{_path(where)}: expected {tp.__name__}, got {value!r}")    # true is not an int
    if tp is float and not math.isfinite(value):
        raise ValueError(f"{_path(where)}: must be a finite number, got {value!r}")
    if tp is int and not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{_path(where)}: must be in [{INT_MIN}, {INT_MAX}] (a 64-bit integer), got {value!r}")
    return value


def _path(where: str) -> str:
    return where.removeprefix("params.").removeprefix("params")


def _with_path(message: str, where: str, names: set[str]) -> str:
    """Prefix a dataclass's own error with its params path: `temperature must …` in ablation.sampling
    becomes `ablation.sampling.temperature must …`; messages that already name their section keep it."""
    path = _path(where)
    first = message.split(" ", 1)[0].rstrip(":")
    if not path or first.startswith(path.split(".")[0] + ".") or first.startswith(path + "["):
        return message
    if first in names:
        return f"{path}.{message}"
    return f"{path}: {message}"


def parse_params(data: dict) -> Params:
    params = _build(Params, data, "params")
    for name in params.study.models:
        study_params(data, name)                   # every study model's own params validate at load time
    return params


def study_params(data: dict, name: str) -> Params:
    """The params a study model's stages run with: the project's, with `model` set to the study model and its
    overrides applied; an error names `study.models.<name>.overrides.<key>`."""
    entry = data["study"]["models"][name]
    merged = copy.deepcopy({k: v for k, v in data.items() if k != "study"})
    merged["model"] = {k: v for k, v in entry.items() if k != "overrides"}
    where = f"study.models.{name}.overrides"
    for key, value in (entry.get("overrides") or {}).items():
        *parents, last = key.split(".")
        node = merged
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{where}.{key}: {'.'.join(parents[:i + 1])} is not a section")
        node[last] = copy.deepcopy(value)
    try:
        return _build(Params, merged, "params")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives one key twice (DVC refuses such a params file, and
    PyYAML alone would keep the last value without a word)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in first:
                raise ValueError(f"{key_node.start_mark.name}: key {key!r} appears twice, at lines {first[key]} and "
                                 f"{line}: keep one")
            first[key] = line
        except TypeError:                              # an unhashable key: YAML's own error follows
            continue
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path):
    """A YAML file's data (safe types only); a key given twice in one mapping is a ValueError naming the
    file, the key and both lines."""
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_UniqueKeyLoader)


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path))


def section_dict(path: str | Path, *sections: str) -> dict:
    """The raw YAML of some sections (for fingerprints and MLflow params)."""
    data = read_yaml(path)
    return {s: data.get(s) for s in sections}
