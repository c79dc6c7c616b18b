"""MLflow helper: absolute SQLite default, env override, params/tags recorded."""
from __future__ import annotations

import pytest

from cliffdata.tracking import flatten, start_run, tracking_uri


def test_default_uri_is_absolute_sqlite(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_flatten_nested_params():
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {"a.b": "1", "a.c.d": "x", "e": "[1, 2]"}


@pytest.mark.slow
def test_run_records_params_and_tags(monkeypatch, tmp_path):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    with start_run("unit", "stage", params={"rollouts": {"num_rollouts": 16}}, root=tmp_path) as run:
        mlflow.log_metric("loss", 0.5, step=1)
    stored = mlflow.MlflowClient(tracking_uri(tmp_path)).get_run(run.info.run_id)
    assert stored.data.params == {"rollouts.num_rollouts": "16"}
    assert stored.data.tags["dvc.exp_name"] == "exp-1" and "git_commit" in stored.data.tags
    assert stored.data.metrics["loss"] == 0.5
    assert (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_artifacts_go_beside_the_store_and_history_is_batched(monkeypatch, tmp_path):
    import mlflow

    from cliffdata.tracking import log_history

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "repo"
    store.mkdir()
    with start_run("unit-artifacts", "stage", root=store) as run:
        log_history(run.info.run_id, [{"step": s, "loss": 1.0 / s, "margin": 0.1 * s} for s in range(1, 1201)])
    client = mlflow.MlflowClient(tracking_uri(store))
    assert client.get_experiment_by_name("unit-artifacts").artifact_location == (store / "mlartifacts").as_uri()
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == 1200 and sorted(m.step for m in history)[:2] == [1, 2]
