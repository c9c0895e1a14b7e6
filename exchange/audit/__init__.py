"""The audit trail: a tamper-evident ledger of every exchange event, and who received whose data.

- `Ledger`: the hash-chained entries, an RFC 9162 Merkle tree over them, signed checkpoints,
  inclusion and consistency proofs, verification and export.
- `Event`: every event the gateway writes (`exchange.audit.events` says what each carries).
- `Checkpoint`: a signed tree head in the C2SP checkpoint / signed-note text format.
- `verify_export`, `verify_inclusion`, `verify_consistency`, `verify_checkpoint_consistency`:
  what auditors and partners run, offline.
- `Disclosures`: per transfer, a keyed hash of each subject sent, to answer "who has my data?".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange.lazy import lazy_names

if TYPE_CHECKING:
    from exchange.audit.checkpoint import Checkpoint, verifier_key
    from exchange.audit.disclosures import Disclosure, Disclosures, Recorded
    from exchange.audit.events import Event
    from exchange.audit.export import verify_export
    from exchange.audit.ledger import Entry, Ledger, Verification
    from exchange.audit.proofs import (
        InclusionProof,
        verify_checkpoint_consistency,
        verify_consistency,
        verify_inclusion,
    )

# Public name -> the module that defines it, imported on first use (PEP 562): reaching
# `exchange.audit.events` (as approvals do) must not load the disclosures' numpy and pyarrow.
_LAZY = {
    "Checkpoint": "exchange.audit.checkpoint",
    "verifier_key": "exchange.audit.checkpoint",
    "Disclosure": "exchange.audit.disclosures",
    "Disclosures": "exchange.audit.disclosures",
    "Recorded": "exchange.audit.disclosures",
    "Event": "exchange.audit.events",
    "verify_export": "exchange.audit.export",
    "Entry": "exchange.audit.ledger",
    "Ledger": "exchange.audit.ledger",
    "Verification": "exchange.audit.ledger",
    "InclusionProof": "exchange.audit.proofs",
    "verify_checkpoint_consistency": "exchange.audit.proofs",
    "verify_consistency": "exchange.audit.proofs",
    "verify_inclusion": "exchange.audit.proofs",
}

__all__ = [
    "Checkpoint",
    "Disclosure",
    "Disclosures",
    "Entry",
    "Event",
    "InclusionProof",
    "Ledger",
    "Recorded",
    "Verification",
    "verifier_key",
    "verify_checkpoint_consistency",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
]

# The layers, lowest first; a module imports only from layers below its own, and
# tests/test_package.py fails on any other import inside this package:
#   0  events, merkle, checkpoint, subjects   vocabulary, RFC 9162 hashing, C2SP notes, keyed ids
#   1  entry                                   one link of the chain and its hash
#   2  storage, chain, anchor, proofs, bindings
#                                              SQL; walking entries; checkpoints handed out;
#                                              offline proofs; what the ledger binds per drop
#   3  verify, export                          the database walk; the offline export
#   4  signer                                  checkpoints that extend the last handed out
#   5  ledger                                  the facade
#   6  disclosures, witness, bundle            who received whose data, checked against it;
#                                              partners witnessing checkpoints; audit bundles


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
