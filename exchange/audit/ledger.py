"""The audit ledger: append-only, hash-chained entries in SQLite or PostgreSQL.

Each entry's hash covers its sequence number, time, event, ids, body and the previous entry's
hash, so editing, deleting or reordering any entry breaks the chain at that point.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from exchange.errors import LedgerError

GENESIS = "0" * 64
APPEND_ATTEMPTS = 50

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


@dataclass(frozen=True)
class Verification:
    """The result of checking the chain."""

    entries: int
    head: str
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when every entry verified."""
        return self.broken_at is None


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


class Ledger:
    """The append-only audit ledger behind a SQLAlchemy URL."""

    def __init__(
        self, url: str, *, clock: Callable[[], dt.datetime] = _utcnow, create: bool = True
    ) -> None:
        parsed = sa.engine.make_url(url)
        connect_args = {}
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            connect_args = {"timeout": 30}
            _prepare_sqlite_file(Path(parsed.database), create=create)
        self.engine = sa.create_engine(parsed, connect_args=connect_args)
        self.clock = clock
        if create:
            metadata.create_all(self.engine)

    def append(
        self,
        event: str,
        body: Mapping[str, Any],
        *,
        run_id: str | None = None,
        contract_id: str | None = None,
    ) -> Entry:
        """Add an entry at the head; concurrent writers retry, so the chain never forks."""
        for _ in range(APPEND_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
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
                continue  # another writer took this sequence number (or held the lock): retry
        raise LedgerError(f"could not append {event!r} after {APPEND_ATTEMPTS} attempts")

    def entries(self, *, since: int = 1) -> Iterator[Entry]:
        """Every entry from `since` on, in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries).where(entries.c.seq >= since).order_by(entries.c.seq)
            )
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

    def verify(self) -> Verification:
        """Recompute the whole chain; name the first entry that does not verify."""
        expected_seq, prev, count = 1, GENESIS, 0
        for entry in self.entries():
            if entry.seq != expected_seq:
                return Verification(count, prev, expected_seq, "entry missing (sequence gap)")
            if entry.prev_hash != prev:
                return Verification(count, prev, entry.seq, "does not follow the entry before it")
            if entry.computed_hash() != entry.entry_hash:
                return Verification(count, prev, entry.seq, "content altered (hash mismatch)")
            prev, expected_seq, count = entry.entry_hash, expected_seq + 1, count + 1
        return Verification(count, prev)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()
