"""Params presets: a YAML overlay of `params.yaml` keys, run as a DVC experiment (`dvc exp run -S`).

    python -m cliffdata.preset params-gpu.yaml              # validate, then dvc exp run -S key=value ...
    python -m cliffdata.preset params-gpu.yaml --dry-run    # print the overrides only
    python -m cliffdata.preset params-decisive.yaml --name decisive
        # outside the workspace (dvc exp run --temp), saved as experiment `decisive` when it finishes

The overlay holds only what differs from params.yaml: mappings merge key by key, lists and scalars
replace. Every key must already exist in params.yaml (a preset never invents a param; it may add
entries to the mappings of user-chosen names, `study.models` and `prompts`), and the
merged params must load (`config.parse_params`) before DVC runs anything. DVC applies the
experiment's params to the workspace afterwards, so `dvc push` then shares its outputs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", type=Path)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--name", help="run outside the workspace (dvc exp run --temp), which stays as it is, and save "
                                   "the experiment under this name when it finishes")
    args = ap.parse_args()
    base = read_yaml(args.params)
    overlay = read_yaml(args.preset)
    parse_params(merge(base, overlay))                     # fail here, not after DVC started
    sets = overrides(base, overlay)
    if args.dry_run:
        print("\n".join(sets))
        return
    where = ["--temp", "-n", args.name] if args.name else []
    cmd = ["dvc", "exp", "run", *where] + [a for s in sets for a in ("-S", s)]
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.run(cmd).returncode)


if __name__ == "__main__":
    main()
