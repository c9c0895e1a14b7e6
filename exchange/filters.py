"""Purpose filters: the contract's row rules, compiled to Arrow expressions, never to code.

A filter names a SOURCE column (filters run before the transforms) and keeps the rows for which
it is true. A null never satisfies a filter except `is_null`, so a row that cannot be shown to
meet the purpose is not sent.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exchange.transforms import years_before
from exchange.types import ARROW_TYPES, arrow_type

COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
SET_OPS = ("in", "not_in")
NULL_OPS = ("is_null", "not_null")
AGE_OPS = ("age_under", "age_at_least")
OPS = (*COMPARISONS, *SET_OPS, *NULL_OPS, *AGE_OPS)

Located = tuple[list[str | int], str]  # (path inside the filters list, message)


@dataclass(frozen=True)
class Filter:
    """One row rule of the contract."""

    index: int
    column: str
    op: str
    value: Any = None
    name: str | None = None
    type: str | None = None  # the logicalType to read a filter-only column as

    @property
    def reason(self) -> str:
        """How rows this filter leaves out are counted: `filter:<name>` or `filter:<index>`."""
        return f"filter:{self.name if self.name else self.index}"

    @property
    def needs_today(self) -> bool:
        """Whether the filter depends on the run date."""
        return self.op in AGE_OPS


def parse(specs: Sequence[Mapping[str, Any]]) -> tuple[Filter, ...]:
    """Filters from a checked contract's `filters` list; ValueError on an unknown op."""
    out = []
    for i, spec in enumerate(specs):
        op = str(spec["op"])
        if op not in OPS:
            raise ValueError(f"filters[{i}]: unknown op {op!r}")
        out.append(
            Filter(
                i, str(spec["column"]), op, spec.get("value"), spec.get("name"), spec.get("type")
            )
        )
    return tuple(out)


def _wellformed(specs: Any) -> tuple[Filter, ...]:
    """The filters whose shape is right; the schema has reported the others."""
    if not isinstance(specs, list):
        return ()
    good = [
        (i, s)
        for i, s in enumerate(specs)
        if isinstance(s, Mapping)
        and isinstance(s.get("column"), str)
        and s.get("op") in OPS
        and s.get("type", "string") in ARROW_TYPES
        and _value_shaped(s["op"], s.get("value"))
    ]
    return tuple(
        Filter(i, s["column"], s["op"], s.get("value"), s.get("name"), s.get("type"))
        for i, s in good
    )


def _value_shaped(op: str, value: Any) -> bool:
    if op in NULL_OPS:
        return value is None
    if op in SET_OPS:
        return isinstance(value, list) and bool(value) and not any(_nested(v) for v in value)
    if op in AGE_OPS:
        return isinstance(value, int) and not isinstance(value, bool)
    return value is not None and not _nested(value)


def _nested(value: Any) -> bool:
    return isinstance(value, list | dict) or value is None


def inferred_type(f: Filter) -> str:
    """The logicalType a filter-only column is read as: `type`, else from the op and value."""
    if f.type:
        return f.type
    if f.op in AGE_OPS:
        return "date"
    values = f.value if isinstance(f.value, list) else [f.value]
    if values and all(isinstance(v, bool) for v in values):
        return "boolean"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "number"
    return "string"


def column_types(filters: Sequence[Filter], known: Mapping[str, str]) -> dict[str, str]:
    """The logicalType each column only the filters read is read as; `known` columns keep theirs."""
    types: dict[str, str] = {}
    # is_null and not_null work on any type, so they only decide when nothing else does.
    for f in sorted(filters, key=_untyped):
        if f.column not in known:
            types.setdefault(f.column, inferred_type(f))
    return types


def _untyped(f: Filter) -> bool:
    return f.op in NULL_OPS and not f.type


def literal(value: Any, logical_type: str) -> Any:
    """A contract value as the Python value of a column of `logical_type`; ValueError if not."""
    if logical_type == "string":
        if isinstance(value, str):
            return value
        raise ValueError("must be text for a text column (quote it in YAML)")
    if logical_type == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError("must be true or false for a boolean column")
    if isinstance(value, bool):
        raise ValueError(f"cannot compare true or false with a {logical_type} column")
    if logical_type == "integer":
        if isinstance(value, int):
            return value
        raise ValueError("must be a whole number for an integer column")
    if logical_type == "number":
        if isinstance(value, int | float):
            return value
        raise ValueError("must be a number for a number column")
    if logical_type == "date":
        try:
            return dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            raise ValueError("must be a date YYYY-MM-DD for a date column") from None
    if logical_type == "timestamp":
        try:
            stamp = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise ValueError("must be an ISO 8601 date and time for a timestamp column") from None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    raise ValueError(f"cannot filter a {logical_type} column")


