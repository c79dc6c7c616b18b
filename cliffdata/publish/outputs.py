"""Where a command may write, and how: the guards of `cliffdata export` and `cliffdata report`.

A command that writes where its user points it must never destroy what it did not make. Three rules:

1. **Protected places are refused**, whether named directly or reached through a symbolic link: the
   repository root and every folder above it, `data/`, `models/`, `study/` (each study model's data and
   models), `.git/`, `.dvc/`, `.venv/`, every output DVC declares in `dvc.yaml`, every file git tracks, and
   the command's own inputs. A path that is itself a symbolic link is refused: writing through it would
   replace its target.
2. **Only what the command wrote is replaced.** Every output carries a manifest of what was written, with
   a sha256 per file: beside a file (`.<name>.cliffdata`) or inside a folder (a marker file). An existing
   output is replaced only when it is exactly what its manifest lists: same files, same bytes. A file the
   user edited, a file added to a folder, or a marker copied into a folder by hand makes the command
   refuse, naming the path.
3. **Writes are atomic.** The output is written in a temporary sibling and renamed into place, so an
   interrupted command leaves the previous output whole; a failed write removes only its temporary.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from cliffdata.checkpoint import write_atomic
from cliffdata.schema import file_digest

#: folders of the repository no command output may touch
PROTECTED_FOLDERS = ("data", "models", "study", ".git", ".dvc", ".venv")


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _overlaps(path: Path, folder: Path) -> bool:
    return _within(path, folder) or _within(folder, path)


def dvc_outputs(root: Path) -> list[Path]:
    """Every output, metric and plot file `root/dvc.yaml` declares (templated paths left out: the study's
    folder, which holds them, is protected as a whole)."""
    path = root / "dvc.yaml"
    if not path.is_file():
        return []
    import yaml

    try:
        stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
        return []
    outs = []
    for stage in stages.values():
        if not isinstance(stage, dict):
            continue
        wdir = root / str(stage.get("wdir", "."))
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                name = next(iter(entry)) if isinstance(entry, dict) else entry
                if isinstance(name, str) and "${" not in name:
                    outs.append((wdir / name).resolve())
    return outs


def git_tracked(root: Path) -> set[Path]:
    """The files git tracks in `root` (none where `root` is not a git work tree or git is missing)."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True,
                                timeout=60).stdout
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             check=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return set()
    return {(Path(top) / name).resolve() for name in listed.decode("utf-8", "surrogateescape").split("\0") if name}


def check_target(out: Path, root: Path, inputs: Iterable[Path] = (), what: str = "output",
                 own: Iterable[Path] = ()) -> None:
    """Refuse (ValueError naming the path and the reason) an output path in a protected place (rule 1).
    `own`: outputs dvc.yaml declares that this command itself writes (the report stage's folder)."""
    given = Path(out)
    if given.is_symlink():
        raise ValueError(f"--out {given} is a symbolic link (to {os.readlink(given)}): not writing through it")
    places = {"given": Path(os.path.abspath(given)), "resolved": given.resolve()}
    root = Path(root).resolve()
    for path in places.values():
        if _within(root, path):
            raise ValueError(f"--out {given} is or contains the repository {root}: the {what} would replace it")
        for name in PROTECTED_FOLDERS:
            if _overlaps(path, root / name):
                raise ValueError(f"--out {given} overlaps {root / name}: the {what} never writes there")
        for source in inputs:
            if _overlaps(path, Path(source).resolve()):
                raise ValueError(f"--out {given} is the {what}'s own input {source}: choose another path")
    resolved = places["resolved"]
    own = {Path(p).resolve() for p in own}
    for declared in dvc_outputs(root):
        if declared not in own and _overlaps(resolved, declared):
            raise ValueError(f"--out {given} overlaps {declared}, an output of the pipeline (dvc.yaml): the "
                             f"{what} never writes there")
    for tracked in git_tracked(root):
        if _within(tracked, resolved):
            raise ValueError(f"--out {given} is or holds {tracked}, a file git tracks: the {what} never "
                             f"replaces it")


# --- manifests --------------------------------------------------------------------------------------------

