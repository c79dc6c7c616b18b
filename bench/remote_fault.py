"""The store dies in the middle of `dvc push`: does a second push complete, is a half-written object ever
served, and does a pull in another clone give the author's bytes?

    python bench/remote_fault.py --json bench/results/remote_fault.json [--repo .] [--kill-after 2.0]

Starts the team's services (cliffdata/services.py) in a temp root on free ports. A clone of `--repo`
that shares its DVC cache pushes every output of the checked-out commit to a fresh prefix of the
store; `--kill-after` seconds into the push, the store's whole process group gets SIGKILL (no drain,
no flush: a crash, not a shutdown). Then:

1. every object the bucket lists under the prefix is read back and its md5 compared with the name DVC
   gave it (its content hash): an object whose bytes do not match its name is a half-written one served;
2. the services start again on the same data, and a second `dvc push` must complete;
3. a second clone with an empty cache and another HOME pulls, and every pulled file's md5 must equal
   the workspace's (`--repo` must hold its outputs: `dvc status` clean).

Writes what it saw (the first push's exit code and seconds, the objects listed after the kill, any
mismatch, the second push's seconds, the pull's md5 check) to the JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from remote import output_md5s, sh

from cliffdata import services as team

BIN = Path(sys.executable).parent


def objects(services, bucket: str, prefix: str) -> dict[str, bytes]:
    client = services.s3_client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def mismatched(stored: dict[str, bytes]) -> list[str]:
    """Objects whose md5 is not the one in their name (files/md5/ab/cdef…; a .dir listing too)."""
    bad = []
    for key, body in stored.items():
        parts = key.split("/")
        if "md5" not in parts:
            continue
        name = "".join(parts[parts.index("md5") + 1:]).removesuffix(".dir")
        if hashlib.md5(body).hexdigest() != name:
            bad.append(key)
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--kill-after", type=float, default=2.0)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    repo = args.repo.resolve()
    dvc = str(BIN / "dvc")
    with tempfile.TemporaryDirectory(prefix="cliffdata-remote-fault-") as tmp:
        tmp = Path(tmp)
        root = tmp / "services"
        services = team.start(root, team.Ports.free())
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **services.env}
        bucket, prefix = services.bucket, f"fault-{uuid.uuid4().hex}"
        setup = [[dvc, "remote", "add", "--local", "-f", "-d", "team", f"s3://{bucket}/{prefix}"],
                 [dvc, "remote", "modify", "--local", "team", "endpointurl", services.s3_endpoint]]
        author = tmp / "author"
        sh(["git", "clone", "-q", str(repo), str(author)], tmp, env)
        sh([dvc, "cache", "dir", "--local", str(repo / ".dvc/cache")], author, env)
        for cmd in setup:
            sh(cmd, author, env)
        try:
            started = time.perf_counter()
            push = subprocess.Popen([dvc, "push"], cwd=author, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            time.sleep(args.kill_after)
            killed = push.poll() is None
            os.killpg(team.read_state(root)["processes"]["s3"]["pid"], signal.SIGKILL)
            output = push.communicate(timeout=600)[0]
            first = {"exit_code": push.returncode, "seconds": round(time.perf_counter() - started, 2),
                     "killed_while_running": killed, "last_lines": output.strip().splitlines()[-3:]}
            services = team.start(root, services.ports)  # the same data, the same ports
            stored = objects(services, bucket, prefix)
            after_kill = {"objects": len(stored), "bytes": sum(map(len, stored.values())),
                          "mismatched": mismatched(stored)}
            second = {"seconds": round(sh([dvc, "push"], author, env), 2)}
            stored = objects(services, bucket, prefix)
            second.update(objects=len(stored), mismatched=mismatched(stored))
            home = tmp / "home"
            home.mkdir()
            mate = tmp / "colleague"
            sh(["git", "clone", "-q", str(repo), str(mate)], tmp, {**env, "HOME": str(home)})
            for cmd in setup:
                sh(cmd, mate, {**env, "HOME": str(home)})
            pull_seconds = sh([dvc, "pull"], mate, {**env, "HOME": str(home)})
            result = {"kill_after_seconds": args.kill_after, "first_push": first, "after_kill": after_kill,
                      "second_push": second, "pull": {"seconds": round(pull_seconds, 2),
                                                       "md5_equal": output_md5s(mate) == output_md5s(repo)}}
        finally:
            team.stop(root, timeout=3)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
