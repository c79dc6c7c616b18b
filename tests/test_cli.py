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
def test_sql_errors_exit_1(root, capsys, sql):
    assert main(["sql", sql]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")


def test_sql_errors_keep_duckdbs_help(root, capsys):
    """[M] 4: DuckDB's suggestion, candidate bindings and caret are printed, not only its first line."""
    assert main(["sql", "select * from clifs"]) == 1
    err = capsys.readouterr().err
    assert 'Did you mean "cliffs"' in err and "LINE 1:" in err and "^" in err
    assert main(["sql", "select categry from cliffs"]) == 1
    err = capsys.readouterr().err
    assert "categry" in err and "Candidate bindings" in err and "category" in err


def test_sql_schema_lists_every_view_and_its_columns(root, capsys):
    schema.write("trace_cliffs", [], root / schema.PATHS["trace_cliffs"])
    assert main(["sql", "--schema"]) == 0
    out = capsys.readouterr().out
    assert "cliffs (3 rows)" in out and "trace_cliffs (0 rows)" in out
    for column in schema.CLIFFS.names:
        assert f"  {column} " in out
    assert "category  VARCHAR" in out.replace("   ", "  ") or "category VARCHAR" in " ".join(out.split())
    assert "traces" not in out.replace("trace_cliffs", "")                # only datasets that exist


def test_sql_prints_every_result_of_a_multi_statement_query(root, capsys):
    assert main(["sql", "select count(*) as n from cliffs; select 7 as seven"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:4] == ["n", "-", "3", "(1 row)"] and "seven" in out and out.rstrip().endswith("(1 row)")
    assert main(["sql", "--format", "json", "select 1 as a; select 2 as b"]) == 0
    assert json.loads(capsys.readouterr().out) == [[{"a": 1}], [{"b": 2}]]
    # one write among reads refuses the whole input before anything runs
    assert main(["sql", "select 1; copy cliffs to 'x.csv'"]) == 2
    assert capsys.readouterr().out == "" and not (root / "x.csv").exists()


def test_bare_sql_and_empty_root_say_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sql"]) == 2
    err = capsys.readouterr().err
    assert "give a query" in err and "not both" not in err and "--schema" in err
    assert main(["sql", "select 1"]) == 2
    err = capsys.readouterr().err
    assert "no dataset found under" in err and "dvc pull" in err and "--root" in err


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"cliffdata {version('cliffdata')}"


def test_missing_dataset_is_an_error(root, capsys):
    assert main(["sql", "select count(*) from traces"]) == 1
    assert "traces" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["sql"], ["sql", "select 1", "--file", "q.sql"], ["sql", "--file", "nope.sql"],
                                  ["sql", "--schema", "select 1"]])
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


# [K] 2: the sandbox. Each statement tries to write, attach, install, load, set, export, copy, reach a URL
# or read outside the datasets; each must be refused with exit 2 and one line, touching nothing.
HOSTILE = [
    "delete from cliffs", "insert into cliffs select * from cliffs", "update cliffs set rank = 2",
    "drop view cliffs", "alter view cliffs rename to c2", "create table t as select 1",
    "create macro m(x) as x + 1", "create or replace view cliffs as select 1 as x",
    "copy cliffs to 'x.csv'", "copy (select 1) to '/tmp/cliffdata-fuzz.csv'", "export database 'dump'",
    "import database 'dump'", "checkpoint", "vacuum", "attach 'other.duckdb' as other",
    "attach ':memory:' as m2", "detach memory", "use memory", "install httpfs", "force install httpfs",
    "load httpfs", "load '/tmp/evil.duckdb_extension'", "set enable_external_access = true",
    "set lock_configuration = false", "reset lock_configuration", "reset enable_external_access",
    "set allowed_paths = ['/etc/passwd']", "set allowed_directories = ['/']", "set home_directory = '/tmp'",
    "set autoinstall_known_extensions = true", "set threads = 64", "pragma enable_profiling",
    "call duckdb_settings()",
    "select * from read_csv('/etc/passwd')", "select * from read_csv_auto('/etc/hostname')",
    "select * from read_text('/etc/passwd')", "select * from read_blob('/etc/passwd')",
    "select * from read_json('/etc/passwd')", "select * from glob('/root/*')", "select * from glob('*')",
    "select * from read_parquet('/etc/*.parquet')", "select * from read_csv(['/etc/passwd'])",
    "select * from read_csv('https://127.0.0.1:9/x.csv')", "select * from read_parquet('http://127.0.0.1:9/x.parquet')",
    "select * from read_csv('s3://bucket/x.csv')", "select * from sniff_csv('/etc/passwd')",
    "select * from parquet_metadata('/etc/x.parquet')", "select * from read_text('../../../../etc/passwd')",
    "select * from read_text('q.sql')",
    "select * from read_parquet(['data/cliffs/cliffs.parquet', '/etc/passwd'])",
    "explain select * from read_csv('/etc/passwd')", "explain analyze copy cliffs to 'x.csv'",
    "select 1; install httpfs", "select count(*) from cliffs; set enable_external_access = true",
]


