"""Regular expressions as the gateway reads them (exchange.patterns): RE2, `$` the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exchange import patterns
from exchange.contract.vocabulary.schemas import field_terms_schema

ROOT = Path(__file__).resolve().parents[1]


def schema_patterns(node: Any) -> list[str]:
    """Every `pattern` keyword's value in a schema."""
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for key, v in node.items() if key != "pattern" for p in schema_patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in schema_patterns(v)]
    return []


OWN_SCHEMAS = {
    "terms": json.loads((ROOT / "exchange/contract/terms.schema.json").read_text()),
    "field terms": field_terms_schema(),
    "manifest": json.loads((ROOT / "exchange/manifest.schema.json").read_text()),
}


@pytest.mark.parametrize("name", sorted(OWN_SCHEMAS))
def test_every_pattern_of_the_gateways_own_schemas_is_read_by_re2(name: str) -> None:
    """None falls back to Python's `re`, whose `$` also matches before a final line break."""
    found = schema_patterns(OWN_SCHEMAS[name])
    assert [p for p in found if patterns.problem(p) is not None] == []
    assert found or name == "field terms"  # (it has none, today)


def test_a_schema_pattern_means_what_json_schema_means() -> None:
    """`$` is the end of the text; a lone surrogate (valid JSON, not UTF-8) matches nothing
    and is an error, not an exception; a pattern RE2 cannot read is still applied by `re`."""
    strict = patterns.schema_validator({"type": "string", "pattern": "^[a-z-]+$"})
    assert strict.is_valid("early-help") and not strict.is_valid("early-help\n")
    assert not strict.is_valid("early\ud800")
    [error] = strict.iter_errors("early-help\n")
    assert error.validator == "pattern"
    lookahead = patterns.schema_validator({"type": "string", "pattern": "^(?!x)[a-z]+$"})
    assert lookahead.is_valid("ab") and not lookahead.is_valid("xb")
    assert patterns.problem("(?=a)") is not None and patterns.problem(r"\p{N}+") is None