def problems(specs: Any, known: Mapping[str, str], renamed: Mapping[str, str]) -> Iterator[Located]:
    """What is wrong with a contract's filters beyond their shape.

    `known` maps each source column the fields or objections read to its logicalType;
    `renamed` maps each outgoing field name that is not its source column to that column.
    """
    filters = _wellformed(specs)
    names: dict[str, int] = {}
    read_by: dict[str, tuple[str, int]] = {}
    for f in filters:
        at: list[str | int] = [f.index]
        if f.column in renamed and f.column not in known:
            yield (
                [*at, "column"],
                f"filters name source columns (they run before the transforms): field "
                f"{f.column} is read from source column {renamed[f.column]!r}",
            )
            continue
        if f.name is not None:
            if f.name in names:
                yield (
                    [*at, "name"],
                    f"filter name {f.name!r} is also used by filters[{names[f.name]}]",
                )
            names.setdefault(f.name, f.index)
        column_type = known.get(f.column)
        if _untyped(f):
            continue  # reads any type; the typed filters on the column are checked below
        if column_type is None:
            column_type = inferred_type(f)
            first = read_by.setdefault(f.column, (column_type, f.index))
            if first[0] != column_type:
                yield (
                    [*at, "type" if f.type else "value"],
                    f"column {f.column} is read as {first[0]} for filters[{first[1]}] and as "
                    f"{column_type} here: give both the same 'type'",
                )
                continue
        elif f.type and f.type != column_type:
            yield (
                [*at, "type"],
                f"column {f.column} is read as {column_type} for a field or the objections, "
                f"not {f.type}",
            )
            continue
        if f.op in AGE_OPS:
            if column_type != "date":
                yield (
                    [*at, "op"],
                    f"{f.op} needs a date column; {f.column} is read as {column_type}",
                )
            continue
        if f.op in NULL_OPS:
            continue
        if f.op in COMPARISONS and column_type == "boolean" and f.op not in ("==", "!="):
            yield [*at, "op"], f"{f.op} does not order true and false: use == or !="
            continue
        values = list(enumerate(f.value)) if f.op in SET_OPS else [(None, f.value)]
        for k, value in values:
            try:
                literal(value, column_type)
            except ValueError as exc:
                yield ([*at, "value"] if k is None else [*at, "value", k]), str(exc)


def needs_today(filters: Sequence[Filter]) -> bool:
    """Whether any filter depends on the run date."""
    return any(f.needs_today for f in filters)


def expression(f: Filter, logical_type: str, today: dt.date | None) -> pc.Expression:
    """The filter as an Arrow expression over a column read as `logical_type`."""
    column = pc.field(f.column)
    if f.op == "is_null":
        return column.is_null()
    if f.op == "not_null":
        return column.is_valid()
    if f.op in AGE_OPS:
        if today is None:
            raise ValueError(f"filters[{f.index}]: {f.op} needs the run date")
        cutoff = pa.scalar(years_before(today, int(f.value)), pa.date32())
        # age_under N: born after the last birth date that makes someone N today.
        return column > cutoff if f.op == "age_under" else column <= cutoff
    kind = arrow_type(logical_type)
    if f.op in SET_OPS:
        value_set = pa.array([literal(v, logical_type) for v in f.value], type=kind)
        matched = column.isin(value_set)
        # Nulls never match, so is_valid() keeps a null out of not_in as well.
        return (matched if f.op == "in" else ~matched) & column.is_valid()
    scalar = pa.scalar(literal(f.value, logical_type), type=kind)
    result: pc.Expression = COMPARISONS[f.op](column, scalar)
    return result


def compile_filters(
    filters: Sequence[Filter], types: Mapping[str, str], today: dt.date | None
) -> list[tuple[str, pc.Expression]]:
    """(reason, expression) for each filter, in contract order; `types` are the read types."""
    return [(f.reason, expression(f, types[f.column], today)) for f in filters]
