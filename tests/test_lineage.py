"""Lineage that survives a colleague's clone. The author has reproduced the tiny pipeline with a trained
adapter (`tiny_pipeline`, a session fixture whose MLflow store is its own mlflow.db), commits and `dvc push`es;
a colleague clones, `dvc pull`s and, with an empty store, re-runs the stages that touch MLflow and promotes
a champion; then the team path: both on one shared store named by MLFLOW_TRACKING_URI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import dvc, env, run

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
    recorded = list((colleague / "runs/dpo_train").glob("*.json"))          # every variant's, in training order
    assert len([r for r in runs if "cliffdata.restored_from" in r.data.tags]) == len(recorded)
    assert sum(r.data.tags.get("mlflow.runName") == "dpo_eval" for r in runs) == 2
    assert not (colleague / "mlflow.db").exists()


def md5s(proj: Path) -> dict[str, str]:
    """Every file under the DVC outputs of the lock (data, models, metrics), by path: what a pull must match."""
    import hashlib

    import yaml

    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    outs = sorted({o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])})
    files = [f for out in outs for f in ([proj / out] if (proj / out).is_file() else sorted((proj / out).rglob("*")))
             if f.is_file()]
    return {str(f.relative_to(proj)): hashlib.md5(f.read_bytes()).hexdigest() for f in files}


def test_the_team_path_on_a_real_object_store_and_tracking_server(tiny_pipeline, services, tmp_path):
    """The author trains, evaluates and promotes against the MLflow server and pushes to the S3 store; a
    colleague (another directory, another HOME) pulls every output byte for byte, finds nothing to
    reproduce, queries it, and re-evaluates against the same server, linked to the same model versions."""
    import uuid

    import mlflow

    from cliffdata.dpo.registry import CHAMPION

    team = {**services.env, "DVC_REMOTE": f"s3://{services.bucket}/{uuid.uuid4().hex}"}     # a prefix of its own
    author = tmp_path / "author"
    shutil.copytree(tiny_pipeline, author, symlinks=True)
    (author / "mlflow.db").unlink()
    shutil.rmtree(author / "mlartifacts", ignore_errors=True)
    for cmd in services.dvc_commands("team"):                         # .dvc/config.local: never committed
        dvc(author, *cmd.split()[1:])
    dvc(author, "remote", "modify", "--local", "team", "url", team["DVC_REMOTE"])
    out = dvc(author, "repro", "-f", "-s", "dpo_train", "dpo_eval", **team)
    assert "Running stage 'dpo_train'" in out and "Running stage 'dpo_eval'" in out
    cliffdata(author, "promote", **team)
    dvc(author, "repro", **team)                                         # cpm_shift reads the champion
    dvc(author, "push", **team)
    git(author, "add", "-A")
    git(author, "commit", "-q", "-m", "the author's run")
    assert not (author / "mlflow.db").exists()                        # nothing but the server was written
    records = {p.stem: json.loads(p.read_text()) for p in (author / "runs/dpo_train").glob("*.json")}
    assert {r["tracking_uri"] for r in records.values()} == {services.tracking_uri}

    colleague, home = tmp_path / "colleague", tmp_path / "colleague-home"
    home.mkdir()
    mate = {**team, "HOME": str(home)}
    run(["git", "clone", "-q", str(author), str(colleague)], tmp_path, **mate)
    for cmd in services.dvc_commands("team"):
        dvc(colleague, *cmd.split()[1:], **mate)
    dvc(colleague, "remote", "modify", "--local", "team", "url", team["DVC_REMOTE"], **mate)
    dvc(colleague, "pull", **mate)
    assert md5s(colleague) == md5s(author)
    assert "up to date" in dvc(colleague, "status", **mate)
    assert "Running stage" not in dvc(colleague, "repro", **mate)
    from cliffdata import schema

    traces = schema.read("traces", colleague / schema.PATHS["traces"]).num_rows
    query = subprocess.run([str(Path(sys.executable).parent / "cliffdata"), "sql", "--format", "json",
                            "select count(*) as n from traces"], cwd=colleague, env=env(**mate), capture_output=True,
                           text=True, check=True)
    assert json.loads(query.stdout) == [{"n": traces}]
    cliffdata(colleague, "report", **mate)
    assert (colleague / "reports/index.html").is_file()

    client = mlflow.MlflowClient(tracking_uri=services.tracking_uri)       # the registry over HTTP
    name = records["all"]["registered_model"]
    versions = {v.version: v for v in client.search_model_versions(f"name = '{name}'")}
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.run_id == records["all"]["run_id"] and champion.version in versions
    dvc(colleague, "repro", "-f", "-s", "dpo_eval", **mate)
    assert not (colleague / "mlflow.db").exists()
    experiment = client.get_experiment_by_name("cliff-dpo").experiment_id
    runs = client.search_runs([experiment])
    assert not [r for r in runs if "cliffdata.restored_from" in r.data.tags]      # nothing to restore: one store
    evals = [r for r in runs if r.data.tags.get("mlflow.runName") == "dpo_eval"]
    assert len(evals) == 2                                              # the author's and the colleague's
    trained = client.get_run(records["all"]["run_id"])
    assert trained.data.tags["dpo_eval_run_id"] == max(evals, key=lambda r: r.info.start_time).info.run_id
    assert {v.version: v.run_id for v in client.search_model_versions(f"name = '{name}'")} == \
        {k: v.run_id for k, v in versions.items()}                         # the same versions, no new one
