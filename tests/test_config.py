"""params.yaml parsing: the shipped file parses; unknown keys and bad values are errors naming them."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cliffdata.config.load import parse_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_parse(raw):
    p = parse_params(raw)
    assert p.rollouts.early_stop_zeros == 20
    assert p.cliffs.test.delta0 == 0.1 and p.cliffs.test.z == 1.645
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
    with pytest.raises(ValueError, match=match):
        parse_params(with_value(raw, path, value))


def with_value(raw: dict, path: tuple[str, ...], value) -> dict:
    """A deep copy of `raw` with the key at `path` set to `value`."""
    data = copy.deepcopy(raw)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def test_unknown_prompt_name_is_an_error(raw):
    data = copy.deepcopy(raw)
    data["problems"]["sources"][0]["family_prompts"]["word1"] = "nope"
    with pytest.raises(ValueError, match="nope"):
        parse_params(data)


# Every field has a type and a range; every error names `section.key` and the bad value, at load time.
@pytest.mark.parametrize("path,value,match", [
    (("rollouts", "num_rollouts"), True, r"rollouts.num_rollouts: expected int, got True"),
    (("sample", "num_samples"), False, r"sample.num_samples: expected int, got False"),
    (("rollouts", "sampling", "temperature"), float("inf"), r"rollouts.sampling.temperature: must be a finite number, got inf"),
    (("ablation", "sampling", "temperature"), float("nan"), r"ablation.sampling.temperature: must be a finite number, got nan"),
    (("ablation", "sampling", "temperature"), -1.0, r"ablation.sampling.temperature must be in \[0, 100\], got -1.0"),
    (("candidates", "sampling", "max_new_tokens"), 0, r"candidates.sampling.max_new_tokens must be in \[1, inf\), got 0"),
    (("cliffs", "test", "delta0"), -0.5, r"cliffs.test.delta0 must be in \[0, 1\), got -0.5"),
    (("cliffs", "test", "z"), -3, r"cliffs.test.z must be in \(0, inf\), got -3.0"),
    (("cliffs", "critical_threshold"), 5, r"cliffs.critical_threshold must be in \(0, 1\], got 5.0"),
    (("cliffs", "test", "min_rollouts"), 0, r"cliffs.test.min_rollouts must be in \[1, inf\), got 0"),
    (("engine", "max_model_len"), 0, r"engine.max_model_len must be in \[1, inf\), got 0"),
    (("engine", "dtype"), "fp8", r"engine.dtype must be one of \('auto', 'float32', 'bfloat16', 'float16'\), got 'fp8'"),
    (("engine", "gpu_memory_utilization"), 5, r"engine.gpu_memory_utilization must be in \(0, 1\], got 5.0"),
    (("token_stats", "top_k"), 0, r"token_stats.top_k must be in \[1, inf\), got 0"),
    (("rollouts", "adaptive", "initial_rollouts"), 0, r"rollouts.adaptive.initial_rollouts must be in \[1, inf\), got 0"),
    (("rollouts", "adaptive", "grid_points"), 0, r"rollouts.adaptive.grid_points must be in \[2, inf\), got 0"),
    (("dpo_train", "warmup_ratio"), 5, r"dpo_train.warmup_ratio must be in \[0, 1\), got 5.0"),
    (("dpo_train", "lora_dropout"), 2, r"dpo_train.lora_dropout must be in \[0, 1\), got 2.0"),
    (("dpo_eval", "max_new_tokens"), -1, r"dpo_eval.max_new_tokens must be in \[1, inf\), got -1"),
    (("candidates", "top_k"), 21, r"candidates.top_k must be <= token_stats.top_k = 20 .*got 21"),
    (("dpo_pairs", "top_k"), 30, r"dpo_pairs.top_k must be <= candidates.top_k = 20, got 30"),
    (("cpm_shift", "top_k"), 50, r"cpm_shift.top_k must be <= token_stats.top_k = 20, got 50"),
])
def test_nonsense_is_refused_with_its_path(raw, path, value, match):
    with pytest.raises(ValueError, match=match):
        parse_params(with_value(raw, path, value))


@pytest.mark.parametrize("section,key", [("ablation", "sampling"), ("problems", "sources")])
def test_missing_required_field_names_its_path(raw, section, key):
    data = copy.deepcopy(raw)
    if key == "sampling":
        del data[section][key]["temperature"]
        match = r"ablation.sampling.temperature: missing \(required\)"
    else:
        del data[section][key]
        match = rf"{section}.{key}: missing \(required\)"
    with pytest.raises(ValueError, match=match):
        parse_params(data)


def test_missing_section_and_top_level_prompts(raw):
    data = copy.deepcopy(raw)
    del data["prompts"]
    with pytest.raises(ValueError, match=r"^prompts: missing \(required\)"):
        parse_params(data)


@pytest.mark.parametrize("count", [-5, 65, 10 ** 20])
def test_arith_family_counts_are_ranged_at_load_time(raw, count):
    """A family count outside [0, the family's distinct questions] is refused when params load, naming the
    source and family, not later by the generator."""
    data = copy.deepcopy(raw)
    data["problems"]["sources"][0]["families"] = {"add1": count}
    data["problems"]["sources"][0]["family_prompts"] = {}
    with pytest.raises(ValueError, match=rf"problems.sources\[0\]:? ?.?families.add1:? must be in \[.*got {count}"):
        parse_params(data)
    data["problems"]["sources"][0]["families"] = {"add9": 1}
    with pytest.raises(ValueError, match=r"families.add9: no such arith family"):
        parse_params(data)


@pytest.mark.parametrize("path", [("sample", "num_samples"), ("rollouts", "seed"), ("cliffs", "test", "min_rollouts"),
                                  ("dpo_train", "batch_size"), ("report", "num_plot_traces")])
def test_integers_past_64_bits_are_refused(raw, path):
    with pytest.raises(ValueError, match=rf"{'.'.join(path)}: must be in \[-9223372036854775808, 9223372036854775807\]"):
        parse_params(with_value(raw, path, 10 ** 20))


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys silently; DVC refuses the file. So does the loader, naming
    the key and both lines, at any depth."""
    from cliffdata.config.load import load_params, read_yaml

    text = (ROOT / "params.yaml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  num_samples:"))
    twice = "\n".join(lines[:at + 1] + ["  num_samples: 4"] + lines[at + 1:]) + "\n"
    (tmp_path / "params.yaml").write_text(twice)
    with pytest.raises(ValueError, match=rf"params.yaml: key 'num_samples' appears twice, at lines {at + 1} and {at + 2}"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "top.yaml").write_text("a: 1\nb: {c: 1, c: 2}\n")
    with pytest.raises(ValueError, match="key 'c' appears twice, at lines 2 and 2"):
        read_yaml(tmp_path / "top.yaml")
    (tmp_path / "ok.yaml").write_text("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\nlist: [{x: 1}, {x: 2}]\n")
    assert read_yaml(tmp_path / "ok.yaml")["other"] == {"x": 1, "y": 2}
