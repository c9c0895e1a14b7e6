"""Serialise outgoing record batches to the contract's file format, chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SUFFIXES = {"csv": ".csv", "parquet": ".parquet"}


def encode(batches: Iterable[pa.RecordBatch], fmt: str, schema: pa.Schema) -> Iterator[bytes]:
    """Yield the file's bytes as each batch is encoded; memory stays at one batch."""
    if fmt == "csv":
        yield from _csv(batches, schema)
    elif fmt == "parquet":
        yield from _parquet(batches, schema)
    else:
        raise ValueError(f"unsupported payload format {fmt!r}")


def _csv(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[bytes]:
    sink = pa.BufferOutputStream()
    # The header goes out even when no row does, so an empty drop is still a valid CSV.
    pacsv.write_csv(schema.empty_table(), sink, pacsv.WriteOptions(include_header=True))
    yield sink.getvalue().to_pybytes()
    for batch in batches:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(batch, sink, pacsv.WriteOptions(include_header=False))
        yield sink.getvalue().to_pybytes()


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


def _parquet(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[bytes]:
    sink = _Drain()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            yield sink.drain()
    yield sink.drain()
