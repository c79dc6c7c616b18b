"""DVC deps that cannot drift: for every stage of dvc.yaml, the project modules its
entrypoint imports (transitively), the SQL files it runs and the params it reads must be in the stage's
`deps` / `params`, so that editing any of them re-runs the stage.

Found by reading source, not by running it: imports (`import cliffdata.x`, `from cliffdata import x`,
`from cliffdata.x import y`, at any depth, lazy ones included), `duck.run_sql_file(con, "name")` and
`duck.write_metrics` / `duck.assert_checks` for SQL, and attribute chains on the loaded params
(`params.<section>[.<key>]`, `load_params().<section>`, `section_dict(path, "<section>", ...)`).
A section read whole (passed on, aliased, `asdict`-ed) needs the whole section listed.
"""
from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cliffdata"


def stages() -> dict[str, dict]:
    """Stage name -> its definition, with foreach/matrix stages taken once (their templates)."""
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_body(stage: dict) -> dict:
    return stage["do"] if "do" in stage else stage


def entrypoints(stage: dict) -> list[Path]:
    """The pipeline scripts a stage runs (a cmd may be a list of commands)."""
    cmds = stage_body(stage)["cmd"]
    out = []
    for cmd in [cmds] if isinstance(cmds, str) else cmds:
        m = re.match(r"pipeline/python (pipeline/\w+\.py)", cmd)
        assert m, f"cannot find the entrypoint in {cmd!r}"
        out.append(ROOT / m[1])
    return out


def module_file(name: str) -> Path | None:
    """cliffdata.a.b -> cliffdata/a/b.py or cliffdata/a/b/__init__.py (None if not a project module)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = ROOT / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return None if docstring_only(path) else path
    return None


def docstring_only(path: Path) -> bool:
    """A package `__init__.py` that holds nothing but its docstring runs no code worth a dep."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


@cache
def direct_imports(path: Path) -> frozenset[Path]:
    tree = ast.parse(path.read_text())
    # `if TYPE_CHECKING:` imports are for annotations only: they never run
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from cliffdata.analysis import duck` imports the module cliffdata.analysis.duck; `from cliffdata.x import f`
            # imports x
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        # importing cliffdata.a.b runs cliffdata/a/__init__.py first
        names += [".".join(n.split(".")[:k]) for n in names for k in range(1, n.count(".") + 1)]
        found |= {f for f in map(module_file, names) if f is not None}
    return frozenset(found)


def imported_modules(path: Path) -> set[Path]:
    seen, todo = set(), [path]
    while todo:
        for f in direct_imports(todo.pop()):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def sql_files(path: Path) -> set[Path]:
    """SQL the entrypoint runs: run_sql_file(con, "name"), write_metrics (occurrence, taxonomy), assert_checks."""
    text = path.read_text()
    sql = ROOT / PACKAGE / "analysis" / "sql"
    out = {sql / f"{name}.sql" for name in re.findall(r"run_sql_file\(\s*\w+\s*,\s*\"(\w+)\"", text)}
    if "write_metrics(" in text:
        out |= {sql / "occurrence.sql", sql / "taxonomy.sql"}
    if "assert_checks(" in text:
        out.add(sql / "checks")
    return out


def params_read(path: Path) -> set[str]:
    """`section` or `section.key` for every params read in the entrypoint."""
    tree = ast.parse(path.read_text())
    holders = {"params"}                                  # names bound to the whole Params object
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "load_params"):
            holders |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        is_params = (isinstance(base, ast.Name) and base.id in holders) or (
            isinstance(base, ast.Call) and getattr(base.func, "id", None) == "load_params")
        if not is_params:
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute) and parent.value is node:
            reads.add(f"{node.attr}.{parent.attr}")
        else:
            reads.add(node.attr)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "section_dict":
            reads |= {a.value for a in node.args[1:] if isinstance(a, ast.Constant)}
    return reads


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def param_covered(read: str, listed: list[str]) -> bool:
    return any(read == p or read.startswith(p + ".") for p in listed)


def missing_deps(name: str, stage: dict) -> list[str]:
    body = stage_body(stage)
    deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
    listed = [p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])]
    needed, reads = set(), set()
    for entry in entrypoints(stage):
        needed |= {entry} | imported_modules(entry) | sql_files(entry)
        reads |= params_read(entry)
    gaps = [f"deps: {p.relative_to(ROOT).as_posix()}" for p in sorted(needed) if not covered(p, deps)]
    # a study model's `model` section is its study entry's (study.models.<name>, cliffdata/study.py)
    own_model = ["model"] if "study.models.${key}" in listed else []
    gaps += [f"params: {r}" for r in sorted(reads) if not param_covered(r, listed + own_model)]
    return gaps


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_lists_what_it_reads(name):
    assert missing_deps(name, stages()[name]) == [], f"stage {name} reads what dvc.yaml does not list"


def test_the_finder_sees_a_removed_dep():
    """Drop a module, a SQL file and a param from a stage: the test names each of them."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["cliffs"]
    stage["deps"] = [d for d in stage["deps"] if d not in ("cliffdata/cliffs/stats.py", "cliffdata/analysis/sql")]
    stage["params"] = []
    gaps = missing_deps("cliffs", stage)
    assert "deps: cliffdata/cliffs/stats.py" in gaps and "deps: cliffdata/analysis/sql/occurrence.sql" in gaps
    assert "params: cliffs" in gaps
    # reads through aliases and chained attributes
    replicate = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["replicate"]
    assert {"replicate", "engine", "rollouts.sampling", "cliffs.test"} <= params_read(entrypoints(replicate)[0])


STUDY_PREFIX = "study/${key}/"


@pytest.mark.parametrize("name", sorted(n for n in stages() if n.startswith("study_") and "foreach" in stages()[n]))
def test_study_stage_mirrors_its_stage(name):
    """A study model's stage (`study_<stage>@<name>`) runs the same entrypoints with `--model`, so it lists
    the deps and params of the stage(s) it mirrors: code the same, data under study/<name>/ (the shared
    problems excepted), params the same but `model` (the study entry's own, `study.models.<name>`)."""
    body = stage_body(stages()[name])
    assert body.get("params", [])[-1] == "study.models.${key}"
    mirrored = [stages()[p.stem] for p in entrypoints(stages()[name])]
    for cmd in [body["cmd"]] if isinstance(body["cmd"], str) else body["cmd"]:
        assert "--model ${key}" in cmd, cmd
    deps = [d if isinstance(d, str) else next(iter(d)) for d in body["deps"]]
    for other in mirrored:
        for dep in stage_body(other)["deps"]:
            dep = dep if isinstance(dep, str) else next(iter(dep))
            if dep.startswith(("cliffdata/", "pipeline/")) or dep == "data/problems":
                assert dep in deps, f"{name} lacks {dep}"
            elif not dep.startswith("data/rollouts/shards"):        # its own merge reads its own shards
                assert STUDY_PREFIX + dep in deps, f"{name} lacks {STUDY_PREFIX + dep}"
        for param in stage_body(other).get("params", []):
            param = param if isinstance(param, str) else next(iter(param))
            assert param == "model" or param_covered(param, body["params"]), f"{name} lacks params {param}"
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage_body(other).get("outs", [])]
        outs += [m if isinstance(m, str) else next(iter(m)) for m in stage_body(other).get("metrics", [])]
        own = [o if isinstance(o, str) else next(iter(o)) for o in body.get("outs", []) + body.get("metrics", [])]
        for out in outs:
            if "${item.shard}" in out:
                out = "data/rollouts/shards"
            assert STUDY_PREFIX + out in own, f"{name} does not write {STUDY_PREFIX + out}"
