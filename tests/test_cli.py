"""`cliffdata sql`: read-only queries over a tiny seed of cliffs and trace_cliffs."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cliffdata import schema
from cliffdata.analysis import sandbox
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
    # a PIVOT reads, but cannot hide a write around it
    "create table t as pivot cliffs on category using count(*)",
    "create view v as pivot cliffs on category in ('uncertain') using count(*)",
    "insert into cliffs pivot cliffs on category using count(*)",
    "copy (pivot cliffs on category using count(*)) to 'x.csv'",
    "copy (select * from (pivot cliffs on category using count(*))) to 'data/cliffs/cliffs.parquet'",
    "explain analyze copy (pivot cliffs on category using count(*)) to 'x.csv'",
    "pivot cliffs on category using count(*); create table t as pivot cliffs on third using count(*)",
])
def test_writes_are_refused(root, capsys, sql):
    before = files(root)
    assert main(["sql", sql]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("refused: ") and "cliffdata sql is read-only" in captured.err
    assert captured.err.count("\n") == 1
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
    """DuckDB's suggestion, candidate bindings and caret are printed, not only its first line."""
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


@pytest.mark.integration
def test_console_script(root):
    exe = Path(sys.executable).with_name("cliffdata")
    if not exe.exists():
        pytest.skip("console script not installed")
    done = subprocess.run([str(exe), "sql", "select count(*) from cliffs", "--format", "csv"],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "count_star()\n3\n")
    done = subprocess.run([str(exe), "sql", "delete from cliffs"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.startswith("refused: 'delete from cliffs' is a DELETE statement")


# The sandbox. Each statement tries to write, attach, install, load, set, export, copy, reach a URL
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


@pytest.mark.integration
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

    from cliffdata.analysis import sandbox

    con = sandbox.connect_sandbox(root)
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


# --- limits: time, result size, spill; signals -------------------------------------------------------

NEVER_ENDS = "with recursive r(n) as (select 1 union all select n + 1 from r) select count(*) from r"
SPILLS = "select md5(range::varchar) as s, range from range(2000000) order by s desc"
ROOT_DIR = Path(__file__).resolve().parents[1]


def write_params(root: Path, **analysis) -> None:
    """The project's params.yaml under `root`, with some `analysis` keys set."""
    import yaml

    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    params["analysis"].update(analysis)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def spill_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("cliffdata-duckdb-*"))


def test_sql_timeout_stops_a_never_ending_query(root, capsys):
    start = time.monotonic()
    assert main(["sql", "--timeout", "2", NEVER_ENDS]) == 1
    assert time.monotonic() - start < 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "time limit of 2 s" in err and "analysis.sql_timeout" in err and "--timeout SECONDS" in err
    assert main(["sql", "--timeout", "0", "select 1 as one"]) == 0             # 0: no limit
    with pytest.raises(SystemExit) as done:
        main(["sql", "--timeout", "-1", "select 1"])
    assert done.value.code == 2


def test_sql_timeout_defaults_to_params_yaml(root, capsys):
    write_params(root, sql_timeout=1)
    assert main(["sql", NEVER_ENDS]) == 1
    assert "time limit of 1 s" in capsys.readouterr().err
    assert main(["sql", "select count(*) as n from cliffs"]) == 0               # the params.yaml root still reads


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
@pytest.mark.integration
def test_sql_signal_stops_the_query_and_removes_the_spill_folder(root, tmp_path, signum, code, word):
    """Ctrl-C (SIGINT) and SIGTERM stop a running query within a second: exit 130 / 143, one line, and
    the spill folder the command made is gone."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT_DIR)}
    # Ctrl-C's handler set here too: a shell starts background jobs with SIGINT ignored, and Python keeps that
    script = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "from cliffdata.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "sql", NEVER_ENDS], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 8
        while not spill_folders(temp) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert spill_folders(temp), "the command made no spill folder"
        time.sleep(0.5)                                      # the query runs
        assert proc.poll() is None
        start = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=5)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out, err) == (code, "", f"{word}\n")
    assert took < 1.5
    assert spill_folders(temp) == []


def test_sql_spill_folder_is_removed_on_every_exit(root, tmp_path, monkeypatch, capsys):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    for argv, code in ((["sql", "select 1"], 0), (["sql", "select nope"], 1), (["sql", "delete from cliffs"], 2),
                       (["sql", "--timeout", "0.5", NEVER_ENDS], 1), (["sql", "--schema"], 0)):
        assert main(argv) == code
        assert spill_folders(temp) == [], argv


def peak_rss_mib(root: Path, sql: str) -> float:
    """Peak resident memory (MiB) of `cliffdata sql --format csv SQL > /dev/null` in a fresh process."""
    script = ("import resource, subprocess, sys\n"
              "subprocess.run([sys.executable, '-m', 'cliffdata.cli', 'sql', '--format', 'csv', sys.argv[1]],\n"
              "               stdout=subprocess.DEVNULL, check=True)\n"
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", script, sql], cwd=root, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT_DIR)})
    return int(done.stdout.split()[-1]) / 1024


@pytest.mark.integration
def test_sql_csv_streams_a_large_result_in_bounded_memory(root):
    """2 million rows as CSV take no more memory than 10 rows: the rows go out in batches as DuckDB makes
    them (all of them in Python at once took 485 MB more here, 3.8 GB at 18.5 million rows, measured)."""
    small = peak_rss_mib(root, "select range as i, range * 2 as j from range(10)")
    large = peak_rss_mib(root, "select range as i, range * 2 as j from range(2000000)")
    assert large - small < 100, (small, large)


def test_sql_csv_and_json_write_every_row_of_several_batches(root, capsys):
    n = 2 * sandbox.BATCH_ROWS + 5
    assert main(["sql", "--format", "csv", f"select range as i from range({n})"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "i" and lines[1:] == [str(i) for i in range(n)]
    sql = f"select range as i, range % 2 = 0 as even from range({n})"
    assert main(["sql", "--format", "json", sql]) == 0
    expected = [{"i": i, "even": i % 2 == 0} for i in range(n)]
    assert capsys.readouterr().out == json.dumps(expected, indent=2) + "\n"
    assert main(["sql", "--format", "json", "select 1 as a; select 2 as b where false; select 3 as c"]) == 0
    assert capsys.readouterr().out == json.dumps([[{"a": 1}], [], [{"c": 3}]], indent=2) + "\n"
    assert main(["sql", "--format", "json", "select 1 as a where false"]) == 0
    assert capsys.readouterr().out == "[]\n"


@pytest.mark.integration
def test_sql_stops_quietly_when_the_reader_goes_away(root):
    """`cliffdata sql … | head -1`: the command stops (the rest is never computed) without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "cliffdata.cli", "sql", "--format", "csv",
                             "select range as i from range(1000000000000)"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT_DIR)})
    try:
        assert proc.stdout.readline() == b"i\n"
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=10) == 141
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert err == b""


