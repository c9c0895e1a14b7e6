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
from exchange.audit.subjects import subject_texts
from exchange.contract import Contract
from exchange.types import SourceTypes, arrow_type


def read_types(contract: Contract) -> dict[str, str]:
    """The source columns to read and the logicalType each is read as, fields first."""
    types: dict[str, str] = {}
    for f in contract.fields:
        types.setdefault(f.source, transforms.reads_as(f.transform, f.logical_type))
    rule = contract.objections
    types.setdefault(rule.column, "boolean" if rule.objected_values is None else "string")
    if rule.override_column:
        types.setdefault(rule.override_column, "string")
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
    """The objecting subject ids as a unique text array without nulls, trimmed."""
    array = ids if isinstance(ids, pa.Array) else pa.array(list(ids), type=pa.string())
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    return pc.unique(subject_texts(array.drop_null()))


def _flag_text(value: str) -> str:
    """An objection flag value as compared: trimmed, lower case."""
    return value.strip().lower()


def _as_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as text (a flag the source typed as a number or boolean, say)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())


class Minimiser:
    """Applies a contract's row rules and field transforms to source batches.

    `today` is the run date (for age bands and age filters); `objecting_ids` are subject ids
    from the operator's objection list, matched against the subject key's SOURCE column; white
    space at either end of an id, on the list or in the source, is not part of it.
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
        rule = contract.objections
        self._objected_values = (
            None
            if rule.objected_values is None
            else pa.array([_flag_text(v) for v in rule.objected_values], type=pa.string())
        )
        # Matched like the objection flag: trimmed, in any case (`Y`, ` y` alike).
        self._override_values = pa.array(
            sorted({str(v).strip().lower() for v in rule.override_values}), type=pa.string()
        )
        if pseudonym_key is not None:
            pseudonym_key = transforms.scoped_key(
                pseudonym_key, contract.id, contract.pseudonym_scope
            )
        self._fields = [
            (
                f.name,
                f.source,
                transforms.build(f.transform, f.transform_options, key=pseudonym_key, today=today),
            )
            for f in contract.fields
        ]

    def _flag(self, batch: pa.RecordBatch) -> pa.Array:
        """True where the objection column says the person objected (empty as the rule says)."""
        rule = self.contract.objections
        column = batch.column(rule.column)
        if self._objected_values is None:
            return pc.fill_null(column, rule.empty_objected)
        text = pc.utf8_lower(pc.utf8_trim_whitespace(_as_text(column)))
        hit = pc.fill_null(pc.is_in(text, value_set=self._objected_values), False)
        if not rule.empty_objected:
            return hit
        empty = pc.fill_null(pc.equal(text, ""), True)
        return pc.or_(hit, empty)

    def _override_holds(self, batch: pa.RecordBatch) -> pa.Array | None:
        """Where the override's condition holds (None: the override is unconditional)."""
        column = self.contract.objections.override_column
        if column is None:
            return None
        values = pc.utf8_lower(pc.utf8_trim_whitespace(_as_text(batch.column(column))))
        return pc.fill_null(pc.is_in(values, value_set=self._override_values), False)

    def _objected(self, batch: pa.RecordBatch) -> pa.Array:
        """True for each row whose person objected, by the flag column or the operator's list."""
        objected = self._flag(batch)
        if self._objecting is not None:
            ids = batch.column(self.contract.subject_key.source)
            if not pa.types.is_string(ids.type):
                ids = pc.cast(ids, pa.string())
            listed = pc.is_in(ids, value_set=self._objecting)  # a null id matches nothing
            objected = pc.or_(objected, listed)
        return objected

    def _unpadded_subjects(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with its subject ids as the disclosure ledger reads them (`subject_text`:
        no white space at either end; one of white space only, or empty, is no id): an id a
        source pads in a fixed-width column is one person to the objection list, the pseudonym
        and the ledger, and padding never hides a listed person's objection."""
        index = batch.schema.get_field_index(self.contract.subject_key.source)
        ids = batch.column(index)
        if pa.types.is_dictionary(ids.type):
            ids = ids.cast(ids.type.value_type)
        if pa.types.is_string_view(ids.type):
            ids = ids.cast(pa.string())
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            return batch  # numbers: no padding
        ids = subject_texts(ids)
        # An id of white space only names nobody: no id, not one shared by all such rows.
        blank = pc.equal(pc.utf8_length(ids), 0)
        if pc.any(blank).as_py():
            ids = pc.if_else(blank, pa.scalar(None, ids.type), ids)
        return batch.set_column(index, pa.field(batch.schema.field(index).name, ids.type), ids)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Minimise one batch; UnmappedValues if a `map` field meets a code it cannot map."""
        self.tally.read += batch.num_rows
        batch = self._unpadded_subjects(batch)
        objected = self._objected(batch)
        holds = self._override_holds(batch) if self.contract.objections.overridden else None
        if holds is not None:  # overridden only where the condition holds; left out elsewhere
            self.tally.objections_overridden += pc.sum(pc.and_(objected, holds)).as_py() or 0
            objected = pc.and_(objected, pc.invert(holds))
        count = pc.sum(objected).as_py() or 0
        if self.contract.objections.overridden and holds is None:
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
