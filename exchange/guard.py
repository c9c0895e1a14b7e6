"""The guard: an independent last check that the outgoing schema is exactly the contract's."""

from __future__ import annotations

import pyarrow as pa

from exchange.contract import Contract
from exchange.errors import GuardRefused
from exchange.types import conforms


def check(schema: pa.Schema, contract: Contract) -> None:
    """Refuse any outgoing schema that is not the contract's fields, in order, with their types."""
    expected = list(contract.field_names)
    actual = list(schema.names)
    unexpected = [name for name in actual if name not in expected]
    missing = [name for name in expected if name not in actual]
    if unexpected or missing:
        parts = []
        if unexpected:
            parts.append(f"not in the contract: {', '.join(unexpected)}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        raise GuardRefused(
            f"outgoing columns refused ({'; '.join(parts)})",
            unexpected=unexpected,
            missing=missing,
        )
    if actual != expected:
        raise GuardRefused("outgoing columns are not in the contract's order")
    wrong = [
        f"{f.name} is {schema.field(f.name).type}, contract says {f.logical_type}"
        for f in contract.fields
        if not conforms(schema.field(f.name).type, f.logical_type)
    ]
    if wrong:
        raise GuardRefused(f"outgoing types refused ({'; '.join(wrong)})", unexpected=())
