"""The source interface: a stream of Arrow record batches of the requested columns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import pyarrow as pa

from exchange.errors import SourceError


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
    """Refuse a source missing a wanted column; return the columns it has that are not read."""
    offered = source.columns()
    missing = [c for c in wanted if c not in offered]
    if missing:
        raise SourceError(
            f"source {source.name} is missing column(s) the contract needs: {', '.join(missing)}"
        )
    return [c for c in offered if c not in wanted]
