"""The team's services on loopback (cliffdata/services.py): the S3 store round-trips an object, the MLflow
server keeps a run's artifact in the store, a second start finds both up, a port another program holds is
named, and `stop` leaves nothing running, signalling only the processes it recorded. Then the faults of a
DVC S3 remote: DVC's own words for a wrong key, a missing bucket and a store that is down, and the
project's preflight (cliffdata/remote.py) naming each in one line.

The servers are started once (the session fixture `services_root`, tests/conftest.py) on free ports;
`test_stop_leaves_nothing_running` stops them and runs last.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

from cliffdata.procs import group, members, spawn, terminate
from cliffdata.services import (S3_CONFIG, Ports, ServicesError, keys, main, read_state, resolve_root, start,
                                status, stop)
from helpers import env, run

DVC = str(Path(sys.executable).parent / "dvc")


def services_installed() -> str | None:
    """Why `start` cannot run here (boto3 or the `weed` binary missing), or None."""
    import importlib.util

    from cliffdata.services import weed_binary

    if importlib.util.find_spec("boto3") is None:
        return "boto3 is not installed"
    try:
        weed_binary()
    except ServicesError as e:
        return str(e)
    return None


needs_services = pytest.mark.skipif(services_installed() is not None, reason=f"{services_installed()}")


def listens(port: int) -> bool:
    """Whether something accepts connections on the port (a free port may be another program's client end)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the root, in process ------------------------------------------------------------------------------------

def test_keys_are_made_once_at_random_and_private(tmp_path):
    (tmp_path / "a").mkdir()
    first = keys(tmp_path / "a", create=True)
    assert keys(tmp_path / "a") == first                         # kept: the store's identities file
    assert (tmp_path / "a" / S3_CONFIG).stat().st_mode & 0o777 == 0o600
    (tmp_path / "b").mkdir()
    assert keys(tmp_path / "b", create=True) != first            # made at random, never a key of the repository
    with pytest.raises(ServicesError, match="no services in .* yet"):
        keys(tmp_path / "c")


def test_a_root_inside_the_repository_is_refused():
    with pytest.raises(ServicesError, match="inside the repository"):
        resolve_root(Path(__file__).parent / "services-root")


@needs_services
def test_a_port_another_program_holds_is_named_in_one_line(tmp_path, capsys):
    ports = Ports.free()
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", ports.s3))
        foreign.listen()
        with pytest.raises(ServicesError) as refused:
            start(tmp_path / "root", ports)
        assert str(refused.value) == (f"port {ports.s3} on 127.0.0.1 (SeaweedFS S3, s3) is taken by another program: "
                                      f"free it or choose another with --s3-port")
        assert main(["start", "--root", str(tmp_path / "root"), "--s3-port", str(ports.s3)]) == 2
    err = capsys.readouterr().err
    assert err == f"cliffdata services start: {refused.value}\n"
    assert not (tmp_path / "root" / "services.json").exists()              # nothing started, nothing recorded


# --- stop signals only what it recorded ----------------------------------------------------------------------

def wait_for(path: Path, text: str, seconds: float = 30) -> None:
    until = time.monotonic() + seconds
    while text not in (path.read_text() if path.exists() else "") and time.monotonic() < until:
        time.sleep(0.05)


@pytest.mark.integration
def test_stop_signals_only_the_recorded_process(tmp_path):
    import psutil

    obeys = spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "obeys.log")
    ignores = spawn([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                     "print('ready', flush=True); time.sleep(60)"], tmp_path / "ignores.log")
    # a server whose leader was killed alone: its worker serves on, known by its own record
    orphaned = spawn([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
                      "'import time; time.sleep(60)']); print('ready', flush=True); time.sleep(60)"],
                     tmp_path / "orphaned.log")
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    # another program under a recorded pid: our command line is not its own
    impostor = {"pid": foreign.pid, "argv": obeys["argv"][:1] + ["server"],
                "started": psutil.Process(foreign.pid).create_time()}
    wait_for(tmp_path / "ignores.log", "ready")
    wait_for(tmp_path / "orphaned.log", "ready")
    orphaned["members"] = members(orphaned)
    worker = psutil.Process(orphaned["members"][0]["pid"])
    psutil.Process(orphaned["pid"]).kill()
    try:
        outcome = terminate({"obeys": obeys, "ignores": ignores, "orphaned": orphaned, "impostor": impostor},
                            timeout=2)
        assert outcome["obeys"].startswith("stopped in") and not group(obeys["pid"])
        assert outcome["ignores"] == "killed (SIGKILL) after 2 s" and not group(ignores["pid"])
        assert outcome["orphaned"].startswith("stopped in") and not worker.is_running()
        assert outcome["impostor"] == "not running" and foreign.poll() is None
    finally:
        foreign.kill()
        foreign.wait()


