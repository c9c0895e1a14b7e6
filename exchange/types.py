"""How ODCS logical types map to Arrow types, the one place this is decided."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

import pyarrow as pa

UTC_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": UTC_TIMESTAMP,
}

# How a date or time in the DST overlap is read (sourceTimeZone's ambiguousTimes): pyarrow's words.
AMBIGUOUS: Final[dict[str, str]] = {"refuse": "raise", "earlier": "earliest", "later": "latest"}


def arrow_type(logical_type: str) -> pa.DataType:
    """The Arrow type an ODCS logicalType is carried as; ValueError if unsupported."""
    try:
        return ARROW_TYPES[logical_type]
    except KeyError:
        raise ValueError(f"logicalType {logical_type!r} is not supported for exchange") from None


def conforms(actual: pa.DataType, logical_type: str) -> bool:
    """Whether an Arrow type is an acceptable carrier of the logical type."""
    if logical_type == "string":
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if logical_type == "integer":
        return pa.types.is_integer(actual)
    if logical_type == "number":
        return pa.types.is_floating(actual) or pa.types.is_decimal(actual)
    if logical_type == "timestamp":
        return pa.types.is_timestamp(actual)
    return actual == ARROW_TYPES.get(logical_type)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_whole_decimal(t: pa.DataType) -> bool:
    return pa.types.is_decimal(t) and t.scale == 0


# The physical (stored) types a typed source column may have for each logicalType: read as
# declared, never coerced (an integer read as a timestamp became a 1970 date). Documented in
# docs/contracts.md ("Source types"). A timestamp without a zone needs sourceTimeZone.
PHYSICAL_TYPES: Final[dict[str, tuple[str, Callable[[pa.DataType], bool]]]] = {
    # Integers and booleans have one exact text form; floats, dates and times do not.
    "string": (
        "text, integers or booleans",
        lambda t: _is_text(t) or pa.types.is_integer(t) or pa.types.is_boolean(t),
    ),
    "integer": (
        "integers, or decimals with no fraction digits",
        lambda t: pa.types.is_integer(t) or _is_whole_decimal(t),
    ),
    "number": (
        "floating point, decimals or integers",
        lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_integer(t),
    ),
    "boolean": ("boolean", pa.types.is_boolean),
    "date": ("dates", pa.types.is_date),
    "timestamp": ("timestamps", pa.types.is_timestamp),
}


def logical_of(target: pa.DataType) -> str | None:
    """The logicalType an Arrow type carries (the reverse of ARROW_TYPES)."""
    return next((name for name, kind in ARROW_TYPES.items() if kind == target), None)


def readable_as(actual: pa.DataType, target: pa.DataType) -> bool:
    """Whether a source column stored as `actual` may be read for the Arrow type `target`."""
    if pa.types.is_null(actual):
        return True  # a column with no value at all
    if pa.types.is_dictionary(actual):
        actual = actual.value_type  # categorical columns: their values decide
    logical = logical_of(target)
    if logical is None:
        return actual == target
    return PHYSICAL_TYPES[logical][1](actual)


class SourceTypes(dict[str, pa.DataType]):
    """The columns to read and their Arrow types, plus how the source writes times.

    `time_zone` (an IANA name) is the zone of naive wall-clock times; `ambiguous` how a time in
    the hour that occurs twice is read (a key of AMBIGUOUS)."""

    def __init__(
        self,
        types: Mapping[str, pa.DataType] | Iterable[tuple[str, pa.DataType]] = (),
        *,
        time_zone: str | None = None,
        ambiguous: str = "refuse",
    ) -> None:
        super().__init__(types)
        self.time_zone = time_zone
        self.ambiguous = ambiguous


def source_times(types: Mapping[str, pa.DataType]) -> tuple[str | None, str]:
    """The zone naive source times are in (None: refuse them) and pyarrow's ambiguous rule."""
    if isinstance(types, SourceTypes):
        return types.time_zone, AMBIGUOUS[types.ambiguous]
    return None, AMBIGUOUS["refuse"]
