"""A source narrowed to some subjects' rows (for correction notices)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from exchange.sources.base import Source


class OnlySubjects:
    """The rows of `source` whose `column` holds one of `ids`, nothing else."""

    def __init__(self, source: Source, column: str, ids: Iterable[str]) -> None:
        self.source = source
        self.name = source.name
        self.column = column
        self.ids = pa.array(sorted(set(ids)), type=pa.string())

    def columns(self) -> list[str]:
        """The wrapped source's columns."""
        return self.source.columns()

    def batches(self, types: Mapping[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        """The wrapped source's batches, filtered to the subjects."""
        for batch in self.source.batches(types):
            keys = pc.cast(batch.column(self.column), pa.string())
            kept = batch.filter(pc.fill_null(pc.is_in(keys, value_set=self.ids), False))
            if kept.num_rows:
                yield kept
