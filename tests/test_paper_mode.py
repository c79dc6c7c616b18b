"""Paper mode rehearsed on CPU: the real `params-gpu.yaml` overlay, its problem subsets and answer
formats on GSM1K / MATH500 / AIME fixture files in the real formats, per-dataset token budgets in every
stage that generates, and `dvc repro` of the preset through the cliffs and the Cliff-DPO pairs.

What a GPU run would change is the model and the engine only: the end-to-end test takes the preset as it
is (N = 64, ks to 64, sampling settings, budgets, `include_empty_prefix: false`, exhaustive rollouts, early
stop 20) and overrides `model.source` (a tiny in-process Llama), `engine.backend: hf`, and the size of
the problem subsets (the subset sizes and seeds of the preset itself are checked on full-size files by
`test_preset_problems_subsets_formats_and_budgets`). The tiny model cannot write `\\boxed{}` answers, so
the traces are scripted: the real `sample` stage runs with a backend that replays them, `dvc commit`
records its outputs, and every later stage runs on the HF backend. Each scripted failed trace first
boxes the right answer and then a wrong one, so its potential falls from 1 to 0 at the closing brace of
the last box: the cliff sits where the "last box wins" rule puts it, and only a grader that reads
`\\boxed{}` in every stage finds it.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_paper_mode.py
"""
from __future__ import annotations

import json
import math
import runpy
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cliffdata.backends import Backend, Generation, GenerationRequest, Sampling
from cliffdata.config.load import parse_params
from cliffdata.grading import grade
from cliffdata.preset import merge
from cliffdata.problems import load_problems, stratified_sample
from project_cliffs import TEST

ROOT = Path(__file__).resolve().parents[1]
LATEX = "\\{}^_[]'"          # characters of boxed answers the default tiny tokenizer lacks
BUDGETS = {"gsm1k": 1024, "math500": 2048, "aime": 4096}   # protocol §3


def preset_params() -> dict:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge(base, yaml.safe_load((ROOT / "params-gpu.yaml").read_text()))


