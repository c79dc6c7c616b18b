"""Dataset writes: the file mode follows the umask (not mkstemp's 0600), the data and the rename
are fsynced, and a failed write leaves neither a temp file nor a half-written dataset."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cliffdata import schema

ROWS = [{"problem_id": "arith/a-0", "dataset": "arith", "question": "q", "answer": "1", "answer_format": "hash",
         "prompt": "p", "family": "a", "level": None, "source_index": 0, "max_new_tokens": None}]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_dataset_mode_follows_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        schema.write("problems", ROWS, tmp_path / "problems.parquet")
    finally:
        os.umask(old)
    assert (tmp_path / "problems.parquet").stat().st_mode & 0o777 == mode
    assert schema.read("problems", tmp_path / "problems.parquet").to_pylist() == ROWS


def test_write_fsyncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    schema.write("problems", ROWS, tmp_path / "problems.parquet")
    assert any(p.endswith(".tmp") for p in synced), synced          # the data, before the rename
    assert str(tmp_path) in synced                                  # the folder entry, after it


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    schema.write("problems", ROWS, tmp_path / "problems.parquet")
    before = (tmp_path / "problems.parquet").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(schema.pq.ParquetWriter, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        schema.write("problems", ROWS + ROWS, tmp_path / "problems.parquet")
    assert (tmp_path / "problems.parquet").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["problems.parquet"]


def test_row_group_writer_bytes_do_not_depend_on_the_cuts(tmp_path, monkeypatch):
    """A stream of tables in any cuts gives the bytes of pyarrow's write_table of all rows at once, in
    row groups of exactly ROW_GROUP_ROWS rows; an aborted stream leaves the old file and no temp."""
    monkeypatch.setattr(schema, "ROW_GROUP_ROWS", 1000)
    n = 3500
    table = pa.table({"a": np.arange(n), "b": pa.array([f"t{i:05d}" for i in range(n)])})
    pq.write_table(table, tmp_path / "ref.parquet", compression="zstd", write_statistics=True, row_group_size=1000)
    with schema.RowGroupWriter(tmp_path / "x.parquet", table.schema) as writer:
        for lo, hi in [(0, 7), (7, 1500), (1500, 1500), (1500, 3499), (3499, 3500)]:
            writer.write(table.slice(lo, hi - lo))
    assert (tmp_path / "x.parquet").read_bytes() == (tmp_path / "ref.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "x.parquet").metadata.num_row_groups == 4
    with schema.RowGroupWriter(tmp_path / "empty.parquet", table.schema):
        pass
    pq.write_table(table.slice(0, 0), tmp_path / "ref0.parquet", compression="zstd", write_statistics=True)
    assert (tmp_path / "empty.parquet").read_bytes() == (tmp_path / "ref0.parquet").read_bytes()
    before = (tmp_path / "x.parquet").read_bytes()
    with pytest.raises(RuntimeError, match="stop"):
        with schema.RowGroupWriter(tmp_path / "x.parquet", table.schema) as writer:
            writer.write(table.slice(0, 2500))
            raise RuntimeError("stop")
    assert (tmp_path / "x.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.parquet", "ref.parquet", "ref0.parquet", "x.parquet"]


def test_tree_digest_covers_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/w.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "config.json").write_text("{}")
    first = schema.tree_digest(tmp_path)
    (tmp_path / "a/w.bin").write_bytes(b"\x00" * 9 + b"\x01")      # weights changed, config not
    assert schema.tree_digest(tmp_path) != first
    (tmp_path / "a/w.bin").write_bytes(b"\x00" * 10)
    assert schema.tree_digest(tmp_path) == first
    (tmp_path / "a/w.bin").rename(tmp_path / "a/v.bin")
    assert schema.tree_digest(tmp_path) != first
