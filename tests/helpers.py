"""What several test modules share: the tiny pipeline project (params, a temp git + DVC project, the
preference pairs its training stages learn from) and running its commands (`run`, `dvc`) in the stages'
environment."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_params(model_dir: Path, num_problems: int) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["problems"]["sources"] = [{"dataset": "arith", "seed": 0, "families": {"add1": num_problems},
                                      "family_prompts": {"add1": "add2_oneshot"}, "prompt": "add2_oneshot",
                                      "answer_format": "hash"}]
    params["model"] = {"source": str(model_dir)}
    params["engine"].update(backend="hf", dtype="float32", hf_max_batch=64)
    params["sample"]["sampling"].update(temperature=1.0, max_new_tokens=10)
    params["rollouts"].update(num_rollouts=4, positions_per_batch=3, early_stop_zeros=0, traces_per_wave=2)
    params["rollouts"]["sampling"].update(max_new_tokens=4)
    params["rollouts"]["adaptive"].update(initial_rollouts=2, grid_points=4)
    params["ablation"].update(num_rollouts=4, ks=[1, 2, 4])
    params["ablation"]["sampling"].update(max_new_tokens=4)
    params["candidates"].update(top_k=3, num_rollouts=4)
    params["candidates"]["sampling"].update(max_new_tokens=4)
    params["dpo_pairs"].update(top_k=3)
    # the category variants are one code path: keep one, the empty one, and the noise-audit ones, replicated / random
    params["dpo_train"].update(batch_size=4, epochs=1, lora_r=4, lora_alpha=8,
                               variants=["all", "deterministic", "replicated", "random"])
    params["cpm_shift"]["fallback"] = "adapter:all"              # a trained variant (the default's is not here)
    params["dpo_eval"]["sources"] = [{"dataset": "arith", "seed": 1, "families": {"add1": 4},
                                      "prompt": "add2_oneshot", "answer_format": "hash"}]
    params["dpo_eval"].update(max_new_tokens=6, bootstrap_resamples=200)
    params["cliff_count"].update(num_problems=2, num_rollouts=4)
    params["risk_labels"]["hidden"].update(layer=1)                     # the tiny model has two layers
    return params


def make_project(tmp: Path, model_dir: Path, num_problems: int, mode: str = "forks") -> Path:
    proj = tmp / "proj"
    proj.mkdir()
    # champion.json: nothing promoted yet; study/README.md: the study's folder (a dep of its cross-model stages)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "runs/champion.json", "study/README.md"):
        (proj / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, proj / name)
    for folder in ("pipeline", "cliffdata"):
        shutil.copytree(ROOT / folder, proj / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = tiny_params(model_dir, num_problems)
    params["rollouts"]["mode"] = mode
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (proj / "metrics").mkdir()
    # metrics/seeds.json (a dependency of the summary): the project's, whose seeds are of other params
    shutil.copy(ROOT / "metrics/seeds.json", proj / "metrics/seeds.json")
    run(["git", "init", "-q"], proj)
    run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], proj)
    return proj


def pair_row(variant: str, token_index: int, prompt_ids: list[int], chosen_id: int, rejected_id: int, split: str,
             trace_id: str = "t", problem_id: str = "p", is_correct: bool = False) -> dict:
    """One dpo_pairs row: at an uncertain cliff (strategy cliff_1N), `chosen_id` (rank 2, potential 1) over
    `rejected_id` (rank 1, potential 0) after `prompt_ids`."""
    return {"trace_id": trace_id, "problem_id": problem_id, "token_index": token_index, "category": "uncertain",
            "variant": variant, "strategy": "cliff_1N", "is_correct": is_correct, "prompt_ids": prompt_ids,
            "chosen_id": chosen_id, "rejected_id": rejected_id, "chosen_rank": 2, "rejected_rank": 1,
            "chosen_prob": 0.2, "rejected_prob": 0.5, "chosen_potential": 1.0, "rejected_potential": 0.0,
            "p_prev": 1.0, "split": split}


def seed_pairs(proj: Path) -> None:
    """Give the `all` variant six preference pairs at the longest trace's first tokens, as if its dpo_pairs
    stage had found them (the tiny run finds no cliff: its N = 4 is below `cliffs.test.min_rollouts`, so no
    pair is tested and no variant would train), and accept them with `dvc commit`: the stages after
    dpo_pairs then train, evaluate and register a real adapter."""
    from cliffdata import schema
    from cliffdata.dpo.pairs import to_trl

    trace = max(schema.read("traces", proj / schema.PATHS["traces"]).to_pylist(), key=lambda t: len(t["response_ids"]))
    rows = [pair_row("all", i, trace["prompt_ids"] + trace["response_ids"][:i], 40 + i, trace["response_ids"][i],
                     "train" if i < 3 else "heldout", trace_id=trace["trace_id"], problem_id=trace["problem_id"],
                     is_correct=trace["is_correct"]) for i in range(min(6, len(trace["response_ids"])))]
    schema.write("dpo_pairs", rows, proj / "data/dpo_pairs/all.parquet")
    schema.write("dpo_trl", to_trl(rows), proj / "data/dpo_pairs/all.trl.parquet")
    dvc(proj, "commit", "-f", "dpo_pairs")


def env(**overrides: str | None) -> dict:
    """The stages' environment; an override of None removes the variable (MLFLOW_TRACKING_URI=None: the
    project's own store, mlflow.db in the folder the command runs in)."""
    out = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for key, value in overrides.items():
        out.pop(key, None) if value is None else out.__setitem__(key, value)
    return out


def run(cmd: list[str], cwd: Path, **overrides: str | None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env(**overrides), capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def dvc(proj: Path, *args: str, **overrides: str | None) -> str:
    return run([str(Path(sys.executable).parent / "dvc"), *args], proj, **overrides)


def out_hashes(proj: Path) -> dict:
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])
            if not o["path"].endswith("rollout_traces.parquet") and not o["path"].startswith("runs/")}


def shell_commands(text: str) -> list[str]:
    """Every command line of a page's shell blocks (indented ones too), comments removed, continuations joined."""
    lines = []
    for block in re.findall(r"^[ \t]*```(?:bash|sh|shell|console)\n(.*?)^[ \t]*```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
            if command:
                lines.append(command)
    return lines
