"""The audit trail: a tamper-evident ledger of every exchange event."""

from exchange.audit.ledger import Entry, Ledger, Verification

__all__ = ["Entry", "Ledger", "Verification"]
