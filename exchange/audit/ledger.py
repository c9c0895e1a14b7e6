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
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.audit import merkle, verify
from exchange.audit.anchor import Anchor
from exchange.audit.chain import ChainCheck, Verification
from exchange.audit.checkpoint import Checkpoint
from exchange.audit.entry import GENESIS, Entry, seal
from exchange.audit.events import Event
from exchange.audit.export import write_export
from exchange.audit.proofs import InclusionProof
from exchange.audit.signer import Signer
from exchange.audit.storage import (
    BLOCK,
    NODE_LEVEL,
    Store,
    checkpoints,
    entries,
    metadata,
    nodes,
)
from exchange.audit.verify import Against
from exchange.errors import LedgerError

_log = logging.getLogger(__name__)
# What a retyped or otherwise altered table gives a query that no longer type-checks; a lost
# connection (OperationalError) is not a verification result and is raised as before.
_ALTERED = (sa.exc.ProgrammingError, sa.exc.DataError)
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
    "Verified",
    "checkpoints",
    "entries",
    "metadata",
]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class Verified:
    """What a verification of entries 1..size established: `Ledger.verify_from` resumes from it.

    Kept in memory by whoever verifies often (the Exchanges view); it is not evidence and is
    never stored. `full_at` is when the whole ledger was last read (by the ledger's clock).
    """

    size: int
    head: str  # the hash of entry `size`
    edge: tuple[bytes, ...]  # the Merkle tree's right edge at `size`
    sealed: str  # digest of the checkpoint rows and handed-out files when it was made
    nodes: str  # digest of the stored Merkle nodes within entries 1..size
    options: tuple[bytes, str | None, tuple[str, ...]]  # key, origin, held notes
    result: Verification
    full_at: dt.datetime


class _Changed(Exception):
    """The ledger does not extend a verified prefix: the reason (a full verify says more)."""

    def __init__(self, reason: str, broken_at: int | None = None, *, hostile: bool) -> None:
        super().__init__(reason)
        self.reason, self.broken_at, self.hostile = reason, broken_at, hostile


def _options(against: Against) -> tuple[bytes, str | None, tuple[str, ...]]:
    key = b""
    if against.public_key is not None:
        key = against.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    return key, against.origin, against.held


def _node_digest(stored: Mapping[tuple[int, int], bytes | None], size: int) -> str:
    """A digest of the stored nodes that lie within entries 1..size."""
    digest = hashlib.sha256()
    for (level, index), value in sorted(stored.items()):
        if (index + 1) << level <= size:
            digest.update(f"{level}:{index}:{value.hex() if value else '-'};".encode())
    return digest.hexdigest()


def _shorter(mark: Verified, size: int) -> _Changed:
    return _Changed(
        f"entry missing: the ledger ends at entry {size} but entries 1..{mark.size} verified "
        "before (entries deleted, or the ledger replaced by an older copy)",
        size + 1,
        hostile=True,
    )


def _rewritten(mark: Verified) -> _Changed:
    return _Changed(
        f"differs from the entry verified at {mark.full_at.isoformat(timespec='seconds')} "
        "(history below the verified head rewritten)",
        mark.size,
        hostile=True,
    )


