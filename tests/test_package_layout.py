"""The package's shape: modules small enough to read whole, no import cycle among them, and library code in
the library. Read from the source (`ast`), in process: nothing is imported or run.

- No module of cliffdata/ is over `MAX_LINES` lines: a larger one is split by concept.
- No import cycle among cliffdata's modules, counting every import of a module, at its top or inside a
  function (a lazy import still ties the two modules): the cycle is named, module by module.
- Tests, entrypoints and benchmarks import functions from cliffdata/ only, never from pipeline/ or
  bench/ (a function two of them share is library code).
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "cliffdata"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, for its __init__.py)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules a module imports, anywhere in it: `import cliffdata.a.b` and `from cliffdata.a
    import b` name the module a.b where it exists, `from cliffdata.a import f` the module a."""
    out = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, known) - {name} for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, nodes and edges in name order)."""
    state: dict[str, int] = {}              # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_is_over_the_line_limit():
    counts = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
              for path in modules().values()}
    assert {p: n for p, n in counts.items() if n > MAX_LINES} == {}, f"modules over {MAX_LINES} lines: split them by concept"


def test_no_import_cycle_among_the_modules():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    edges = graph()
    edges["cliffdata.schema"] = edges["cliffdata.schema"] | {"cliffdata.study"}       # study imports schema
    assert find_cycle(edges) is not None


def test_the_graph_sees_lazy_and_package_imports():
    edges = graph()
    assert "cliffdata.cliffs.stats" in edges["cliffdata.cliffs.taxonomy"]         # inside a function
    assert "cliffdata.analysis.duck" in edges["cliffdata.experiments.ablation"]   # from cliffdata.analysis import duck
    assert "cliffdata.backends" in edges["cliffdata.generate.sampling"]           # a package's __init__.py


def test_nothing_imports_from_pipeline_or_bench():
    found = []
    for folder in ("tests", "pipeline", "bench", PACKAGE):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(parsed(path)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                         else [])
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                          if n.split(".")[0] in ("pipeline", "bench")]
    assert found == [], "functions shared with pipeline/ or bench/ belong in cliffdata/"
