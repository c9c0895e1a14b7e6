"""Addressing places inside a contract document, for messages that say exactly where."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def format_path(parts: Iterable[str | int]) -> str:
    """Render a JSON path as `schema[0].properties[3].customProperties`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def custom_properties(items: Any) -> dict[str, tuple[int, Any]]:
    """Collect an ODCS customProperties list into {property: (index, value)}."""
    out: dict[str, tuple[int, Any]] = {}
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and "property" in item:
            out[str(item["property"])] = (index, item.get("value"))
    return out


def custom_values(items: Any) -> dict[str, Any]:
    """An ODCS customProperties list as {property: value}."""
    return {key: value for key, (_, value) in custom_properties(items).items()}


def custom_path(custom: dict[str, tuple[int, Any]], key: str, *at: str | int) -> str:
    """The path of a custom property's value (or of the list, if the key is absent)."""
    base = [*at, "customProperties"]
    if key in custom:
        return format_path([*base, custom[key][0], "value"])
    return format_path(base)