def leaf_keys(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        out += leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


# --- fixture files in the real formats ----------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def gsm1k_rows(n: int) -> list[dict]:
    """GSM1K: `question` and a plain `answer` (no worked solution, no ####)."""
    return [{"question": f"Maria has {10 + i} bananas and buys {20 + 2 * i} more. How many bananas does she have?",
             "answer": str(30 + 3 * i)} for i in range(n)]


def math500_rows(n: int) -> list[dict]:
    """MATH500 (HuggingFaceH4/MATH-500): problem, worked `solution` ending in \\boxed{}, answer, subject,
    integer level, unique_id. Every third row has no `answer` field: the gold is read from the solution."""
    rows = []
    for i in range(n):
        level = 1 + (i * 7) % 5 if n > 10 else 1 + i % 3
        answer = f"\\frac{{1}}{{{i + 2}}}"
        row = {"problem": f"What is the probability of event {i}?", "solution": f"Count the cases: {i + 2} in all, "
               f"so the probability is $\\boxed{{{answer}}}$.", "answer": answer, "subject": "Prealgebra",
               "level": level, "unique_id": f"test/prealgebra/{100 + i}.json"}
        if i % 3 == 2:
            del row["answer"]
        rows.append(row)
    return rows


def aime_rows(n: int) -> list[dict]:
    """AIME 2025: `problem`, an integer `answer`, an integer `id`."""
    return [{"id": i, "problem": f"Find the remainder when {1000 + 17 * i} is divided by 1000.", "answer": 17 * i}
            for i in range(n)]


def write_raw(root: Path, num_gsm: int, num_math: int, num_aime: int) -> None:
    write_jsonl(root / "data/raw/gsm1k.jsonl", gsm1k_rows(num_gsm))
    write_jsonl(root / "data/raw/math500.jsonl", math500_rows(num_math))
    write_jsonl(root / "data/raw/aime25.jsonl", aime_rows(num_aime))


# --- the preset, its subsets, formats and budgets (fast) ----------------------------------------------

def test_every_preset_key_exists_in_params_yaml():
    """...but the entries of study.models (names the user chooses: cliffdata.preset.OPEN_MAPPINGS)."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "params-gpu.yaml").read_text())
    base_keys = set(leaf_keys(base)) | {k.rsplit(".", 1)[0] for k in leaf_keys(base)}
    missing = [k for k in leaf_keys(overlay) if k not in base_keys and not k.startswith("study.models.")]
    assert not missing, f"params-gpu.yaml keys not in params.yaml: {missing}"


def test_preset_study_is_the_papers_seven_models_at_their_own_sampling():
    """Protocol §3: each model samples at its own settings (Qwen3 T 0.7 / top_p 0.8 / top_k 20, Llama T 0.6 /
    top_p 0.9, Gemma T 1.0 / top_p 0.95 / top_k 64), traces at T 0.6 with the same top_p / top_k."""
    from cliffdata.config.load import study_params
    from cliffdata.preset import merge, overrides
    from cliffdata.study import members

    data = preset_params()
    params = parse_params(data)
    study = members(params)
    assert [(m.family, m.size_b) for m in study] == [("Qwen3", 8.0), ("Qwen3", 0.6), ("Qwen3", 4.0), ("Llama", 1.2),
                                                    ("Llama", 3.2), ("Llama", 8.0), ("Gemma3", 4.3)]
    expected = {"Qwen3": (0.7, 0.8, 20), "Llama": (0.6, 0.9, 0), "Gemma3": (1.0, 0.95, 64)}
    for m in study[1:]:
        own = study_params(data, m.name)
        for section in (own.rollouts, own.ablation, own.candidates):
            assert (section.sampling.temperature, section.sampling.top_p, section.sampling.top_k) == expected[m.family]
        assert (own.sample.sampling.temperature, own.sample.sampling.top_p, own.sample.sampling.top_k) == \
            (0.6, *expected[m.family][1:])
        assert own.cliffs == params.cliffs and own.problems == params.problems
    # the preset adds them as new keys: Hydra's `+key=value` (a plain `key=` would be refused by dvc exp run)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    sets = overrides(base, yaml.safe_load((ROOT / "params-gpu.yaml").read_text()))
    assert sum(s.startswith("+study.models.") for s in sets) == 6
    with pytest.raises(ValueError, match=r"params\.study\.nope: not in params\.yaml"):
        merge(base, {"study": {"nope": 1}})


def test_preset_overrides_apply_through_dvcs_hydra(tmp_path):
    """What `dvc exp run -S` does with the preset's overrides gives the merged params (study models too)."""
    from dvc.utils.hydra import apply_overrides

    from cliffdata.preset import overrides

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    apply_overrides(str(tmp_path / "params.yaml"),
                    overrides(base, yaml.safe_load((ROOT / "params-gpu.yaml").read_text())))
    assert parse_params(yaml.safe_load((tmp_path / "params.yaml").read_text())) == parse_params(preset_params())


def test_preset_protocol_settings():
    params = parse_params(preset_params())
    assert params.rollouts.mode == "exhaustive" and params.rollouts.num_rollouts == 64
    assert params.rollouts.early_stop_zeros == 20
    assert params.ablation.num_rollouts == 64 and list(params.ablation.ks) == [1, 2, 4, 8, 16, 32, 64]
    assert params.candidates.num_rollouts == 64
    assert params.cliffs.include_empty_prefix is False and (params.cliffs.test.delta0, params.cliffs.test.z) == (0.1, 1.645)
    assert params.sample.sampling.temperature == 0.6            # traces at 0.6, rollouts at the model's 0.7
    for section in (params.rollouts, params.ablation, params.candidates):
        s = section.sampling
        assert (s.temperature, s.top_p, s.top_k) == (0.7, 0.8, 20)
    assert {s.dataset: s.max_new_tokens for s in params.problems.sources} == BUDGETS
    assert {s.prompt for s in params.problems.sources} == {"zeroshot_boxed"}
    assert params.prompts["zeroshot_boxed"].asks_for == "boxed"


def test_preset_problems_subsets_formats_and_budgets(tmp_path):
    """The preset's sources verbatim on full-size files: GSM1K-100 seeded, MATH500-100 stratified by level,
    all of AIME; every problem graded by `\\boxed{}` first, with its dataset's token budget."""
    write_raw(tmp_path, num_gsm=250, num_math=300, num_aime=30)
    params = parse_params(preset_params())
    rows, stats = load_problems(params.problems, root=tmp_path, prompts=params.prompts)
    assert stats["num_by_dataset"] == {"aime": 30, "gsm1k": 100, "math500": 100}
    by = {d: [r for r in rows if r["dataset"] == d] for d in BUDGETS}
    assert [r["source_index"] for r in by["gsm1k"]] == sorted(np.random.default_rng(42).choice(250, 100, replace=False))
    levels = [str(r["level"]) for r in math500_rows(300)]
    assert [r["source_index"] for r in by["math500"]] == stratified_sample(levels, 100, 42)
    assert Counter(r["level"] for r in by["math500"]) == {lv: 100 * n // 300 for lv, n in Counter(levels).items()}
    assert [r["source_index"] for r in by["aime"]] == list(range(30))
    for dataset, budget in BUDGETS.items():
        assert {(r["answer_format"], r["prompt"], r["max_new_tokens"]) for r in by[dataset]} == \
            {("boxed", "zeroshot_boxed", budget)}
    # rows without an `answer` field take the solution's last box
    assert any(r["source_index"] % 3 == 2 for r in by["math500"])
    assert all(r["answer"] == f"\\frac{{1}}{{{r['source_index'] + 2}}}" for r in by["math500"])
    assert by["aime"][5]["answer"] == "85"                            # integer answers as text

    again, _ = load_problems(params.problems, root=tmp_path, prompts=params.prompts)
    assert again == rows                                              # seeded: the same subsets every time


def test_boxed_gsm1k_answer_graded_right_through_the_loader(tmp_path):
    """A GSM1K problem loaded by the project's loader with the preset's prompt grades a
    `\\boxed{84}` response right (the hash format finds no answer in it)."""
    write_jsonl(tmp_path / "data/raw/gsm1k.jsonl", [{"question": "Maria has 60 bananas and buys 24 more.", "answer": "84"}])
    params = parse_params(preset_params())
    gsm = next(s for s in params.problems.sources if s.dataset == "gsm1k")
    from dataclasses import replace

    from cliffdata.config.problems import ProblemsConfig
    (problem,), _ = load_problems(ProblemsConfig(sources=(replace(gsm, subset=None),)), root=tmp_path,
                                  prompts=params.prompts)
    assert problem["answer_format"] == "boxed"
    text = "Maria starts with 60 bananas and buys 24 more: 60 + 24 = 84.\n\nSo she has \\boxed{84} bananas."
    assert grade(text, problem["answer"], problem["answer_format"]).is_correct is True
    assert grade("So she has \\boxed{83} bananas.", problem["answer"], problem["answer_format"]).is_correct is False


def test_config_refuses_a_boxed_prompt_graded_by_hash():
    data = preset_params()
    data["problems"]["sources"][0]["answer_format"] = "hash"
    with pytest.raises(ValueError, match=r"problems.sources\[0\].answer_format is 'hash' but its prompt "
                                         r"'zeroshot_boxed' asks for 'boxed'"):
        parse_params(data)
    data = preset_params()
    data["prompts"]["zeroshot_boxed"].pop("answer_format")         # read from the instruction's text
    assert parse_params(data).prompts["zeroshot_boxed"].asks_for == "boxed"
    data["problems"]["sources"][1]["answer_format"] = "hash"
    with pytest.raises(ValueError, match=r"problems.sources\[1\].answer_format"):
        parse_params(data)


# --- per-dataset budgets reach the backend in every generating stage (fast) ---------------------------

class RecordingBackend(Backend):
    """Answers every request with one fixed token and EOS; records the budget of every call."""
    name = "recording"

    def __init__(self):
        self.eos_token_ids = (2,)
        self.budgets: list[tuple[int, int]] = []      # (number of requests, max_new_tokens)

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        self.budgets.append((len(requests), sampling.max_new_tokens))
        return [Generation(tuple((5, 2) for _ in range(r.n)), ("stop",) * r.n) for r in requests]


def test_budget_per_problem_in_sample_rollouts_and_experiments(tiny_tokenizer):
    from cliffdata.checkpoint import UnitCheckpoint
    from cliffdata.config.problems import PromptConfig
    from cliffdata.config.search import RolloutsConfig
    from cliffdata.experiments.ablation import run_ablation
    from cliffdata.generate.sampling import golds_by_problem, sample_traces
    from cliffdata.search.rollouts import run_rollouts

    problems = [{"problem_id": f"{d}/0", "question": "What is 1 + 1?", "answer": "2", "answer_format": "boxed",
                 "prompt": "p", "max_new_tokens": b} for d, b in (("gsm1k", 1024), ("math500", 2048), ("x", None))]
    backend = RecordingBackend()
    traces = sample_traces(problems, {"p": PromptConfig()}, tiny_tokenizer, backend, Sampling(0.6, max_new_tokens=7),
                           num_samples=1, seed=0)
    assert sorted(b for _, b in backend.budgets) == [7, 1024, 2048]     # one call per budget, None -> the stage's
    golds = golds_by_problem(problems)

    backend.budgets.clear()
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        run_rollouts(traces, golds, backend, tiny_tokenizer, RolloutsConfig(mode="exhaustive", num_rollouts=2, early_stop_zeros=0),
                     Sampling(0.7, max_new_tokens=9), UnitCheckpoint(folder), TEST)
    assert {b for _, b in backend.budgets} == {9, 1024, 2048}

    backend.budgets.clear()
    requests = [{"trace_id": t["trace_id"], "problem_id": t["problem_id"], "token_index": 0, "arm": "del",
                 "is_first": True, "is_correct": t["is_correct"], "prefix_length": 0, "cliff_trace_id": None,
                 "cliff_index": None} for t in traces]
    run_ablation(requests, traces, golds, backend, tiny_tokenizer, 2, Sampling(0.7, max_new_tokens=11), seed=0)
    assert sorted(b for _, b in backend.budgets) == [11, 1024, 2048]


# --- the rehearsal: dvc repro of the preset, end to end (slow) ----------------------------------------

#: scripted responses by question prefix: (response, expected is_correct, the cliff text or None)
def scripts(problems: list[dict]) -> dict[str, tuple[str, bool, str | None]]:
    out = {}
    for k, p in enumerate(problems):
        gold = p["answer"]
        wrong = gold.replace("{1}", "{3}") if p["dataset"] == "math500" else str(int(gold) + 1)
        if p["dataset"] == "math500" and k % 2 == 0:
            right = str(1 / int(gold.split("{")[-1].rstrip("}")))   # 0.5 for \frac{1}{2}: math-verify equivalence
        else:
            right = gold
        if k % 2 == 0:     # correct: the right box, then prose
            out[p["question"]] = (f"\\boxed{{{right}}} is the answer, since the cases are counted.", True, None)
        else:              # failed: the right box, then a wrong one (the last box wins)
            out[p["question"]] = (f"\\boxed{{{right}}}. Check again: \\boxed{{{wrong}}} it is.", False, wrong)
    return out


class ScriptedBackend(Backend):
    """Replays the scripted response of the question in each prompt (the tiny model cannot write boxes)."""
    name = "scripted"

    def __init__(self, tokenizer, responses: dict[str, str]):
        self.tokenizer, self.responses, self.eos_token_ids = tokenizer, responses, (2,)
        self.budgets: set[int] = set()

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        out = []
        self.budgets.add(sampling.max_new_tokens)
        for req in requests:
            prompt = self.tokenizer.decode(list(req.prompt_ids))
            (question,) = [q for q in self.responses if q in prompt]
            ids = tuple(self.tokenizer.encode(self.responses[question], add_special_tokens=False)) + (2,)
            out.append(Generation((ids,) * req.n, ("stop",) * req.n))
        return out


def build_eos_heavy_model(folder: Path, tokenizer) -> None:
    """A tiny random Llama that ends a continuation after ~1 token (EOS logit lifted on a constant
    residual direction), so N = 64 rollouts at the preset's 1024-4096 token budgets stay cheap."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192, bos_token_id=1,
                      eos_token_id=2, pad_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] += 20.0             # a constant direction dominates the residual
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[2, 0] = 2.5 / math.sqrt(cfg.hidden_size)   # EOS logit +2.5 everywhere
    model.generation_config.eos_token_id = 2
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run(cmd: list[str], cwd: Path) -> str:
    env = {**__import__("os").environ, "PATH": f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_paper_mode_rehearsal_end_to_end(tmp_path, monkeypatch):
    from conftest import build_tokenizer

    tokenizer = build_tokenizer(LATEX)
    model_dir = tmp_path / "scripted-tiny"
    build_eos_heavy_model(model_dir, tokenizer)

    proj = tmp_path / "proj"
    proj.mkdir()
    # champion.json: git-tracked, a cpm_shift dep; study/README.md: the study's folder (study_cpm_shift's dep)
    for name in ("dvc.yaml", ".dvcignore", "runs/champion.json", "study/README.md"):
        (proj / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, proj / name)
    for folder in ("pipeline", "cliffdata"):
        shutil.copytree(ROOT / folder, proj / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_raw(proj, num_gsm=8, num_math=8, num_aime=2)
    params = preset_params()
    sizes = {"gsm1k": 3, "math500": 3}
    for src in params["problems"]["sources"]:                       # the only change to the sources: their size
        if src["dataset"] in sizes:
            src["subset"] = sizes[src["dataset"]]
    params["model"] = {"source": str(model_dir)}
    # the study's six hub models cannot be reached here: the study's stages are rehearsed by tests/test_study.py
    params["study"]["models"] = {}
    params["engine"]["backend"] = "hf"
    params["cliff_count"]["num_problems"] = 2
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (proj / "metrics").mkdir()
    dvc = str(Path(sys.executable).parent / "dvc")
    run(["git", "init", "-q"], proj)
    run([dvc, "init", "-q"], proj)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    run([dvc, "repro", "problems", "model"], proj)
    problems = pq.read_table(proj / "data/problems/problems.parquet").to_pylist()
    assert Counter(p["dataset"] for p in problems) == {"gsm1k": 3, "math500": 3, "aime": 2}
    assert all(p["answer_format"] == "boxed" and p["max_new_tokens"] == BUDGETS[p["dataset"]] for p in problems)
    script = scripts(problems)

    # The real `sample` stage with a backend that replays the scripts; DVC records its outputs.
    backend = ScriptedBackend(tokenizer, {q: s[0] for q, s in script.items()})
    monkeypatch.setattr("cliffdata.backends.open_backend", lambda *a, **k: __import__("contextlib").nullcontext(backend))
    monkeypatch.chdir(proj)
    runpy.run_path(str(ROOT / "pipeline/sample.py"), run_name="__main__")
    assert backend.budgets == set(BUDGETS.values())                 # each dataset sampled at its own budget
    run([dvc, "commit", "-f", "sample"], proj)

    # the preset through the cliffs and the stages the Cliff-DPO pairs need (replicate, candidates): the
    # stages after them read the same datasets at every setting and are covered by tests/test_pipeline.py
    out = run([dvc, "repro", "dpo_pairs"], proj)
    assert "Running stage 'dpo_pairs'" in out and "Running stage 'sample'" not in out

    traces = {t["problem_id"]: t for t in pq.read_table(proj / "data/sample/traces.parquet").to_pylist()}
    by_question = {p["question"]: p for p in problems}
    for question, (response, is_correct, _) in script.items():
        trace = traces[by_question[question]["problem_id"]]
        assert trace["response_text"] == response and trace["is_correct"] is is_correct, (response, trace["extracted_answer"])

    # N = 64 at every scored position; cliffs exactly at the closing brace of each failed trace's last box.
    pots = pq.read_table(proj / "data/rollouts/potentials.parquet").to_pylist()
    assert {p["num_rollouts"] for p in pots if not p["is_filled"]} == {64}
    cliffs = pq.read_table(proj / "data/cliffs/cliffs.parquet").to_pylist()
    assert all(c["token_index"] >= 1 for c in cliffs)                # include_empty_prefix: false
    found = {(c["trace_id"], c["token_index"]) for c in cliffs}
    expected = set()
    for question, (response, is_correct, wrong) in script.items():
        if wrong is not None:
            trace = traces[by_question[question]["problem_id"]]
            brace = response.rindex("}")          # the last box's closing brace (char-level tokenizer: index = token)
            expected.add((trace["trace_id"], brace))
    assert expected and found == expected, (expected, found)       # and none in a correct trace
    assert {c["p_prev"] for c in cliffs} == {1.0} and {c["potential"] for c in cliffs} == {0.0}

    candidates = pq.read_table(proj / "data/candidates/candidates.parquet").to_pylist()
    assert {c["num_rollouts"] for c in candidates if not c["is_cliff_token"]} == {64}
    assert {(c["trace_id"], c["token_index"]) for c in candidates} == expected
    # any other token in place of the closing brace leaves the right box the last one: never a cliff
    assert not [c for c in candidates if not c["is_cliff_token"] and c["is_cliff"]]
    # Cliff-DPO pairs come from cliffs whose token is in the top-10 (protocol §6), rejected = the brace
    stats = {(r["trace_id"], r["token_index"]): r["rank"]
             for r in pq.read_table(proj / "data/token_stats/token_stats.parquet").to_pylist()}
    pairs = pq.read_table(proj / "data/dpo_pairs/all.parquet").to_pylist()
    assert {(p["trace_id"], p["token_index"]) for p in pairs} == {c for c in expected if stats[c] <= 10}
    assert {p["rejected_id"] for p in pairs} <= {tokenizer.convert_tokens_to_ids("}")}
    occurrence = json.loads((proj / "metrics/occurrence.json").read_text())
    assert occurrence["all"]["num_traces"] == len(problems)


def test_every_preset_file_loads_over_params():
    """Each params-*.yaml overlay names only existing keys and gives params that load."""
    from cliffdata.config.load import parse_params, read_yaml
    from cliffdata.preset import merge

    presets = sorted(ROOT.glob("params-*.yaml"))
    assert {p.name for p in presets} >= {"params-gpu.yaml", "params-decisive.yaml"}
    base = read_yaml(ROOT / "params.yaml")
    for path in presets:
        params = parse_params(merge(base, read_yaml(path)))
        assert params.problems.sources, path.name
    decisive = parse_params(merge(base, read_yaml(ROOT / "params-decisive.yaml")))
    assert sum(sum(s.families.values()) for s in decisive.problems.sources) == 96
