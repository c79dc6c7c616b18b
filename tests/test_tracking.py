"""MLflow helper: absolute SQLite default, env override, params/tags recorded; a tracking server that does not
answer stops `dpo_train`, `dpo_eval` and `cliffdata promote` in seconds with one line naming its URI."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cliffdata.tracking import (TrackingUnreachable, flatten, portable_uri, require_reachable, start_run,
                                tracking_uri)

ROOT = Path(__file__).resolve().parents[1]


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


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_server():
    """A loopback HTTP server in a thread whose /health answers with the status code the test sets."""
    answer = {"code": 200}

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answer["code"] if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answer
    server.shutdown()
    server.server_close()


def test_a_tracking_server_that_is_down_is_one_line_naming_its_uri_in_seconds():
    uri = f"http://127.0.0.1:{closed_port()}"
    begin = time.monotonic()
    with pytest.raises(TrackingUnreachable) as down:
        require_reachable(uri)
    assert time.monotonic() - begin < 5
    assert str(down.value).startswith(f"MLflow tracking server {uri} does not answer (") and "\n" not in str(down.value)
    with pytest.raises(TrackingUnreachable, match="http://127.0.0.1:1 does"):       # no password shown
        require_reachable("http://alice:s3cret@127.0.0.1:1")
    require_reachable("sqlite:////nowhere/mlflow.db")                                # a local store: no check


def test_a_server_answers_health_or_is_named(http_server):
    uri, answer = http_server
    require_reachable(uri)
    require_reachable(uri + "/")
    answer["code"] = 401                             # asks for credentials: it answers, MLflow's client checks them
    require_reachable(uri)
    answer["code"] = 503
    with pytest.raises(TrackingUnreachable, match=r"\(HTTP 503 at /health\)"):
        require_reachable(uri)
    with pytest.raises(TrackingUnreachable, match=r"\(HTTP 404 at /health\)"):      # not MLflow at that path
        require_reachable(uri + "/elsewhere")


def test_promote_stops_before_any_work_when_the_server_is_down(monkeypatch, tmp_path, capsys):
    from cliffdata.cli import main

    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["promote", "--params", str(tmp_path / "params.yaml")]) == 2      # no params.yaml: not read
    err = capsys.readouterr().err
    assert err.startswith(f"cliffdata promote: MLflow tracking server {uri} does not answer") and err.count("\n") == 1


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["dpo_train", "dpo_eval"])
def test_a_training_stage_stops_before_any_work_when_the_server_is_down(stage, tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / f"pipeline/{stage}.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""          # in an empty folder: no params, no data, no model read
    assert done.stderr.startswith(f"{stage}: MLflow tracking server {uri} does not answer (")    # (connection refused)
    assert done.stderr.endswith("start it (make services) or unset MLFLOW_TRACKING_URI for the project's own store\n")
    assert done.stderr.count("\n") == 1


def test_portable_uri_keeps_no_machine_path_or_password(tmp_path):
    assert portable_uri(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path) == "sqlite:///mlflow.db"
    assert portable_uri(f"sqlite:///{tmp_path / 'sub/x.db'}", tmp_path) == "sqlite:///sub/x.db"
    assert portable_uri("sqlite:////elsewhere/m.db", tmp_path) == "sqlite:////elsewhere/m.db"
    assert portable_uri("http://ann:secret@mlflow.team:5000/x") == "http://mlflow.team:5000/x"
    assert portable_uri("databricks") == "databricks"
