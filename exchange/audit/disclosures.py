"""The disclosure ledger: which recipients received data about a person, when, and why.

Per transfer (a drop), one row in `transfers` holds the facts once: drop, contract and version,
recipient, purposes, legal basis, fields sent, time. Per person sent, a keyed hash of their
subject id is kept, 16 bytes, in one of three tables::

    disclosures(transfer_id, subject_hash)              -- recent small drops, a row per person
    disclosure_blocks(transfer_id, first_hash, hashes)  -- recent large drops, in blocks
    disclosures_merged(subject_hash, transfer_id)       -- older delivered drops, by subject

A new drop of fewer than `BLOCKS_FROM` subjects goes to `disclosures`, keyed by drop first, so
each drop appends at the B-tree's right edge. A larger one goes to `disclosure_blocks`: its
sorted hashes cut into blocks of `BLOCK_HASHES`, each keyed by its first hash, so ten million
subjects are a few thousand rows (a row each cost about 0.5 us of B-tree work and its write).
When more than `MERGE_AFTER` delivered drops wait in those two, the next `record` moves them to
`disclosures_merged` in subject order (a bulk merge, each page of the subject index rewritten
once per batch, not once per drop; in pieces by hash range, one transaction each; a block cut
by a piece's bound keeps its rest under its new first hash). A lookup reads the subject index
once, probes each drop still in `disclosures` (found by a skip scan of its keys) and, for each
drop in `disclosure_blocks`, reads the one block whose first hash is the last not above the
person's: at most about `MERGE_AFTER` probes, whatever the history. A ledger made before this
layout (one `disclosures` table keyed by subject) is migrated on open: see `_migrate`.

The hash is the first 128 bits of HMAC-SHA256 under a dedicated disclosure key (never the
pseudonymisation key) of the subject id's text (integers in decimal), UTF-8. Without the key
the tables say nothing about who is in them; with it, "who has my data?" is a few index reads.
Subject ids are never stored or logged in clear.

Each transfer also records a digest of its subjects: SHA-256 of their distinct 16-byte hashes
in ascending byte order. The gateway puts it in the drop's `run.prepared` entry, and the facts
(recipient, agreement, purposes, legal basis, fields) in its `transfer.sent` entry, so the hash
chain and checkpoints protect the disclosure record too. `Disclosures.verified_lookup` answers
only after checking every delivered drop's hashes, in all three tables together, against those
entries: a forged, altered, moved or deleted hash anywhere (which could hide or invent a
recipient) refuses the answer, and so does a block not keyed by its own first hash (the probe
would miss it while the digest still matched). A lookup reads every place a hash of the subject
could be, so nothing the check passed is left out of an answer and nothing it did not see is
put in.

Bulk insertion of rows (small drops, merges) uses COPY (binary) on PostgreSQL and, on SQLite
(where the row tables are WITHOUT ROWID so the primary key is the table), one INSERT per piece of
sorted hashes (a leading byte's worth, at most a million) that cuts a bound blob into rows
inside SQLite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import heapq
import hmac
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import IntegrityError

from exchange.audit.bindings import LedgerBindings, mismatch
from exchange.audit.chain import Verification
from exchange.audit.ledger import Ledger
from exchange.audit.storage import create_tables, make_engine, writer
from exchange.audit.subjects import (
    HASH_BYTES,
    HASH_CHUNK,
    key_id,
    lookup_hash,
    sorted_distinct,
    sorted_hashes,
    subject_hash,
    subject_text,
    text_hash,
)
from exchange.errors import LedgerError

log = logging.getLogger(__name__)

# Kept importable from here: the CLI and tests use these.
__all__ = [
    "Disclosure",
    "Disclosures",
    "LedgerBindings",
    "Recorded",
    "SubjectHashes",
    "key_id",
    "lookup_hash",
    "sorted_hashes",
    "subject_hash",
]

MIN_KEY_BYTES = 32
MERGE_AFTER = 64  # delivered drops kept by drop before a bulk merge into the subject index
MERGE_PIECE_ROWS = 65_536  # rows moved per merge transaction, about (a power of two pieces)
SQLITE_CACHE_KIB = 131_072  # SQLite page cache for bulk inserts into a large index
BLOCK_HASHES = 1_024  # hashes per row of disclosure_blocks (16 KiB)
BLOCKS_FROM = 65_536  # a drop of at least this many subjects is recorded in blocks
SUBJECTS_IN_MEMORY = 8 << 20  # a drop's subject hashes held in memory before a temporary file
_BUCKET_BITS = 8  # SubjectHashes.ordered sorts the hashes a few leading bytes at a time
ORDERED_BYTES = 4 << 20  # about this many bytes of them at a time
_BUCKETS = 1 << _BUCKET_BITS
_PIECE_BITS = 16  # a merge goes in at most 65,536 pieces, by the hashes' first two bytes
_PG_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_PG_TRAILER = b"\xff\xff"
_PG_ROW = np.dtype(
    [("fields", ">i2"), ("hash_len", ">i4"), ("hash", "V16"), ("id_len", ">i4"), ("id", ">i4")]
)

metadata = sa.MetaData()
transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("drop_id", sa.String(200), nullable=False, unique=True),
    sa.Column("run_id", sa.String(200)),
    sa.Column("contract_id", sa.String(200), nullable=False),
    sa.Column("contract_version", sa.String(64), nullable=False),
    sa.Column("recipient", sa.String(200), nullable=False),
    sa.Column("purposes", sa.Text, nullable=False),  # JSON list
    sa.Column("legal_basis", sa.Text, nullable=False),
    sa.Column("fields", sa.Text, nullable=False),  # JSON list
    sa.Column("sent_at", sa.String(40)),  # NULL while prepared but not yet delivered
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("subjects", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
)
# Recent drops, keyed by drop: a drop's rows append at the right edge; a drop is a range.
disclosures = sa.Table(
    "disclosures",
    metadata,
    sa.Column(
        "transfer_id",
        sa.Integer,
        sa.ForeignKey("transfers.id", name="disclosures_transfer_id_fkey"),
        nullable=False,
    ),
    sa.Column("subject_hash", sa.LargeBinary(HASH_BYTES), nullable=False),
    sa.PrimaryKeyConstraint("transfer_id", "subject_hash", name="disclosures_pkey"),
    sqlite_with_rowid=False,
)
# Older delivered drops, keyed by subject: one index read finds every such drop of a person.
# The layout (and constraint names) a ledger from before the split has, renamed: see _migrate.
merged = sa.Table(
    "disclosures_merged",
    metadata,
    sa.Column("subject_hash", sa.LargeBinary(HASH_BYTES), nullable=False),
    sa.Column(
        "transfer_id",
        sa.Integer,
        sa.ForeignKey("transfers.id", name="disclosures_merged_transfer_id_fkey"),
        nullable=False,
    ),
    sa.PrimaryKeyConstraint("subject_hash", "transfer_id", name="disclosures_merged_pkey"),
    sqlite_with_rowid=False,
)
# Recent large drops, by drop, in blocks: each row holds up to BLOCK_HASHES of a drop's hashes,
# ascending, keyed by the first of them. Recording a drop of millions is a few thousand rows.
blocks = sa.Table(
    "disclosure_blocks",
    metadata,
    sa.Column(
        "transfer_id",
        sa.Integer,
        sa.ForeignKey("transfers.id", name="disclosure_blocks_transfer_id_fkey"),
        nullable=False,
    ),
    sa.Column("first_hash", sa.LargeBinary(HASH_BYTES), nullable=False),
    sa.Column("hashes", sa.LargeBinary, nullable=False),
    sa.PrimaryKeyConstraint("transfer_id", "first_hash", name="disclosure_blocks_pkey"),
    # With a rowid on SQLite: its key is then an index of small entries beside the blocks (a
    # table WITHOUT ROWID keeps whole rows in its interior pages, four 16 KiB rows a page, and
    # a probe took several times as long).
)


def _skip_scan(table: str, name: str) -> str:
    """A recursive CTE `name(id)` of the distinct transfer ids in `table`, one index seek each
    (a skip scan: neither database has one); its last row is NULL."""
    # Table and CTE names from this module only, no input.
    return (
        f"WITH RECURSIVE {name}(id) AS ("  # noqa: S608
        f" SELECT min(transfer_id) FROM {table}"
        " UNION ALL"
        f" SELECT (SELECT min(transfer_id) FROM {table} WHERE transfer_id > {name}.id)"
        f" FROM {name} WHERE {name}.id IS NOT NULL)"
    )


_DROPS = _skip_scan("disclosures", "drops")
_RECENT_DROPS = sa.text(_DROPS + " SELECT id FROM drops WHERE id IS NOT NULL")  # noqa: S608
# Per drop in `disclosure_blocks`, the one block that would hold hash :h: the last whose first
# hash is not above it (one index seek each; about MERGE_AFTER probes per lookup at most).
_BLOCK_DROPS_CTE = _skip_scan("disclosure_blocks", "bdrops")
_BLOCK_PROBE = sa.text(
    _BLOCK_DROPS_CTE + " SELECT id, (SELECT hashes FROM disclosure_blocks"  # noqa: S608
    " WHERE transfer_id = bdrops.id AND first_hash <= :h ORDER BY first_hash DESC LIMIT 1)"
    " FROM bdrops WHERE id IS NOT NULL"
)
_BLOCK_DROPS = sa.text(_BLOCK_DROPS_CTE + " SELECT id FROM bdrops WHERE id IS NOT NULL")  # noqa: S608
_MIGRATION_LOCK = 0x6578_6469_7363  # PostgreSQL advisory lock: one process migrates


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("disclosure times must be timezone-aware")
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Disclosure:
    """The facts of one transfer: what was sent to whom, when and why (no subject in it)."""

    drop_id: str
    contract_id: str
    contract_version: str
    recipient: str
    purposes: tuple[str, ...]
    legal_basis: str
    fields: tuple[str, ...]
    sent_at: dt.datetime | None  # None while the drop is prepared but not yet delivered
    run_id: str | None = None

    @classmethod
    def _from_row(cls, row: Any) -> Disclosure:
        return cls(
            drop_id=row.drop_id,
            contract_id=row.contract_id,
            contract_version=row.contract_version,
            recipient=row.recipient,
            purposes=tuple(json.loads(row.purposes)),
            legal_basis=row.legal_basis,
            fields=tuple(json.loads(row.fields)),
            sent_at=dt.datetime.fromisoformat(row.sent_at) if row.sent_at else None,
            run_id=row.run_id,
        )


@dataclass(frozen=True)
class Recorded:
    """What `record` stored: counts and the subjects' digest (for the ledger entry)."""

    drop_id: str
    subjects: int  # distinct subjects recorded
    nulls: int  # rows without a subject id (nothing to record for them)
    digest: str  # SHA-256 over the sorted distinct subject hashes, hex
    key_id: str

    def as_dict(self) -> dict[str, Any]:
        """For a ledger entry's body."""
        return {"subjects": self.subjects, "digest": self.digest, "key_id": self.key_id}


