"""The audit ledger: append-only, hash-chained entries in SQLite or PostgreSQL.

Each entry's hash covers its sequence number, time, event, ids, body and the previous entry's
hash, so editing, deleting or reordering any entry breaks the chain at that point.

The entries are also the leaves of an RFC 9162 Merkle tree (`exchange.audit.merkle`). Signed
checkpoints of that tree (`exchange.audit.checkpoint`), kept in `audit_checkpoints` and handed to
partners, catch what a chain alone cannot: the newest entries deleted, or the whole chain
rewritten with every hash recomputed. Because whoever can write the database can also delete
those rows, the gateway keeps the checkpoints it handed out outside it too (`exchange.audit.
anchor`), and never signs a tree that is not an extension of the last one it handed out.

Appends are serialised by the database (``BEGIN IMMEDIATE`` on SQLite, a table lock on
PostgreSQL), so concurrent writers, threads or processes, wait for each other and the chain
never forks. The primary key on ``seq`` stays as the backstop against any other writer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from exchange.audit import merkle
from exchange.audit.anchor import Anchor, Anchored
from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.errors import LedgerError

GENESIS = "0" * 64
APPEND_ATTEMPTS = 10  # each waits up to the 30 s lock timeout
STREAM_ROWS = 2000  # rows fetched at a time when walking the ledger

metadata = sa.MetaData()
entries = sa.Table(
    "audit_ledger",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(200)),
    sa.Column("contract_id", sa.String(200)),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
)
checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tree_size", sa.BigInteger, nullable=False, index=True),
    sa.Column("root", sa.String(64), nullable=False),  # hex; the note has it in base64
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Entry:
    """One ledger entry."""

    seq: int
    recorded_at: str
    event: str
    run_id: str | None
    contract_id: str | None
    body: str  # canonical JSON
    prev_hash: str
    entry_hash: str

    def computed_hash(self) -> str:
        """The hash this entry should carry, recomputed from its content."""
        material = _canonical(
            [
                self.seq,
                self.recorded_at,
                self.event,
                self.run_id,
                self.contract_id,
                self.body,
                self.prev_hash,
            ]
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    @property
    def data(self) -> dict[str, Any]:
        """The body as a dict."""
        return json.loads(self.body)

    @property
    def leaf(self) -> bytes:
        """This entry's leaf hash in the Merkle tree: SHA-256(0x00 || entry_hash bytes)."""
        return merkle.leaf_hash(bytes.fromhex(self.entry_hash))


@dataclass(frozen=True)
class Verification:
    """The result of checking the ledger (or an export of it).

    `broken_at` is the first entry that does not verify and `reason` says why; a problem with a
    checkpoint itself (a bad signature) has a reason but no entry. `entries` and `head` are
    the count and hash of the entries that verified before the first problem.
    """

    entries: int
    head: str
    broken_at: int | None = None
    reason: str = ""
    checkpoints: int = 0  # checkpoints whose root (and signature, given a key) verified
    signed_size: int = 0  # the size of the newest of them: entries 1..signed_size are signed
    signatures_checked: bool = False
    handed_out: int = 0  # of them, checkpoints kept outside the database (anchor, held notes)

    @property
    def ok(self) -> bool:
        """True when every entry and checkpoint verified."""
        return self.broken_at is None and not self.reason

    @property
    def message(self) -> str:
        """One line for people: what broke where, or a summary."""
        if self.broken_at is not None:
            return f"entry {self.broken_at}: {self.reason}"
        if self.reason:
            return self.reason
        if not self.signatures_checked:
            # Without the key a forged checkpoint row matches a rewritten chain: say so plainly.
            signed = (
                "; checkpoint signatures NOT checked (no public key given), so a rewritten "
                "ledger with replaced checkpoints would also pass"
            )
        else:
            signed = f"; entries 1..{self.signed_size} signed" if self.signed_size else ""
        outside = (
            f"; consistent with {self.handed_out} checkpoint(s) kept outside the database"
            if self.handed_out
            else ""
        )
        return f"{self.entries} entries verified{signed}{outside}; head {self.head}"


