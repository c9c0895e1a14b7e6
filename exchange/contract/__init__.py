"""Data contracts: ODCS v3.1 documents carrying the gateway's sharing terms."""

from exchange.contract.canonical import canonical_sha256
from exchange.contract.load import check_document, load_contract, read_document
from exchange.contract.model import Contract, Endpoint, Field, LegalBasis, Objections, Party

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
