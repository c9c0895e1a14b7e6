"""Inclusion and consistency proofs: made by the ledger, checked here offline against checkpoints.

A checkpoint a partner holds pins the first `size` entries for good: if the operator later
deletes the newest entries, restores an old copy of the database, or rewrites history and
recomputes every hash, the ledger is no longer consistent with that checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.audit import merkle
from exchange.audit.checkpoint import Checkpoint
from exchange.errors import LedgerError


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class InclusionProof:
    """An RFC 9162 inclusion proof: entry `seq` (hash `entry_hash`) in the tree of `tree_size`."""

    seq: int
    entry_hash: str
    tree_size: int
    path: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (hashes as hex)."""
        return {**self.__dict__, "path": [p.hex() for p in self.path]}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> InclusionProof:
        """Inverse of to_dict; LedgerError if malformed."""
        try:
            path = tuple(bytes.fromhex(p) for p in value["path"])
            proof = cls(int(value["seq"]), str(value["entry_hash"]), int(value["tree_size"]), path)
        except (KeyError, TypeError, ValueError):
            raise LedgerError("malformed inclusion proof") from None
        if any(len(p) != 32 for p in path) or not _is_hex64(proof.entry_hash):
            raise LedgerError("malformed inclusion proof")
        return proof


class Log(Protocol):
    """What `verify_consistency` needs of a ledger (`exchange.audit.Ledger` is one)."""

    def leaves(self, size: int | None = None) -> list[bytes]:
        """The Merkle leaf hashes of entries 1..size (default: all)."""
        ...

    def latest_checkpoint(self, public_key: Ed25519PublicKey) -> Checkpoint | None:
        """The largest stored checkpoint signed by `public_key`, if any."""
        ...


def verify_inclusion(
    proof: InclusionProof, checkpoint_note: str, public_key: Ed25519PublicKey
) -> Checkpoint:
    """Check that the entry with `proof.entry_hash` is entry `proof.seq` of a signed tree.

    Returns the checkpoint; LedgerError if its signature, its size or the proof is wrong.
    """
    checkpoint = Checkpoint.open(checkpoint_note, public_key)
    if proof.tree_size != checkpoint.size:
        raise LedgerError(
            f"the proof is for a tree of size {proof.tree_size}, "
            f"the checkpoint is of size {checkpoint.size}"
        )
    leaf = merkle.leaf_hash(bytes.fromhex(proof.entry_hash))
    if not merkle.verify_inclusion(
        leaf, proof.seq - 1, proof.tree_size, proof.path, checkpoint.root
    ):
        raise LedgerError(
            f"entry {proof.seq} with hash {proof.entry_hash[:16]} is not in the signed tree "
            f"of size {checkpoint.size}"
        )
    return checkpoint


def verify_checkpoint_consistency(
    old_note: str, new_note: str, proof: Sequence[bytes], public_key: Ed25519PublicKey
) -> tuple[Checkpoint, Checkpoint]:
    """Check two signed checkpoints and an RFC 9162 consistency proof between them, offline.

    This is what a partner does with the checkpoint it held and a newer one it receives.
    Returns both checkpoints; LedgerError if a signature fails or the newer tree does not
    extend the older.
    """
    old = Checkpoint.open(old_note, public_key)
    new = Checkpoint.open(new_note, public_key, origin=old.origin)
    if new.size < old.size:
        raise LedgerError(
            f"the newer checkpoint has {new.size} entries, fewer than the {old.size} held"
        )
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise LedgerError(
            f"checkpoint {new.size} does not extend checkpoint {old.size}: "
            "the ledger was rewritten between them"
        )
    return old, new


def verify_consistency(
    old_checkpoint_text: str, ledger: Log, public_key: Ed25519PublicKey
) -> Checkpoint:
    """Check that `ledger` still holds, unchanged, the entries an older signed checkpoint covers.

    The ledger proves it the RFC 9162 way: a consistency proof from the held checkpoint to the
    ledger's newest signed checkpoint (or, if it has none as large, to its current tree), checked
    against both roots. Returns the checkpoint proven against (its `note` is empty when that is
    the unsigned current tree). LedgerError says what is wrong: fewer entries than the held
    checkpoint (newest entries deleted, or an old copy restored), or different ones (rewritten).
    """
    old = Checkpoint.open(old_checkpoint_text, public_key)
    leaves = ledger.leaves()
    if old.size > len(leaves):
        raise LedgerError(
            f"the ledger holds {len(leaves)} entries, fewer than the {old.size} of the held "
            "checkpoint: newest entries deleted, or an old copy of the ledger"
        )
    new = ledger.latest_checkpoint(public_key)
    if new is not None and new.size > len(leaves):
        raise LedgerError(
            f"the ledger holds {len(leaves)} entries, fewer than its own checkpoint of size "
            f"{new.size}: newest entries deleted"
        )
    if new is None or new.size < old.size:
        new = Checkpoint(old.origin, len(leaves), merkle.root(leaves), "")
    proof = merkle.consistency_proof(old.size, leaves[: new.size])
    if merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        return new
    if merkle.root(leaves[: old.size]) != old.root:
        raise LedgerError(
            f"entries 1..{old.size} differ from the held checkpoint of size {old.size}: "
            "the ledger was rewritten or replaced"
        )
    raise LedgerError(
        f"the ledger's entries do not match its own checkpoint of size {new.size}: "
        "run `exchange audit verify`"
    )