class SubjectHashes:
    """The keyed hashes of a drop's subjects, taken batch by batch as the drop is made.

    Hashing as the rows flow (in the pipeline's producer thread) leaves only a sort and the
    insert for `Disclosures.record`; 16 bytes are taken per subject, not the ids themselves.
    Past `memory_bytes` they go to an unnamed temporary file (0600, gone when closed), so a
    run's memory does not grow with its subjects; each batch's part is written sorted, with
    where each leading byte starts, so `ordered` reads back one leading byte at a time.
    """

    def __init__(self, key: bytes, *, memory_bytes: int = SUBJECTS_IN_MEMORY) -> None:
        self.key = key
        self.nulls = 0
        self._memory_bytes = memory_bytes
        self._parts: list[np.ndarray] = []  # sorted and distinct, each; not yet written out
        self._held = 0
        self._file: IO[bytes] | None = None
        self._written: list[tuple[int, np.ndarray]] = []  # (offset, leading-byte cuts) per part

    def add(self, subjects: pa.Array | pa.ChunkedArray) -> None:
        """Hash one batch's subject ids (nulls counted, not hashed)."""
        hashes, nulls = sorted_hashes(self.key, subjects)
        self.nulls += nulls
        if not len(hashes):
            return
        self._parts.append(hashes)
        self._held += hashes.nbytes
        if self._held > self._memory_bytes:
            self._write_out()

    def _write_out(self) -> None:
        if self._file is None:
            # Kept open across batches; close() (or collection) removes it.
            self._file = tempfile.TemporaryFile(prefix="exchange-subjects-")  # noqa: SIM115
        for part in self._parts:
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(np.ascontiguousarray(part).tobytes())
            self._written.append((offset, _cuts(part)))
        self._file.flush()
        self._parts, self._held = [], 0

    @property
    def taken(self) -> int:
        """Hashes taken so far, counting a subject once per batch it was in (an upper bound
        of the distinct subjects)."""
        held = sum(len(part) for part in self._parts)
        return held + sum(int(cuts[-1]) for _, cuts in self._written)

    def close(self) -> None:
        """Remove the temporary file, if any (the hashes taken are then gone)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._written = []

    def distinct(self) -> np.ndarray:
        """Every distinct hash so far in ascending byte order, as `sorted_hashes` gives them."""
        words = np.concatenate([*self.ordered(), np.empty((0, 2), dtype=">u8")], dtype=">u8")
        self.close()
        self._parts, self._held = [words], words.nbytes
        return words

    def ordered(self) -> Iterator[np.ndarray]:
        """The distinct hashes in ascending byte order, in pieces (runs of leading bytes).

        Each batch's part is sorted already; sorting the run's hashes a few leading bytes at a
        time needs about `ORDERED_BYTES` of them in extra memory, where one sort of all would
        need three times them (an index, a gathered copy and the concatenation). Each piece
        is read back from each written part in one read."""
        parts = [part for part in self._parts if len(part)]
        if len(parts) <= 1 and not self._written:  # sorted and distinct already
            yield from parts
            return
        cuts = [_cuts(part) for part in parts]
        sizes = np.sum([np.diff(c) for c in [*cuts, *(c for _, c in self._written)]], axis=0)
        for low, high in _runs(sizes, ORDERED_BYTES // HASH_BYTES):
            pieces = [part[c[low] : c[high]] for part, c in zip(parts, cuts, strict=True)]
            pieces += [self._read(offset, c[low], c[high]) for offset, c in self._written]
            # Big-endian, as sorted_hashes gives them (concatenate would otherwise go native).
            words = np.concatenate(pieces, dtype=">u8")
            if len(words):
                yield sorted_distinct(words)

    def _read(self, offset: int, start: int, stop: int) -> np.ndarray:
        assert self._file is not None  # parts are only written out to an open file
        size = int(stop - start) * HASH_BYTES
        data = os.pread(self._file.fileno(), size, offset + int(start) * HASH_BYTES)
        if len(data) != size:
            raise LedgerError("the drop's subject hashes could not be read back in full")
        return np.frombuffer(data, dtype=">u8").reshape(-1, 2)


def _runs(sizes: np.ndarray, rows: int) -> Iterator[tuple[int, int]]:
    """Consecutive leading bytes `[low, high)` holding about `rows` hashes together (a leading
    byte holding more is a run of its own)."""
    low, held = 0, 0
    for byte, size in enumerate(sizes.tolist()):
        if held and held + size > rows:
            yield low, byte
            low, held = byte, 0
        held += size
    if held:
        yield low, len(sizes)


def _cuts(part: np.ndarray) -> np.ndarray:
    """Where each leading byte's hashes start in a sorted part, and its end (257 offsets)."""
    edges = np.arange(1, _BUCKETS, dtype=np.uint64) << np.uint64(64 - _BUCKET_BITS)
    return np.concatenate(([0], np.searchsorted(part[:, 0], edges), [len(part)]))


