"""`python -m cliffdata.preset`: the command it hands to DVC, in the workspace or outside it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cliffdata import preset


def run_main(monkeypatch, tmp_path, *argv) -> list[str]:
    (tmp_path / "params.yaml").write_text((preset.Path(__file__).parent.parent / "params.yaml").read_text())
    (tmp_path / "overlay.yaml").write_text("rollouts:\n  num_rollouts: 32\n")
    seen = []
    monkeypatch.setattr(preset.subprocess, "run", lambda cmd: seen.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(sys, "argv", ["preset", str(tmp_path / "overlay.yaml"), "--params", str(tmp_path / "params.yaml"),
                                      *argv])
    with pytest.raises(SystemExit) as done:
        preset.main()
    assert done.value.code == 0
    (cmd,) = seen
    return cmd


def test_a_preset_runs_in_the_workspace(monkeypatch, tmp_path):
    assert run_main(monkeypatch, tmp_path) == ["dvc", "exp", "run", "-S", "rollouts.num_rollouts=32"]


def test_a_named_preset_runs_outside_the_workspace(monkeypatch, tmp_path):
    assert run_main(monkeypatch, tmp_path, "--name", "decisive") == [
        "dvc", "exp", "run", "--temp", "-n", "decisive", "-S", "rollouts.num_rollouts=32"]