# A server whose main thread has exited while another still serves: the main thread shows as a zombie, its
# socket stays open (SeaweedFS in the middle of its shutdown looks like this).
EXITING_LEADER = """
import ctypes, platform, signal, socket, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
threading.Thread(target=lambda: time.sleep(600)).start()
ctypes.CDLL(None).syscall({"x86_64": 60, "aarch64": 93}[platform.machine()], 0)   # SYS_exit: this thread only
"""


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/task").exists() or __import__("platform").machine() not in
                    ("x86_64", "aarch64"), reason="needs Linux's /proc and a known SYS_exit")
def test_a_server_whose_main_thread_has_exited_is_stopped_until_its_socket_closes(tmp_path):
    import psutil

    log = tmp_path / "exiting.log"
    record = spawn([sys.executable, "-c", EXITING_LEADER], log)
    wait_for(log, "\n")
    port = int(log.read_text().split()[0])
    until = time.monotonic() + 30
    while psutil.Process(record["pid"]).status() != psutil.STATUS_ZOMBIE and time.monotonic() < until:
        time.sleep(0.05)
    assert psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE and listens(port)
    assert [proc.pid for proc in group(record["pid"])] == [record["pid"]]
    assert terminate({"exiting": record}, timeout=1) == {"exiting": "killed (SIGKILL) after 1 s"}
    assert not group(record["pid"]) and not listens(port)


# --- the servers -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_store_round_trips_an_object(services):
    client = services.s3_client()
    key = f"tests/{uuid.uuid4().hex}.txt"
    client.put_object(Bucket=services.bucket, Key=key, Body=b"a cliff token")
    assert client.get_object(Bucket=services.bucket, Key=key)["Body"].read() == b"a cliff token"
    import boto3
    from botocore.exceptions import ClientError

    stranger = boto3.client("s3", endpoint_url=services.s3_endpoint, aws_access_key_id=services.access_key,
                            aws_secret_access_key="wrong", region_name="us-east-1")
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        stranger.get_object(Bucket=services.bucket, Key=key)


@pytest.mark.slow
def test_mlflow_keeps_a_runs_artifact_in_the_store(services, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=services.tracking_uri)
    experiment = client.create_experiment(f"services-{uuid.uuid4().hex[:8]}")
    run_ = client.create_run(experiment)
    (tmp_path / "note.txt").write_text("p[i-1] -> p[i]")
    client.log_artifact(run_.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run_.info.run_id)
    back = client.download_artifacts(run_.info.run_id, "note.txt", str(tmp_path))
    assert Path(back).read_text() == "p[i-1] -> p[i]"
    listed = services.s3_client().list_objects_v2(Bucket=services.bucket, Prefix="mlflow/")
    assert f"mlflow/{experiment}/{run_.info.run_id}/artifacts/note.txt" in [o["Key"] for o in listed["Contents"]]


@pytest.mark.slow
def test_a_second_start_finds_them_up_and_prints_the_environment(services, capsys):
    again = start(services.root)
    assert again == services and again.started == ()
    assert main(["start", "--root", str(services.root)]) == 0
    out = capsys.readouterr().out
    assert "SeaweedFS S3 already up" in out and "MLflow already up" in out
    assert f"export MLFLOW_TRACKING_URI={services.tracking_uri}" in out
    assert f"dvc remote modify --local default endpointurl {services.s3_endpoint}" in out
    assert status(services.root) == {"s3": "up", "mlflow": "up"}
    # `env` is what a shell evaluates
    shell = run(["bash", "-c", f'eval "$({sys.executable} -m cliffdata.services env --root {services.root})"; '
                 'echo "$AWS_ACCESS_KEY_ID $MLFLOW_TRACKING_URI $DVC_REMOTE"'], services.root)
    assert shell.split() == [services.access_key, services.tracking_uri, "s3://cliffdata/dvc"]


@pytest.mark.slow
def test_a_port_our_running_store_holds_is_refused_for_another_root(services, tmp_path):
    with pytest.raises(ServicesError, match=rf"^port {services.ports.s3} on 127\.0\.0\.1 \(SeaweedFS S3, s3\)"):
        start(tmp_path / "other", services.ports)
    assert start(services.root).started == ()                    # ours untouched


# --- faults of a DVC S3 remote -----------------------------------------------------------------------------------