class Disclosures:
    """The disclosure ledger behind a SQLAlchemy URL (usually the audit ledger's database)."""

    def __init__(
        self,
        url: str,
        key: bytes,
        *,
        old_keys: Sequence[bytes] = (),
        create: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
        merge_after: int = MERGE_AFTER,
        blocks_from: int = BLOCKS_FROM,
    ) -> None:
        """`key` hashes new records; `old_keys` (retired keys) are still searched by lookup.

        A ledger in the layout from before `disclosures_merged` is migrated here, once; what
        was done is logged and kept in `migration` (None when nothing was to do)."""
        for k in (key, *old_keys):
            if len(k) < MIN_KEY_BYTES:
                raise LedgerError(f"a disclosure key must be at least {MIN_KEY_BYTES} random bytes")
        self.key = key
        self.keys = (key, *old_keys)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.merge_after = merge_after
        self.blocks_from = blocks_from
        self.migration: str | None = None
        self.engine = make_engine(url, create=create)
        self._postgres = self.engine.dialect.name == "postgresql"
        if self.engine.dialect.name == "sqlite":

            @sa.event.listens_for(self.engine, "connect")
            def _bulk_cache(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")

        self.migration = _migrate(self.engine)  # also when opened not to create: lookups read
        if create:
            create_tables(self.engine, metadata)

    # -- recording ------------------------------------------------------------------------------

    def hashes(self) -> SubjectHashes:
        """An empty set of subject hashes under this ledger's key, to fill batch by batch."""
        return SubjectHashes(self.key)

    def record(
        self,
        disclosure: Disclosure,
        subjects: pa.Array | pa.ChunkedArray | Iterable[pa.Array] | SubjectHashes,
    ) -> Recorded:
        """Record that the subjects (their ids, as sent in this transfer) were disclosed.

        `subjects` are the ids, or their hashes taken as the drop was made (`hashes()`).
        Duplicates and nulls are dropped. All or nothing, in one transaction. Recording a drop
        again replaces its earlier record while it is not yet marked sent (a retried prepare);
        LedgerError once it has been sent, or if the hashes were taken under another key.
        """
        pieces: Iterable[np.ndarray]
        if isinstance(subjects, SubjectHashes):
            if subjects.key != self.key:
                raise LedgerError("subject hashes were taken under another disclosure key")
            pieces, nulls, most = subjects.ordered(), subjects.nulls, subjects.taken
        else:
            hashes, nulls = sorted_hashes(self.key, subjects)
            pieces, most = [hashes], len(hashes)
        in_blocks = most >= self.blocks_from
        try:  # before this drop's transaction; a failed merge leaves the rows where they were
            self.merge()
        except LedgerError as error:
            log.warning("%s", error)
        except (sa.exc.DBAPIError, self.engine.dialect.loaded_dbapi.Error) as error:
            # Locked, a deadlock, a full disk (from SQLAlchemy, or the driver's own from a bulk
            # insert): each piece rolled back whole, and the merge waits for a later run.
            cause = error.orig if isinstance(error, sa.exc.DBAPIError) else error
            log.warning("the disclosure merge failed (%s); it is tried again", type(cause).__name__)
        values = {
            "drop_id": disclosure.drop_id,
            "run_id": disclosure.run_id,
            "contract_id": disclosure.contract_id,
            "contract_version": disclosure.contract_version,
            "recipient": disclosure.recipient,
            "purposes": json.dumps(list(disclosure.purposes), ensure_ascii=False),
            "legal_basis": disclosure.legal_basis,
            "fields": json.dumps(list(disclosure.fields), ensure_ascii=False),
            "sent_at": _iso(disclosure.sent_at),
            "recorded_at": _iso(self.clock()),
            "subjects": 0,  # set below, in the same transaction, once the hashes are in
            "digest": "",
            "key_id": key_id(self.key),
        }
        with writer(self.engine).begin() as conn:
            earlier = conn.execute(
                sa.select(transfers.c.id, transfers.c.sent_at).where(
                    transfers.c.drop_id == disclosure.drop_id
                )
            ).first()
            if earlier is not None:
                if earlier.sent_at is not None:
                    raise LedgerError(f"drop {disclosure.drop_id} is already recorded as sent")
                _delete_drop(conn, earlier.id)
            if not self._postgres:  # (PostgreSQL's sequence never gives an id twice)
                values["id"] = _unused_id(conn)
            transfer_id = conn.execute(
                transfers.insert().values(**values).returning(transfers.c.id)
            ).scalar_one()
            # The digest and count are taken from the pieces as they are inserted, in order.
            sha = hashlib.sha256()
            count = 0

            def taken() -> Iterator[np.ndarray]:
                nonlocal count
                for piece in pieces:
                    sha.update(piece.tobytes())
                    count += len(piece)
                    yield piece

            raw = conn.connection.driver_connection
            if in_blocks:
                _insert_blocks(conn, taken(), transfer_id)
            elif self._postgres:
                _copy_postgres(raw, taken(), transfer_id)
            else:
                for piece in taken():
                    _insert_sqlite(raw, piece, transfer_id)
            digest = sha.hexdigest()
            conn.execute(
                transfers.update()
                .where(transfers.c.id == transfer_id)
                .values(subjects=count, digest=digest)
            )
        return Recorded(disclosure.drop_id, count, nulls, digest, key_id(self.key))

    def mark_sent(self, drop_id: str, sent_at: dt.datetime) -> None:
        """Record that a prepared drop was delivered; LedgerError if the drop is unknown."""
        with writer(self.engine).begin() as conn:
            done = conn.execute(
                transfers.update()
                .where(transfers.c.drop_id == drop_id)
                .values(sent_at=_iso(sent_at))
            )
            if done.rowcount != 1:
                raise LedgerError(f"no disclosure record for drop {drop_id}")

    def discard(self, drop_id: str) -> int:
        """Remove the record of a drop that was prepared but will never be sent.

        Returns the subjects removed; LedgerError if the drop was sent (that record stays).
        """
        with writer(self.engine).begin() as conn:
            row = conn.execute(
                sa.select(transfers.c.id, transfers.c.sent_at, transfers.c.subjects).where(
                    transfers.c.drop_id == drop_id
                )
            ).first()
            if row is None:
                return 0
            if row.sent_at is not None:
                raise LedgerError(f"drop {drop_id} was sent: its disclosure record stays")
            _delete_drop(conn, row.id)
            return int(row.subjects)

    # -- answering ------------------------------------------------------------------------------

    def _probes(self, subject_id: str | int) -> dict[bytes, str]:
        """The hashes this person may be recorded under, each with the id of its key: under
        every key, of the id's `subject_text`, and of the id as given when that differs (a
        padded id recorded before ids were trimmed)."""
        forms = dict.fromkeys([subject_text(subject_id), str(subject_id)])
        return {text_hash(k, form): key_id(k) for k in self.keys for form in forms}

    def lookup(self, subject_id: str | int, *, include_unsent: bool = False) -> list[Disclosure]:
        """Every transfer that carried this subject, oldest first: date, agreement, recipient,
        purposes, legal basis and fields. Only delivered drops unless `include_unsent`.

        As of one moment: one read of the subject index, one probe per drop still kept by
        drop, and one per drop kept in blocks (its one block that could hold the hash)."""
        probes = self._probes(subject_id)
        params: dict[str, Any] = {}
        for i, (value, kid) in enumerate(probes.items()):
            params[f"h{i}"], params[f"k{i}"] = value, kid
        with self._snapshot() as conn:
            found = list(conn.execute(_lookup_statement(len(probes), include_unsent), params))
            in_blocks = _in_blocks(conn, probes)
            if not in_blocks:
                return [Disclosure._from_row(row) for row in found]
            query = sa.select(transfers).where(transfers.c.id.in_({t for t, _ in in_blocks}))
            if not include_unsent:
                query = query.where(transfers.c.sent_at.is_not(None))
            known = {row.id for row in found}
            found += [
                row
                for row in conn.execute(query)
                if (row.id, row.key_id) in in_blocks and row.id not in known
            ]
        # The statement's order: by time sent (not yet sent first on SQLite, last on
        # PostgreSQL, as each sorts NULL), then by id.
        unsent_last = self._postgres
        found.sort(key=lambda r: ((r.sent_at is None) == unsent_last, r.sent_at or "", r.id))
        return [Disclosure._from_row(row) for row in found]

    def transfer(self, drop_id: str) -> tuple[Disclosure, int, str] | None:
        """A drop's facts, subject count and digest, if recorded."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(transfers).where(transfers.c.drop_id == drop_id)).first()
        return (Disclosure._from_row(row), int(row.subjects), row.digest) if row else None

    def verify_digest(self, drop_id: str, digest: str) -> bool:
        """True when the drop's stored hashes still give `digest` (from its ledger entry).

        The digest only: how the hashes are laid out (a block keyed by its own first hash) is
        checked by `check` and `verified_lookup`, which are what an answer relies on.

        A drop kept by drop is one range of `disclosures` or `disclosure_blocks`; the
        subject-ordered table is read whole for rows of the drop as well (it has no index by
        drop, and a row forged there would be in answers).
        """
        with self._snapshot() as conn:
            row = conn.execute(
                sa.select(transfers.c.id).where(transfers.c.drop_id == drop_id)
            ).first()
            if row is None:
                return False
            sha = hashlib.sha256()
            for value in _drop_hashes(conn, row.id):
                if len(value) != HASH_BYTES:
                    return False
                sha.update(value)
        return hmac.compare_digest(sha.hexdigest(), digest)

    def verified_lookup(
        self,
        subject_id: str | int,
        ledger: Ledger,
        *,
        public_key: Ed25519PublicKey | None = None,
        origin: str | None = None,
    ) -> tuple[list[Disclosure], Verification]:
        """`lookup`, after checking the audit ledger and every delivered drop's record against it.

        LedgerError (one line, naming the first drop at fault) when the ledger does not verify
        or any delivered drop's rows or facts differ from its entries. Reads the whole ledger
        and disclosure table once: a rights request is rare, a wrong answer is not acceptable.
        The answer is taken from the very rows the check read, not from a second query: rows
        hidden after the check (or from one query only) cannot drop a recipient from it.
        """
        bound = LedgerBindings()
        verified = ledger.verify(public_key=public_key, origin=origin, visit=bound.visit)
        if not verified.ok:
            raise LedgerError(
                f"the audit ledger does not verify ({verified.message}): "
                "disclosures cannot be checked against it"
            )
        _, problems, found = self._check(bound, self._probes(subject_id))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise LedgerError(
                f"the disclosure record does not match the audit ledger: {problems[0]}{more}"
            )
        # A second reading, by the lookup's own statement, must give the same drops.
        again = self.lookup(subject_id)
        if {d.drop_id for d in again} - {d.drop_id for d in found}:
            late = sorted({d.drop_id for d in again} - {d.drop_id for d in found})
            raise LedgerError(f"drop {late[0]} was delivered while checking: look up again")
        if {d.drop_id for d in found} - {d.drop_id for d in again}:
            raise LedgerError(
                "the disclosure record gave different answers to two readings of one moment: "
                "rows were hidden or removed while checking; look up again, and check the "
                "database's views, rules and row security"
            )
        return found, verified

    def unsearchable(self) -> list[tuple[str, str]]:
        """Delivered drops recorded under a disclosure key this ledger was not given (retired
        more than one rotation ago), as (drop, key id): a lookup cannot find anyone in them,
        so an answer that leaves them out must say so."""
        known = [key_id(k) for k in self.keys]
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(transfers.c.drop_id, transfers.c.key_id)
                .where(transfers.c.sent_at.is_not(None), transfers.c.key_id.not_in(known))
                .order_by(transfers.c.id)
            )
            return [(str(drop), str(kid)) for drop, kid in found]

    def check(self, bound: LedgerBindings) -> tuple[set[str], list[str]]:
        """Compare every delivered drop's rows and facts with the ledger's entries.

        Returns the drops that match and one line per problem. Drops not yet delivered are
        skipped (they are in no answer); a delivered drop the ledger knows but the table lacks
        is a problem (deleted).
        """
        checked, problems, _ = self._check(bound, {})
        return checked, problems

    def _check(
        self, bound: LedgerBindings, wanted: Mapping[bytes, str]
    ) -> tuple[set[str], list[str], list[Disclosure]]:
        """`check`, and the delivered drops that carried a hash in `wanted` (hash -> the id of
        the key that made it) under that key, oldest first, from the rows the check read."""
        with self._snapshot() as conn:
            rows = conn.execute(sa.select(transfers).where(transfers.c.sent_at.is_not(None))).all()
            counts, digests, carried, malformed = _digests(conn, wanted)
        found = [
            Disclosure._from_row(row)
            for row in sorted(rows, key=lambda r: (r.sent_at, r.id))
            if (row.id, row.key_id) in carried
        ]
        checked: set[str] = set()
        problems: list[str] = []
        for row in rows:
            if row.id in malformed:
                problems.append(
                    f"drop {row.drop_id}: its stored subject hashes are malformed (altered: a "
                    "row not one 16-byte hash, or a block not whole hashes or not keyed by "
                    "its first)"
                )
                continue
            problem = mismatch(row, bound, counts.get(row.id, 0), digests.get(row.id))
            if problem:
                problems.append(f"drop {row.drop_id}: {problem}")
            else:
                checked.add(row.drop_id)
        present = {row.drop_id for row in rows}
        for drop_id in sorted(set(bound.sent) - present):
            if drop_id in bound.prepared:
                problems.append(
                    f"drop {drop_id}: delivered per the audit ledger, but its disclosure "
                    "record is missing (deleted)"
                )
        return checked, problems, found

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """A read transaction that sees every table as of one moment: a merge committed while
        it reads must not show a drop's rows in both tables, or in neither. (SQLite's read
        transactions are snapshots; PostgreSQL's default takes one per statement.)"""
        with self.engine.connect() as conn:
            if self._postgres:
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    # -- merging --------------------------------------------------------------------------------

    def merge(self, *, after: int | None = None) -> int:
        """Move the delivered drops kept by drop into `disclosures_merged`, all at once, when
        more than `after` of them wait (default `merge_after`); returns the drops moved.

        The rows go in subject order, so each page of the subject index is written once for
        the whole batch, in pieces by leading bits of the hash, lowest first, one transaction
        each (about `MERGE_PIECE_ROWS` rows: the write lock, which ledger appends also wait
        for, is held for seconds, not minutes). Part way, a drop's rows in
        `disclosures_merged` all sort before those left in `disclosures`, so its digest is
        still taken in one pass (see `_digests`); a lookup reads both tables anyway. Drops not
        yet delivered stay, so a retried or discarded drop is still a range delete.
        LedgerError if a row to move is already in `disclosures_merged` (put there by hand):
        the pieces before it stay moved, and checking the record names the drop.
        """
        limit = self.merge_after if after is None else after
        with self.engine.connect() as conn:  # without the write lock while there is nothing to do
            in_blocks = set(conn.execute(_BLOCK_DROPS).scalars())
            recent = sorted(set(conn.execute(_RECENT_DROPS).scalars()) | in_blocks)
            if len(recent) <= limit:
                return 0
            ready = conn.execute(
                sa.select(transfers.c.id, transfers.c.subjects)
                .where(transfers.c.id.in_(recent), transfers.c.sent_at.is_not(None))
                .order_by(transfers.c.id)
            ).all()
        if len(ready) <= limit:
            return 0
        drops = [row.id for row in ready]
        block_drops = [drop for drop in drops if drop in in_blocks]
        bits = min(
            _PIECE_BITS, (sum(row.subjects for row in ready) // MERGE_PIECE_ROWS).bit_length()
        )
        began, moved = time.perf_counter(), 0
        for piece in range(1 << bits):
            chosen: list[sa.ColumnElement[bool]] = [disclosures.c.transfer_id.in_(drops)]
            if piece:
                chosen.append(disclosures.c.subject_hash >= _prefix(piece << (16 - bits)))
            if piece + 1 < 1 << bits:
                chosen.append(disclosures.c.subject_hash < _prefix((piece + 1) << (16 - bits)))
            rows = (
                sa.select(disclosures.c.subject_hash, disclosures.c.transfer_id)
                .where(*chosen)
                .order_by(disclosures.c.subject_hash, disclosures.c.transfer_id)
            )
            below = (piece + 1) << (16 - bits) if piece + 1 < 1 << bits else None
            with writer(self.engine).begin() as conn:  # a concurrent merge finds nothing left
                try:
                    conn.execute(merged.insert().from_select(["subject_hash", "transfer_id"], rows))
                    if block_drops:
                        moved += _merge_blocks(conn, block_drops, below)
                except (IntegrityError, self.engine.dialect.loaded_dbapi.IntegrityError):
                    raise LedgerError(
                        f"disclosure rows of {len(drops)} delivered drops were merged only in "
                        "part: disclosures_merged already holds one of them (check the record "
                        "with exchange audit subject)"
                    ) from None
                moved += conn.execute(disclosures.delete().where(*chosen)).rowcount
        log.info(
            "merged %d delivered drops (%d disclosure rows) into disclosures_merged in %.1f s",
            len(drops),
            moved,
            time.perf_counter() - began,
        )
        return len(drops)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


@functools.cache
def _lookup_statement(keys: int, include_unsent: bool) -> sa.TextClause:
    """The transfers whose key is key i and that carried hash i, in either table (parameters
    h0, k0, h1, k1 ...; a key may come twice, with two hashes): in one statement, so both
    tables are read as of one moment."""
    carried = " OR ".join(
        f"(key_id = :k{i} AND id IN ("  # noqa: S608 (names and numbers only, no input)
        f"SELECT transfer_id FROM disclosures_merged WHERE subject_hash = :h{i} UNION ALL "
        f"SELECT transfer_id FROM disclosures WHERE subject_hash = :h{i} "
        "AND transfer_id IN (SELECT id FROM drops WHERE id IS NOT NULL)))"
        for i in range(keys)
    )
    sent = "" if include_unsent else " AND sent_at IS NOT NULL"
    columns = ", ".join(column.name for column in transfers.columns)
    return sa.text(
        f"{_DROPS} SELECT {columns} FROM transfers WHERE ({carried}){sent} "  # noqa: S608
        "ORDER BY sent_at, id"
    )


def _migrate(engine: sa.Engine) -> str | None:
    """Bring a ledger from before `disclosures_merged` (one `disclosures` table keyed by
    subject, then drop) to this layout, once, in one transaction; what was done, or None.

    That table, renamed, is `disclosures_merged` as it stands: no row is copied or changed, so
    it takes milliseconds at any size and every drop's digest check gives what it gave before.
    A new, empty `disclosures` takes new drops. Rows of drops not yet delivered are moved to it
    (a retried or discarded drop is deleted by drop), reading the old table once.
    """
    if sa.inspect(engine).has_table(merged.name):
        return None  # migrated or made in this layout: no write lock taken
    postgres = engine.dialect.name == "postgresql"
    with writer(engine).begin() as conn:
        if postgres:  # SQLite's BEGIN IMMEDIATE serialises; here two openers wait in turn
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        inspector = sa.inspect(conn)
        if not inspector.has_table(disclosures.name) or inspector.has_table(merged.name):
            return None
        keyed = inspector.get_pk_constraint(disclosures.name)["constrained_columns"]
        if list(keyed) != ["subject_hash", "transfer_id"]:
            return None  # already keyed by drop: create_tables adds the missing table
        drops, rows = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(transfers.c.subjects), 0))
        ).one()
        conn.exec_driver_sql("ALTER TABLE disclosures RENAME TO disclosures_merged")
        if postgres:  # constraint names are per schema: free the old ones for the new table
            names = conn.exec_driver_sql(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'disclosures_merged'::regclass"
            ).scalars()
            for name in list(names):
                if name.startswith("disclosures_") and not name.startswith("disclosures_merged_"):
                    renamed = "disclosures_merged_" + name.removeprefix("disclosures_")
                    conn.exec_driver_sql(
                        f'ALTER TABLE disclosures_merged RENAME CONSTRAINT "{name}" TO "{renamed}"'
                    )
        disclosures.create(conn)
        unsent = list(
            conn.execute(sa.select(transfers.c.id).where(transfers.c.sent_at.is_(None))).scalars()
        )
        moved = 0
        if unsent:
            conn.execute(
                disclosures.insert().from_select(
                    ["transfer_id", "subject_hash"],
                    sa.select(merged.c.transfer_id, merged.c.subject_hash)
                    .where(merged.c.transfer_id.in_(unsent))
                    .order_by(merged.c.transfer_id, merged.c.subject_hash),
                )
            )
            # (PostgreSQL gives no row count for INSERT ... SELECT; DELETE's is the same.)
            moved = conn.execute(merged.delete().where(merged.c.transfer_id.in_(unsent))).rowcount
    message = (
        f"disclosure ledger migrated to the per-drop layout: the table of {drops:,} drops "
        f"({rows:,} subject rows) is now disclosures_merged, renamed, not copied; "
        f"{len(unsent)} drop(s) not yet delivered ({moved:,} rows) moved to disclosures, "
        "where new drops go"
    )
    log.warning("%s", message)
    return message


