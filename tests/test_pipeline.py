"""End to end: `dvc repro` of the whole pipeline on a tiny config in a temp project, a no-op re-run,
byte-stable outputs under `dvc repro -f`, and a SIGKILLed rollouts stage that resumes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


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
    # the category variants are one code path: keep one, the empty one, and the [G] replicated / random ones
    params["dpo_train"].update(batch_size=4, epochs=1, lora_r=4, lora_alpha=8,
                               variants=["all", "deterministic", "replicated", "random"])
    params["cpm_shift"]["fallback"] = "adapter:all"              # a trained variant (the default's is not here)
    params["dpo_eval"]["sources"] = [{"dataset": "arith", "seed": 1, "families": {"add1": 4},
                                      "prompt": "add2_oneshot", "answer_format": "hash"}]
    params["dpo_eval"].update(max_new_tokens=6, bootstrap_resamples=200)
    params["cliff_count"].update(num_problems=2, num_rollouts=4)
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
    run(["git", "init", "-q"], proj)
    run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], proj)
    return proj


def env(**overrides: str | None) -> dict:
    """The stages' environment; an override of None removes the variable (MLFLOW_TRACKING_URI=None: the
    project's own store, mlflow.db in the folder the command runs in)."""
    out = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for key, value in overrides.items():
        out.pop(key, None) if value is None else out.__setitem__(key, value)
    return out


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch):
    """Stages that log to MLflow (dpo_train, dpo_eval) write to a store in the test's temp dir."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


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


def test_dvc_repro_end_to_end(tiny_pipeline):
    proj = tiny_pipeline                    # make_project + dvc repro, shared with tests/test_lineage.py
    for path in ("data/problems/problems.parquet", "data/sample/traces.parquet", "data/token_stats/token_stats.parquet",
                 "data/rollouts/potentials.parquet", "data/cliffs/cliffs.parquet", "data/cliffs/trace_cliffs.parquet",
                 "metrics/occurrence.json", "metrics/taxonomy.json", "metrics/occurrence.md",
                 "data/ablation/pass_at_k.parquet", "data/candidates/candidates.parquet", "metrics/cpm.json",
                 "plots/pass_at_k.csv"):
        assert (proj / path).exists(), path
    pots = pq.read_table(proj / "data/rollouts/potentials.parquet")
    traces = pq.read_table(proj / "data/sample/traces.parquet")
    assert pots.num_rows == sum(len(r) for r in traces.column("response_ids").to_pylist())   # -1 … T-2 per trace
    occurrence = json.loads((proj / "metrics/occurrence.json").read_text())
    assert occurrence["all"]["num_traces"] == 3
    rollouts = json.loads((proj / "metrics/rollouts.json").read_text())       # estimate vs actual ([E])
    assert rollouts["estimated_generated_tokens"] > 0 and rollouts["estimate_ratio"] > 0
    report = json.loads((proj / "metrics/report.json").read_text())
    assert report["num_pages"] == 3 and (proj / "reports/index.html").exists()
    assert (proj / "reports" / report["largest_page"]).stat().st_size == report["largest_page_bytes"]

    first = out_hashes(proj)
    again = dvc(proj, "repro")
    assert "didn't change, skipping" in again and "Running stage" not in again
    dvc(proj, "repro", "-f")
    assert out_hashes(proj) == first, "outputs are not byte-stable for a fixed seed"

    # The CLI reads the same datasets.
    out = run([str(Path(sys.executable).parent / "cliffdata"), "sql", "select count(*) as n from potentials"], proj)
    assert str(pots.num_rows) in out

    # Two rollout shards (DVC matrix rollouts@0, rollouts@1) merge to the same bytes; later stages skip.
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["rollouts"].update(shards=2, shard_ids=[0, 1])
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(proj, "repro")
    assert "Running stage 'rollouts@1'" in out and "Running stage 'rollouts_merge'" in out
    assert "Running stage 'cliffs'" not in out
    shard_rows = [pq.read_table(proj / f"data/rollouts/shards/{s}/potentials.parquet").num_rows for s in (0, 1)]
    assert all(shard_rows) and sum(shard_rows) == pots.num_rows
    assert out_hashes(proj)["data/rollouts/potentials.parquet"] == first["data/rollouts/potentials.parquet"]


@pytest.mark.parametrize("mode", ["exhaustive", "adaptive", "forks"])
def test_sigkilled_rollouts_resume_to_identical_potentials(tmp_path, tiny_model_dir, mode):
    proj = make_project(tmp_path, tiny_model_dir, num_problems=10, mode=mode)
    dvc(proj, "repro", "rollouts_merge")              # the reference potentials: the stages up to them, no more
    reference = pq.read_table(proj / "data/rollouts/potentials.parquet")
    shard = proj / "data/rollouts/shards/0/potentials.parquet"    # the single shard's own output

    shard.unlink()
    proc = subprocess.Popen([sys.executable, "pipeline/rollouts.py", "--shard", "0"], cwd=proj, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((proj / ".cache/rollouts").glob("*/*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((proj / ".cache/rollouts").glob("*/*.json")))
    assert 3 <= done < 10, f"kill came too late or too early ({done} traces done)"
    assert not shard.exists()

    out = run([sys.executable, "pipeline/rollouts.py", "--shard", "0"], proj)
    # a wave (2 traces here) is saved trace by trace and skipped only whole: a kill between its two
    # saves leaves one trace of it, which the resumed run searches again with its wave
    assert f"resuming: {done - done % 2} of 10 traces already" in out
    run([sys.executable, "pipeline/rollouts_merge.py"], proj)
    resumed = pq.read_table(proj / "data/rollouts/potentials.parquet")
    assert resumed.equals(reference)
    assert not list((proj / ".cache/rollouts").glob("*/*.json")), "checkpoint folder not cleaned after success"
