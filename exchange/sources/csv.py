"""CSV files, streamed with pyarrow, reading only the columns asked for."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from exchange.errors import SourceError
from exchange.settings import CSV_BLOCK_SIZE
from exchange.sources.base import check_columns, localise
from exchange.types import logical_of, source_times

# pyarrow names the column by number in conversion errors (the message also quotes the value,
# which must never reach a log, so only the number is taken from it).
_COLUMN_NUMBER = re.compile(r"CSV column #(\d+)")
# A row of the wrong width: pyarrow quotes the row after the counts, only the counts are kept.
_WIDTH = re.compile(r"Expected (\d+) columns, got (\d+)")
_NAIVE = pa.timestamp("us")


def plain_type(kind: pa.DataType) -> str:
    """An Arrow type in the contract's words (date, timestamp, integer, number, string, boolean).

    A contract's own types read as its logicalType ("date", not "date32[day]"); another type a
    file may store is named by its kind, with the file's own name for it in brackets."""
    logical = logical_of(kind)
    if logical is not None:
        return logical
    if pa.types.is_dictionary(kind):
        return plain_type(kind.value_type)
    kinds = [
        (pa.types.is_integer, "integer"),
        (lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t), "number"),
        (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_date, "date"),
        (lambda t: pa.types.is_timestamp(t) and t.tz is None, "timestamp without a zone"),
        (pa.types.is_timestamp, "timestamp"),
    ]
    name = next((plain for test, plain in kinds if test(kind)), None)
    return f"{name} ({kind})" if name else str(kind)


def _a(name: str) -> str:
    """'a date', 'an integer'."""
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


class CsvSource:
    """A UTF-8 CSV file with a header row; quoted fields may contain newlines.

    pyarrow's streaming reader keeps a few dozen blocks in flight, so the block size sets the
    reader's peak memory (512 KiB blocks held it near 17 MiB here, 8 MiB blocks near 280 MiB)
    as well as the longest row a file may have.
    """

    def __init__(self, path: Path, *, block_size: int = CSV_BLOCK_SIZE) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.block_size = block_size

    def _open(
        self, convert: pacsv.ConvertOptions, types: Mapping[str, pa.DataType] | None = None
    ) -> pacsv.CSVStreamingReader:
        try:
            return pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(block_size=self.block_size),
                # Real exports carry free text with newlines inside quotes.
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=convert,
            )
        except FileNotFoundError as exc:
            raise SourceError(f"source {self.name} does not exist") from exc
        except pa.ArrowInvalid as exc:
            # Opening converts the first block, so a bad value may surface here already.
            raise SourceError(self._describe(exc, types or {})) from None

    def columns(self) -> list[str]:
        """The header's column names."""
        # Opening reads one block to learn the header; no row is converted past it.
        reader = self._open(pacsv.ConvertOptions())
        names = list(reader.schema.names)
        reader.close()
        return names

    def batches(self, types: Mapping[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        """Stream the named columns with the given types."""
        check_columns(self, list(types))
        names = list(types)
        zone, _ = source_times(types)
        # With a declared zone, times are wall-clock times: read naive, then localised per batch.
        local = [n for n, t in types.items() if zone and pa.types.is_timestamp(t)]
        convert = pacsv.ConvertOptions(
            include_columns=names,
            column_types={n: _NAIVE if n in local else t for n, t in types.items()},
            # Only an empty field is missing: "NA" or "null" may be real values.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        reader = self._open(convert, types)
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    raise SourceError(self._describe(exc, types)) from None
                yield self._localised(batch, types, local) if local else batch
        finally:
            reader.close()

    def _localised(
        self, batch: pa.RecordBatch, types: Mapping[str, pa.DataType], local: list[str]
    ) -> pa.RecordBatch:
        """The batch with its wall-clock time columns as UTC instants."""
        arrays = [batch.column(n) for n in types]
        for i, (n, t) in enumerate(types.items()):
            if n in local:  # same instant, labelled UTC: a metadata change, it cannot fail
                arrays[i] = localise(arrays[i], types, n, self.name).cast(t)
        return pa.RecordBatch.from_arrays(arrays, names=list(types))

    def _describe(self, exc: pa.ArrowInvalid, types: Mapping[str, pa.DataType]) -> str:
        said = str(exc)
        if "straddl" in said:
            return (
                f"source {self.name}: a field is larger than the CSV reader's block size "
                f"({self.block_size:,} bytes), or a quote is never closed; fix the quoting at "
                "the source, or set EXCHANGE_CSV_BLOCK_SIZE larger (values are not shown)"
            )
        width = _WIDTH.search(said)
        if width:
            return (
                f"source {self.name} is not readable as CSV: a row has {width.group(2)} fields "
                f"where the header has {width.group(1)} (values are not shown)"
            )
        match = _COLUMN_NUMBER.search(said)
        header = self.columns() if match else []  # pyarrow counts columns in file order
        column = (
            header[int(match.group(1))] if match and int(match.group(1)) < len(header) else None
        )
        if column is not None and column in types and "expected a zone offset" in said:
            return (
                f"source {self.name}: column {column!r} holds times without a zone or offset; "
                "declare the zone the source writes them in with the sharing term "
                "sourceTimeZone (values are not shown)"
            )
        if column is not None and column in types and "expected no zone offset" in said:
            return (
                f"source {self.name}: column {column!r} has a time with a zone offset, but "
                "sourceTimeZone says the source writes wall-clock times (values are not shown)"
            )
        if column is not None and column in types:
            return (
                f"source {self.name}: column {column!r} has a value that is not "
                f"{_a(plain_type(types[column]))} (values are not shown)"
            )
        return f"source {self.name} is not readable as CSV (rows do not match the header)"
