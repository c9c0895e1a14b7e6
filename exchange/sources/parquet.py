"""Parquet files, streamed by row group, reading only the columns asked for."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from exchange.errors import SourceError
from exchange.sources.base import check_columns, localise
from exchange.sources.csv import plain_type
from exchange.types import PHYSICAL_TYPES, logical_of, readable_as


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
            self._check_types(parquet.schema_arrow, target)
            for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=list(types)):
                yield self._cast(batch, target, types)
        finally:
            parquet.close()

    def _check_types(self, stored: pa.Schema, target: pa.Schema) -> None:
        """Refuse, before any row is read, a column stored as a type its field does not take."""
        for field in target:
            actual = stored.field(field.name).type
            if not readable_as(actual, field.type):
                logical = logical_of(field.type)
                takes = PHYSICAL_TYPES[logical][0] if logical else plain_type(field.type)
                raise SourceError(
                    f"source {self.name}: column {field.name!r} is stored as "
                    f"{plain_type(actual)}, which is not read as {plain_type(field.type)} (that "
                    f"takes {takes}); the gateway "
                    "converts no type: export the column as its declared type or correct the "
                    "contract's logicalType"
                )

    def _cast(
        self, batch: pa.RecordBatch, target: pa.Schema, types: Mapping[str, pa.DataType]
    ) -> pa.RecordBatch:
        arrays = []
        for field in target:
            column = batch.column(field.name)
            if pa.types.is_timestamp(column.type) and column.type.tz is None:
                # Wall-clock times: localised in the declared zone, or refused without one.
                column = localise(column, types, field.name, self.name)
            try:
                arrays.append(column if column.type == field.type else column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SourceError(
                    f"source {self.name}: column {field.name!r} of type "
                    f"{plain_type(column.type)} cannot be read as {plain_type(field.type)} "
                    "(values are not shown)"
                ) from None
        return pa.RecordBatch.from_arrays(arrays, schema=target)