@dataclass(frozen=True)
class _Row:
    """A checkpoint as a table row or export line: its columns, before its note is trusted."""

    label: str  # how a message names it, e.g. "checkpoint 12 (size 40)"
    tree_size: int | None
    root: str | None  # hex
    note: str
    created_at: str


@dataclass
class _Stored:
    """A checkpoint read from the table or an export, with what it is known to say."""

    checkpoint: Checkpoint
    label: str  # how a message names it, e.g. "checkpoint 12 (size 40)"
    outside: bool = False  # kept outside the database: handed out, or held by someone


class ChainCheck:
    """Walks entries in order: links, hashes, and the Merkle root at every checkpoint's size.

    Used on the database (`Ledger.verify`) and on an export (`verify_export`) alike. The tree is
    built only when the walk starts at entry 1; `signed` records whether the checkpoints'
    signatures were checked before they were given here.
    """

    def __init__(
        self,
        checkpoints: Sequence[_Stored] = (),
        *,
        start: int = 1,
        prev: str = GENESIS,
        signed: bool = False,
    ) -> None:
        self.tree = start == 1
        self.signed = signed
        self.expected = start
        self.prev = prev
        self.count = 0
        self.builder = merkle.RootBuilder()
        self.problem: Verification | None = None
        self._good = 0  # the size of the newest checkpoint that matched
        self._matched = 0
        self._outside = 0
        self._pending = sorted(checkpoints, key=lambda s: s.checkpoint.size, reverse=True)
        while self.tree and self._pending and self._pending[-1].checkpoint.size == 0:
            self._match(self._pending.pop())

    def _result(self, broken_at: int | None = None, reason: str = "") -> Verification:
        return Verification(
            self.count,
            self.prev,
            broken_at,
            reason,
            self._matched,
            self._good,
            self.signed,
            self._outside,
        )

    def fail(self, broken_at: int | None, reason: str) -> bool:
        """Record the first problem; always False."""
        if self.problem is None:
            self.problem = self._result(broken_at, reason)
        return False

    def _match(self, stored: _Stored) -> bool:
        if self.builder.root() != stored.checkpoint.root:
            first, size = self._good + 1, stored.checkpoint.size
            what = f"entry {first}" if first == size else f"entries {first}..{size}"
            return self.fail(
                first, f"{what} differ from {stored.label} (root mismatch: rewritten or replaced)"
            )
        self._good, self._matched = stored.checkpoint.size, self._matched + 1
        self._outside += stored.outside
        return True

    def add(self, entry: Entry) -> bool:
        """Check the next entry; False (and `problem` set) at the first that does not verify."""
        if self.problem is not None:
            return False
        if entry.seq != self.expected:
            return self.fail(self.expected, "entry missing (sequence gap)")
        if entry.prev_hash != self.prev:
            return self.fail(entry.seq, "does not follow the entry before it")
        if entry.computed_hash() != entry.entry_hash:
            return self.fail(entry.seq, "content altered (hash mismatch)")
        self.prev, self.expected, self.count = entry.entry_hash, self.expected + 1, self.count + 1
        if self.tree:
            self.builder.append(entry.leaf)
            while self._pending and self._pending[-1].checkpoint.size == self.builder.size:
                if not self._match(self._pending.pop()):
                    return False
        return True

    def finish(self, *, complete: bool = True) -> Verification:
        """The verdict; `complete` when the walk reached the newest entry."""
        if self.problem is not None:
            return self.problem
        if self.tree and complete and self._pending:
            newest = self._pending[0]
            return self._result(
                self.expected,
                f"entry missing: the ledger ends at entry {self.count} but {newest.label} "
                "was signed (newest entries deleted, or an old copy)",
            )
        return self._result()