def _drop_hashes(conn: sa.Connection, transfer_id: int) -> Iterator[bytes]:
    """One drop's stored hashes from every table, in ascending order (as its digest takes
    them); the hashes of a malformed block as its whole hashes, in the order they are."""
    streamed = conn.execution_options(stream_results=True, yield_per=HASH_CHUNK)
    parts: list[Iterable[bytes]] = [
        (
            _stored_hash(value)
            for value in streamed.execute(
                sa.select(table.c.subject_hash)
                .where(table.c.transfer_id == transfer_id)
                .order_by(table.c.subject_hash)
            ).scalars()
        )
        for table in (disclosures, merged)
    ]
    in_blocks = streamed.execute(
        sa.select(blocks.c.first_hash, blocks.c.hashes)
        .where(blocks.c.transfer_id == transfer_id)
        .order_by(blocks.c.first_hash)
    )

    def hashes_in_blocks() -> Iterator[bytes]:
        for first_hash, stored in in_blocks:
            block = _stored_hash(stored)
            if not _well_formed(_stored_hash(first_hash), block):
                yield b""  # not a hash: whoever reads these refuses the drop
                return
            for at in range(0, len(block), HASH_BYTES):
                yield block[at : at + HASH_BYTES]

    parts.append(hashes_in_blocks())
    return heapq.merge(*parts)


