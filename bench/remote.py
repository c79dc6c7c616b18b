"""DVC push and pull through the team's S3 store against a local-folder remote, same data, one run.

    python bench/remote.py --json bench/results/remote.json [--repo .] [--arms local s3]

The data is every output of the checked-out commit of `--repo` (its dvc.lock), read from its DVC cache; its
workspace must hold those outputs (`dvc status` clean), the bytes a pull must give.
Each arm, one after the other:

    local   a fresh folder remote in a temp directory (what `make repro` sets up by default)
    s3      a fresh prefix of the bucket of the team's services (cliffdata/services.py), started for the
            run in a temp root on free ports and stopped after it

and for each: `dvc push` from a clone of the repository that shares its cache (the objects are there;
the remote is empty), then `dvc pull` into a second clone with an empty cache and another HOME (a
colleague's machine), then, there, a no-op `dvc repro` and `dvc status`. Reported per arm: push and
pull seconds, the objects and bytes stored in the remote, the no-op repro's seconds, and whether every
pulled file's md5 equals the author's. The JSON holds the machine, the commit and the arms; a Markdown
table goes next to it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run a command, fail loudly, return its wall seconds."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


def output_md5s(proj: Path) -> dict[str, str]:
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    outs = sorted({o["path"] for s in lock["stages"].values() for o in s.get("outs", [])})
    files = [f for out in outs for f in ([proj / out] if (proj / out).is_file() else sorted((proj / out).rglob("*")))
             if f.is_file()]
    return {str(f.relative_to(proj)): hashlib.md5(f.read_bytes()).hexdigest() for f in files}


def clone(repo: Path, dest: Path, env: dict[str, str]) -> Path:
    sh(["git", "clone", "-q", str(repo), str(dest)], dest.parent, env)
    return dest


def run_arm(arm: str, repo: Path, tmp: Path, base_env: dict[str, str], services=None) -> dict:
    dvc = str(BIN / "dvc")
    env = dict(base_env)
    if arm == "local":
        url = str(tmp / f"{arm}-remote")
        Path(url).mkdir()
        setup = [[dvc, "remote", "add", "--local", "-f", "-d", "bench", url]]
    else:
        url = f"s3://{services.bucket}/bench-{uuid.uuid4().hex}"
        env.update(services.env)
        setup = [[dvc, "remote", "add", "--local", "-f", "-d", "bench", url],
                 [dvc, "remote", "modify", "--local", "bench", "endpointurl", services.s3_endpoint]]
    author = clone(repo, tmp / f"{arm}-author", env)
    sh([dvc, "cache", "dir", "--local", str(repo / ".dvc/cache")], author, env)
    for cmd in setup:
        sh(cmd, author, env)
    push = sh([dvc, "push", "-q"], author, env)

    home = tmp / f"{arm}-home"
    home.mkdir()
    mate_env = {**env, "HOME": str(home)}
    mate = clone(repo, tmp / f"{arm}-colleague", mate_env)
    for cmd in setup:
        sh(cmd, mate, mate_env)
    pull = sh([dvc, "pull", "-q"], mate, mate_env)
    noop = sh([dvc, "repro"], mate, mate_env)
    status = subprocess.run([dvc, "status"], cwd=mate, env=mate_env, capture_output=True, text=True).stdout
    if arm == "local":
        objects = [p for p in Path(url).rglob("*") if p.is_file()]
        stored = {"objects": len(objects), "bytes": sum(p.stat().st_size for p in objects)}
    else:
        client, (bucket, prefix) = services.s3_client(), url.removeprefix("s3://").split("/", 1)
        sizes = [o["Size"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                 for o in page.get("Contents", [])]
        stored = {"objects": len(sizes), "bytes": sum(sizes)}
    return {"arm": arm, "push_seconds": round(push, 2), "pull_seconds": round(pull, 2), **stored,
            "noop_repro_seconds": round(noop, 2), "status_clean": "up to date" in status,
            "md5_equal": output_md5s(mate) == output_md5s(repo)}


def markdown(result: dict) -> str:
    lines = [f"DVC push and pull, commit {result['commit'][:7]}, {result['machine']}", "",
             "| remote | objects | MB | push s | pull s | MB/s push | MB/s pull | no-op repro s | md5 equal |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for a in result["arms"]:
        mb = a["bytes"] / 1e6
        lines.append(f"| {a['arm']} | {a['objects']} | {mb:.1f} | {a['push_seconds']:.1f} | {a['pull_seconds']:.1f} | "
                     f"{mb / a['push_seconds']:.1f} | {mb / a['pull_seconds']:.1f} | {a['noop_repro_seconds']:.1f} | "
                     f"{a['md5_equal']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--arms", nargs="+", choices=["local", "s3"], default=["local", "s3"])
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    repo = args.repo.resolve()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout
    result = {"commit": commit.strip(), "machine": f"{platform.machine()}, {os.cpu_count()} cores", "arms": []}
    with tempfile.TemporaryDirectory(prefix="cliffdata-bench-remote-") as tmp:
        tmp = Path(tmp)
        services = root = None
        if "s3" in args.arms:
            from cliffdata import services as team

            root = tmp / "services"
            services = team.start(root, team.Ports.free())
        try:
            for arm in args.arms:
                result["arms"].append(run_arm(arm, repo, tmp, env, services))
                print(json.dumps(result["arms"][-1]), flush=True)
        finally:
            if root is not None:
                team.stop(root, timeout=3)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