def _prepare_sqlite_file(path: Path, *, create: bool) -> None:
    """Make a new ledger file 0600 before SQLite creates it; refuse a missing one to read."""
    if path.exists():
        return
    if not create:
        raise LedgerError(f"no audit ledger at {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_engine(url: str, *, create: bool) -> sa.Engine:
    """An engine for the audit database; SQLite files are made 0600, in WAL mode, write eagerly.

    pysqlite starts transactions late, and only before writes, so a transaction that reads the
    head and then inserts could find the head moved. Here SQLAlchemy's documented recipe takes
    over: the driver's own BEGIN is off, and each transaction starts with ``BEGIN`` or, for
    connections with the `immediate` execution option, ``BEGIN IMMEDIATE``, which takes the write
    lock at once, so writers queue (up to the 30 s busy timeout) instead of colliding. SQLite
    makes the -wal and -shm files with the database file's mode (0600).
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed)
    if parsed.database and parsed.database != ":memory:":
        _prepare_sqlite_file(Path(parsed.database), create=create)
    engine = sa.create_engine(parsed, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get("immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    if create:
        # Write-ahead logging: readers (verify, export, lookups) and the single writer no
        # longer block each other, and commits are cheaper. The mode is kept in the file.
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA journal_mode = WAL")
        finally:
            raw.close()
    return engine


def writer(engine: sa.Engine) -> sa.Engine:
    """The same engine, but its transactions take the write lock first (SQLite)."""
    return engine.execution_options(immediate=True)


def create_tables(engine: sa.Engine, tables: sa.MetaData) -> None:
    """Create missing tables; another process creating them at the same moment is fine."""
    for attempt in range(3):
        try:
            with writer(engine).begin() as conn:
                tables.create_all(conn)
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == 2:
                raise


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
        self.engine = make_engine(url, create=create)
        self.clock = clock
        self.anchor = Anchor(anchor) if isinstance(anchor, Path) else anchor
        self._postgres = self.engine.dialect.name == "postgresql"
        if create:
            create_tables(self.engine, metadata)

    # -- writing --------------------------------------------------------------------------------

    def append(
        self,
        event: str,
        body: Mapping[str, Any],
        *,
        run_id: str | None = None,
        contract_id: str | None = None,
    ) -> Entry:
        """Add an entry at the head; concurrent writers queue, so the chain never forks."""
        for _ in range(APPEND_ATTEMPTS):
            try:
                with writer(self.engine).begin() as conn:
                    if self._postgres:
                        # Appenders wait for each other; readers are not blocked.
                        conn.exec_driver_sql("LOCK TABLE audit_ledger IN SHARE ROW EXCLUSIVE MODE")
                    head = conn.execute(
                        sa.select(entries.c.seq, entries.c.entry_hash)
                        .order_by(entries.c.seq.desc())
                        .limit(1)
                    ).first()
                    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
                    draft = Entry(
                        seq=seq,
                        recorded_at=self.clock().isoformat(timespec="microseconds"),
                        event=event,
                        run_id=run_id,
                        contract_id=contract_id,
                        body=_canonical(dict(body)),
                        prev_hash=prev,
                        entry_hash="",
                    )
                    entry = Entry(**{**draft.__dict__, "entry_hash": draft.computed_hash()})
                    conn.execute(entries.insert().values(**entry.__dict__))
                return entry
            except (IntegrityError, OperationalError):
                continue  # another writer took this number, or the lock wait timed out: retry
        raise LedgerError(f"could not append {event!r} after {APPEND_ATTEMPTS} attempts")

    def checkpoint(self, signing_key: Ed25519PrivateKey, origin: str) -> Checkpoint:
        """Sign the tree of every entry now in the ledger and store the checkpoint.

        With an anchor holding the last checkpoint handed out, the new tree is built from that
        checkpoint's right edge and the entries added since, so it extends it by construction;
        the entry it ended at must still be there unchanged (a rewrite recomputes its hash),
        and an RFC 9162 consistency proof between the two is checked before signing. Without
        one (the first checkpoint), the whole ledger is verified first, against the earlier
        checkpoints too. Either way LedgerError names the problem instead of signing a
        rewritten or damaged ledger. Signing the same size again returns the same checkpoint.
        """
        if self.anchor is None:
            return self._sign_whole(signing_key, origin)
        with self.anchor.locked():
            last = self.anchor.latest(signing_key.public_key(), origin)
            if last is None:
                return self._sign_whole(signing_key, origin)
            return self._sign_extension(signing_key, origin, last)

    def _sign_whole(self, signing_key: Ed25519PrivateKey, origin: str) -> Checkpoint:
        check = self._check(public_key=signing_key.public_key(), origin=origin)
        result = check.finish()
        if not result.ok:
            raise LedgerError(f"will not sign a ledger that does not verify: {result.message}")
        made = sign_checkpoint(origin, check.builder.size, check.builder.root(), signing_key)
        return self._store(made, Anchored(made, check.prev, tuple(check.builder.edge)))

    def _sign_extension(
        self, signing_key: Ed25519PrivateKey, origin: str, last: Anchored
    ) -> Checkpoint:
        old = last.checkpoint
        refuse = (
            "will not sign: the ledger is not an extension of the last checkpoint handed out "
            f"(size {old.size})"
        )
        if old.size:
            found = list(self.entries(since=old.size, until=old.size))
            ended = found[0] if found else None
            if ended is None:
                raise LedgerError(f"{refuse}: entry {old.size} is missing (entries deleted)")
            if ended.entry_hash != last.head or ended.computed_hash() != last.head:
                raise LedgerError(f"{refuse}: entry {old.size} differs (history rewritten)")
        check = ChainCheck(start=old.size + 1, prev=last.head)
        builder = merkle.RootBuilder.from_edge(old.size, last.edge)
        new_leaves: list[bytes] = []  # only the entries since: no whole-ledger read per run
        for entry in self.entries(since=old.size + 1):
            if not check.add(entry):
                break
            new_leaves.append(entry.leaf)
            builder.append(entry.leaf)
        result = check.finish()
        if not result.ok:
            raise LedgerError(f"will not sign a ledger that does not verify: {result.message}")
        root = builder.root()
        proof = merkle.consistency_proof_from_edge(old.size, last.edge, new_leaves)
        if not merkle.verify_consistency(old.size, builder.size, old.root, root, proof):
            raise LedgerError(f"{refuse}: the consistency proof does not verify")
        made = sign_checkpoint(origin, builder.size, root, signing_key)
        return self._store(made, Anchored(made, check.prev, tuple(builder.edge)))

    def _store(self, made: Checkpoint, anchored: Anchored) -> Checkpoint:
        """Record a new checkpoint outside the database first (it is about to be handed out),
        then in it; the stored one if this size was signed before."""
        now = self.clock()
        if self.anchor is not None:
            self.anchor.record(anchored, at=now)
        with writer(self.engine).begin() as conn:
            same = conn.execute(
                sa.select(checkpoints.c.note, checkpoints.c.created_at).where(
                    checkpoints.c.tree_size == made.size, checkpoints.c.note == made.note
                )
            ).first()
            if same is not None:
                return Checkpoint.parse(same[0], created_at=same[1])
            created_at = now.isoformat(timespec="microseconds")
            conn.execute(
                checkpoints.insert().values(
                    tree_size=made.size, root=made.root_hex, note=made.note, created_at=created_at
                )
            )
        return Checkpoint.parse(made.note, created_at=created_at)

    # -- reading --------------------------------------------------------------------------------

    def entries(self, *, since: int = 1, until: int | None = None) -> Iterator[Entry]:
        """Every entry from `since` (to `until`, inclusive), in order; streamed."""
        query = sa.select(entries).where(entries.c.seq >= since).order_by(entries.c.seq)
        if until is not None:
            query = query.where(entries.c.seq <= until)
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(query)
            for row in rows:
                yield Entry(**row._mapping)

    def find(self, event: str, *, run_id: str, contract_id: str) -> Entry | None:
        """The latest entry of an event for a run, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(entries)
                .where(
                    entries.c.event == event,
                    entries.c.run_id == run_id,
                    entries.c.contract_id == contract_id,
                )
                .order_by(entries.c.seq.desc())
                .limit(1)
            ).first()
        return Entry(**row._mapping) if row else None

    def head(self) -> tuple[int, str]:
        """The sequence number and hash of the newest entry ((0, GENESIS) if empty)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(entries.c.seq, entries.c.entry_hash)
                .order_by(entries.c.seq.desc())
                .limit(1)
            ).first()
        return (row[0], row[1]) if row else (0, GENESIS)

    def checkpoints(self) -> list[Checkpoint]:
        """The stored checkpoints, oldest first, as stored (signatures NOT checked here)."""
        return [Checkpoint.parse(r.note, created_at=r.created_at) for r in self._rows()]

    def latest_checkpoint(self, public_key: Ed25519PublicKey) -> Checkpoint | None:
        """The largest stored checkpoint whose signature by `public_key` verifies, if any."""
        for row in sorted(self._rows(), key=lambda r: -(r.tree_size or 0)):
            try:
                return Checkpoint.open(row.note, public_key, created_at=row.created_at)
            except LedgerError:
                continue
        return None

    def leaves(self, size: int | None = None) -> list[bytes]:
        """The Merkle leaf hashes of entries 1..size (default: all), in order."""
        query = sa.select(entries.c.seq, entries.c.entry_hash).order_by(entries.c.seq)
        if size is not None:
            query = query.where(entries.c.seq <= size)
        out: list[bytes] = []
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=10 * STREAM_ROWS)
            for seq, entry_hash in rows.execute(query):
                if seq != len(out) + 1:
                    raise LedgerError(f"entry {len(out) + 1} is missing")
                out.append(merkle.leaf_hash(bytes.fromhex(entry_hash)))
        if size is not None and len(out) < size:
            raise LedgerError(f"the ledger holds {len(out)} entries, fewer than {size}")
        return out

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of entries 1..size (default: all)."""
        return merkle.root(self.leaves(size))

    def prove_inclusion(self, seq: int, size: int | None = None) -> InclusionProof:
        """An RFC 9162 proof that entry `seq` is in the tree of the first `size` entries.

        `size` defaults to that of the newest stored checkpoint, so the proof checks against a
        signed root; LedgerError if there is none that covers the entry.
        """
        if size is None:
            stored = self.checkpoints()
            size = max((c.size for c in stored), default=0)
            if seq > size:
                raise LedgerError(
                    f"entry {seq} is not covered by a checkpoint (newest size {size}): "
                    "make a checkpoint first"
                )
        if not 1 <= seq <= size:
            raise LedgerError(f"entry {seq} is not within a tree of size {size}")
        leaves = self.leaves(size)
        with self.engine.connect() as conn:
            entry_hash = conn.execute(
                sa.select(entries.c.entry_hash).where(entries.c.seq == seq)
            ).scalar_one()
        return InclusionProof(seq, entry_hash, size, tuple(merkle.inclusion_proof(seq - 1, leaves)))

    def prove_consistency(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """An RFC 9162 proof that the tree of `old_size` entries is a prefix of `new_size`'s."""
        leaves = self.leaves(new_size)
        if old_size > len(leaves):
            raise LedgerError(f"size {old_size} is beyond the tree of size {len(leaves)}")
        return merkle.consistency_proof(old_size, leaves)

    # -- verifying ------------------------------------------------------------------------------

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
        the result says so. `visit` sees each entry that verified, in order.
        """
        check = self._check(
            from_seq, to_seq, public_key=public_key, origin=origin, held=held, visit=visit
        )
        return check.finish(complete=to_seq is None)

    def _check(
        self,
        from_seq: int | None = None,
        to_seq: int | None = None,
        *,
        public_key: Ed25519PublicKey | None = None,
        origin: str | None = None,
        held: Iterable[str] = (),
        visit: Callable[[Entry], None] | None = None,
    ) -> ChainCheck:
        start = from_seq or 1
        if start == 1:
            stored, problem = open_checkpoints(self._rows(), public_key, origin)
            if not problem:
                try:
                    stored += self._outside(public_key, origin, held)
                except LedgerError as exc:
                    problem = str(exc)
            if to_seq is not None:
                stored = [s for s in stored if s.checkpoint.size <= to_seq]
            check = ChainCheck(stored, signed=public_key is not None)
            if problem:
                check.fail(None, problem)
                return check
        else:
            before = list(self.entries(since=start - 1, until=start - 1))
            check = ChainCheck(start=start, prev=before[0].entry_hash if before else GENESIS)
            if not before:
                check.fail(start - 1, "entry missing (sequence gap)")
                return check
        for entry in self.entries(since=start, until=to_seq):
            if not check.add(entry):
                break
            if visit is not None:
                visit(entry)
        return check

    def _outside(
        self, public_key: Ed25519PublicKey | None, origin: str | None, held: Iterable[str]
    ) -> list[_Stored]:
        """The checkpoints kept outside the database: the anchor's, and notes held by others."""
        out: list[_Stored] = []
        if self.anchor is not None:
            for anchored in self.anchor.all(public_key, origin):
                size = anchored.checkpoint.size
                out.append(
                    _Stored(anchored.checkpoint, f"handed-out checkpoint (size {size})", True)
                )
        for number, note in enumerate(held, start=1):
            try:
                if public_key is None:
                    checkpoint = Checkpoint.parse(note)
                else:
                    checkpoint = Checkpoint.open(note, public_key, origin=origin)
            except LedgerError as exc:
                raise LedgerError(f"held checkpoint {number}: {exc}") from None
            out.append(
                _Stored(checkpoint, f"held checkpoint {number} (size {checkpoint.size})", True)
            )
        return out

    def _rows(self) -> list[_Row]:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(checkpoints.name):
                return []  # a ledger from before checkpoints, opened read-only
            rows = conn.execute(sa.select(checkpoints).order_by(checkpoints.c.id)).all()
        return [
            _Row(
                f"checkpoint {r.id} (size {r.tree_size})",
                r.tree_size,
                r.root,
                r.note,
                r.created_at,
            )
            for r in rows
        ]

    # -- export ---------------------------------------------------------------------------------

    def export(self, path: str | Path, public_key_text: str) -> Path:
        """Write the whole ledger, its checkpoints and the gateway's public key to one 0600 file.

        See `exchange.audit.export` for the format; `verify_export` checks it with no database.
        """
        from exchange.audit.export import write_export

        return write_export(self, Path(path), public_key_text)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def open_checkpoints(
    rows: Iterable[_Row], public_key: Ed25519PublicKey | None, origin: str | None = None
) -> tuple[list[_Stored], str]:
    """Parse each checkpoint (checking its signature, given a key, and its origin, given one)
    and compare its columns.

    Returns the checkpoints as their notes say, and a problem naming the first bad one ("" if
    none).
    """
    out: list[_Stored] = []
    for row in rows:
        try:
            if public_key is None:
                parsed = Checkpoint.parse(row.note, created_at=row.created_at)
            else:
                parsed = Checkpoint.open(
                    row.note, public_key, origin=origin, created_at=row.created_at
                )
        except LedgerError as exc:
            return out, f"{row.label}: {exc}"
        if (row.tree_size is not None and row.tree_size != parsed.size) or (
            row.root is not None and row.root != parsed.root_hex
        ):
            return out, f"{row.label}: its size or root column differs from its signed note"
        out.append(_Stored(parsed, row.label))
    return out, ""


@dataclass(frozen=True)
class InclusionProof:
    """An RFC 9162 inclusion proof: entry `seq` (hash `entry_hash`) in the tree of `tree_size`."""

    seq: int
    entry_hash: str
    tree_size: int
    path: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (hashes as hex)."""
        return {
            "seq": self.seq,
            "entry_hash": self.entry_hash,
            "tree_size": self.tree_size,
            "path": [p.hex() for p in self.path],
        }

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
