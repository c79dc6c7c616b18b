"""MLflow helper: a local SQLite store at an absolute path by default, a server by URI.

    with start_run("cliff-dpo", "dpo_train", params={...}) as run: ...

`MLFLOW_TRACKING_URI` overrides the default `sqlite:///<project>/mlflow.db`, where <project> is the
folder the command runs in (DVC runs stages in the project root), never the installed package's
folder: two checkouts sharing one editable install keep two stores. The path is absolute: `dvc exp
run --temp` runs in a temp clone, where a relative store would be lost with the clone.
An HTTP(S) store is checked first (`require_reachable`, `preflight`): a stage that would train for minutes
and then fail to log stops in seconds instead, naming the URI.
The store mirrors what DVC tracks (cliffdata.dpo.registry.training_run restores a run a clone's
store lacks); registration and promotion stay out of the pipeline (promotion is a decision).
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

def tracking_uri(root: str | Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else an absolute SQLite file in the project root (`root`, default
    the current directory)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(root or Path.cwd()).resolve() / 'mlflow.db'}"


def portable_uri(uri: str, root: str | Path | None = None) -> str:
    """A tracking URI as a committed record holds it: a SQLite store inside the project `root` relative to
    it (`sqlite:///mlflow.db`: every clone's own store, not the author's path), a server's without its
    password, anything else as it is."""
    import urllib.parse

    if uri.startswith("sqlite:///"):
        path, base = Path(uri.removeprefix("sqlite:///")), Path(root or Path.cwd()).resolve()
        return f"sqlite:///{path.relative_to(base)}" if path.is_relative_to(base) else uri
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return uri


class TrackingUnreachable(ConnectionError):
    """The tracking server does not answer: one line naming its URI."""


def require_reachable(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail in seconds, before any model work, when the store is an HTTP(S) server whose `<uri>/health` does
    not answer (down, wrong port, not MLflow); a local SQLite store needs no check. A server that asks for
    credentials (401, 403) answers: MLflow's client checks those. The URI is named without its password."""
    import urllib.error
    import urllib.parse
    import urllib.request

    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    shown = portable_uri(uri)
    try:
        with urllib.request.urlopen(f"{shown.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            why = f"HTTP {response.status} at /health"
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return
        why = f"HTTP {e.code} at /health"
    except (urllib.error.URLError, OSError) as e:
        why = str(getattr(e, "reason", e))
    raise TrackingUnreachable(f"MLflow tracking server {shown} does not answer ({why}): start it (make services) "
                              f"or unset MLFLOW_TRACKING_URI for the project's own store")


def preflight(stage: str, uri: str | None = None) -> None:
    """`require_reachable` for a stage's entrypoint: its one-line error as the stage's exit message."""
    try:
        require_reachable(uri)
    except TrackingUnreachable as e:
        raise SystemExit(f"{stage}: {e}") from None


def git_commit(root: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or Path.cwd(), capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return out.stdout.strip() or None


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow's flat `a.b.c` keys (values as strings, MLflow's limit 6000 chars)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


@contextmanager
def start_run(experiment: str, run_name: str, params: dict | None = None, tags: dict | None = None,
              root: str | Path | None = None):
    """An MLflow run with params, the git commit and the DVC experiment name (when DVC sets it)."""
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and mlflow.MlflowClient().get_experiment_by_name(experiment) is None:
        # artifacts beside the store, at an absolute path: MLflow's default is ./mlruns of the current
        # directory, which `dvc exp run --temp` (a temp clone) would throw away with the clone
        store = Path(uri.removeprefix("sqlite:///"))
        mlflow.MlflowClient().create_experiment(experiment, artifact_location=(store.parent / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment)
    run_tags = {"git_commit": git_commit(root) or "unknown", **(tags or {})}
    if os.environ.get("DVC_EXP_NAME"):
        run_tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        run_tags["dvc.baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    with mlflow.start_run(run_name=run_name, tags=run_tags) as run:
        if params:
            flat = flatten(params)
            keys = sorted(flat)
            for i in range(0, len(keys), 100):   # MLflow caps a batch at 100 params
                mlflow.log_params({k: flat[k] for k in keys[i:i + 100]})
        yield run


def log_history(run_id: str, history: list[dict], prefix: str = "train/") -> None:
    """Per-step metrics (dicts with a `step` key) in batched `log_batch` calls (1000 values each)."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"{prefix}{k}", float(v), now, int(h["step"])) for h in history for k, v in h.items()
               if k != "step"]
    client = mlflow.MlflowClient()
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def log_metrics(metrics: dict[str, float]) -> None:
    """Final metrics of the active run (None values skipped)."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
