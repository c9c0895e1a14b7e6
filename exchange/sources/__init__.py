"""Sources of the provider's data, each a stream of Arrow record batches."""

from __future__ import annotations

from pathlib import Path

from exchange.errors import SourceError
from exchange.settings import CSV_BLOCK_SIZE
from exchange.sources.base import Source, check_columns
from exchange.sources.csv import CsvSource
from exchange.sources.parquet import ParquetSource

__all__ = ["CsvSource", "ParquetSource", "Source", "check_columns", "open_source"]


def open_source(path: str | Path, *, csv_block_size: int = CSV_BLOCK_SIZE) -> Source:
    """Pick the source for a file by its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CsvSource(path, block_size=csv_block_size)
    if suffix in (".parquet", ".pq"):
        return ParquetSource(path)
    raise SourceError(f"source {path.name}: unsupported file type {suffix or '(none)'!r}")
