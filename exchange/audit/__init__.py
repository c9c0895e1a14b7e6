"""The audit trail: a tamper-evident ledger of every exchange event, and who received whose data.

- `Ledger`: the hash-chained entries, an RFC 9162 Merkle tree over them, signed checkpoints,
  inclusion and consistency proofs, verification and export.
- `Checkpoint`: a signed tree head in the C2SP checkpoint / signed-note text format.
- `verify_export`, `verify_inclusion`, `verify_consistency`, `verify_checkpoint_consistency`:
  what auditors and partners run, offline.
- `Disclosures`: per transfer, a keyed hash of each subject sent, to answer "who has my data?".
"""

from exchange.audit.checkpoint import Checkpoint, verifier_key
from exchange.audit.disclosures import Disclosure, Disclosures, Recorded
from exchange.audit.export import verify_export
from exchange.audit.ledger import Entry, InclusionProof, Ledger, Verification
from exchange.audit.proofs import (
    verify_checkpoint_consistency,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "Checkpoint",
    "Disclosure",
    "Disclosures",
    "Entry",
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
