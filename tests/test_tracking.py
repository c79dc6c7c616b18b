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