def file_manifest(out: Path) -> Path:
    """The manifest beside an exported file."""
    return out.parent / f".{out.name}.cliffdata"


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, (str, list)) for v in files.values()):
        return None
    return manifest


def _accepted(digests) -> set[str]:
    return set(digests) if isinstance(digests, list) else {digests}


def check_replaceable_file(out: Path, what: str) -> None:
    """Refuse (ValueError) an existing `out` that is not exactly the file a previous run wrote (rule 2)."""
    if out.is_symlink():
        raise ValueError(f"{out} is a symbolic link: not writing through it")
    if not out.exists():
        return
    if not out.is_file():
        raise ValueError(f"{out} exists and is not a file: not replacing it")
    manifest = _read_manifest(file_manifest(out))
    digests = manifest["files"].get(out.name) if manifest else None
    if digests is None or file_digest(out) not in _accepted(digests):
        raise ValueError(f"{out} exists and is not a file {what} wrote (no manifest "
                         f"{file_manifest(out).name} lists its bytes): not replacing it; choose a new path or "
                         f"remove it yourself")


def _listing(folder: Path, marker: str) -> dict[str, str]:
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            if rel != marker:
                files[rel] = "symlink" if path.is_symlink() else file_digest(path)
    return files


def check_replaceable_folder(out: Path, marker: str, what: str) -> None:
    """Refuse (ValueError) an existing folder `out` unless it is empty or holds exactly the files its
    marker lists, byte for byte (rule 2): a marker copied into another folder replaces nothing."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"{what} folder {out} exists and is not a folder: not replacing it")
    if not out.is_dir() or not any(out.iterdir()):
        return
    manifest = _read_manifest(out / marker)
    if manifest is None:
        raise ValueError(f"{what} folder {out} is not empty and holds no previous {what} ({marker} missing or "
                         f"unreadable): not replacing it; choose an empty or new folder")
    listed = {name: _accepted(d) for name, d in manifest["files"].items()}
    present = _listing(out, marker)
    extra = sorted(set(present) - set(listed))
    changed = sorted(name for name in set(present) & set(listed) if present[name] not in listed[name])
    if extra or changed:
        detail = (f"{out / extra[0]} was not written by it" if extra
                  else f"{out / changed[0]} differs from what it wrote")
        raise ValueError(f"{what} folder {out} is not only a previous {what}: {detail}; not replacing it")


def _manifest_text(what: str, files: dict) -> str:
    return json.dumps({"written_by": what, "files": files}, indent=1, sort_keys=True) + "\n"


def _write_manifest(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))
    os.chmod(path, 0o644)                                      # mkstemp's 0600 would hide it from colleagues


def write_file(out: Path, write: Callable[[Path], None], what: str) -> None:
    """Write one file atomically: `write(tmp)` fills a temporary sibling, renamed onto `out` once whole,
    its manifest beside it. `check_replaceable_file` must allow `out` (checked again just before the rename)."""
    out = Path(os.path.abspath(out))
    check_replaceable_file(out, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    manifest = file_manifest(out)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)                                   # mkstemp makes it 0600
        digest = file_digest(tmp)
        check_replaceable_file(out, what)
        previous = _read_manifest(manifest)
        old = previous["files"].get(out.name) if previous else None
        # both digests while the rename is pending: an interruption between the two leaves a replaceable file
        _write_manifest(manifest, _manifest_text(what, {out.name: sorted(_accepted(old) | {digest}) if old else digest}))
        os.replace(tmp, out)
        _write_manifest(manifest, _manifest_text(what, {out.name: digest}))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_folder(out: Path, build: Callable[[Path], object], marker: str, what: str):
    """Build a folder in a temporary sibling (`build(tmp)`, its return value returned), list every file
    in its marker, and swap it in for `out`; a previous folder is moved aside first and deleted last.
    `check_replaceable_folder` must allow `out` (checked again just before the swap)."""
    out = Path(os.path.abspath(out))
    check_replaceable_folder(out, marker, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result = build(tmp)
        (tmp / marker).write_text(_manifest_text(what, _listing(tmp, marker)), encoding="utf-8")
        os.chmod(tmp, 0o755)                                   # mkdtemp makes it 0700
        check_replaceable_folder(out, marker, what)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
