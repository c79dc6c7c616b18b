"""`cliffdata sql`'s sandbox: untrusted, ad-hoc SQL over the dataset views and nothing else.

    con = connect_sandbox(Path("."))                      # the views; every other file, URL and setting refused
    columns, rows = readonly_query(con, "select count(*) from cliffs")
    for batch in stream(con, query, time_limit=300): ...  # the first item is the column names

`readonly_statements` refuses every statement that is not a read before anything runs. `stream` runs one
read in a worker thread and hands its rows over in batches, under a time limit, interruptible at once.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cliffdata import schema
from cliffdata.analysis.duck import close, create_study_views, create_views, engine
from cliffdata.config.analysis import AnalysisConfig

if TYPE_CHECKING:                                   # the study's models (cliffdata/study.py), duck-typed
    from cliffdata.study import Member

_EXPLAIN = re.compile(r"^\s*explain\s+(?:analyze\s+)?(?:\([^)]*\)\s*)?(?P<inner>.*)$", re.I | re.S)


def connect_sandbox(root: Path = Path("."), cfg: AnalysisConfig = AnalysisConfig(),
                    members: Sequence[Member] | None = None) -> duckdb.DuckDBPyConnection:
    """`duck.connect` for untrusted, ad-hoc SQL (`cliffdata sql`): the dataset views and nothing else.

    After the views are made, file access is limited to the dataset files (`allowed_paths`), every
    other file, folder and URL is refused (`enable_external_access = false`: no read_csv('/etc/passwd'),
    glob, ATTACH, COPY, INSTALL), extensions are neither installed nor loaded, and the configuration
    is locked so a query cannot `SET` any of it back. ValueError when `root` has no dataset at all, or
    when a dataset is a symbolic link or a file without its schema's columns (`duck.create_views`, checked).
    `members` (the study's models, cliffdata.study.members) adds `study.models` and the `study.<dataset>` views.
    """
    con = engine(cfg)
    try:
        files = create_views(con, Path(root), list(schema.PATHS), checked=True)
        if members is not None:
            files += create_study_views(con, members, Path(root), checked=True)
    except BaseException:
        close(con)
        raise
    if not files:
        close(con)
        raise ValueError(f"no dataset found under {Path(root).resolve()} (looked for "
                         f"{', '.join(schema.PATHS[n] for n in ('problems', 'traces', 'potentials', 'cliffs'))}, …): "
                         f"run `dvc pull` or `dvc repro`, or pass --root")
    con.execute("set allowed_paths = $paths", {"paths": files})
    con.execute("set allowed_directories = []")
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")
    return con


def _snippet(sql: str, width: int = 60) -> str:
    text = " ".join(sql.split()).rstrip(";").strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def _write_kind(con: duckdb.DuckDBPyConnection, statement) -> str | None:
    """None when the statement only reads; else the kind of statement to name in the refusal."""
    kind = statement.type
    if kind == duckdb.StatementType.SELECT:
        return None
    explained = kind in (duckdb.StatementType.EXPLAIN, duckdb.StatementType.MULTI)   # EXPLAIN of a PIVOT: MULTI
    match = _EXPLAIN.match(statement.query) if explained else None
    if match:
        # EXPLAIN ANALYZE runs its statement: only an explained read is a read.
        try:
            inner = con.extract_statements(match["inner"])
        except duckdb.ParserException:
            inner = []
        kinds = [_write_kind(con, s) for s in inner]
        if inner and all(k is None for k in kinds):
            return None
        return next((k for k in kinds if k is not None), "EXPLAIN")
    if kind == duckdb.StatementType.MULTI:
        # DuckDB parses a PIVOT whose values come from the data as several statements (an ENUM type of the
        # values, then the query), and so any statement around one: `create table t as pivot …`,
        # `copy (pivot …) to …`. It reads when its text is a query: one that parses as a subquery.
        try:
            if len(con.extract_statements(f"select * from (\n{statement.query}\n)")) == 1:
                return None
        except duckdb.ParserException:
            pass
        first = statement.query.split(None, 1)[0].upper() if statement.query.strip() else ""
        return first if first in duckdb.StatementType.__members__ and first != "MULTI" else "MULTI"
    return kind.name


def readonly_statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements of `sql`, in order, once every one is known to read: SELECT (PIVOT, UNPIVOT, DESCRIBE,
    SUMMARIZE, ...) or an EXPLAIN of one. Any other statement refuses the whole input (a ValueError
    `refused: …`) before anything runs."""
    statements = con.extract_statements(sql)
    if not statements:
        raise ValueError("refused: no statement to run")
    for statement in statements:
        kind = _write_kind(con, statement)
        if kind is not None:
            raise ValueError(f"refused: {_snippet(statement.query)!r} is a {kind} statement; "
                             f"cliffdata sql is read-only")
    return [statement.query for statement in statements]


def readonly_results(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[list[str], list[tuple]]]:
    """Run read-only SQL (`readonly_statements`) and return the columns and rows of every statement, in
    order (all in memory: `stream` hands a large result over in batches)."""
    results = []
    for query in readonly_statements(con, sql):
        result = con.execute(query)
        results.append(([d[0] for d in result.description], result.fetchall()))
    return results


def readonly_query(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """`readonly_results` of the last statement."""
    return readonly_results(con, sql)[-1]


class TimeLimitExceeded(Exception):
    """A statement computed for longer than its time limit, and was interrupted."""

    def __init__(self, seconds: float):
        super().__init__(f"the statement ran past its time limit of {seconds:g} s")
        self.seconds = seconds


BATCH_ROWS = 10_000              # rows `stream` hands over at a time (and the most it holds ahead: 2 batches)
POLL_SECONDS = 0.1               # how often the waiting thread looks at the clock (and can take a signal)


class _Producer(threading.Thread):
    """Runs one query and fetches its rows, batch by batch, into a queue of at most two batches; stops
    after the batch it holds when `stop` is set. `computing()`: the seconds it has spent in DuckDB, not
    counting its waits for room in the queue."""

    def __init__(self, con: duckdb.DuckDBPyConnection, query: str, batch_rows: int):
        super().__init__(name="cliffdata-sql", daemon=True)
        self.con, self.query, self.batch_rows = con, query, batch_rows
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        self._spent = 0.0
        self._since: float | None = None

    def computing(self) -> float:
        since = self._since
        return self._spent + (time.monotonic() - since if since is not None else 0.0)

    def _timed(self, call):
        self._since = time.monotonic()
        try:
            return call()
        finally:
            self._spent += time.monotonic() - self._since
            self._since = None

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            self._timed(lambda: self.con.execute(self.query))
            if not self._put(("columns", [d[0] for d in self.con.description])):
                return
            while True:
                rows = self._timed(lambda: self.con.fetchmany(self.batch_rows))
                if not rows:
                    break
                if not self._put(("rows", rows)):
                    return
            self._put(("done", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consuming thread, which raises it
            self._put(("error", e))


def stream(con: duckdb.DuckDBPyConnection, query: str, time_limit: float = 0.0,
           batch_rows: int = BATCH_ROWS) -> Iterator[list]:
    """Run one read-only query (a statement of `readonly_statements`) and yield its column names, then its
    rows in batches (lists of tuples) as DuckDB makes them: the whole result is never in memory, in Python
    or in DuckDB (which holds to `memory_limit`, spilling past it).

    DuckDB runs in a worker thread; this one only waits, `POLL_SECONDS` at a time, so a KeyboardInterrupt
    (Ctrl-C) or a signal handler's exception is raised here at once. Leaving early (an exception, or the
    generator closed before its end) interrupts the query and waits for the worker. `time_limit` > 0: the
    seconds the query may compute (not counting its waits for the consumer, e.g. a slow pipe); past it,
    it is interrupted and TimeLimitExceeded raised.
    """
    producer = _Producer(con, query, batch_rows)
    producer.start()
    timed_out = False
    try:
        while True:
            if time_limit and producer.computing() > time_limit:
                timed_out = True
                con.interrupt()             # again at every poll: one that came between two fetches is lost
            try:
                kind, value = producer.queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "error":
                if timed_out and isinstance(value, duckdb.InterruptException):
                    raise TimeLimitExceeded(time_limit) from None
                raise value
            if kind == "done":
                return
            yield value
    finally:
        producer.stop.set()
        while producer.is_alive():
            con.interrupt()
            producer.join(POLL_SECONDS)
