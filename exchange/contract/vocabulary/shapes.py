"""JSON-schema building blocks for the registries: term values, transform options."""

from __future__ import annotations

from typing import Any


def record(required: list[str], properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    """An object with these properties only, the `required` ones present."""
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
        **more,
    }


def text(min_length: int | None = None, pattern: str | None = None) -> dict[str, Any]:
    """A string, at least `min_length` long, or matching `pattern`."""
    rule = {"minLength": min_length} if min_length is not None else {}
    return {"type": "string", **rule, **({"pattern": pattern} if pattern else {})}


def items(item: dict[str, Any], *, unique: bool = False) -> dict[str, Any]:
    """A list of at least one item, each as `item`."""
    return {
        "type": "array",
        "minItems": 1,
        **({"uniqueItems": True} if unique else {}),
        "items": item,
    }
