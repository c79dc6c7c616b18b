"""Out-of-core reading of the per-token datasets (potentials, token_stats) in key order.

Every dataset is written sorted by its key (`schema.write`, `schema.RowGroupWriter`), so a per-trace
computation over 10^8 rows needs neither a sort nor a hash join: it reads the files row group by row
group, recuts them into chunks of whole traces, and merges two datasets by position. Memory is a few
row groups, whatever the file size.

    coder = TraceCoder(traces_ids)                         # the sorted trace ids of the study
    pots = KeyedStream(source_batches(path, columns), coder, "potentials")
    stats = KeyedStream(source_batches(other, columns), coder, "token_stats")
    for chunk in pots.chunks(min_rows=1 << 20):            # whole traces, codes ascending
        rows = stats.take_until(chunk.last_code)           # the same traces' token_stats rows

A trace code is the trace's row in the sorted trace ids, so codes follow the files' order. A row whose
(trace, token_index) does not come strictly after the one before it (a file not written by
`schema.write`, or a repeated key) is a ValueError naming the file and the key.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cliffdata import schema


def dataset_files(path: str | Path) -> list[Path]:
    """The Parquet files of a dataset: the file itself, or the `*.parquet` parts of a folder, in name
    order (a large dataset may be written as parts; hidden temp files of an unfinished write are not
    parts)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.glob("*.parquet") if p.is_file())
    return [path] if path.exists() else []