def _extends(mark: Verified, made: Verified, entry: Entry | None) -> _Changed | None:
    """Why a ledger verified whole (`made`, `entry` its entry `mark.size`) does not extend
    `mark`, or None when it does."""
    if made.size < mark.size:
        return _shorter(mark, made.size)
    if mark.size and (entry is None or entry.entry_hash != mark.head):
        return _rewritten(mark)
    return None


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
        against = Against(public_key, origin, tuple(held))
        return self._verify(against, from_seq, to_seq, visit)[0]

    def _verify(
        self,
        against: Against,
        from_seq: int | None = None,
        to_seq: int | None = None,
        visit: Callable[[Entry], None] | None = None,
    ) -> tuple[Verification, merkle.RootBuilder]:
        """`verify`, and the tree of the entries that verified (from entry 1)."""
        start = from_seq or 1
        nodes = merkle.NodeCheck(NODE_LEVEL) if start == 1 and self.store.has_nodes else None

        def seen(entry: Entry) -> None:
            if nodes is not None:
                nodes.add(entry.leaf)
            if visit is not None:
                visit(entry)

        try:
            walk = verify.check(
                self.store, self.anchor, against, start=start, until=to_seq, visit=seen
            )
            result = walk.finish(complete=to_seq is None)
        except _ALTERED as exc:  # a column retyped: fails by name, not with a database error
            reason = (
                "the ledger's entries cannot be read (a column of audit_ledger was altered: "
                f"{type(exc.orig).__name__})"
            )
            return Verification(0, GENESIS, start, reason), merkle.RootBuilder()
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
            ), walk.builder
        stray = self.store.stray_node() if nodes and to_seq is None else None
        if stray is None or not result.ok:
            return result, walk.builder
        return dataclasses.replace(
            result,
            reason=(
                f"stored Merkle node at level {stray[0]}, index {stray[1]} is not one the "
                "ledger's entries make: the audit_merkle_nodes table was altered (such a row "
                "would stop appends storing their nodes)"
            ),
        ), walk.builder

    def verify_from(
        self,
        mark: Verified | None,
        *,
        whole: bool = False,
        public_key: Ed25519PublicKey | None = None,
        origin: str | None = None,
        held: Iterable[str] = (),
    ) -> tuple[Verification, Verified | None]:
        """`verify` of the whole ledger, cheaply when `mark` (a previous call's) is given.

        Without a mark, with `whole`, or with a mark made with other options, every entry is
        read and verified. With a mark, only what the verified prefix cannot vouch for is
        read: entry `mark.size` is re-hashed and must still have the hash verified then; no
        entry is missing below the head (`_numbered`); every entry since chains from it and
        hashes right; the Merkle tree is extended from the mark's right edge and the stored
        nodes compared with it; the checkpoint rows and handed-out files are unchanged (else
        every entry is verified again). A ledger that does not extend the verified prefix
        (shorter, or another hash at `mark.size`) fails at once, with or without `whole`:
        with the full verification's own result when that fails, else with the reason found
        here, so a rewrite no checkpoint covers yet fails too.

        What a call reading only the new entries does not catch: an entry below `mark.size`
        edited in place, leaving the chain broken there. Only reading every entry finds that
        (`whole`, `verify`, `exchange audit verify`); the caller decides how old a full read
        may be (`Verified.full_at`).

        Returns the result and the mark to keep: the new one when it passed, else `mark`
        unchanged (so later calls keep failing instead of trusting the altered ledger).
        """
        against = Against(public_key, origin, tuple(held))
        same = mark is not None and mark.options == _options(against)
        found: _Changed | None = None
        if mark is not None and same and not whole:
            try:
                return self._verify_since(mark)
            except _Changed as changed:
                found = changed
            except _ALTERED:  # a column retyped so the check's queries no longer type-check
                found = _Changed("the ledger's tables cannot be read as verified", hostile=False)
        result, made = self._verify_whole(against)
        if not result.ok:
            return result, mark
        if mark is not None and same and (found is None or not found.hostile):
            found = _extends(mark, made, self.store.entry(mark.size) if mark.size else None)
        if found is None or not found.hostile:
            return result, made
        return Verification(0, GENESIS, found.broken_at, found.reason), mark

    def _sealed(self) -> str:
        """A digest of the stored checkpoint rows and the handed-out checkpoint files."""
        digest = hashlib.sha256()
        for row in self.store.checkpoint_rows():
            digest.update(f"{row.label}|{row.root}|{row.created_at}|{len(row.note)}|".encode())
            digest.update(row.note.encode())
        for path in (self.anchor.log_path, self.anchor.latest_path) if self.anchor else ():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = b"\x00missing"
            except OSError as exc:  # the full verification reports it; here it is a change
                data = f"\x00unreadable {exc.errno}".encode()
            digest.update(hashlib.sha256(data).digest())
        return digest.hexdigest()

    def _stored_nodes(self) -> dict[tuple[int, int], bytes | None]:
        """Every stored Merkle node of the levels appends write (None where malformed)."""
        out: dict[tuple[int, int], bytes | None] = {}
        if not self.store.has_nodes:
            return out
        query = sa.select(nodes.c.level, nodes.c.idx, nodes.c.hash)
        with self.engine.connect() as conn:
            for level, index, text in conn.execute(query.where(nodes.c.level >= NODE_LEVEL)):
                try:
                    value: bytes | None = bytes.fromhex(text)
                except (TypeError, ValueError):
                    value = None
                out[(int(level), int(index))] = value if value and len(value) == 32 else None
        return out

    def _verify_whole(self, against: Against) -> tuple[Verification, Verified]:
        # Read before the walk: whatever changes during it differs on the next call, which
        # then verifies the whole again, rather than being taken as verified unseen.
        sealed, stored = self._sealed(), self._stored_nodes()
        result, tree = self._verify(against)
        mark = Verified(
            size=result.entries,
            head=result.head,
            edge=tuple(tree.edge),
            sealed=sealed,
            nodes=_node_digest(stored, result.entries),
            options=_options(against),
            result=result,
            full_at=self.clock(),
        )
        return result, mark

    def _numbered(self) -> int:
        """The head's number, when the entries are numbered exactly 1..head; else _Changed.

        Counting alone proves no gap only while `seq` holds distinct whole numbers, which the
        primary key and column type ensure until someone rebuilds or retypes the table (or, on
        SQLite, stores 4.5 beside a BIGINT key): so distinct and whole values are counted too.
        """
        seq = entries.c.seq
        # One statement sees one state of the table; separate subqueries, because SQLite
        # answers each alone from the key's index (min, max, count, distinct in index order)
        # but sorts into a temporary tree for several aggregates in one.
        with self.engine.connect() as conn:
            count, distinct, odd, low, size = conn.execute(
                sa.select(
                    sa.select(sa.func.count()).select_from(entries).scalar_subquery(),
                    sa.select(sa.func.count(seq.distinct())).scalar_subquery(),
                    sa.select(sa.func.count())
                    .where(seq != sa.cast(seq, sa.BigInteger))
                    .select_from(entries)
                    .scalar_subquery(),
                    sa.select(sa.func.min(seq)).scalar_subquery(),
                    sa.select(sa.func.max(seq)).scalar_subquery(),
                )
            ).one()
        gap = _Changed("entry missing (sequence gap)", None, hostile=True)
        if odd or count != distinct:
            raise gap  # not whole numbers, or a number twice: the full read names the entry
        size = int(size or 0)
        if count != size or (size and low != 1):
            raise gap
        return size

    def _verify_since(self, mark: Verified) -> tuple[Verification, Verified]:
        """The cheap check of `verify_from`; _Changed when the ledger does not extend `mark`."""
        if self._sealed() != mark.sealed:
            raise _Changed("checkpoints were added or changed", hostile=False)
        stored = self._stored_nodes()  # the nodes before the head, as `Store.stray_node` does
        if _node_digest(stored, mark.size) != mark.nodes or self.store.stray_node():
            raise _Changed("stored Merkle nodes changed", hostile=False)
        size = self._numbered()
        if size < mark.size:
            raise _shorter(mark, size)
        tree = merkle.RootBuilder.from_edge(mark.size, mark.edge)
        made: dict[tuple[int, int], bytes] = {}
        # The verify walk's own per-entry checks (number, link, hash), from the verified head.
        walk, reread = ChainCheck(start=mark.size + 1, prev=mark.head), mark.size == 0
        for entry in self.store.entries(since=max(mark.size, 1), until=size):
            if entry.seq == mark.size:  # the verified head, read again, checked the same way
                reread = True
                head = ChainCheck(start=mark.size, prev=entry.prev_hash)
                if not head.add(entry) or entry.entry_hash != mark.head:
                    raise _rewritten(mark)
                continue
            if not walk.add(entry):
                assert walk.problem is not None
                raise _Changed(walk.problem.reason, walk.problem.broken_at, hostile=True)
            made.update(((lv, ix), h) for lv, ix, h in tree.append_nodes(entry.leaf, BLOCK))
        prev = walk.prev
        if walk.expected != size + 1 or not reread:
            raise _Changed("entry missing (sequence gap)", walk.expected, hostile=True)
        for key, value in stored.items():
            if (key[1] + 1) << key[0] <= mark.size:
                continue  # within the digest compared above
            want = made.get(key)
            if want is None or value is None or not hmac.compare_digest(value, want):
                raise _Changed(f"stored Merkle node {key} differs", hostile=False)
        result = dataclasses.replace(mark.result, entries=size, head=prev)
        nodes_now = _node_digest(stored, size)
        edge = tuple(tree.edge)
        return result, dataclasses.replace(
            mark, size=size, head=prev, edge=edge, nodes=nodes_now, result=result
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
