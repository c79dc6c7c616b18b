"""`python -m cliffdata.preset`: the command it hands to DVC, in the workspace or outside it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_a_named_preset_runs_outside_the_workspace_then_saves(monkeypatch, tmp_path):
    saved = []
    monkeypatch.setattr(preset, "save", lambda name, path, sets, seconds: saved.append((name, sets, seconds)))
    assert run_main(monkeypatch, tmp_path, "--name", "decisive") == [
        "dvc", "exp", "run", "--temp", "-n", "decisive", "-S", "rollouts.num_rollouts=32"]
    ((name, sets, seconds),) = saved
    assert (name, sets) == ("decisive", ["rollouts.num_rollouts=32"]) and seconds >= 0


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.mark.integration
def test_save_copies_a_saved_experiments_metrics_and_lock(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    baseline = commit_files(repo, {"metrics/summary.md": "baseline\n", "dvc.lock": "base\n"}, "baseline")
    exp = commit_files(repo, {"metrics/summary.md": "decisive\n", "metrics/dpo/a.json": "{}\n", "dvc.lock": "exp\n"},
                       "experiment")
    git(repo, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/decisive", exp)
    git(repo, "reset", "-q", "--hard", baseline)                      # the workspace stays at its baseline
    with pytest.raises(ValueError, match="no saved DVC experiment named 'other'"):
        preset.save("other", Path("p.yaml"), [], None, cwd=repo)
    dest = preset.save("decisive", Path("params-decisive.yaml"), ["a.b=1"], 12.34, cwd=repo)
    assert dest == repo / "results/decisive"
    assert (dest / "metrics/summary.md").read_text() == "decisive\n" and (dest / "metrics/dpo/a.json").exists()
    assert (dest / "dvc.lock").read_text() == "exp\n"
    record = json.loads((dest / "run.json").read_text())
    assert record | {"committed": None} == {"experiment": "decisive", "commit": exp, "baseline": baseline,
                                           "committed": None, "preset": "params-decisive.yaml",
                                           "overrides": ["a.b=1"], "wall_seconds": 12.3}
    preset.save("decisive", Path("params-decisive.yaml"), ["a.b=1"], 1.0, cwd=repo)      # its own: replaced
    assert json.loads((dest / "run.json").read_text())["wall_seconds"] == 1.0
    foreign = repo / "results/mine"
    foreign.mkdir()
    with pytest.raises(ValueError, match="holds no run.json"):
        preset.save("decisive", Path("p.yaml"), [], None, dest=foreign, cwd=repo)
    assert sorted(p.name for p in (repo / "results").iterdir()) == ["decisive", "mine"]     # nothing left behind
