"""Minimise: drop objecting rows, keep only rows the purpose filters allow, then transform each
permitted field, nothing else."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from exchange import filters, transforms
from exchange.contract import Contract
from exchange.types import SourceTypes, arrow_type


def read_types(contract: Contract) -> dict[str, str]:
    """The source columns to read and the logicalType each is read as, fields first."""
    types: dict[str, str] = {}
    for f in contract.fields:
        types.setdefault(f.source, transforms.reads_as(f.transform, f.logical_type))
    types.setdefault(contract.objections.column, "boolean")
    types.update(filters.column_types(filters.parse(contract.filters), types))
    return types


def source_types(contract: Contract) -> SourceTypes:
    """The columns to read from the source and the Arrow type each is read as, with the zone
    of the source's times written without one (sourceTimeZone)."""
    types = SourceTypes(
        {column: arrow_type(kind) for column, kind in read_types(contract).items()},
        time_zone=contract.source_time_zone,
        ambiguous=contract.ambiguous_times,
    )
    if contract.incremental_column:
        types.setdefault(contract.incremental_column, arrow_type("timestamp"))
    return types


@dataclass
class Tally:
    """Rows in, rows out, and rows excluded by reason."""

    read: int = 0
    sent: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    objections_overridden: int = 0


def _id_set(ids: Iterable[str] | pa.Array) -> pa.Array:
    """The objecting subject ids as a unique text array without nulls."""
    array = ids if isinstance(ids, pa.Array) else pa.array(list(ids), type=pa.string())
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    return pc.unique(array.drop_null())


class Minimiser:
    """Applies a contract's row rules and field transforms to source batches.

    `today` is the run date (for age bands and age filters); `objecting_ids` are subject ids
    from the operator's objection list, matched exactly against the subject key's SOURCE column.
    """

    def __init__(
        self,
        contract: Contract,
        *,
        pseudonym_key: bytes | None,
        today: dt.date | None = None,
        objecting_ids: Iterable[str] | pa.Array | None = None,
    ) -> None:
        self.contract = contract
        self.tally = Tally()
        rules = filters.parse(contract.filters)
        dated = filters.needs_today(rules) or any(
            transforms.needs_today(f.transform, f.transform_options) for f in contract.fields
        )
        if dated and today is None:
            raise ValueError(f"contract {contract.id} needs the run date: pass today")
        self._filters = filters.compile_filters(rules, read_types(contract), today)
        self._objecting = None if objecting_ids is None else _id_set(objecting_ids)
        self._fields = [
            (
                f.name,
                f.source,
                transforms.build(f.transform, f.transform_options, key=pseudonym_key, today=today),
            )
            for f in contract.fields
        ]

    def _objected(self, batch: pa.RecordBatch) -> pa.Array:
        """True for each row whose person objected, by the flag column or the operator's list."""
        objected = pc.fill_null(batch.column(self.contract.objections.column), False)
        if self._objecting is not None:
            ids = batch.column(self.contract.subject_key.source)
            if not pa.types.is_string(ids.type):
                ids = pc.cast(ids, pa.string())
            listed = pc.is_in(ids, value_set=self._objecting)  # a null id matches nothing
            objected = pc.or_(objected, listed)
        return objected

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Minimise one batch; UnmappedValues if a `map` field meets a code it cannot map."""
        self.tally.read += batch.num_rows
        objected = self._objected(batch)
        count = pc.sum(objected).as_py() or 0
        if self.contract.objections.overridden:
            self.tally.objections_overridden += count
        elif count:
            batch = batch.filter(pc.invert(objected))
            self.tally.excluded["objection"] += count
        for reason, rule in self._filters:
            before = batch.num_rows
            batch = batch.filter(rule)  # a null result drops the row
            if batch.num_rows != before:
                self.tally.excluded[reason] += before - batch.num_rows
        # The people whose rows go out, by their source id (for the disclosure ledger).
        self.last_subjects = batch.column(self.contract.subject_key.source)
        arrays = []
        for name, source, apply in self._fields:
            try:
                arrays.append(apply(batch.column(source)))
            except transforms.UnmappedValues as exc:
                raise transforms.UnmappedValues(exc.count, field=name) from None
        out = pa.RecordBatch.from_arrays(arrays, names=[name for name, _, _ in self._fields])
        self.tally.sent += out.num_rows
        return out
