"""Minimise: drop objecting rows, then transform each permitted field, nothing else."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from exchange import transforms
from exchange.contract import Contract
from exchange.types import arrow_type


def source_types(contract: Contract) -> dict[str, pa.DataType]:
    """The columns to read from the source and the type each is read as."""
    types: dict[str, pa.DataType] = {}
    for f in contract.fields:
        types[f.source] = transforms.SOURCE_TYPES.get(f.transform) or arrow_type(f.logical_type)
    types.setdefault(contract.objections.column, pa.bool_())
    return types


@dataclass
class Tally:
    """Rows in, rows out, and rows excluded by reason."""

    read: int = 0
    sent: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    objections_overridden: int = 0


class Minimiser:
    """Applies a contract's row rules and field transforms to source batches."""

    def __init__(self, contract: Contract, *, pseudonym_key: bytes | None) -> None:
        self.contract = contract
        self.tally = Tally()
        self._fields = [
            (
                f.name,
                f.source,
                transforms.build(f.transform, f.transform_options, key=pseudonym_key),
            )
            for f in contract.fields
        ]

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Minimise one batch."""
        self.tally.read += batch.num_rows
        objected = pc.fill_null(batch.column(self.contract.objections.column), False)
        count = pc.sum(objected).as_py() or 0
        if self.contract.objections.overridden:
            self.tally.objections_overridden += count
        elif count:
            batch = batch.filter(pc.invert(objected))
            self.tally.excluded["objection"] += count
        arrays = [apply(batch.column(source)) for _, source, apply in self._fields]
        out = pa.RecordBatch.from_arrays(arrays, names=[name for name, _, _ in self._fields])
        self.tally.sent += out.num_rows
        return out
