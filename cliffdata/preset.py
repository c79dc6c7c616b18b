"""Params presets: a YAML overlay of `params.yaml` keys, run as a DVC experiment (`dvc exp run -S`).

    python -m cliffdata.preset params-gpu.yaml              # validate, then dvc exp run -S key=value ...
    python -m cliffdata.preset params-gpu.yaml --dry-run    # print the overrides only
    python -m cliffdata.preset params-decisive.yaml --name decisive
        # outside the workspace (dvc exp run --temp), saved as experiment `decisive` when it finishes,
        # then its metrics, dvc.lock and wall time copied to results/decisive/ (a named result, for git)
    python -m cliffdata.preset params-decisive.yaml --name decisive --save-only --wall-seconds 4000
        # the copy only, of an experiment that finished already

The overlay holds only what differs from params.yaml: mappings merge key by key, lists and scalars
replace. Every key must already exist in params.yaml (a preset never invents a param; it may add
entries to the mappings of user-chosen names, `study.models` and `prompts`), and the
merged params must load (`config.parse_params`) before DVC runs anything. DVC applies the
experiment's params to the workspace afterwards, so `dvc push` then shares its outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


from cliffdata.config.load import parse_params, read_yaml


# Mappings whose keys are names the user chooses (not params): a preset may add entries to them.
OPEN_MAPPINGS = ("params.study.models", "params.prompts")


def merge(base: dict, overlay: dict, where: str = "params") -> dict:
    """`overlay` on `base`: mappings merged recursively, anything else replaced; unknown keys raise, but in
    the OPEN_MAPPINGS (a preset may add a study model or a prompt)."""
    out = dict(base)
    for key, value in overlay.items():
        if key not in base and where in OPEN_MAPPINGS:
            out[key] = value
            continue
        if key not in base:
            raise ValueError(f"{where}.{key}: not in params.yaml (a preset only changes existing params)")
        out[key] = (merge(base[key], value, f"{where}.{key}") if isinstance(value, dict) and isinstance(base[key], dict)
                    else value)
    return out


def _hydra(value: Any) -> str:
    """A value in the override grammar `dvc exp run -S` parses (Hydra's): quoted strings, {k: v}, [..]."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_hydra(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_hydra(v) for v in value) + "]"
    if isinstance(value, str):
        if "\\" in value or '"' in value:
            raise ValueError(f"preset strings cannot hold backslashes or double quotes, got {value!r}")
        return json.dumps(value)
    return json.dumps(value)          # numbers, true/false, null


def overrides(base: dict, overlay: dict, prefix: str = "") -> list[str]:
    """`key.path=value` for every leaf of `overlay` (a leaf: a scalar, a list, or a mapping new to base);
    `+key.path=value` for a key new to base (an entry of an open mapping: Hydra's append)."""
    out = []
    for key, value in overlay.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out += overrides(base[key], value, f"{path}.")
        else:
            out.append(f"{'' if key in base else '+'}{path}={_hydra(value)}")
    return out


RESULTS = Path("results")
RUN_RECORD = "run.json"


def experiment_commit(name: str, cwd: Path = Path(".")) -> str:
    """The commit of the newest saved DVC experiment called `name` (refs/exps/.../<name>)."""
    out = subprocess.run(["git", "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)",
                          "refs/exps"], cwd=cwd, check=True, capture_output=True, text=True).stdout
    found = [line.split()[0] for line in out.splitlines() if line.split()[1].rsplit("/", 1)[-1] == name]
    if not found:
        raise ValueError(f"no saved DVC experiment named {name!r} (dvc exp list shows the saved ones)")
    return found[0]


def save(name: str, preset: Path, sets: list[str], wall_seconds: float | None, dest: Path | None = None,
         cwd: Path = Path(".")) -> Path:
    """Copy experiment `name`'s metrics/ and dvc.lock (which addresses its data in the DVC cache) to
    results/<name>/ with run.json (experiment, its commit and commit time, baseline, preset, overrides, wall time), for git.
    Written beside and renamed into place; a folder there without run.json is not ours and is refused."""
    dest = dest or cwd / RESULTS / name
    if dest.exists() and not (dest / RUN_RECORD).is_file():
        raise ValueError(f"{dest} exists and holds no {RUN_RECORD}: not a saved result, left alone")
    commit = experiment_commit(name, cwd)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout

    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for path in [*git("ls-tree", "-r", "--name-only", commit, "--", "metrics").splitlines(), "dvc.lock"]:
            out = tmp / path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(subprocess.run(["git", "show", f"{commit}:{path}"], cwd=cwd, check=True,
                                           capture_output=True).stdout)
        record = {"experiment": name, "commit": commit, "baseline": git("rev-parse", f"{commit}^1").strip(),
                  "committed": git("show", "-s", "--format=%cI", commit).strip(), "preset": str(preset),
                  "overrides": sets, "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1)}
        (tmp / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", type=Path)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--name", help="run outside the workspace (dvc exp run --temp), which stays as it is, save "
                                   "the experiment under this name when it finishes and copy its metrics to "
                                   "results/<name>/")
    ap.add_argument("--save-only", action="store_true", help="with --name: only copy the finished experiment")
    ap.add_argument("--wall-seconds", type=float, help="with --save-only: the run's measured wall time")
    args = ap.parse_args()
    base = read_yaml(args.params)
    overlay = read_yaml(args.preset)
    parse_params(merge(base, overlay))                     # fail here, not after DVC started
    sets = overrides(base, overlay)
    if args.dry_run:
        print("\n".join(sets))
        return
    if args.save_only:
        if not args.name:
            ap.error("--save-only needs --name")
        print(save(args.name, args.preset, sets, args.wall_seconds))
        return
    where = ["--temp", "-n", args.name] if args.name else []
    cmd = ["dvc", "exp", "run", *where] + [a for s in sets for a in ("-S", s)]
    print(" ".join(cmd), flush=True)
    started = time.monotonic()
    code = subprocess.run(cmd).returncode
    if code == 0 and args.name:
        print(save(args.name, args.preset, sets, time.monotonic() - started))
    sys.exit(code)


if __name__ == "__main__":
    main()
