"""Detached server processes and their identity: started in a process group of their own, recorded by pid,
command line and start time, and signalled only while the recorded pid is still that process, so a pid the
system has since given to another program is left alone.

    record = spawn(["weed", "server", ...], Path("logs/weed.log"))
    ours(record)          # the psutil.Process while it is still that process, else None
    terminate({"s3": record}, timeout=30)   # SIGTERM to its group, SIGKILL after the timeout
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

_CHILDREN: dict[int, subprocess.Popen] = {}      # this process's own children, reaped when they end


def spawn(argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Start `argv` detached (its own process group) with its output appended to `log`; its record."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        started = None
    return {"pid": proc.pid, "argv": argv, "started": started, "log": str(log)}


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def ours(record: dict | None):
    """The live process `record` names, when it is still that process (same start time and command line)."""
    import psutil

    if not record or record.get("started") is None:
        return None
    _reap()
    try:
        proc = psutil.Process(record["pid"])
        if exited(proc) or abs(proc.create_time() - record["started"]) > 0.05:
            return None
        try:
            argv = proc.cmdline()
        except psutil.ZombieProcess:
            argv = []
        # an empty command line: the process is exiting (a zombie, or its memory already released), and the
        # start time names it
        return proc if argv in (record["argv"], []) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def exited(proc) -> bool:
    """Whether a process has let go of everything: a zombie whose threads are all gone. A multi-threaded
    program (SeaweedFS, in Go) shows its main thread as a zombie while its other threads are still exiting,
    and those still hold its open sockets."""
    import psutil

    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
        return len(os.listdir(f"/proc/{proc.pid}/task")) <= 1
    except (OSError, psutil.NoSuchProcess):
        return True
    except psutil.AccessDenied:
        return False


def group(pgid: int) -> list:
    """The live processes of a process group (`exited` ones left out)."""
    import psutil

    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and not exited(proc):
                out.append(proc)
        except (OSError, psutil.Error):
            pass
    return out


def members(record: dict) -> list[dict]:
    """The other processes of a recorded leader's group now (a server's workers), as records of their own."""
    out = []
    for proc in group(record["pid"]):
        try:
            if proc.pid != record["pid"]:
                out.append({"pid": proc.pid, "argv": proc.cmdline(), "started": proc.create_time()})
        except Exception:           # noqa: BLE001 - gone meanwhile
            pass
    return out


def _left(record: dict) -> list:
    """What is left of a recorded server: its whole group while the leader is still the recorded process,
    else those of its recorded members that are still themselves (a leader killed alone leaves them)."""
    if ours(record) is not None:
        return group(record["pid"])
    return [proc for proc in (ours(m) for m in record.get("members", [])) if proc is not None]


def _signal(record: dict, sig: int) -> None:
    if ours(record) is not None:
        try:
            os.killpg(record["pid"], sig)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for proc in _left(record):
        try:
            proc.send_signal(sig)
        except Exception:           # noqa: BLE001 - gone meanwhile
            pass


def terminate(records: dict[str, dict], timeout: float = 30.0) -> dict[str, str]:
    """SIGTERM to what is left of each recorded server (`_left`), SIGKILL to what still is after `timeout`;
    what happened to each. A pid the system gave to another program since is not signalled."""
    outcome, pending = {}, {}
    for name, record in records.items():
        if _left(record):
            pending[name] = record
            _signal(record, signal.SIGTERM)
        else:
            outcome[name] = "not running"
    begin = time.monotonic()
    while pending and time.monotonic() - begin < timeout:
        time.sleep(0.1)
        for name in [n for n, record in pending.items() if not _left(record)]:
            outcome[name] = f"stopped in {time.monotonic() - begin:.1f} s"
            del pending[name]
    for name, record in pending.items():
        _signal(record, signal.SIGKILL)
        until = time.monotonic() + 10
        while _left(record) and time.monotonic() < until:
            time.sleep(0.05)
        outcome[name] = f"killed (SIGKILL) after {timeout:.0f} s" if not _left(record) else "still running after SIGKILL"
    return outcome


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener holds `port` on `host` (a socket in TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