def _stored_hash(stored: Any) -> bytes:
    """A stored hash (or block) as bytes; NULL, possible only where the schema was changed by
    hand, as no bytes (never a hash: the drop is then refused)."""
    return b"" if stored is None else bytes(stored)


def _in_blocks(conn: sa.Connection, probes: Mapping[bytes, str]) -> set[tuple[int, str]]:
    """(transfer, key id) for every drop kept in blocks that holds one of the hashes (hash ->
    the id of the key that made it)."""
    found: set[tuple[int, str]] = set()
    for value, kid in probes.items():
        for transfer_id, block in conn.execute(_BLOCK_PROBE, {"h": value}):
            if block is not None and _holds(bytes(block), value):
                found.add((transfer_id, kid))
    return found


def _digests(
    conn: sa.Connection, wanted: Mapping[bytes, str]
) -> tuple[dict[int, int], dict[int, str], set[tuple[int, str]], set[int]]:
    """Per transfer, its hash count and digest over all tables, each read once in key order,
    with no sort: the subject-ordered table gives each transfer's rows by ascending hash, the
    drop-ordered one gives them drop by drop, ascending, and a drop part merged has all its
    merged rows below its others, so one hash goes on from the first table into the second.
    A drop kept in blocks is read block by block after them, in the same way. A drop whose
    parts are not so ordered (moved or forged by hand) is read again, every table's rows
    merged. Also (transfer, key id) for every row whose hash is in `wanted`, and the drops
    with a malformed block (see `_well_formed`).
    """
    streamed = conn.execution_options(stream_results=True, yield_per=HASH_CHUNK)
    carried: set[tuple[int, str]] = set()
    hashers: dict[int, Any] = {}
    counts: dict[int, int] = {}
    malformed: set[int] = set()

    def take(transfer_id: int, value: bytes, *, hashed: bool = True) -> None:
        """One stored row: note it if its hash is wanted, and add it to its transfer's digest."""
        if len(value) != HASH_BYTES:
            # Not one hash: two joined and an empty one keep a drop's count and digest while
            # no row equals either hash, so the drop is refused, not taken as it reads.
            malformed.add(transfer_id)
            return
        if value in wanted:
            carried.add((transfer_id, wanted[value]))
        if hashed:
            digest(transfer_id, value)

    def digest(transfer_id: int, hashes: bytes) -> None:
        """Add stored hashes (one, or a block of them) to their transfer's digest and count."""
        hasher = hashers.get(transfer_id)
        if hasher is None:
            hasher = hashers[transfer_id] = hashlib.sha256()
        hasher.update(hashes)
        counts[transfer_id] = counts.get(transfer_id, 0) + len(hashes) // HASH_BYTES

    last: dict[int, bytes] = {}  # per transfer, its greatest hash in disclosures_merged
    query = sa.select(merged.c.subject_hash, merged.c.transfer_id).order_by(
        merged.c.subject_hash, merged.c.transfer_id
    )
    for stored, transfer_id in streamed.execute(query):
        value = _stored_hash(stored)
        take(transfer_id, value)
        last[transfer_id] = value
    seen: set[int] = set()
    again: set[int] = set()  # read again below, both tables merged
    query = sa.select(disclosures.c.transfer_id, disclosures.c.subject_hash).order_by(
        disclosures.c.transfer_id, disclosures.c.subject_hash
    )
    for transfer_id, stored in streamed.execute(query):
        value = _stored_hash(stored)
        if transfer_id not in seen:
            seen.add(transfer_id)
            if transfer_id in last and value <= last[transfer_id]:
                again.add(transfer_id)
        take(transfer_id, value, hashed=transfer_id not in again)
    in_blocks: set[int] = set()
    query = sa.select(blocks.c.transfer_id, blocks.c.first_hash, blocks.c.hashes).order_by(
        blocks.c.transfer_id, blocks.c.first_hash
    )
    for stored in conn.execution_options(stream_results=True, yield_per=16).execute(query):
        transfer_id, first, block = stored[0], _stored_hash(stored[1]), _stored_hash(stored[2])
        if not _well_formed(first, block):
            malformed.add(transfer_id)
        if transfer_id not in in_blocks:
            in_blocks.add(transfer_id)
            if transfer_id in seen or (transfer_id in last and first <= last[transfer_id]):
                again.add(transfer_id)  # rows in `disclosures` too, or merged rows not below
        for value, kid in wanted.items():
            if _holds(block, value):
                carried.add((transfer_id, kid))
        if transfer_id not in again and transfer_id not in malformed:
            digest(transfer_id, block)
    for transfer_id in again - malformed:
        # Its digest and its part of the answer from this one reading: a table that gives
        # another statement other rows (a view, a rule) cannot make them differ.
        carried = {found for found in carried if found[0] != transfer_id}
        sha, count = hashlib.sha256(), 0
        for value in _drop_hashes(conn, transfer_id):
            if len(value) != HASH_BYTES:
                malformed.add(transfer_id)
                break
            if value in wanted:
                carried.add((transfer_id, wanted[value]))
            sha.update(value)
            count += 1
        counts[transfer_id], hashers[transfer_id] = count, sha
    digests = {k: h.hexdigest() for k, h in hashers.items() if k not in malformed}
    return counts, digests, carried, malformed