@pytest.fixture
def dvc_project(services, tmp_path, monkeypatch):
    """A git + DVC project with one tiny tracked file and the store as its default remote, set by the commands
    `start` prints (in config.local). DVC's command line runs in process here: a DVC process starts in 2 s."""
    from dvc.cli import main as dvc_main

    proj = tmp_path / "proj"
    proj.mkdir()
    run(["git", "init", "-q"], proj)
    monkeypatch.chdir(proj)
    (proj / "tiny.txt").write_text(uuid.uuid4().hex)
    for command in [["init", "-q"], ["add", "-q", "tiny.txt"], *(c.split()[1:] for c in services.dvc_commands("team"))]:
        assert dvc_main(command) == 0, command
    return proj


def dvc_push(proj: Path, **overrides: str | None) -> subprocess.CompletedProcess:
    # AWS_MAX_ATTEMPTS=1: DVC's client retries a refused connection for 9-15 s; its words are the same
    return subprocess.run([DVC, "push"], cwd=proj, capture_output=True, text=True,
                          env=env(**{"AWS_MAX_ATTEMPTS": "1", **overrides}))


def check_remote(proj: Path, capsys, **environ: str) -> tuple[int, str]:
    """`check-remote` in process, in `environ`: its exit code and what it printed."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environ.items():
            patch.setenv(key, value)
        code = main(["check-remote", "--repo", str(proj)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.slow
def test_dvc_names_each_fault_in_its_words_and_the_preflight_in_one_line(services, dvc_project, capsys):
    keys_ = {"AWS_ACCESS_KEY_ID": services.access_key, "AWS_SECRET_ACCESS_KEY": services.secret_key}
    config_local = (dvc_project / ".dvc/config.local").read_text()
    # DVC's words depend on how it asks: pushing a few objects it asks HeadObject, whose 403 has no body, so a
    # wrong secret and an unknown key both read "Forbidden"; a missing bucket is never named
    faults = {
        "wrong secret": ({**keys_, "AWS_SECRET_ACCESS_KEY": "wrong"}, None, ("Forbidden", "SignatureDoesNotMatch"),
                         f"the secret key does not match access key {services.access_key}"),
        "unknown key": ({**keys_, "AWS_ACCESS_KEY_ID": "NOBODY"}, None, None,    # DVC: as for a wrong secret
                        "the store does not know access key NOBODY"),
        "missing bucket": (keys_, ("s3://cliffdata/dvc", "s3://nobucket/dvc"), ("The specified bucket does not exist",),
                           "bucket 'nobucket' does not exist there"),
        "store down": (keys_, (services.s3_endpoint, f"http://127.0.0.1:{closed_port()}"),
                       ("Could not connect to the endpoint URL",), "cannot connect to the S3 endpoint"),
    }
    for fault, (environ, swap, dvc_says, we_say) in faults.items():
        (dvc_project / ".dvc/config.local").write_text(config_local.replace(*swap) if swap else config_local)
        if dvc_says:
            pushed = dvc_push(dvc_project, **environ)
            errors = [line for line in pushed.stderr.splitlines() if line.startswith("ERROR")]
            assert pushed.returncode != 0 and "Traceback" not in pushed.stderr, (fault, pushed.stderr)
            assert errors and any(words in errors[0] for words in dvc_says), (fault, pushed.stderr)
        begin = time.monotonic()
        code, said = check_remote(dvc_project, capsys, **environ)
        assert code == 2 and said.count("\n") == 1 and we_say in said and "DVC remote 'team'" in said, (fault, said)
        assert time.monotonic() - begin < 10, fault
    (dvc_project / ".dvc/config.local").write_text(config_local)        # the printed commands' remote: it works
    pushed = dvc_push(dvc_project, **keys_)
    assert pushed.returncode == 0 and "1 file pushed" in pushed.stdout + pushed.stderr, pushed.stderr
    assert check_remote(dvc_project, capsys, **keys_) == (0, f"DVC remote 'team' (s3://cliffdata/dvc at "
                                                             f"{services.s3_endpoint}): bucket 'cliffdata' answers "
                                                             f"with access key {services.access_key}\n")


# --- last: stop ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_stop_leaves_nothing_running(services, capsys):
    recorded = read_state(services.root)["processes"]
    # SeaweedFS drains its filer's gRPC streams for 15 s on SIGTERM: 3 s here, then SIGKILL (the default waits 30)
    outcome = stop(services.root, timeout=3)
    assert outcome["mlflow"].startswith("stopped in") and outcome["s3"].startswith(("stopped in", "killed"))
    assert all(not group(record["pid"]) for record in recorded.values())
    assert [port for port in asdict(services.ports).values() if listens(port)] == []
    assert status(services.root) == {"s3": "down", "mlflow": "down"}
    assert stop(services.root) == {"s3": "not running", "mlflow": "not running"}
    assert main(["status", "--root", str(services.root)]) == 3
    assert "SeaweedFS S3: down" in capsys.readouterr().out
    assert json.loads((services.root / "services.json").read_text())["processes"] == {}
