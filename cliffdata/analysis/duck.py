"""Thin DuckDB runner over the pipeline's Parquet datasets.

    con = connect(Path("."))                              # one view per dataset file that exists
    table = run_sql_file(con, "occurrence", {"include_empty_prefix": True})
    assert_checks(con)                                    # every sql/checks/*.sql returns zero rows
    write_metrics(Path("."), {"include_empty_prefix": True, "entropy_threshold": 0.056,
                              "use_full_entropy": False})

SQL lives in `cliffdata/analysis/sql/<name>.sql` (one file per output table, a CTE chain ending in
`final`) and `cliffdata/analysis/sql/checks/<name>.sql` (each returns the rows that violate one
invariant). Views are named after the datasets of `schema.PATHS`. The connection is in-memory: nothing
here writes a database file. Untrusted SQL (`cliffdata sql`) goes through the sandbox
(cliffdata/analysis/sandbox.py), which refuses every statement that is not a read.
"""
from __future__ import annotations

import atexit
import csv
import functools
import io
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from cliffdata import schema
from cliffdata.cliffs import taxonomy
from cliffdata.cliffs.stats import null_count_quantile
from cliffdata.config.analysis import AnalysisConfig
from cliffdata.scan import dataset_files

if TYPE_CHECKING:                                   # the study's models (cliffdata/study.py), duck-typed
    from cliffdata.study import Member

log = logging.getLogger(__name__)

# Parameters each metrics query takes; write_metrics expects exactly their union.
METRICS_PARAMS: dict[str, tuple[str, ...]] = {
    "occurrence": ("include_empty_prefix",),
    "taxonomy": ("include_empty_prefix", "entropy_threshold", "use_full_entropy"),
}
NUM_DIGITS = 6


# No extension is ever downloaded or loaded behind the user's back (a read_csv('https://…') would
# otherwise auto-install httpfs: an outbound download and new files under ~/.duckdb).
NO_EXTENSIONS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                 "allow_community_extensions": False, "allow_unsigned_extensions": False}


