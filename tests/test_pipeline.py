"""End to end: `dvc repro` of the whole pipeline on a tiny config in a temp project (`tiny_pipeline`,
a session fixture), a no-op re-run, byte-stable outputs of the stages that sample, two rollout shards
that merge to the same bytes, and a SIGKILLed rollouts stage that resumes."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from helpers import dvc, env, out_hashes, run

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch):
    """Stages that log to MLflow (dpo_train, dpo_eval) write to a store in the test's temp dir."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_dvc_repro_end_to_end(tiny_pipeline, tmp_path):
    outputs = tiny_pipeline                 # the session fixture's dvc repro, as it left it (shared, never changed)
    for path in ("data/problems/problems.parquet", "data/sample/traces.parquet", "data/token_stats/token_stats.parquet",
                 "data/rollouts/potentials.parquet", "data/cliffs/cliffs.parquet", "data/cliffs/trace_cliffs.parquet",
                 "metrics/occurrence.json", "metrics/taxonomy.json", "metrics/occurrence.md",
                 "data/ablation/pass_at_k.parquet", "data/candidates/candidates.parquet", "metrics/cpm.json",
                 "plots/pass_at_k.csv"):
        assert (outputs / path).exists(), path
    pots = pq.read_table(outputs / "data/rollouts/potentials.parquet")
    traces = pq.read_table(outputs / "data/sample/traces.parquet")
    assert pots.num_rows == sum(len(r) for r in traces.column("response_ids").to_pylist())   # -1 … T-2 per trace
    occurrence = json.loads((outputs / "metrics/occurrence.json").read_text())
    assert occurrence["all"]["num_traces"] == 3
    rollouts = json.loads((outputs / "metrics/rollouts.json").read_text())       # estimate vs actual
    assert rollouts["estimated_generated_tokens"] > 0 and rollouts["estimate_ratio"] > 0
    report = json.loads((outputs / "metrics/report.json").read_text())
    assert report["num_pages"] == 3 and (outputs / "reports/index.html").exists()
    assert (outputs / "reports" / report["largest_page"]).stat().st_size == report["largest_page_bytes"]

    proj = tmp_path / "proj"                # a copy for everything that re-runs or changes params
    shutil.copytree(outputs, proj, symlinks=True)
    first = out_hashes(proj)
    again = dvc(proj, "repro")
    assert "didn't change, skipping" in again and "Running stage" not in again
    # byte-stable for a fixed seed: the stages that draw samples, re-run on their own (the rollouts are
    # re-run below, as two shards that must merge to the same bytes)
    dvc(proj, "repro", "-f", "-s", "sample", "ablation")
    again = out_hashes(proj)
    for path in ("data/sample", "data/ablation", "plots/pass_at_k.csv"):
        assert again[path] == first[path], f"{path} is not byte-stable for a fixed seed"
    assert again == first

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
def test_sigkilled_rollouts_resume_to_identical_potentials(tiny_pipeline, tmp_path, mode):
    """From the session fixture's upstream outputs (traces, token stats), with the search mode and one trace per
    wave set: a full run gives the reference; a run killed after its first saved trace resumes from the
    checkpoint to the same potentials, and leaves no checkpoint behind."""
    proj = tmp_path / "proj"
    shutil.copytree(tiny_pipeline, proj, symlinks=True)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["rollouts"].update(mode=mode, traces_per_wave=1, num_rollouts=16)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = [sys.executable, "pipeline/rollouts.py", "--shard", "0"]
    run(stage, proj)
    run([sys.executable, "pipeline/rollouts_merge.py"], proj)
    reference = pq.read_table(proj / "data/rollouts/potentials.parquet")
    num_traces = pq.read_metadata(proj / "data/sample/traces.parquet").num_rows
    shard = proj / "data/rollouts/shards/0/potentials.parquet"    # the single shard's own output

    shard.unlink()
    proc = subprocess.Popen(stage, cwd=proj, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((proj / ".cache/rollouts").glob("*/*.json")) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((proj / ".cache/rollouts").glob("*/*.json")))
    assert 1 <= done < num_traces, f"kill came too late or too early ({done} of {num_traces} traces done)"
    assert not shard.exists()

    out = run(stage, proj)
    assert f"resuming: {done} of {num_traces} traces already" in out
    run([sys.executable, "pipeline/rollouts_merge.py"], proj)
    resumed = pq.read_table(proj / "data/rollouts/potentials.parquet")
    assert resumed.equals(reference)
    assert not list((proj / ".cache/rollouts").glob("*/*.json")), "checkpoint folder not cleaned after success"
