"""How ODCS logical types map to Arrow types, the one place this is decided."""

from __future__ import annotations

import pyarrow as pa

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


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
