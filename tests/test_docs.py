"""The documentation holds together: the README stays a front door, every relative link and anchor in
README.md and docs/ resolves, every "protocol §N" the repository cites is a heading of docs/protocol.md,
every stage of dvc.yaml is in the README's stage table, the commands docs/ gives exist, and the docs say
what things are, not how they came about. In process, no subprocess: the file list is a walk of the tree."""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

from helpers import shell_commands

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PROTOCOL = DOCS / "protocol.md"
README_MAX_LINES = 300

# Not the project's sources: VCS and DVC internals, environments, caches, pipeline outputs and stores.
SKIP_DIRS = {".git", ".venv", ".cache", "data", "models", "mlartifacts", "mlruns", "reports", "exports",
             "__pycache__", "node_modules", ".pytest_cache", ".ruff_cache", ".mypy_cache", "cliffdata.egg-info"}
SKIP_PATHS = {Path(".dvc/cache"), Path(".dvc/tmp"), Path("plots/html")}
TEXT_SUFFIXES = {".py", ".md", ".sql", ".yaml", ".yml", ".toml", ".js", ".css", ".txt", ".cfg", ".ini", ".sh", ""}
MAX_BYTES = 2_000_000

# "protocol §5", "protocol §5.2", and the sections listed after it in the same clause ("protocol §5 RQ2/3, §6")
CITATION = re.compile(r"[Pp]rotocol (§\d+(?:\.\d+)*(?:[^§\n();]{0,20}§\d+(?:\.\d+)*)*)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
FENCE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Spelled with a bracketed first letter, so that this file passes the same check of the repository's sources.
PROCESS_WORDS = [
    (re.compile(r"(?<![\w\])])\[[A-Z]\]"), "a ticket's bracketed letter"),       # not an index: list[T], p[N]
    (re.compile(r"\b[s]essions? \d", re.I), "a numbered sitting"),
    (re.compile(r"\b[s]essions?\b(?![- ](?:fixtures?|scoped?)\b)", re.I), "a work-log sitting"),
    (re.compile(r"\b[i]ssues?\b", re.I), "a tracker ticket"),
    (re.compile(r"\b[g]oals?\b", re.I), "a target the work set itself"),
]


def doc_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def without_fences(text: str) -> str:
    """The text with fenced blocks blanked (line count kept): a `# comment` in a shell block is no heading."""
    return FENCE.sub(lambda m: "\n" * m[0].count("\n"), text)


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code blanked, so neither is read as links or prose."""
    return re.sub(r"`[^`\n]*`", "``", without_fences(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits, `_`, `-` and spaces
    kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)          # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, title in HEADING.findall(without_fences(page.read_text(encoding="utf-8"))):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def source_files() -> list[Path]:
    """The repository's text files: a walk of the tree without the folders that hold no sources."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and rel / d not in SKIP_PATHS)
        for name in sorted(names):
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES and not path.is_symlink() and path.stat().st_size <= MAX_BYTES:
                files.append(path)
    return files


def protocol_sections() -> set[str]:
    text = without_fences(PROTOCOL.read_text(encoding="utf-8"))
    return {m[1] for title in HEADING.findall(text) for m in [re.match(r"§(\d+(?:\.\d+)*)(?:\s|$)", title[1])] if m}


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/ (at most {README_MAX_LINES})"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):            # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_protocol_headings_are_numbered_under_their_parents():
    sections = protocol_sections()
    assert {str(n) for n in range(1, 9)} <= sections, f"protocol.md lacks a top-level section: {sorted(sections)}"
    orphans = sorted(s for s in sections if "." in s and s.rsplit(".", 1)[0] not in sections)
    assert orphans == [], f"protocol.md subsections without their parent section: {orphans}"


def test_every_protocol_citation_is_a_heading():
    sections = protocol_sections()
    cited, missing = 0, []
    for path in source_files():
        text = path.read_text(encoding="utf-8", errors="ignore")
        if "rotocol §" not in text:
            continue
        for number, line in ((n.rstrip("."), text.count("\n", 0, m.start()) + 1)
                             for m in CITATION.finditer(text) for n in SECTION.findall(m[1])):
            cited += 1
            if number not in sections:
                missing.append(f"{path.relative_to(ROOT)}:{line}: §{number}")
    assert cited > 50, f"only {cited} protocol citations found: is the walk of the tree skipping the sources?"
    assert missing == [], f"cited sections that are not headings of docs/protocol.md: {missing}"


def test_every_stage_is_in_the_readme_stage_table():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    table = README.read_text(encoding="utf-8")
    missing = [name for name in stages if not re.search(rf"^\| `{re.escape(name)}(?:@[^`]*)?` \|", table, re.M)]
    assert missing == [], f"dvc.yaml stages missing from the README's stage table: {missing}"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_development_history(page):
    found = []
    for number, line in enumerate(without_code(page.read_text(encoding="utf-8")).splitlines(), 1):
        found += [f"line {number}: {what}: {line.strip()[:100]}" for pattern, what in PROCESS_WORDS if pattern.search(line)]
    assert found == [], f"{page.relative_to(ROOT)} speaks of how it was made, not of what things are: {found}"


def test_commands_in_docs_exist():
    """As tests/test_environment.py does for the README: make targets, scripts, modules and `cliffdata`
    subcommands that docs/ gives exist, so a command copied from a page runs as written."""
    from cliffdata.cli import build_parser

    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = {t for line in re.findall(r"^([\w .-]+):(?!=)", makefile, re.M) for t in line.split()}
    missing = []
    for page in sorted(DOCS.glob("*.md")):
        for command in shell_commands(page.read_text(encoding="utf-8")):
            missing += [f"{page.name}: make {t}" for t in re.findall(r"\bmake\s+([\w-]+)", command) if t not in targets]
            missing += [f"{page.name}: {p}" for p in re.findall(r"\bpython\s+([\w/.-]+\.py)\b", command)
                        if not (ROOT / p).is_file()]
            missing += [f"{page.name}: python -m {m}" for m in re.findall(r"\bpython\s+-m\s+([\w.]+)", command)
                        if importlib.util.find_spec(m) is None]
            missing += [f"{page.name}: cliffdata {c}" for c in re.findall(r"(?:^|[\s;&|(])cliffdata\s+([a-z][\w-]*)", command)
                        if c not in subcommands]
    assert missing == [], f"docs/ gives commands that do not exist: {missing}"
