"""The audit ledger: append-only, hash-chained entries in SQLite or PostgreSQL (the facade).

`Ledger` wires the layers below it and holds no logic of its own: `storage` (the tables),
`entry` (the chain's links and their hashes), `verify` and `chain` (walking the entries against
every checkpoint), `signer` (checkpoints that extend the last one handed out, kept outside the
database by `anchor`), `proofs` (RFC 9162 inclusion and consistency) and `export`.

The entries are the leaves of an RFC 9162 Merkle tree; signed checkpoints of it, stored and
handed to partners, catch what a chain alone cannot: the newest entries deleted, or the whole
chain rewritten with every hash recomputed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.audit import merkle, verify
from exchange.audit.anchor import Anchor
from exchange.audit.chain import Verification
from exchange.audit.checkpoint import Checkpoint
from exchange.audit.entry import GENESIS, Entry, seal
from exchange.audit.events import Event
from exchange.audit.export import write_export
from exchange.audit.proofs import InclusionProof
from exchange.audit.signer import Signer
from exchange.audit.storage import BLOCK, NODE_LEVEL, Store, checkpoints, entries, metadata
from exchange.errors import LedgerError

_log = logging.getLogger(__name__)
_NODES_WRONG = (
    "audit_merkle_nodes: a proof (%s) made from stored nodes does not give the checkpoint's "
    "root; made from the entries instead. Run `exchange audit verify` to name the node"
)

# Kept importable from here: approval.py queries `entries`; tests use GENESIS and Entry.
__all__ = [
    "GENESIS",
    "Entry",
    "InclusionProof",
    "Ledger",
    "Verification",
    "checkpoints",
    "entries",
    "metadata",
]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Ledger:
    """The append-only audit ledger behind a SQLAlchemy URL."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
        create: bool = True,
        anchor: Anchor | Path | None = None,
    ) -> None:
        """`anchor`: the folder of checkpoints handed out (`anchor.anchor_folder(home)`); with
        it, checkpoints extend the last one handed out and verify checks against them all."""
        self.store = Store(url, create=create)
        self.engine = self.store.engine
        self.clock = clock
        self.anchor = Anchor(anchor) if isinstance(anchor, Path) else anchor

    # -- writing ------------------------------------------------------------------------------

    def append(
        self,
        event: Event | str,
        body: Mapping[str, Any],
        *,
        run_id: str | None = None,
        contract_id: str | None = None,
    ) -> Entry:
        """Add an entry at the head; concurrent writers queue, so the chain never forks.

        `event` is a name from `exchange.audit.events` (an `Event`, or its text).
        """

        def make(seq: int, prev: str) -> Entry:
            at = self.clock().isoformat(timespec="microseconds")  # inside the lock: in order
            return seal(
                seq,
                prev,
                recorded_at=at,
                event=event,
                body=body,
                run_id=run_id,
                contract_id=contract_id,
            )

        return self.store.append(make, event=str(event))

    def checkpoint(self, signing_key: Ed25519PrivateKey, origin: str) -> Checkpoint:
        """Sign the tree of every entry now in the ledger and store the checkpoint.

        It must extend the last checkpoint handed out (see `exchange.audit.signer`); LedgerError
        names the problem instead of signing a rewritten or damaged ledger. Signing the same
        size again returns the same checkpoint.
        """
        return Signer(self.store, self.anchor, self.clock).sign(signing_key, origin)

    # -- reading ------------------------------------------------------------------------------

    def entries(self, *, since: int = 1, until: int | None = None) -> Iterator[Entry]:
        """Every entry from `since` (to `until`, inclusive), in order; streamed."""
        return self.store.entries(since=since, until=until)

    def find(self, event: Event | str, *, run_id: str, contract_id: str) -> Entry | None:
        """The latest entry of an event for a run, if any."""
        return self.store.find(event, run_id=run_id, contract_id=contract_id)

    def newest(self, event: Event | str, *, contract_id: str) -> Iterator[Entry]:
        """A contract's entries of one event, newest first (indexed: cost is not history's)."""
        return self.store.newest(str(event), contract_id=contract_id)

    def head(self) -> tuple[int, str]:
        """The sequence number and hash of the newest entry ((0, GENESIS) if empty)."""
        return self.store.head()

    def checkpoints(self) -> list[Checkpoint]:
        """The stored checkpoints, oldest first, as stored (signatures NOT checked here)."""
        return [
            Checkpoint.parse(r.note, created_at=r.created_at) for r in self.store.checkpoint_rows()
        ]

    def latest_checkpoint(self, public_key: Ed25519PublicKey) -> Checkpoint | None:
        """The largest stored checkpoint whose signature by `public_key` verifies, if any."""
        for row in sorted(self.store.checkpoint_rows(), key=lambda r: -(r.tree_size or 0)):
            try:
                return Checkpoint.open(row.note, public_key, created_at=row.created_at)
            except LedgerError:
                continue
        return None

    def leaves(self, size: int | None = None) -> list[bytes]:
        """The Merkle leaf hashes of entries 1..size (default: all), in order."""
        return self.store.leaves(size)

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of entries 1..size (default: all)."""
        return merkle.root(self.leaves(size))

    # -- proving ------------------------------------------------------------------------------

    def prove_inclusion(self, seq: int, size: int | None = None) -> InclusionProof:
        """An RFC 9162 proof that entry `seq` is in the tree of the first `size` entries.

        `size` defaults to that of the newest stored checkpoint, so the proof checks against a
        signed root; LedgerError if there is none that covers the entry.
        """
        if size is None:
            size = max((c.size for c in self.checkpoints()), default=0)
            if seq > size:
                raise LedgerError(
                    f"entry {seq} is not covered by a checkpoint (newest size {size}): "
                    "make a checkpoint first"
                )
        if not 1 <= seq <= size:
            raise LedgerError(f"entry {seq} is not within a tree of size {size}")
        return self.inclusion_proofs([seq], size)[0]

    def inclusion_proofs(self, seqs: Iterable[int], size: int) -> list[InclusionProof]:
        """`prove_inclusion` of each entry in the tree of `size`, sharing their reads (for a
        bundle of many entries). Each reads O(log n) stored nodes and at most two blocks of
        entries, never the whole ledger; LedgerError if an entry is missing or beyond `size`."""
        tree = self.subtrees(size)
        root = self._handed_root(size)
        leaves: list[bytes] | None = None
        out = []
        for seq in seqs:
            if not 1 <= seq <= size:
                raise LedgerError(f"entry {seq} is not within a tree of size {size}")
            entry = self.store.entry(seq)
            if entry is None:
                raise LedgerError(f"entry {seq} is missing")
            path = tree.inclusion_proof(seq - 1)
            if root is not None and not merkle.verify_inclusion(
                entry.leaf, seq - 1, size, path, root
            ):
                _log.warning(_NODES_WRONG, f"inclusion of entry {seq} at size {size}")
                leaves = self.store.leaves(size) if leaves is None else leaves
                path = merkle.inclusion_proof(seq - 1, leaves)
            out.append(InclusionProof(seq, entry.entry_hash, size, tuple(path)))
        return out

    def _handed_root(self, size: int) -> bytes | None:
        """The root of the checkpoint made at `size`, if there is one: what a proof from the
        stored nodes is checked against. From the anchor (outside the database) where it has
        one; else from the stored checkpoints, whose roots were computed from the entries."""
        handed = self.anchor.handed_at(size) if self.anchor and size else None
        if handed is not None:
            return handed.checkpoint.root
        return next((c.root for c in self.checkpoints() if c.size == size and size), None)

    def _checked_consistency(self, tree: merkle.Subtrees, old_size: int) -> list[bytes]:
        """`tree`'s consistency proof from `old_size`, checked against the roots handed out at
        both sizes where there are such; made from the entries instead if it fails."""
        proof = tree.consistency_proof(old_size)
        old_root, new_root = self._handed_root(old_size), self._handed_root(tree.size)
        if old_root is None or new_root is None or old_size in (0, tree.size):
            return proof
        if merkle.verify_consistency(old_size, tree.size, old_root, new_root, proof):
            return proof
        _log.warning(_NODES_WRONG, f"consistency from size {old_size} to {tree.size}")
        return merkle.consistency_proof(old_size, self.store.leaves(tree.size))

    def subtrees(self, size: int | None = None) -> merkle.Subtrees:
        """The tree of the first `size` entries (default: all), for proofs and range hashes
        from the stored nodes (`merkle.Subtrees`); LedgerError if the ledger is shorter.

        The nodes are a cache: what is proven from them checks only against a signed root.
        """
        return self.store.subtrees(self.head()[0] if size is None else size)

    def consistency(self, old_size: int, new_size: int) -> tuple[bytes, list[bytes]]:
        """The root at `old_size` and an RFC 9162 proof that its tree is a prefix of `new_size`'s.

        From a checkpoint handed out at `old_size` (the anchor keeps its right edge) a few
        entries ago, only the entries since are read; otherwise O(log n) stored nodes and at
        most two blocks of entries. LedgerError if the ledger is shorter than `new_size`.
        """
        if not 0 <= old_size <= new_size:
            raise LedgerError(f"size {old_size} is beyond the tree of size {new_size}")
        handed = self.anchor.handed_at(old_size) if self.anchor and old_size else None
        if handed is not None and new_size - old_size <= 2 * BLOCK:
            new = self.store.leaves(new_size, since=old_size + 1)
            proof = merkle.consistency_proof_from_edge(old_size, handed.edge, new)
            return handed.checkpoint.root, proof
        tree = self.subtrees(new_size)
        proof = self._checked_consistency(tree, old_size)
        return (handed.checkpoint.root if handed else tree.root(old_size)), proof

    def prove_consistency(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """An RFC 9162 proof that the tree of `old_size` entries is a prefix of `new_size`'s
        (default: all entries), from the stored nodes as `consistency`."""
        tree = self.subtrees(new_size)
        if old_size > tree.size:
            raise LedgerError(f"size {old_size} is beyond the tree of size {tree.size}")
        return self._checked_consistency(tree, old_size)

    # -- verifying ----------------------------------------------------------------------------

    def verify(
        self,
        from_seq: int | None = None,
        to_seq: int | None = None,
        *,
        public_key: Ed25519PublicKey | None = None,
        origin: str | None = None,
        held: Iterable[str] = (),
        visit: Callable[[Entry], None] | None = None,
    ) -> Verification:
        """Recompute the chain and the tree; name the first entry that does not verify, and why.

        Entries from_seq..to_seq (default: all) are checked: numbering, links and hashes. When the
        range starts at entry 1 the Merkle root is recomputed at the size of every checkpoint,
        stored, handed out (the anchor) or `held` (notes from partners), and compared with it,
        and when it runs to the end, a ledger shorter than its newest checkpoint is reported as
        deleted entries. With `public_key` each checkpoint's signature is checked as well (and
        its origin, given `origin`); without it a forged checkpoint row would go unnoticed, and
        the result says so. `visit` sees each entry that verified, in order. From entry 1,
        every stored Merkle node (a cache proofs read) is recomputed too, and one that differs
        fails the verification by name.
        """
        against = verify.Against(public_key, origin, tuple(held))
        start = from_seq or 1
        nodes = merkle.NodeCheck(NODE_LEVEL) if start == 1 and self.store.has_nodes else None

        def seen(entry: Entry) -> None:
            if nodes is not None:
                nodes.add(entry.leaf)
            if visit is not None:
                visit(entry)

        walk = verify.check(self.store, self.anchor, against, start=start, until=to_seq, visit=seen)
        result = walk.finish(complete=to_seq is None)
        wrong = nodes.problem(self.store.stored_nodes) if nodes and result.ok else None
        if wrong is not None:
            first, last = merkle.node_range(*wrong)
            return dataclasses.replace(
                result,
                reason=(
                    f"stored Merkle node at level {wrong[0]}, index {wrong[1]} (entries "
                    f"{first}..{last}) differs from the entries' tree: the audit_merkle_nodes "
                    "table was altered (proofs made from it fail against signed checkpoints)"
                ),
            )
        stray = self.store.stray_node() if nodes and to_seq is None else None
        if stray is None or not result.ok:
            return result
        return dataclasses.replace(
            result,
            reason=(
                f"stored Merkle node at level {stray[0]}, index {stray[1]} is not one the "
                "ledger's entries make: the audit_merkle_nodes table was altered (such a row "
                "would stop appends storing their nodes)"
            ),
        )

    # -- export -------------------------------------------------------------------------------

    def export(self, path: str | Path, public_key_text: str) -> Path:
        """Write the whole ledger, its checkpoints and the gateway's public key to one 0600 file.

        See `exchange.audit.export` for the format; `verify_export` checks it with no database.
        """
        return write_export(self.store, Path(path), public_key_text)

    def close(self) -> None:
        """Release the database connections."""
        self.store.close()
