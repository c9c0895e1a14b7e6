"""The source interface: a stream of Arrow record batches of the requested columns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from exchange.errors import SourceError
from exchange.types import source_times


class Source(Protocol):
    """Where the provider's data comes from."""

    name: str

    def columns(self) -> list[str]:
        """Every column the source offers (names only; no data is read)."""
        ...

    def batches(self, types: Mapping[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        """Stream only the named columns, converted to the given types, in that order."""
        ...


def check_columns(source: Source, wanted: Sequence[str]) -> list[str]:
    """Refuse a source missing a wanted column, or with two of one wanted name; return the
    columns it has that are not read."""
    offered = source.columns()
    missing = [c for c in wanted if c not in offered]
    if missing:
        raise SourceError(
            f"source {source.name} is missing column(s) the contract needs: {', '.join(missing)}"
        )
    # Readers silently take the first of two same-named columns: which one is meant is unknowable.
    counts = Counter(offered)
    twice = [c for c in dict.fromkeys(wanted) if counts[c] > 1]
    if twice:
        named = ", ".join(f"{c!r} ({counts[c]} times)" for c in twice)
        raise SourceError(
            f"source {source.name} has more than one column named {named}: the gateway cannot "
            "tell which one the contract means; give each column its own name in the extract"
        )
    return [c for c in dict.fromkeys(offered) if c not in wanted]


def localise(
    array: pa.Array | pa.ChunkedArray, types: Mapping[str, pa.DataType], column: str, source: str
) -> pa.Array | pa.ChunkedArray:
    """Naive wall-clock times as instants in the zone `types` carries (cast to UTC after)."""
    zone, ambiguous = source_times(types)
    if zone is None:
        raise SourceError(
            f"source {source}: column {column!r} holds times without a zone or offset; declare "
            "the zone the source writes them in with the sharing term sourceTimeZone"
        )
    try:
        return pc.assume_timezone(array, zone, ambiguous=ambiguous, nonexistent="raise")
    except pa.ArrowInvalid as exc:  # the message quotes the time: never pass it on
        said = str(exc)
    if "ambiguous" in said:
        raise SourceError(
            f"source {source}: column {column!r} has a time that occurs twice in {zone} (the "
            "hour the clocks go back): set ambiguousTimes in sourceTimeZone to 'earlier' or "
            "'later' to choose (values are not shown)"
        ) from None
    if "doesn't exist" in said:
        raise SourceError(
            f"source {source}: column {column!r} has a time that does not exist in {zone} (the "
            "hour the clocks go forward); correct it at the source (values are not shown)"
        ) from None
    raise SourceError(f"source {source}: column {column!r} cannot be read in {zone}") from None
