"""Serialise outgoing record batches to the contract's file format, chunk by chunk.

CSV payloads are guarded against spreadsheet formula injection (OWASP, "CSV Injection"): a text
cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is one a spreadsheet may run
as a formula, so one `'` is put before it. A text cell that already begins with `'` gets one
more, so the guard can be undone exactly: remove the first character of every text cell that
begins with `'`. Only string columns are touched (numbers such as -3.5 stay numbers), in one
vectorised pass per column; Parquet payloads carry types and are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SUFFIXES = {"csv": ".csv", "parquet": ".parquet"}

# The characters OWASP lists as starting a formula, and the guard's own quote (so it reverses).
FORMULA_START = "=+-@\t\r"
GUARD = "'"
_GUARDED = r"^([=+\-@\t\r'])"  # RE2, as pyarrow.compute runs it
_STARTS_BYTE = np.zeros(256, dtype=bool)  # by a cell's first byte: one the guard quotes
_STARTS_BYTE[list((FORMULA_START + GUARD).encode("ascii"))] = True
# A piece of the file: bytes, or a view of the Arrow buffer pyarrow's CSV writer filled (not
# copied out: at 10M rows that was a 700 MB copy).
Chunk = bytes | memoryview


def encode(
    batches: Iterable[pa.RecordBatch], fmt: str, schema: pa.Schema, *, formula_guard: bool = True
) -> Iterator[Chunk]:
    """Yield the file's bytes as each batch is encoded; memory stays at one batch.

    `formula_guard` (CSV only) neutralises spreadsheet formulae in text cells."""
    encoder = Encoder(fmt, schema, formula_guard=formula_guard)
    yield encoder.header()
    for batch in batches:
        yield encoder.encode(batch)
    yield encoder.finish()


class Encoder:
    """The file's bytes, a batch at a time: `header()`, then `encode(batch)` for each batch in
    order, then `finish()`; the concatenation is the file. The header is taken when the encoder
    is made, so it may be read on any thread at any time; `encode` and `finish` change the
    writer's state and must be called in order, one at a time (one thread, or handed over).
    ValueError for a format it does not know."""

    def __init__(self, fmt: str, schema: pa.Schema, *, formula_guard: bool = True) -> None:
        if fmt not in SUFFIXES:
            raise ValueError(f"unsupported payload format {fmt!r}")
        self.fmt = fmt
        self.schema = schema
        self.formula_guard = formula_guard  # CSV only: formulae in text cells neutralised
        self._parquet: pq.ParquetWriter | None = None
        self._drain = _Drain()
        if fmt == "parquet":
            self._parquet = pq.ParquetWriter(pa.PythonFile(self._drain, mode="w"), schema)
            self._header = self._drain.drain()  # its magic bytes, written as it opens
        else:  # the header line goes out even when no row does: an empty drop is valid CSV
            self._header = _csv_buffer(schema.empty_table(), header=True).to_pybytes()

    def header(self) -> bytes:
        """The bytes before the first batch (CSV: the header line; Parquet: its magic)."""
        return self._header

    def encode(self, batch: pa.RecordBatch) -> Chunk:
        """The bytes that follow once `batch` is written (Parquet may hold some back)."""
        if self._parquet is not None:
            self._parquet.write_batch(batch)
            return self._drain.drain()
        if self.formula_guard:
            batch = neutralise_formulae(batch)
        return memoryview(_csv_buffer(batch, header=False))

    def finish(self) -> bytes:
        """The bytes after the last batch (Parquet: what it held back and its footer)."""
        if self._parquet is None:
            return b""
        self._parquet.close()
        return self._drain.drain()


def neutralise_formulae(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with `'` put before each text cell that a spreadsheet could run as a formula
    (and before each that already begins with `'`); other columns and cells are unchanged."""
    columns = [_guard(column) if _is_text(column.type) else column for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _guard(column: pa.Array) -> pa.Array:
    # Most columns (pseudonyms, codes) have no such cell: a look at each cell's first byte
    # finds that without building a column of first characters (a third less for the whole
    # guard: BENCHMARKS.md, tenth round); the rewrite runs only on a column that may need it.
    if not _may_start_a_formula(column):
        return column
    return pc.replace_substring_regex(column, pattern=_GUARDED, replacement=GUARD + r"\1")


def _may_start_a_formula(column: pa.Array) -> bool:
    """Whether a cell of a text column begins with a character the guard quotes.

    Read from Arrow's buffers: each cell's first byte is at its start offset. The characters are
    ASCII, and in UTF-8 an ASCII byte is always a character of its own, so the first byte
    decides. A null cell with bytes behind it may answer yes too: the rewrite keeps it null."""
    _, offsets_buffer, data_buffer = column.buffers()
    if data_buffer is None or offsets_buffer is None or not len(column):
        return False
    width = np.dtype(np.int64 if pa.types.is_large_string(column.type) else np.int32)
    offsets: np.ndarray = np.frombuffer(offsets_buffer, dtype=width)[
        column.offset : column.offset + len(column) + 1
    ]
    starts = offsets[:-1][offsets[1:] > offsets[:-1]]  # the cells with a first byte
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    return bool(_STARTS_BYTE[data[starts]].any())


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _csv_buffer(data: pa.RecordBatch | pa.Table, *, header: bool) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(data, sink, pacsv.WriteOptions(include_header=header))
    return sink.getvalue()


class _Drain:
    """A write-only sink that hands over what has been written since the last drain."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data
