"""The gateway's vocabularies, each declared once: purposes, transforms, terms, retention units."""

from __future__ import annotations

from exchange.contract.vocabulary.purposes import PURPOSES
from exchange.contract.vocabulary.transforms import TRANSFORMS, TransformSpec
from exchange.contract.vocabulary.units import RETENTION_UNITS, Unit

# The output type of each transform by its `to` option, as before the registry (compatibility).
TRANSFORM_OUTPUT_TYPES: dict[str, dict[str, str | None]] = {
    name: dict(spec.outputs) for name, spec in TRANSFORMS.items()
}

__all__ = [
    "PURPOSES",
    "RETENTION_UNITS",
    "TRANSFORMS",
    "TRANSFORM_OUTPUT_TYPES",
    "TransformSpec",
    "Unit",
]