# The spill folder `engine` made for a connection: removed by `close`, else when the connection is collected.
_OWNED_TEMP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Every open `engine` connection, closed at exit: a connection holding a Python function (the SQL
# function below) that is still open when the interpreter tears down is reported as leaked by nanobind.
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_live() -> None:
    for con in list(_LIVE):
        close(con)


def _null_count_quantile(cells: list[dict] | None, prob: float) -> int:
    """SQL `null_count_quantile(cells, prob)`: the exact quantile of the false-cliff count whose null law
    is `cells` (a list of {q, num_pairs}: `trace_cliffs.null_fire_cells`, or their sums over any group)."""
    cells = cells or []
    return null_count_quantile([c["q"] for c in cells], [c["num_pairs"] for c in cells], prob)


def _register_functions(con: duckdb.DuckDBPyConnection) -> None:
    cells = duckdb.list_type(duckdb.struct_type({"q": "DOUBLE", "num_pairs": "BIGINT"}))
    con.create_function("null_count_quantile", _null_count_quantile, [cells, "DOUBLE"], "BIGINT",
                        side_effects=False)


def engine(cfg: AnalysisConfig = AnalysisConfig()) -> duckdb.DuckDBPyConnection:
    """A bare in-memory connection with the `analysis` params section's threads and memory limit, spilling
    to its temp folder (by default a fresh one in the system temp, removed by `close` or with the
    connection: an in-memory DuckDB would otherwise spill into `./.tmp`) up to `max_temp_directory_size`,
    no extension loading, the taxonomy's macros (`high_entropy`, `category_of`, `token_category`) and
    `null_count_quantile(cells, prob)`, the noise audit's exact quantile (cliffdata/cliffs/stats.py)."""
    temp = cfg.temp_directory
    owned = None
    if temp is None:
        owned = temp = tempfile.mkdtemp(prefix="cliffdata-duckdb-")
    try:
        con = duckdb.connect(":memory:", config={"threads": cfg.threads, "temp_directory": str(temp), **NO_EXTENSIONS})
    except BaseException:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise
    if owned is not None:
        _OWNED_TEMP[con] = weakref.finalize(con, shutil.rmtree, owned, ignore_errors=True)
    # SET, not the connect config: DuckDB 2.0 shows a max_temp_directory_size given to connect() but spills
    # past it (measured: 240 MB under a 1 MB cap). The sizes are validated (digits and a unit, AnalysisConfig).
    con.execute(f"set memory_limit = '{cfg.memory_limit.strip()}'")
    con.execute(f"set max_temp_directory_size = '{cfg.max_temp_directory_size.strip()}'")
    for statement in taxonomy.sql_macros():          # the token taxonomy, one definition (cliffdata/cliffs/taxonomy.py)
        con.execute(statement)
    _register_functions(con)
    _LIVE.add(con)
    return con


def close(con: duckdb.DuckDBPyConnection) -> None:
    """Close a connection and remove the spill folder `engine` made for it now, not when it is collected."""
    con.close()
    _LIVE.discard(con)
    finalizer = _OWNED_TEMP.pop(con, None)
    if finalizer is not None:
        finalizer()


def connect(root: Path = Path("."), datasets: Iterable[str] | None = None,
            cfg: AnalysisConfig = AnalysisConfig()) -> duckdb.DuckDBPyConnection:
    """An in-memory connection (`engine`) with one view per dataset (`cliffs`, `traces`, ...) whose file
    or folder of Parquet parts exists under `root` (`schema.PATHS`); `datasets` limits the views to
    those names. A file DuckDB cannot read as Parquet is a ValueError naming it."""
    names = list(schema.PATHS) if datasets is None else list(datasets)
    unknown = sorted(set(names) - set(schema.PATHS))
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; known: {sorted(schema.PATHS)}")
    con = engine(cfg)
    create_views(con, Path(root), names)
    return con


@functools.cache
def _column_types(name: str) -> dict[str, str]:
    """The DuckDB type of every column of dataset `name` (schema.SCHEMAS), by column name."""
    rel = _parser().from_arrow(schema.SCHEMAS[name].empty_table())
    return dict(zip(rel.columns, map(str, rel.types)))


def _check_dataset(con: duckdb.DuckDBPyConnection, name: str, path: Path, what: str) -> None:
    """Refuse the files of dataset `name` at `path` (`what` names it in messages) that are not what the
    pipeline writes: a symbolic link (the path, or a part of its folder), wherever it points, or a file
    whose columns are not the dataset's (schema.SCHEMAS; extra columns are fine), naming the file and
    the column. A ValueError."""
    parts = dataset_files(path)
    for link in [p.absolute() for p in [path, *parts] if p.is_symlink()]:
        raise ValueError(f"{link}: {what} is a symbolic link (to {os.readlink(link)}); the views read only "
                         f"dataset files under the root, not links: put the file itself there")
    expected = _column_types(name)
    for part in [p.resolve() for p in parts]:
        try:
            rel = con.read_parquet(str(part))
        except duckdb.Error as e:
            raise ValueError(f"{part}: {what} is not a readable Parquet file "
                             f"({str(e).strip().splitlines()[0]})") from None
        found = dict(zip(rel.columns, map(str, rel.types)))
        for column, kind in expected.items():
            if column not in found:
                raise ValueError(f"{part}: {what} has no column {column} ({kind}, cliffdata/schema.py): "
                                 f"not a file the pipeline wrote; rebuild it (`dvc repro`) or `dvc pull` it")
            if found[column] != kind:
                raise ValueError(f"{part}: column {column} of {what} is {found[column]}, not {kind} "
                                 f"(cliffdata/schema.py): rebuild it (`dvc repro`) or `dvc pull` it")


def create_views(con: duckdb.DuckDBPyConnection, root: Path, names: list[str], checked: bool = False) -> list[str]:
    """One view per dataset whose file (or folder of parts) exists; returns the files' absolute paths.
    `checked`: `_check_dataset` first (no symbolic links, the schema's columns)."""
    files = []
    for name in names:
        path = root / schema.PATHS[name]
        parts = [str(p.resolve()) for p in dataset_files(path)]
        if not parts:
            log.debug("no %s at %s: no view", name, path)
            continue
        if checked:
            _check_dataset(con, name, path, f"the {name} dataset")
        try:
            # A relation view takes the paths as values, so no path is ever spliced into SQL text.
            con.read_parquet(parts if path.is_dir() else parts[0]).create_view(name, replace=True)
        except duckdb.Error as e:
            con.close()
            raise ValueError(f"{path}: the {name} dataset is not a readable Parquet file "
                             f"({str(e).strip().splitlines()[0]})") from None
        files.extend(parts)
    return files


# the study's per-model datasets (problems are shared: no `model` column to add)
STUDY_DATASETS = tuple(n for n in schema.PATHS if n not in ("problems", "study_cpm_shift"))


def create_study_views(con: duckdb.DuckDBPyConnection, members: Sequence[Member], root: Path = Path("."),
                       names: Iterable[str] = STUDY_DATASETS, checked: bool = False) -> list[str]:
    """The study's models in one schema: `study.models` (model, family, size_b, source; in study order) and
    one view `study.<dataset>` per dataset, each model's rows with a leading `model` column, for every
    model whose dataset exists under `root / member.root` (cliffdata.study.members). Returns the files'
    absolute paths. `checked`: `_check_dataset` each model's files first (no symbolic links, the schema's
    columns)."""
    con.execute("create schema if not exists study")
    con.execute("create or replace table study.models (model_order integer, model varchar, family varchar, "
                "size_b double, source varchar)")
    for i, m in enumerate(members):
        con.execute("insert into study.models values (?, ?, ?, ?, ?)", [i, m.name, m.family, m.size_b, m.source])
    files = []
    for name in names:
        rels = []
        for m in members:
            path = Path(root) / m.layout.data(name)
            parts = [str(p.resolve()) for p in dataset_files(path)]
            if not parts:
                continue
            if checked:
                _check_dataset(con, name, path, f"the {name} dataset of model {m.name}")
            try:
                rel = con.read_parquet(parts if path.is_dir() else parts[0])
            except duckdb.Error as e:
                raise ValueError(f"{path}: the {name} dataset of model {m.name} is not a readable Parquet file "
                                 f"({str(e).strip().splitlines()[0]})") from None
            # the name is a value, never SQL text
            rels.append(rel.select(duckdb.ConstantExpression(m.name).alias("model"), duckdb.StarExpression()))
            files.extend(parts)
        if not rels:
            continue
        union = rels[0]
        for rel in rels[1:]:
            union = union.union(rel)
        con.execute("use study")
        try:
            union.create_view(name, replace=True)
        finally:
            con.execute("use main")
    return files


def views(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the tables and views the connection can query (`study.<name>` for the study's)."""
    rows = con.sql("select table_schema, table_name from information_schema.tables").fetchall()
    return {name if schema_ == "main" else f"{schema_}.{name}" for schema_, name in rows}


def _sql_dir() -> Traversable:
    return resources.files("cliffdata.analysis") / "sql"


def read_sql(name: str) -> str:
    """The text of `cliffdata/analysis/sql/<name>.sql` (package data)."""
    path = _sql_dir() / f"{name}.sql"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".sql") for p in _sql_dir().iterdir() if p.name.endswith(".sql"))
        raise ValueError(f"no sql file {name!r}; known: {known}")
    return path.read_text()


def run_sql_file(con: duckdb.DuckDBPyConnection, name: str, params: dict) -> pa.Table:
    """Run `cliffdata/analysis/sql/<name>.sql` with named parameters (`$name`) and return its rows."""
    return con.sql(read_sql(name), params=params).to_arrow_table()


def check_files() -> dict[str, str]:
    """Every check, by name (file stem, sorted): the SQL that returns the violating rows."""
    files = sorted((p for p in (_sql_dir() / "checks").iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return {p.name.removesuffix(".sql"): p.read_text() for p in files}


@functools.cache
def _parser() -> duckdb.DuckDBPyConnection:
    # A bare connection: on one with relation views DuckDB binds them and fails. One for all checks
    # (opening one per check cost 0.55 s of the cliffs stage's 38 checks, measured).
    parser = duckdb.connect(":memory:", config=NO_EXTENSIONS)
    for statement in taxonomy.sql_macros():          # the checks call the taxonomy's macros
        parser.execute(statement)
    return parser


@functools.cache
def _referenced_datasets(sql: str) -> frozenset[str]:
    return frozenset(_parser().get_table_names(sql) & set(schema.PATHS))


def _float_columns(name: str) -> list[tuple[str, bool]]:
    """(column, is a list) for every floating-point column of dataset `name`."""
    out = []
    for field in schema.SCHEMAS[name]:
        kind = field.type
        is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        if pa.types.is_floating(kind.value_type if is_list else kind):
            out.append((field.name, is_list))
    return out


def finite_checks(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """One check per dataset view with floating-point columns (`finite_<dataset>`): the rows, by key, where
    a value is NaN or infinite (a potential, probability, entropy or drop never is; null is no value). Each
    row names the column and the value, so a bad number is caught where it is written, not later, where
    it breaks a JSON writer or a comparison."""
    checks = {}
    for name in sorted(views(con) & set(schema.SCHEMAS)):
        columns = _float_columns(name)
        if not columns:
            continue
        keys = ", ".join(f'"{k}"' for k in schema.KEYS[name])
        parts = []
        for column, is_list in columns:
            if is_list:
                bad = f'list_bool_or(list_transform("{column}", lambda x: not isfinite(x)))'
                value = f'cast(list_filter("{column}", lambda x: not isfinite(x))[1] as varchar)'
            else:
                bad, value = f'not isfinite("{column}")', f'cast("{column}" as varchar)'
            # `offset 0`: a scan the filter is not pushed into. Parquet's min/max statistics leave NaN out,
            # and DuckDB skips row groups by them, so a pushed-down NaN filter finds nothing (measured)
            parts.append(f"select {keys}, '{column}' as column_name, {value} as value "
                         f"from (select * from \"{name}\" offset 0) where {bad}")
        checks[f"finite_{name}"] = "\nunion all\n".join(parts)
    return checks


def _applicable_checks(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    present = views(con)
    checks = finite_checks(con)
    for name, sql in check_files().items():
        missing = _referenced_datasets(sql) - present
        if missing:
            log.info("check %s skipped: no %s", name, sorted(missing))
        else:
            checks[name] = sql
    return checks


def run_checks(con: duckdb.DuckDBPyConnection, skip: Iterable[str] = ()) -> dict[str, int]:
    """Run every check whose datasets have views (but those in `skip`); returns the number of
    violating rows by check."""
    counts = {}
    for name, sql in _applicable_checks(con).items():
        if name in set(skip):
            continue
        # is there any violating row? (counting the ordered rows directly scans 7x slower at 10^8 rows:
        # the ORDER BY keeps DuckDB from pushing the filter into the Parquet scan, measured)
        found = con.sql(sql).limit(1).fetchall()
        counts[name] = con.sql(sql).aggregate("count(*)").fetchall()[0][0] if found else 0
    return counts


def assert_checks(con: duckdb.DuckDBPyConnection, num_examples: int = 5, skip: Iterable[str] = ()) -> dict[str, int]:
    """`run_checks`, raising a ValueError that names each failing check and shows a few of its rows."""
    counts = run_checks(con, skip)
    failing = {name: n for name, n in counts.items() if n}
    if failing:
        sqls = {**check_files(), **finite_checks(con)}
        lines = [f"{len(failing)} of {len(counts)} data checks failed:"]
        for name, n in failing.items():
            rel = con.sql(sqls[name])
            lines.append(f"  {name}: {n} rows, e.g. {tuple(rel.columns)}")
            lines.extend(f"    {row}" for row in rel.limit(num_examples).fetchall())
        raise ValueError("\n".join(lines))
    return counts


def _round(value):
    return round(value, NUM_DIGITS) if isinstance(value, float) else value


def _records(table: pa.Table) -> list[dict]:
    return [{k: _round(v) for k, v in row.items()} for row in table.to_pylist()]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def table_files(table: pa.Table, key: str) -> dict[str, str]:
    """A SQL result as the text of metrics files: JSON keyed by `key`, CSV and Markdown (floats rounded)."""
    records = [{c: round(v, NUM_DIGITS) if isinstance(v, float) else v for c, v in row.items()}
               for row in table.to_pylist()]
    rows = [list(r.values()) for r in records]
    keyed = {r[key]: {c: v for c, v in r.items() if c != key} for r in records}
    return {"json": json.dumps(keyed, indent=2) + "\n", "csv": format_csv(table.column_names, rows),
            "md": format_markdown(table.column_names, rows)}


def format_csv(columns: list[str], rows: list[list], header: bool = True) -> str:
    """CSV text: a header line (unless `header` is false: a later batch of the same table), then the rows
    (null as empty, booleans as true / false)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def format_markdown(columns: list[str], rows: list[list]) -> str:
    """A Markdown pipe table; numeric columns right-aligned."""
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                   for row in rows if row[i] is not None) for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _write_table(directory: Path, name: str, records: list[dict], key: str) -> dict:
    columns = list(records[0]) if records else []
    rows = [[r[c] for c in columns] for r in records]
    keyed = {r[key]: {c: v for c, v in r.items() if c != key} for r in records}
    (directory / f"{name}.json").write_text(json.dumps(keyed, indent=2, sort_keys=True) + "\n")
    (directory / f"{name}.csv").write_text(format_csv(columns, rows))
    (directory / f"{name}.md").write_text(format_markdown(columns, rows))
    return keyed


def write_metrics(root: Path, params: dict, cfg: AnalysisConfig = AnalysisConfig()) -> dict:
    """Run occurrence.sql and taxonomy.sql over the datasets under `root` and write
    `metrics/{occurrence,taxonomy}.{json,csv,md}` (floats rounded to 6 places, byte-stable).

    `params` has exactly: include_empty_prefix (bool; false = paper mode, no cliffs at token 0),
    entropy_threshold (H* in nats, protocol §4), use_full_entropy (bool; false = top-20 entropy).
    Returns {"occurrence": {correctness: row}, "taxonomy": {category: row}}, as written to JSON.
    """
    expected = set().union(*METRICS_PARAMS.values())
    if set(params) != expected:
        raise ValueError(f"write_metrics params must be {sorted(expected)}, got {sorted(params)}")
    for key in ("include_empty_prefix", "use_full_entropy"):
        if not isinstance(params[key], bool):
            raise ValueError(f"{key} must be a bool, got {params[key]!r}")
    values = {**params, "entropy_threshold": float(params["entropy_threshold"])}
    root = Path(root)
    needed = {"cliffs", "trace_cliffs", "token_stats"}
    con = connect(root, needed, cfg)
    missing = needed - views(con)
    if missing:
        raise ValueError(f"write_metrics needs {sorted(missing)} under {root}: "
                         f"{[schema.PATHS[n] for n in sorted(missing)]} not found")
    directory = root / "metrics"
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, key in (("occurrence", "correctness"), ("taxonomy", "category")):
        table = run_sql_file(con, name, {k: values[k] for k in METRICS_PARAMS[name]})
        out[name] = _write_table(directory, name, _records(table), key)
    con.close()
    return out