# One statement per chunk: SQLite cuts the bound blob of hashes into rows itself, so no Python
# object is made per row (about 4x faster than executemany here). Row numbers come from a
# 1,024-row counter joined with itself, in order (the outer side first: CROSS JOIN keeps it
# there), so rows go in ascending; counting them one by one in a recursive CTE cost more than
# the insert itself (0.56 s of 1.3 s per million rows).
_SQLITE_INSERT = (
    "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 1023), "
    "t(x) AS MATERIALIZED (SELECT x FROM c) "
    "INSERT INTO {table} (subject_hash, transfer_id) "
    "SELECT substr(:hashes, (hi.x * 1024 + lo.x) * :width + 1, :width), {transfer} "
    "FROM t AS hi CROSS JOIN t AS lo "
    "WHERE hi.x < (:n + 1023) / 1024 AND hi.x * 1024 + lo.x < :n"
)
# A transfer id per row (a merge's), from a bound text of fixed-width decimal numbers.
_ID_DIGITS = 10
_SQLITE_ROW_ID = (
    f"CAST(substr(:ids, (hi.x * 1024 + lo.x) * {_ID_DIGITS} + 1, {_ID_DIGITS}) AS INTEGER)"
)
SQLITE_INSERT_ROWS = 1 << 20  # hashes bound per statement (16 MiB; the counter's 1,024 squared)


