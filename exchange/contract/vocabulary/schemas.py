"""JSON schemas built from the registries: the sharing terms, the field terms, and the manifest's
transform list."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from exchange.contract.vocabulary.terms import SCHEMA_DEFS, TERMS
from exchange.contract.vocabulary.transforms import TRANSFORMS

SHARING_TERMS_ID = "https://exchange-gateway.example/schemas/sharing-terms/1.0.json"
FIELD_TERMS_ID = "https://exchange-gateway.example/schemas/field-terms/1.1.json"


def sharing_terms_schema() -> dict[str, Any]:
    """The schema of the top-level customProperties, keyed by `property`: the term registry."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SHARING_TERMS_ID,
        "title": "Sharing terms: the gateway's customProperties vocabulary for ODCS contracts",
        "description": "Top-level customProperties of a data contract, collected into one object "
        "keyed by `property`. Each key is documented in docs/contracts.md. Generated from "
        "exchange/contract/vocabulary/terms.py: do not edit.",
        "type": "object",
        "required": [t.name for t in TERMS.values() if t.required == "yes"],
        "additionalProperties": False,
        "$defs": SCHEMA_DEFS,
        "properties": {t.name: t.schema for t in TERMS.values()},
    }


def _option_rule(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    when = {"required": ["transform"], "properties": {"transform": {"const": name}}}
    if options is None:
        return {"if": when, "then": {"not": {"required": ["transformOptions"]}}}
    then = {"required": ["transformOptions"], "properties": {"transformOptions": options}}
    return {"if": when, "then": then}


def field_terms_schema() -> dict[str, Any]:
    """The schema of one field's customProperties, from the transform registry."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": FIELD_TERMS_ID,
        "title": "Field terms: customProperties of one schema property",
        "description": "Generated from exchange/contract/vocabulary/transforms.py: do not edit.",
        "type": "object",
        "required": ["transform"],
        "additionalProperties": False,
        "properties": {
            "transform": {"enum": list(TRANSFORMS)},
            "transformOptions": {"type": "object"},
            "subjectKey": {"type": "boolean"},
            "directIdentifier": {"type": "boolean"},
            "justification": {"type": "string", "minLength": 10},
        },
        "allOf": [
            _option_rule(s.name, dict(s.options) if s.options is not None else None)
            for s in TRANSFORMS.values()
        ],
    }


_MANIFEST_ENUM = re.compile(r'("transform": \{"enum": )\[[^\]]*\]')


def manifest_schema_text(text: str) -> str:
    """A manifest schema's text with its transform list set from the registry."""
    names = json.dumps(list(TRANSFORMS))
    return _MANIFEST_ENUM.sub(lambda m: m.group(1) + names, text, count=1)


def manifest_transforms(path: Path) -> list[str]:
    """The transform names a manifest schema file lists."""
    return _find_transform_enum(json.loads(path.read_text("utf-8")))


def _find_transform_enum(node: Any) -> list[str]:
    if isinstance(node, dict):
        transform = node.get("properties", {}).get("transform")
        if isinstance(transform, dict) and "enum" in transform:
            return list(transform["enum"])
        for value in node.values():
            found = _find_transform_enum(value)
            if found:
                return found
    if isinstance(node, list):
        for value in node:
            found = _find_transform_enum(value)
            if found:
                return found
    return []


def sharing_terms_text() -> str:
    """The sharing-terms schema as the file in the package holds it."""
    return json.dumps(sharing_terms_schema(), indent=2, ensure_ascii=False) + "\n"


def field_terms_text() -> str:
    """The field-terms schema as the file in the package holds it."""
    return json.dumps(field_terms_schema(), indent=2) + "\n"
