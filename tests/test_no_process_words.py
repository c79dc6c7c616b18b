"""The project speaks only of itself: its code, SQL, tests, bench, params, pipeline, results and docs say
what a thing is and why, never how it came to be. No work-log sittings, tracker tickets or their bracketed
letters and numbered items, no data sets or functions named after them, no account of how a figure was
reached; git keeps the history. pytest's own vocabulary stays: `scope="session"`, session fixtures and
hooks such as `pytest_sessionfinish(session, exitstatus)`.

In process: the tree is walked with pathlib (generated and data folders skipped) and every file of the
kinds below is read line by line; a failure names file:line and the words.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: folders never read: version control, environments, caches, DVC-tracked data and run outputs
SKIP_DIRS = frozenset({".git", ".venv", ".cache", ".dvc", ".pytest_cache", ".ruff_cache", ".mypy_cache",
                       "__pycache__", "data", "models", "mlartifacts", "mlruns", "runs", "reports", "plots"})
SUFFIXES = frozenset({".py", ".sql", ".yaml", ".yml", ".toml", ".md", ".json"})
NAMES = frozenset({"Makefile", "dvc.yaml"})
#: README.md and docs/ are checked like the rest, by a test of their own
DOCS = ("README.md", "docs")

# Each pattern is spelled so that this file passes its own check (a bracketed first letter).
PROCESS_WORDS = [
    re.compile(r"(?<![\w\])])\[[A-Z]\]"),                           # a ticket's letter (not an index: list[T], p[N])
    re.compile(r"\b[s]essions?\b", re.IGNORECASE),                  # a work-log sitting
    re.compile(r"\b[i]ssues?\b", re.IGNORECASE),                    # a tracker ticket
    re.compile(r"\b[i]tems? [0-9]", re.IGNORECASE),                 # a ticket's numbered item
    re.compile(r"_[s][0-9]+(?:_|\b)"),                              # a sitting's number in a name, alone or mid-name
    re.compile(r"heldout_[s][0-9]+"),
    re.compile(r"_fres[h]_"),                                       # a data set named for being new at the time
    re.compile(r"\b[p]reviously\b", re.IGNORECASE),                 # how a figure was reached
    re.compile(r"\b[w]as [^,;()\n]{1,24}[,;] now\b", re.IGNORECASE),
    re.compile(r"\([w]as [0-9][^)]{0,24}\)", re.IGNORECASE),
]

# pytest's session scope, session fixtures and hooks: blanked out of a line before the patterns run
PYTEST_SESSION = [
    re.compile(r"""scope\s*=\s*["'][s]ession["']"""),               # @pytest.fixture(scope="session")
    re.compile(r"\b[s]ession[- ]scoped?\b", re.IGNORECASE),         # session scope, session-scoped
    re.compile(r"\b[s]ession fixtures?\b", re.IGNORECASE),          # a session fixture, the session fixture's
    re.compile(r"\b\w+\([s]ession(?=[,)])"),                        # a hook or helper taking it: f(session, ...)
    re.compile(r"\bpytest_[s]ession\w*"),                           # pytest_sessionstart, pytest_sessionfinish
    re.compile(r"\b[s]ession\.(?:config|shouldstop|shouldfail|exitstatus|items|testsfailed|testscollected)\b"),
]


def process_words(line: str) -> list[str]:
    """The process words of one line, pytest's session scope, session fixtures and hooks apart."""
    for allowed in PYTEST_SESSION:
        line = allowed.sub(lambda m: " " * len(m.group()), line)
    return [m.group() for pattern in PROCESS_WORDS for m in pattern.finditer(line)]


def checked_files(top: Path = ROOT):
    """Every file of the checked kinds under `top`, skipped folders and symlinked folders apart."""
    for path in sorted(top.iterdir()):
        if path.is_dir():
            if not path.is_symlink() and path.name not in SKIP_DIRS and not path.name.endswith(".egg-info"):
                yield from checked_files(path)
        elif path.is_file() and (path.suffix in SUFFIXES or path.name in NAMES):
            yield path


def findings(paths) -> list[str]:
    out = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            words = process_words(line)
            if words:
                out.append(f"{path.relative_to(ROOT)}:{number}: {', '.join(map(repr, words))}: {line.strip()[:160]}")
    return out


def is_docs(path: Path) -> bool:
    return path.relative_to(ROOT).parts[0] in DOCS


def test_code_tests_bench_params_and_pipeline_speak_only_of_the_project():
    found = findings(p for p in checked_files() if not is_docs(p))
    assert not found, "process words (say what the thing is and why):\n" + "\n".join(found)


def test_readme_and_docs_speak_only_of_the_project():
    found = findings(p for p in checked_files() if is_docs(p))
    assert not found, "process words (say what the thing is and why):\n" + "\n".join(found)


# the words to find, split so that this file passes its own check
@pytest.mark.parametrize("line", [
    "the " + "[" + "G] evidence", "(iss" + "ue [" + "J])", "Sess" + "ion 9's run", "two sess" + "ions",
    "the iss" + "ue's figures", "[" + "L] it" + "em 4: study models", "heldout_" + "s14", "make_s" + "14_curves(18, 0)",
    "def _s" + "14_drift(rng, T):", "_fres" + "h_real_n32", "as measured previous" + "ly",
    "recall ratio w" + "as 0.924, now 0.984", "sweep_rollouts 12 (w" + "as 6)",
])
def test_process_words_are_found(line):
    assert process_words(line)


@pytest.mark.parametrize("line", [
    '@pytest.fixture(scope="session")', "share a session fixture, or mark it slow",
    "the session fixture's dvc repro", "a session-scoped fixture", "def pytest_sessionfinish(session, exitstatus):",
    "    budget = float(session.config.getini('slow_tier_budget_seconds'))", "if _whole_slow_tier(session):",
    "    session.exitstatus = pytest.ExitCode.TESTS_FAILED", "pytestmark = pytest.mark.slow",
    "root = tmp_path_factory.mktemp('study')", "def test_variants_and_the_heldout_split_is_exact():",
    "curves: list[T] = p[N] + q[K]", "fresh rollouts on both sides of every cliff", "top_p, pi_s, x_s",
    "the previous report is replaced whole", "How many pens does Tom have now?",
])
def test_pytest_and_ordinary_words_pass(line):
    assert not process_words(line)