def _insert_sqlite(
    raw: Any, hashes: np.ndarray, transfer_id: int | np.ndarray, table: sa.Table = disclosures
) -> None:
    """Insert the hashes, each with `transfer_id` (one id, or one per hash)."""
    per_row = None if isinstance(transfer_id, int) else transfer_id
    statement = _SQLITE_INSERT.format(
        table=table.name, transfer=":transfer" if per_row is None else _SQLITE_ROW_ID
    )
    if per_row is not None:
        if len(per_row) and not 0 <= int(per_row.min()) <= int(per_row.max()) < 10**_ID_DIGITS:
            raise LedgerError("a transfer id is out of the disclosure merge's range")
        # CAST reads the digits as text in the database's encoding: only UTF-8 reads them.
        if raw.execute("PRAGMA encoding").fetchone()[0] != "UTF-8":
            raise LedgerError("the disclosure merge needs a SQLite database in UTF-8")
    for start in range(0, len(hashes), SQLITE_INSERT_ROWS):
        chunk = np.ascontiguousarray(hashes[start : start + SQLITE_INSERT_ROWS])
        values: dict[str, Any] = {"n": len(chunk), "hashes": chunk.tobytes(), "width": HASH_BYTES}
        if per_row is None:
            values["transfer"] = transfer_id
        else:  # a blob of digits: substr of a blob is a slice, of a text a walk from its start
            # The few distinct ids written once each, then gathered: 10 bytes a row.
            drops, which = np.unique(
                per_row[start : start + SQLITE_INSERT_ROWS], return_inverse=True
            )
            digits = np.array(
                [str(drop).zfill(_ID_DIGITS).encode() for drop in drops.tolist()],
                dtype=f"S{_ID_DIGITS}",
            )
            values["ids"] = digits[which].tobytes()
        raw.execute(statement, values)
        # The statement's own count (rowcount is -1 for one that begins WITH; total_changes
        # is a 32-bit count for the connection's life).
        inserted = raw.execute("SELECT changes()").fetchone()[0]
        if inserted != len(chunk):  # the counter is finite: never record a drop in part
            raise LedgerError(
                f"the disclosure insert took {inserted} of {len(chunk)} subject hashes"
            )


