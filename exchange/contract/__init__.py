"""Data contracts: ODCS v3.1 documents carrying the gateway's sharing terms.

The names below are imported on first use (PEP 562): `exchange contract diff` and the ledger's
approval checks reach a submodule without paying for the loader's JSON Schema and pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange.lazy import lazy_names

if TYPE_CHECKING:
    from exchange.contract.canonical import canonical_sha256
    from exchange.contract.load import check_document, load_contract, read_document
    from exchange.contract.model import Contract, Endpoint, Field, LegalBasis, Objections, Party

# Public name -> the submodule that defines it.
_LAZY = {
    "Contract": "exchange.contract.model",
    "Endpoint": "exchange.contract.model",
    "Field": "exchange.contract.model",
    "LegalBasis": "exchange.contract.model",
    "Objections": "exchange.contract.model",
    "Party": "exchange.contract.model",
    "canonical_sha256": "exchange.contract.canonical",
    "check_document": "exchange.contract.load",
    "load_contract": "exchange.contract.load",
    "read_document": "exchange.contract.load",
}

__all__ = [
    "Contract",
    "Endpoint",
    "Field",
    "LegalBasis",
    "Objections",
    "Party",
    "canonical_sha256",
    "check_document",
    "load_contract",
    "read_document",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
