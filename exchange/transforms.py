"""Per-field minimisation transforms: Arrow array in, Arrow array out, vectorised."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from hashlib import sha256
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# The types each transform reads its source column as.
SOURCE_TYPES: dict[str, pa.DataType] = {
    "pseudonymise": pa.string(),
    "postcode-district": pa.string(),
    "generalise-date": pa.date32(),
}

MIN_KEY_BYTES = 32
PSEUDONYM_HEX_CHARS = 32  # 128 bits: collision-free in practice at any realistic scale

Transform = Callable[[pa.Array], pa.Array]


def keep() -> Transform:
    """Send the value as it is."""
    return lambda values: values


def pseudonymise(key: bytes) -> Transform:
    """Keyed HMAC-SHA256 of the value: stable across runs, not reversible without the key."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a pseudonymisation key needs at least {MIN_KEY_BYTES} bytes")
    keyed = hmac.new(key, digestmod=sha256)

    def apply(values: pa.Array) -> pa.Array:
        out: list[str | None] = []
        append = out.append
        for value in values.to_pylist():
            if value is None:
                append(None)
                continue
            mac = keyed.copy()  # copying the keyed state skips re-deriving the key pads
            mac.update(value.encode("utf-8"))
            append(mac.hexdigest()[:PSEUDONYM_HEX_CHARS])
        return pa.array(out, type=pa.string())

    return apply


def generalise_date(to: str) -> Transform:
    """Reduce a date to its year (integer) or year and month ("YYYY-MM")."""
    if to == "year":
        return lambda values: pc.year(values)
    if to == "year-month":
        return lambda values: pc.strftime(pc.cast(values, pa.timestamp("s")), format="%Y-%m")
    raise ValueError(f"generalise-date cannot reduce to {to!r}")


def postcode_district(values: pa.Array) -> pa.Array:
    """The outward code of a UK postcode ("LS6 2AB" -> "LS6")."""
    compact = pc.replace_substring(pc.utf8_upper(values), " ", "")
    # The inward code is always three characters, so the rest is the district.
    return pc.utf8_slice_codeunits(compact, 0, -3)


def build(kind: str, options: Mapping[str, Any], *, key: bytes | None) -> Transform:
    """The transform a contract field names, ready to apply."""
    if kind == "keep":
        return keep()
    if kind == "pseudonymise":
        if key is None:
            raise ValueError("pseudonymise needs the agreement's key")
        return pseudonymise(key)
    if kind == "generalise-date":
        return generalise_date(str(options.get("to", "")))
    if kind == "postcode-district":
        return postcode_district
    raise ValueError(f"unknown transform {kind!r}")