def source_batches(source: str | Path | pa.Table, columns: list[str], first_trace: str | None = None,
                   end_trace: str | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` from a Parquet file, a folder of parts, or an in-memory table, in
    row order: a row group at a time from files (trace ids dictionary-encoded), at most
    `schema.ROW_GROUP_ROWS` rows a batch from tables. With `first_trace` / `end_trace`, row groups
    whose trace id statistics put them wholly before `first_trace` or at or after `end_trace` are
    skipped unread (the rows of the groups read still need filtering: `KeyedStream`'s code range)."""
    if isinstance(source, pa.Table):
        yield from source.select(columns).to_batches(max_chunksize=schema.ROW_GROUP_ROWS)
        return
    files = dataset_files(source)
    if not files:
        raise ValueError(f"{source}: no such dataset (file or folder of .parquet parts)")
    for path in files:
        reader = pq.ParquetFile(path, read_dictionary=["trace_id"] if "trace_id" in columns else None)
        missing = set(columns) - set(reader.schema_arrow.names)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        column = reader.schema_arrow.get_field_index("trace_id")
        # one row group at a time (iter_batches holds on to memory: +7.7 MB a batch, measured)
        for group in range(reader.num_row_groups):
            low, high = _trace_bounds(reader.metadata.row_group(group), column)
            if first_trace is not None and high is not None and high < first_trace:
                continue
            if end_trace is not None and low is not None and low >= end_trace:
                return
            yield from reader.read_row_group(group, columns=columns).to_batches()


def read_columns(source: str | Path | pa.Table, columns: list[str]) -> pa.Table:
    """Some columns of a small dataset (the traces' ids, problem, correctness) read whole, from a file,
    a folder of parts or an in-memory table."""
    if isinstance(source, pa.Table):
        return source.select(columns)
    files = dataset_files(source)
    if not files:
        raise ValueError(f"{source}: no such dataset (file or folder of .parquet parts)")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def _trace_bounds(group: pq.RowGroupMetaData, column: int) -> tuple[str | None, str | None]:
    """The smallest and largest trace id of a row group, from its statistics (None: not recorded)."""
    if column < 0:
        return None, None
    stats = group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return None, None
    return stats.min, stats.max


def row_group_starts(source: str | Path) -> list[tuple[int, str | None]]:
    """(rows, first trace id) of every row group of a dataset's files, in order: where a scan can be
    cut into trace ranges of about equal rows."""
    out = []
    for path in dataset_files(source):
        metadata = pq.ParquetFile(path).metadata
        column = metadata.schema.to_arrow_schema().get_field_index("trace_id")
        for group in range(metadata.num_row_groups):
            out.append((metadata.row_group(group).num_rows, _trace_bounds(metadata.row_group(group), column)[0]))
    return out


class TraceCoder:
    """Trace ids to codes: a trace's position among the study's trace ids (sorted, unique)."""

    def __init__(self, trace_ids: pa.Array | pa.ChunkedArray, where: str = "traces"):
        ids = trace_ids.combine_chunks() if isinstance(trace_ids, pa.ChunkedArray) else trace_ids
        ids = ids.cast(pa.string())
        self.ids = ids
        self._list = ids.to_pylist()
        if any(a >= b for a, b in zip(self._list, self._list[1:])):
            raise ValueError(f"{where}: trace ids are not sorted and unique (write it with schema.write)")

    def __len__(self) -> int:
        return len(self._list)

    def code_of(self, trace_id: str) -> int:
        """The code of the first trace at or after `trace_id` (the number of traces before it)."""
        return bisect.bisect_left(self._list, trace_id)

    def trace_id(self, code: int) -> str:
        return self._list[code]

    def codes(self, column: pa.Array, where: str) -> np.ndarray:
        """int64 codes of a column of trace ids; an id that is not a trace is a ValueError."""
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        values = column.dictionary.cast(pa.string())
        if len(values) == 0:
            return np.zeros(len(column), dtype=np.int64)
        bounds = pc.min_max(values)
        lo = bisect.bisect_left(self._list, bounds["min"].as_py())
        hi = bisect.bisect_right(self._list, bounds["max"].as_py())
        found = pc.index_in(values, value_set=self.ids.slice(lo, hi - lo))
        if found.null_count:
            missing = pc.filter(values, pc.is_null(found))
            raise ValueError(f"{where} names trace {missing[0].as_py()!r}, which is not in the traces dataset "
                             f"({len(missing)} such traces)")
        dictionary_codes = found.to_numpy().astype(np.int64) + lo
        return dictionary_codes[column.indices.to_numpy()]


@dataclass
class Chunk:
    """Rows of whole traces (the last chunk of a stream may end anywhere: it is the end)."""
    codes: np.ndarray          # int64 trace code of each row, non-decreasing
    table: pa.Table

    @property
    def last_code(self) -> int:
        return int(self.codes[-1]) if len(self.codes) else -1


class KeyedStream:
    """A dataset's batches with trace codes, checked to be in strict (trace, token_index) order."""

    def __init__(self, batches: Iterable[pa.RecordBatch], coder: TraceCoder, where: str,
                 codes: tuple[int, int] | None = None, index: str | None = "token_index"):
        self._index = index                # None: one row per trace (the traces dataset)
        self._batches = iter(batches)
        self._coder = coder
        self._where = where
        self._range = codes                # keep only rows with lo <= code < hi
        self._codes: list[np.ndarray] = []
        self._tables: list[pa.Table] = []
        self._last_key = -1
        self._done = False

    def _pull(self) -> bool:
        """Read one more batch into the buffer; False at the end."""
        if self._done:
            return False
        batch = next(self._batches, None)
        if batch is None:
            self._done = True
            return False
        codes = self._coder.codes(batch.column("trace_id"), self._where)
        if self._range is not None:
            lo, hi = self._range
            keep = (codes >= lo) & (codes < hi)
            if len(codes) and codes[-1] >= hi:
                self._done = True          # sorted: nothing later is in range
            if not keep.all():
                batch, codes = batch.filter(pa.array(keep)), codes[keep]
        index = (batch.column(self._index).to_numpy().astype(np.int64) if self._index
                 else np.zeros(len(codes), dtype=np.int64))
        key = (codes << 32) | (index + 1)
        order = np.empty(len(key) + 1, dtype=np.int64)
        order[0] = self._last_key
        order[1:] = key
        bad = np.flatnonzero(np.diff(order) <= 0)
        if len(bad):
            j = int(bad[0])
            row = f"({self._coder.trace_id(int(codes[j]))!r}, {self._index} {int(index[j])})" if self._index \
                else repr(self._coder.trace_id(int(codes[j])))
            raise ValueError(f"{self._where}: row {row} repeats or comes before the row above it: the dataset must be "
                             f"sorted by its key with unique keys (write it with schema.write)")
        if len(key):
            self._last_key = int(key[-1])
        self._codes.append(codes)
        self._tables.append(pa.Table.from_batches([batch]))
        return True

    def _buffered(self) -> int:
        return sum(len(c) for c in self._codes)

    def _split(self, cut: int) -> Chunk:
        codes = np.concatenate(self._codes) if self._codes else np.zeros(0, dtype=np.int64)
        table = pa.concat_tables(self._tables) if self._tables else None
        head = Chunk(codes[:cut], table.slice(0, cut) if table is not None else None)
        rest = len(codes) - cut
        self._codes = [codes[cut:]] if rest else []
        self._tables = [table.slice(cut)] if rest else []
        return head

    def chunks(self, min_rows: int = schema.ROW_GROUP_ROWS) -> Iterator[Chunk]:
        """Chunks of whole traces of at least `min_rows` rows (the last one: what is left)."""
        while True:
            while self._buffered() < min_rows and self._pull():
                pass
            if self._buffered() == 0:
                return
            codes = np.concatenate(self._codes)
            if self._done:
                yield self._split(len(codes))
                continue
            cut = int(np.searchsorted(codes, codes[-1], side="left"))   # the last trace may go on
            if cut == 0:                                                 # one trace fills the buffer
                self._pull()
                continue
            yield self._split(cut)

    def take_until(self, last_code: int) -> Chunk:
        """Every row with a trace code <= `last_code` not taken yet (rows of earlier codes included)."""
        while not self._done and (not self._codes or self._codes[-1].size == 0
                                  or int(self._codes[-1][-1]) <= last_code):
            self._pull()
        codes = np.concatenate(self._codes) if self._codes else np.zeros(0, dtype=np.int64)
        return self._split(int(np.searchsorted(codes, last_code, side="right")))


class TraceRows:
    """Random access to one trace's rows of a large dataset sorted by trace (potentials, token_stats),
    reading only the row groups whose trace id statistics can hold it and keeping the last few in
    memory: a pass over traces in id order (the report's) reads each row group once.

        pots = TraceRows(path, ["trace_id", "token_index", "potential"])
        pots.get("gsm1k/0000001#0")          # a pandas DataFrame of its rows, or None
        "gsm1k/0000001#0" in pots; sorted(pots)
    """

    def __init__(self, source: str | Path, columns: list[str], cache_groups: int = 2):
        self._columns = columns if "trace_id" in columns else ["trace_id", *columns]
        self._groups = []                         # (file, group, min id, max id)
        for path in dataset_files(source):
            reader = pq.ParquetFile(path)
            column = reader.schema_arrow.get_field_index("trace_id")
            for group in range(reader.num_row_groups):
                low, high = _trace_bounds(reader.metadata.row_group(group), column)
                self._groups.append((path, group, low, high))
        if not self._groups and not dataset_files(source):
            raise ValueError(f"{source}: no such dataset (file or folder of .parquet parts)")
        self._cache: dict[tuple[Path, int], tuple[pa.Table, dict[str, tuple[int, int]]]] = {}
        self._cache_groups = cache_groups
        self._ids: list[str] | None = None

    def _group(self, path: Path, group: int) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
        key = (path, group)
        if key not in self._cache:
            table = pq.ParquetFile(path).read_row_group(group, columns=self._columns)
            ids = table["trace_id"].combine_chunks()
            starts = np.flatnonzero(np.r_[True, pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)]) \
                if len(ids) else np.zeros(0, dtype=np.int64)
            ends = np.r_[starts[1:], len(ids)]
            spans = dict(zip(ids.take(pa.array(starts)).to_pylist(), zip(starts.tolist(), ends.tolist())))
            if len(self._cache) >= self._cache_groups:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (table, spans)
        return self._cache[key]

    def table(self, trace_id: str) -> pa.Table | None:
        """The trace's rows (file order), or None when it has none."""
        parts = []
        for path, group, low, high in self._groups:
            if low is not None and high is not None and not low <= trace_id <= high:
                continue
            table, spans = self._group(path, group)
            if trace_id in spans:
                start, end = spans[trace_id]
                parts.append(table.slice(start, end - start))
        return pa.concat_tables(parts) if parts else None

    def get(self, trace_id: str, default=None):
        table = self.table(trace_id)
        return default if table is None else table.to_pandas()

    def __getitem__(self, trace_id: str):
        frame = self.get(trace_id)
        if frame is None:
            raise KeyError(trace_id)
        return frame

    def __contains__(self, trace_id: object) -> bool:
        return isinstance(trace_id, str) and trace_id in set(self.trace_ids())

    def trace_ids(self) -> list[str]:
        """Every trace with rows, sorted (one pass over the trace id column)."""
        if self._ids is None:
            ids: set[str] = set()
            for path, group, _, _ in self._groups:
                column = pq.ParquetFile(path, read_dictionary=["trace_id"]).read_row_group(group, columns=["trace_id"])
                for chunk in column["trace_id"].chunks:
                    ids.update(chunk.dictionary.to_pylist())
            self._ids = sorted(ids)
        return self._ids

    def __iter__(self):
        return iter(self.trace_ids())

    def __len__(self) -> int:
        return len(self.trace_ids())
