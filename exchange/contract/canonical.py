"""The canonical form of a contract: what its hash (and later its approval) binds."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any


def _plain(value: Any) -> Any:
    """Turn YAML scalars JSON lacks (dates, times) into their ISO text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def _terms_unordered(value: Any) -> Any:
    """Sort every customProperties list by its keys: their order carries no meaning."""
    if isinstance(value, dict):
        out = {k: _terms_unordered(v) for k, v in value.items()}
        terms = out.get("customProperties")
        if isinstance(terms, list) and all(isinstance(t, dict) for t in terms):
            out["customProperties"] = sorted(terms, key=lambda t: str(t.get("property")))
        return out
    if isinstance(value, list):
        return [_terms_unordered(v) for v in value]
    return value


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """Serialise a parsed contract so that layout, key order, quoting and the order of
    customProperties do not matter (field order does: it is the payload's column order)."""
    plain = _terms_unordered(_plain(document))
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def canonical_sha256(document: dict[str, Any]) -> str:
    """The hex SHA-256 of the contract's canonical form."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()
