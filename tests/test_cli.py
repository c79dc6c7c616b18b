"""`cliffdata sql`: read-only queries over a tiny seed of cliffs and trace_cliffs."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cliffdata import schema
from cliffdata.cli import main


def cliff(trace_id: str, token_index: int, category: str) -> dict:
    return dict(trace_id=trace_id, problem_id="p", token_index=token_index, token_id=7, is_correct=True,
                p_prev=1.0, potential=0.25, num_rollouts_prev=4, num_rollouts=4, delta=0.75,
                is_first=token_index == 0, relative_position=token_index / 10, third="early", entropy=0.5,
                rank=1, is_greedy=True, category=category)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A repo root with 3 cliffs; the working directory is the root, so stray writes would land here."""
    schema.write("cliffs", [cliff("t1", 0, "uncertain"), cliff("t1", 2, "deterministic"),
                            cliff("t2", 1, "uncertain")], tmp_path / schema.PATHS["cliffs"])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_count(root, capsys):
    assert main(["sql", "select count(*) as n from cliffs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["n", "-", "3", "(1 row)"]


def test_aligned_table(root, capsys):
    sql = "select category, count(*) as num_cliffs from cliffs group by category order by category"
    assert main(["sql", sql, "--root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "category       num_cliffs",
        "-------------  ----------",
        "deterministic           1",
        "uncertain               2",
        "(2 rows)",
    ]


def test_formats(root, capsys):
    sql = "select trace_id, token_index, delta from cliffs order by all"
    assert main(["sql", sql, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["trace_id", "token_index", "delta"] and rows[1] == ["t1", "0", "0.75"] and len(rows) == 4
    assert main(["sql", sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[2] == {"trace_id": "t2", "token_index": 1, "delta": 0.75}


def test_file(root, capsys):
    (root / "q.sql").write_text("-- cliffs per trace\nselect trace_id, count(*) as n\nfrom cliffs\n"
                                "group by 1\norder by 1;\n")
    assert main(["sql", "--file", "q.sql"]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == ["t1        2", "t2        1", "(2 rows)"]


@pytest.mark.parametrize("sql", [
    "delete from cliffs",
    "drop view cliffs",
    "copy cliffs to 'x.csv'",
    "create table t as select 1",
    "select 1; copy (select * from cliffs) to 'x.csv'",
])
def test_writes_are_refused(root, capsys, sql):
    before = files(root)
    assert main(["sql", sql]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("refused: ") and "cliffdata sql is read-only" in captured.err
    assert files(root) == before


def test_write_in_file_is_refused(root, capsys):
    (root / "q.sql").write_text("copy cliffs to 'x.csv';\n")
    assert main(["sql", "--file", "q.sql"]) == 2
    assert "is a COPY statement" in capsys.readouterr().err
    assert not (root / "x.csv").exists()


@pytest.mark.parametrize("sql", ["select * from no_such_table", "selec 1", "select nope from cliffs"])
def test_sql_errors_exit_1_with_one_line(root, capsys, sql):
    assert main(["sql", sql]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1


def test_missing_dataset_is_an_error(root, capsys):
    assert main(["sql", "select count(*) from traces"]) == 1
    assert "traces" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["sql"], ["sql", "select 1", "--file", "q.sql"], ["sql", "--file", "nope.sql"]])
def test_usage_errors_exit_2(root, capsys, argv):
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_console_script(root):
    exe = Path(sys.executable).with_name("cliffdata")
    if not exe.exists():
        pytest.skip("console script not installed")
    done = subprocess.run([str(exe), "sql", "select count(*) from cliffs", "--format", "csv"],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "count_star()\n3\n")
    done = subprocess.run([str(exe), "sql", "delete from cliffs"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.startswith("refused: 'delete from cliffs' is a DELETE statement")
