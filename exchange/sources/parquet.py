"""Parquet files, streamed by row group, reading only the columns asked for."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from exchange.errors import SourceError
from exchange.sources.base import check_columns


class ParquetSource:
    """A Parquet file."""

    def __init__(self, path: Path, *, batch_rows: int = 131_072) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.batch_rows = batch_rows

    def _file(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except FileNotFoundError as exc:
            raise SourceError(f"source {self.name} does not exist") from exc
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"source {self.name} is not a readable Parquet file") from exc

    def columns(self) -> list[str]:
        """The file schema's column names."""
        return list(self._file().schema_arrow.names)

    def batches(self, types: Mapping[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        """Stream the named columns, cast to the given types."""
        check_columns(self, list(types))
        target = pa.schema([pa.field(name, kind) for name, kind in types.items()])
        parquet = self._file()
        try:
            for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=list(types)):
                yield self._cast(batch, target)
        finally:
            parquet.close()

    def _cast(self, batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
        arrays = []
        for field in target:
            column = batch.column(field.name)
            try:
                arrays.append(column if column.type == field.type else column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SourceError(
                    f"source {self.name}: column {field.name!r} of type {column.type} "
                    f"cannot be read as {field.type} (values are not shown)"
                ) from None
        return pa.RecordBatch.from_arrays(arrays, schema=target)