def test_sql_sandbox_fuzz(root, tmp_path):
    """In one fresh process with a temporary HOME: every hostile statement exits 2 with one line on stderr,
    nothing is written under the root, and ~/.duckdb (extension downloads) is never created."""
    assert len(HOSTILE) >= 40
    (root / "q.sql").write_text("select 1")
    home = tmp_path / "home"
    home.mkdir()
    before = files(root)
    script = (
        "import contextlib, io, json, sys\n"
        "from cliffdata.cli import main\n"
        "out = []\n"
        "for sql in json.loads(sys.argv[1]):\n"
        "    o, e = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):\n"
        "        rc = main(['sql', sql])\n"
        "    out.append([sql, rc, o.getvalue(), e.getvalue()])\n"
        "print(json.dumps(out))\n")
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(HOSTILE)], cwd=root, env=env,
                          capture_output=True, text=True, check=True)
    results = json.loads(done.stdout.splitlines()[-1])
    bad = [(sql, rc, err) for sql, rc, out, err in results
           if rc != 2 or out or err.count("\n") != 1 or not err.startswith("refused: ")]
    assert not bad, bad
    assert not (home / ".duckdb").exists() and not list(home.iterdir())
    assert files(root) == before
    assert not Path("/tmp/cliffdata-fuzz.csv").exists()
    assert main(["sql", "select count(*) as n from cliffs"]) == 0      # reads still work


def test_sql_corrupt_and_missing_datasets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sql", "select 1"]) == 2
    assert "no dataset found under" in capsys.readouterr().err
    bad = tmp_path / schema.PATHS["traces"]
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 not really parquet")
    assert main(["sql", "select 1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "not a readable Parquet file" in err


def test_sql_prints_timestamps_with_time_zone(root, capsys):
    assert main(["sql", "select timestamptz '2026-01-01 12:00:00+00' as t, interval 3 day as i"]) == 0
    assert "2026-01-01 12:00:00+00:00" in capsys.readouterr().out


def test_sandbox_settings_hold_even_without_the_statement_filter(root):
    """The statement filter refuses SET before DuckDB sees it; the connection itself also refuses."""
    import duckdb

    from cliffdata import duck

    con = duck.connect_sandbox(root)
    for sql in ("set enable_external_access = true", "set lock_configuration = false",
                "set allowed_paths = ['/etc/passwd']", "set autoinstall_known_extensions = true"):
        with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
            con.execute(sql)
    with pytest.raises(duckdb.PermissionException):
        con.execute("select * from read_csv('/etc/passwd')")
    assert con.execute("select count(*) from cliffs").fetchall() == [(3,)]
    settings = dict(con.execute("select name, value from duckdb_settings() where name in "
                                "('enable_external_access', 'autoinstall_known_extensions', "
                                "'autoload_known_extensions', 'lock_configuration')").fetchall())
    assert settings == {"enable_external_access": "false", "autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false", "lock_configuration": "true"}
