"""Lineage that survives a colleague's clone. The author has reproduced the tiny pipeline with a trained
adapter (`tiny_pipeline`, a session fixture whose MLflow store is its own mlflow.db), commits and `dvc push`es;
a colleague clones, `dvc pull`s and, with an empty store, re-runs the stages that touch MLflow and promotes
a champion; then the team path: both on one shared store named by MLFLOW_TRACKING_URI."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers import dvc, run

pytestmark = pytest.mark.slow
VARIANT_OUTPUTS = ("metrics/dpo_eval.json", "data/dpo_eval/dpo_eval.parquet", "metrics/cpm_shift.json",
                   "data/cpm_shift/cpm_shift.parquet", "metrics/cliff_count.json")


def git(proj: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], proj)


def cliffdata(proj: Path, *args: str, **env: str | None) -> str:
    return run([str(Path(sys.executable).parent / "cliffdata"), *args], proj, **env)


def registry_state(uri: str, name: str) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        champion = None
    return {"versions": len(client.search_model_versions(f"name = '{name}'")),
            "champion": champion.tags.get("variant") if champion else None}


def test_a_clone_with_an_empty_store_and_a_team_store(tiny_pipeline, tmp_path):
    author = tmp_path / "author"              # a copy of the session fixture's run, `all` trained: the fixture stays as it is
    shutil.copytree(tiny_pipeline, author, symlinks=True)
    remote = tmp_path / "dvc-remote"
    assert "all" in json.loads((author / "metrics/dpo_eval.json").read_text())["models"]
    dvc(author, "remote", "add", "-f", "-d", "team", str(remote))
    dvc(author, "push")
    git(author, "add", "-A")
    git(author, "commit", "-q", "-m", "the author's run", "--allow-empty")
    assert (author / "mlflow.db").exists()
    before = {p: (author / p).read_bytes() for p in VARIANT_OUTPUTS}

    colleague = tmp_path / "colleague"
    run(["git", "clone", "-q", str(author), str(colleague)], tmp_path)
    dvc(colleague, "pull")
    assert not (colleague / "mlflow.db").exists()                       # an empty store: none at all
    record = json.loads((colleague / "runs/dpo_train/all.json").read_text())   # names a run only the author has

    out = dvc(colleague, "repro", "-s", "-f", "dpo_eval", "cliff_count", "cpm_shift", MLFLOW_TRACKING_URI=None)
    assert "Running stage 'dpo_eval'" in out and "Running stage 'cpm_shift'" in out
    for path in VARIANT_OUTPUTS:                                         # the same results as the author's
        assert (colleague / path).read_bytes() == before[path], path
    store = f"sqlite:///{colleague / 'mlflow.db'}"                       # the clone's own, not the author's
    name = json.loads((colleague / "runs/dpo_train/all.json").read_text())["registered_model"]
    import mlflow

    restored = mlflow.MlflowClient(tracking_uri=store).search_runs(
        [mlflow.MlflowClient(tracking_uri=store).get_experiment_by_name("cliff-dpo").experiment_id],
        f"tags.`cliffdata.restored_from` = '{record['run_id']}'")
    assert len(restored) == 1 and "eval_accuracy" in restored[0].data.metrics

    promoted = cliffdata(colleague, "promote", MLFLOW_TRACKING_URI=None)
    champion = json.loads((colleague / "runs/champion.json").read_text())
    scores = {v: c["accuracy"] for v, c in json.loads(before["metrics/dpo_eval.json"])["models"].items() if v != "base"}
    assert champion["variant"] == min(scores, key=lambda v: (-scores[v], v)) and champion["variant"] in promoted
    assert registry_state(store, name)["champion"] == champion["variant"]
    assert registry_state(f"sqlite:///{author / 'mlflow.db'}", name)["champion"] is None   # the author's store untouched
    # the promotion is a git-tracked dep of cpm_shift: it re-runs and reads the champion
    status = dvc(colleague, "status", "cpm_shift")
    assert "runs/champion.json" in status
    dvc(colleague, "repro", "cpm_shift", MLFLOW_TRACKING_URI=None)
    resolved = json.loads((colleague / "metrics/cpm_shift.json").read_text())["eval_models"]
    assert resolved == {"champion": f"adapter:{champion['variant']}"}

    # The team path: one MLflow store for everyone (a server in practice; a SQLite file by URI here).
    # The clone's dpo_eval mirrors into it, restoring each evaluated adapter's run once; a second run
    # restores nothing again, and nothing is written beside the project.
    team = f"sqlite:///{tmp_path / 'team.db'}"
    (colleague / "mlflow.db").unlink()
    for _ in range(2):
        dvc(colleague, "repro", "-s", "-f", "dpo_eval", MLFLOW_TRACKING_URI=team)
    client = mlflow.MlflowClient(tracking_uri=team)
    runs = client.search_runs([client.get_experiment_by_name("cliff-dpo").experiment_id])
    evaluated = json.loads((colleague / "metrics/dpo_eval.json").read_text())["models"]
    assert len([r for r in runs if "cliffdata.restored_from" in r.data.tags]) == len(evaluated) - 1
    assert sum(r.data.tags.get("mlflow.runName") == "dpo_eval" for r in runs) == 2
    assert not (colleague / "mlflow.db").exists()
