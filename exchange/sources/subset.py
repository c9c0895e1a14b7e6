"""A source narrowed to some subjects' rows (for correction notices)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from exchange.audit.subjects import subject_text, subject_texts
from exchange.sources.base import Source


class ChangedSince:
    """The rows of `source` whose timestamp `column` is after `since` (all rows if None).

    It notes the newest timestamp it saw and how many rows it passed over, so the caller can
    advance the watermark once the drop is delivered, and only then."""

    def __init__(self, source: Source, column: str, since: dt.datetime | None) -> None:
        self.source = source
        self.name = source.name
        self.column = column
        self.since = since
        self.newest: dt.datetime | None = since
        self.unchanged = 0

    def columns(self) -> list[str]:
        """The wrapped source's columns."""
        return self.source.columns()

    def batches(self, types: Mapping[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        """The wrapped source's new or changed rows."""
        for batch in self.source.batches(types):
            stamps = batch.column(self.column)
            newest = pc.max(stamps).as_py()
            if newest is not None and (self.newest is None or newest > self.newest):
                self.newest = newest
            if self.since is None:
                yield batch
                continue
            # A row with no timestamp is sent: it cannot be shown to be unchanged.
            changed = pc.fill_null(pc.greater(stamps, pa.scalar(self.since, stamps.type)), True)
            kept = batch.filter(changed)
            self.unchanged += batch.num_rows - kept.num_rows
            if kept.num_rows:
                yield kept


class OnlySubjects:
    """The rows of `source` whose `column` holds one of `ids`, nothing else."""

    def __init__(self, source: Source, column: str, ids: Iterable[str]) -> None:
        self.source = source
        self.name = source.name
        self.column = column
        # Compared as the disclosure ledger compares them (`subject_text`): the ledger finds
        # a padded id's drops by the bare id, and so must the rows be found.
        self.ids = pa.array(sorted({subject_text(i) for i in ids}), type=pa.string())

    def columns(self) -> list[str]:
        """The wrapped source's columns."""
        return self.source.columns()

    def batches(self, types: Mapping[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        """The wrapped source's batches, filtered to the subjects."""
        for batch in self.source.batches(types):
            keys = subject_texts(pc.cast(batch.column(self.column), pa.string()))
            kept = batch.filter(pc.fill_null(pc.is_in(keys, value_set=self.ids), False))
            if kept.num_rows:
                yield kept