def _copy_postgres(
    raw: Any,
    pieces: Iterable[np.ndarray],
    transfer_id: int | np.ndarray,
    table: sa.Table = disclosures,
) -> None:
    """COPY the hashes in, each with `transfer_id` (one id, or one per hash of the pieces)."""
    with raw.cursor() as cursor:
        statement = f"COPY {table.name} (subject_hash, transfer_id) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(statement) as copy:
            copy.write(_PG_SIGNATURE)
            done = 0
            for hashes in pieces:
                for start in range(0, len(hashes), HASH_CHUNK):
                    chunk = hashes[start : start + HASH_CHUNK]
                    rows = np.empty(len(chunk), dtype=_PG_ROW)
                    rows["fields"], rows["hash_len"], rows["id_len"] = 2, HASH_BYTES, 4
                    rows["hash"] = np.ascontiguousarray(chunk).view("V16").reshape(-1)
                    if isinstance(transfer_id, int):
                        rows["id"] = transfer_id
                    else:
                        rows["id"] = transfer_id[done : done + len(chunk)]
                    done += len(chunk)
                    copy.write(rows.tobytes())
            copy.write(_PG_TRAILER)


def _delete_drop(conn: sa.Connection, transfer_id: int) -> None:
    """Remove a drop not yet delivered: its rows or blocks, then its transfer."""
    conn.execute(disclosures.delete().where(disclosures.c.transfer_id == transfer_id))
    conn.execute(blocks.delete().where(blocks.c.transfer_id == transfer_id))
    conn.execute(transfers.delete().where(transfers.c.id == transfer_id))


def _unused_id(conn: sa.Connection) -> int:
    """A transfer id above every one in use, by a drop or by hashes kept by drop (SQLite would
    give a deleted drop's id again, and hashes left under it would then be the new drop's).
    Three reads of an index's last entry."""
    top = 0
    for column in (transfers.c.id, disclosures.c.transfer_id, blocks.c.transfer_id):
        top = max(top, conn.execute(sa.select(sa.func.max(column))).scalar() or 0)
    return int(top) + 1


def _cut(pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Ascending hashes, in pieces of any length, cut into blocks of `BLOCK_HASHES` (the last
    may be shorter)."""
    carry = np.empty((0, 2), dtype=">u8")
    for piece in pieces:
        if len(carry):
            piece = np.concatenate([carry, piece], dtype=">u8")
        whole = len(piece) - len(piece) % BLOCK_HASHES
        for start in range(0, whole, BLOCK_HASHES):
            yield piece[start : start + BLOCK_HASHES]
        carry = piece[whole:]
    if len(carry):
        yield carry


_BLOCKS_PER_STATEMENT = 256  # 16 MiB of hashes bound per executemany


def _insert_blocks(conn: sa.Connection, pieces: Iterable[np.ndarray], transfer_id: int) -> None:
    batch: list[dict[str, Any]] = []
    for block in _cut(pieces):
        data = np.ascontiguousarray(block).tobytes()
        batch.append({"transfer_id": transfer_id, "first_hash": data[:HASH_BYTES], "hashes": data})
        if len(batch) == _BLOCKS_PER_STATEMENT:
            conn.execute(blocks.insert(), batch)
            batch = []
    if batch:
        conn.execute(blocks.insert(), batch)


def _holds(block: bytes, value: bytes) -> bool:
    """Whether a block's bytes hold `value` as one of its hashes (at a hash's offset: a match
    across two hashes is not one)."""
    at = block.find(value)
    while at != -1:
        if at % HASH_BYTES == 0:
            return True
        at = block.find(value, at + 1)
    return False


def _well_formed(first_hash: bytes, block: bytes) -> bool:
    """A block is whole hashes, at least one, and keyed by its first: else a lookup's probe
    (the last block whose key is not above the hash) could miss a hash it holds."""
    return bool(block) and len(block) % HASH_BYTES == 0 and block[:HASH_BYTES] == first_hash


def _prefix(value: int) -> bytes:
    """A piece's bound: the first two bytes of a hash (a hash sorts at or above its prefix)."""
    return value.to_bytes(2, "big")


def _merge_blocks(conn: sa.Connection, drops: Sequence[int], below: int | None) -> int:
    """Move the hashes of these drops' blocks whose first two bytes are under `below` (all,
    if None) into `disclosures_merged`, in bulk; a block cut by that bound keeps its rest,
    keyed by its new first hash. Returns the hashes moved."""
    chosen: list[sa.ColumnElement[bool]] = [blocks.c.transfer_id.in_(drops)]
    if below is not None:
        chosen.append(blocks.c.first_hash < _prefix(below))
    picked = conn.execute(
        sa.select(blocks.c.transfer_id, blocks.c.first_hash, blocks.c.hashes)
        .where(*chosen)
        .order_by(blocks.c.transfer_id, blocks.c.first_hash)
    ).all()
    moving: dict[int, list[np.ndarray]] = {}
    rests: list[dict[str, Any]] = []
    for transfer_id, first_hash, data in picked:
        first_hash, data = _stored_hash(first_hash), _stored_hash(data)
        if not _well_formed(first_hash, data):
            raise LedgerError(
                "a block of disclosure hashes is malformed: not merged (check the record with "
                "exchange audit subject)"
            )
        words = np.frombuffer(data, dtype=">u8").reshape(-1, 2)
        cut = len(words)
        if below is not None:
            cut = int(np.searchsorted(words[:, 0], np.uint64(below) << np.uint64(48)))
        moving.setdefault(transfer_id, []).append(words[:cut])
        if cut < len(words):
            rest = words[cut:].tobytes()
            rests.append(
                {"transfer_id": transfer_id, "first_hash": rest[:HASH_BYTES], "hashes": rest}
            )
    conn.execute(blocks.delete().where(*chosen))  # the blocks read above, in one statement
    if rests:
        conn.execute(blocks.insert(), rests)
    if not moving:
        return 0
    # All the piece's hashes in subject order, then drop, as the rows' merge inserts them: each
    # page of the subject index is then written once, not once per drop.
    words = np.concatenate([part for parts in moving.values() for part in parts], dtype=">u8")
    ids = np.concatenate(
        [
            np.full(len(part), drop, dtype=np.int64)
            for drop, parts in moving.items()
            for part in parts
        ]
    )
    order = np.lexsort((ids, words[:, 1], words[:, 0]))
    words, ids = words[order], ids[order]
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        _copy_postgres(raw, [words], ids, merged)
    else:
        _insert_sqlite(raw, words, ids, merged)
    return len(words)