def test_sql_table_prints_at_most_max_rows(root, capsys):
    assert main(["sql", "select range as i from range(1500)"]) == 0                # analysis.sql_max_rows: 1000
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:3] == ["  i", "---", "  0"] and lines[-2:] == ["999", "(first 1000 rows; more not shown)"]
    assert captured.err.count("\n") == 1 and "more than 1000 rows" in captured.err
    assert "--max-rows" in captured.err and "--format csv" in captured.err
    start = time.monotonic()                         # the rest is never computed
    assert main(["sql", "--max-rows", "2", "select range as i from range(1000000000000)"]) == 0
    assert time.monotonic() - start < 5
    assert capsys.readouterr().out.splitlines() == ["i", "-", "0", "1", "(first 2 rows; more not shown)"]
    assert main(["sql", "--max-rows", "0", "select range as i from range(1500)"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "(1500 rows)" and captured.err == ""
    assert main(["sql", "--max-rows", "3", "select range as i from range(3)"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(3 rows)"


def test_sql_spill_is_capped(root, capsys):
    """Past analysis.memory_limit a query spills, up to analysis.max_temp_directory_size; past that it fails
    with one line naming both."""
    write_params(root, memory_limit="40MB", max_temp_directory_size="1MB", threads=1)
    assert main(["sql", "--format", "csv", f"select count(*) from ({SPILLS})"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Out of Memory Error")
    assert "analysis.memory_limit = 40MB" in err and "analysis.max_temp_directory_size = 1MB" in err


@pytest.mark.parametrize("key, value, match", [
    ("max_temp_directory_size", "lots", "max_temp_directory_size must be a size like 512MB or 10GB, got 'lots'"),
    ("max_temp_directory_size", "50%", "max_temp_directory_size must be a size"),
    ("sql_timeout", -1, r"sql_timeout must be in \[0, inf\), got -1"),
    ("sql_max_rows", -1, r"sql_max_rows must be in \[0, inf\), got -1"),
    ("sql_max_rows", 1.5, "sql_max_rows: expected int, got 1.5"),
])
def test_sql_params_are_validated(key, value, match):
    import yaml

    from cliffdata.config.load import parse_params

    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    params["analysis"][key] = value
    with pytest.raises(ValueError, match=match):
        parse_params(params)


# --- input: --file, PIVOT, the datasets ----------------------------------------------------------------

def test_sql_file_that_is_not_utf8_is_one_line(root, capsys):
    (root / "q.sql").write_bytes(b"select 'caf\xe9' as word")
    assert main(["sql", "--file", "q.sql"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "q.sql" in err and "not UTF-8" in err and "0xe9" in err
    (root / "q.sql").write_bytes("\ufeffselect 'café' as word".encode())          # a byte order mark is fine
    assert main(["sql", "--file", "q.sql"]) == 0
    assert "café" in capsys.readouterr().out


def test_sql_pivot_and_unpivot_read(root, capsys):
    assert main(["sql", "--format", "csv", "pivot cliffs on category using count(*) group by trace_id "
                                           "order by trace_id"]) == 0
    assert capsys.readouterr().out.splitlines() == ["trace_id,deterministic,uncertain", "t1,1,1", "t2,0,1"]
    assert main(["sql", "--format", "csv", "unpivot (select trace_id, token_index, rank from cliffs "
                                           "where token_index = 2) on token_index, rank into name k value v"]) == 0
    assert capsys.readouterr().out.splitlines() == ["trace_id,k,v", "t1,token_index,2", "t1,rank,1"]
    sql = "with p as (pivot cliffs on category using count(*) group by trace_id) select count(*) as n from p"
    assert main(["sql", "--format", "csv", sql]) == 0
    assert capsys.readouterr().out == "n\n2\n"
    assert main(["sql", "explain pivot cliffs on category using count(*)"]) == 0


def test_sql_refuses_dataset_links(root, tmp_path, capsys):
    """A dataset path (or a part of a dataset folder) that is a symbolic link is refused, wherever it points:
    the views read the files under the root."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    schema.write("trace_cliffs", [], elsewhere / "trace_cliffs.parquet")
    link = root / schema.PATHS["trace_cliffs"]
    link.symlink_to(elsewhere / "trace_cliffs.parquet")
    assert main(["sql", "select count(*) from cliffs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(link) in err and "symbolic link" in err
    link.unlink()
    folder = root / schema.PATHS["traces"]                # a folder of parts, one of them a link
    folder.mkdir(parents=True)
    schema.write("traces", [], elsewhere / "part-1.parquet")
    (folder / "part-1.parquet").symlink_to(elsewhere / "part-1.parquet")
    assert main(["sql", "select count(*) from cliffs"]) == 2
    err = capsys.readouterr().err
    assert str(folder / "part-1.parquet") in err and "symbolic link" in err
    (folder / "part-1.parquet").unlink()
    schema.write("traces", [], folder / "part-1.parquet")
    assert main(["sql", "select count(*) as n from traces"]) == 0


def test_sql_refuses_a_file_without_its_schemas_columns(root, capsys):
    import pyarrow.parquet as pq

    path = root / schema.PATHS["cliffs"]
    table = schema.read("cliffs", path)
    pq.write_table(table.drop_columns(["category"]), path)
    assert main(["sql", "select count(*) from trace_cliffs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "no column category" in err and "VARCHAR" in err
    pq.write_table(table.set_column(table.schema.get_field_index("rank"), "rank",
                                    table.column("rank").cast("string")), path)
    assert main(["sql", "select 1"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "column rank" in err and "is VARCHAR, not INTEGER" in err
    pq.write_table(table.append_column("note", table.column("category")), path)    # an extra column is fine
    assert main(["sql", "select count(*) as n from cliffs"]) == 0
