"""The ledger's tables in SQLite or PostgreSQL: every SQL statement the audit ledger runs.

Appends are serialised by the database (``BEGIN IMMEDIATE`` on SQLite, a table lock on
PostgreSQL), so concurrent writers, threads or processes, wait for each other and the chain
never forks. The primary key on ``seq`` stays as the backstop against any other writer.
Nothing here judges what it reads: `chain` and `verify` do.

``audit_merkle_nodes`` caches the Merkle tree's interior nodes over whole blocks of
``2**NODE_LEVEL`` entries, so proofs read O(log n) rows instead of every entry. It is written in
the same transaction as the append that completes a block, and filled once, under the writer's
lock, when a ledger made before it is opened for writing. It is never trusted: verify recomputes
every node from the entries, and a proof made from a wrong node does not verify.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from exchange.audit import merkle
from exchange.audit.checkpoint import Checkpoint, CheckpointRow
from exchange.audit.entry import GENESIS, Entry
from exchange.errors import LedgerError

APPEND_ATTEMPTS = 10  # each waits up to the 30 s lock timeout
STREAM_ROWS = 2000  # rows fetched at a time when walking the ledger
# Nodes are stored from blocks of 256 entries up: a proof then reads at most 2 x 255 leaves
# beside its O(log n) nodes, and the table holds one row per 128 entries (docs/decisions.md).
NODE_LEVEL = 8
BLOCK = 1 << NODE_LEVEL
FILL_BLOCKS = 64  # blocks of entries read per query while filling the node table

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
    # A run looks entries up by run id (has this run been checked, prepared, sent?), and by
    # contract and event (suspensions, the incremental watermark): indexed, so a run's ledger
    # work does not grow with the history before it.
    sa.Index("ix_audit_ledger_run", "run_id", "contract_id", "event", "seq"),
    sa.Index("ix_audit_ledger_contract_event", "contract_id", "event", "seq"),
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


nodes = sa.Table(
    "audit_merkle_nodes",
    metadata,
    # MTH of entries idx * 2**level + 1 .. (idx + 1) * 2**level: an RFC 9162 interior node.
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),  # hex
)


def _prepare_sqlite_file(path: Path, *, create: bool) -> None:
    """Make a new ledger file 0600 before SQLite creates it; refuse a missing one to read."""
    if path.exists():
        return
    if not create:
        raise LedgerError(f"no audit ledger at {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


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
        return _closed_at_exit(sa.create_engine(parsed))
    if parsed.database and parsed.database != ":memory:":
        _prepare_sqlite_file(Path(parsed.database), create=create)
    engine = _closed_at_exit(sa.create_engine(parsed, connect_args={"timeout": 30}))

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


def _closed_at_exit(engine: sa.Engine) -> sa.Engine:
    """The engine, its connections closed when the interpreter exits if it is still alive.

    SQLite folds its write-ahead log back into the database file when the last connection
    closes, so a copy of that file alone holds every committed entry; PostgreSQL sessions end
    cleanly. The `exchange` command skips the final garbage collection (`exchange.cli.command`)
    that used to close what nobody closed."""
    weakref.finalize(engine, _dispose_if_alive, weakref.ref(engine), os.getpid())
    return engine


def _dispose_if_alive(engine_ref: weakref.ref[sa.Engine], owner: int) -> None:
    engine = engine_ref()
    # A forked child leaves them alone: the connections are its parent's (closing one would
    # end the parent's PostgreSQL session). An engine collected earlier closed them then.
    if engine is not None and os.getpid() == owner:
        engine.dispose()


def writer(engine: sa.Engine) -> sa.Engine:
    """The same engine, but its transactions take the write lock first (SQLite)."""
    return engine.execution_options(immediate=True)


def create_tables(engine: sa.Engine, tables: sa.MetaData) -> None:
    """Create missing tables and indexes (a ledger made before an index was declared gets it,
    once); another process creating them at the same moment is fine."""
    for attempt in range(3):
        try:
            with writer(engine).begin() as conn:
                tables.create_all(conn)
                for table in tables.sorted_tables:
                    for index in table.indexes:
                        index.create(conn, checkfirst=True)
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == 2:
                raise


def _head(conn: sa.Connection) -> tuple[int, str]:
    row = conn.execute(
        sa.select(entries.c.seq, entries.c.entry_hash).order_by(entries.c.seq.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else (0, GENESIS)


def _checkpoint_rows(conn: sa.Connection) -> list[sa.Row[Any]]:
    if not sa.inspect(conn).has_table(checkpoints.name):
        return []  # a ledger from before checkpoints, opened read-only
    return list(conn.execute(sa.select(checkpoints).order_by(checkpoints.c.id)).all())


def _hex32(text: str) -> bytes | None:
    """A stored hash as bytes; None if it is not 64 hex digits."""
    try:
        value = bytes.fromhex(text)
    except (TypeError, ValueError):
        return None
    return value if len(value) == 32 else None


def _node_frontier(conn: sa.Connection) -> int:
    """How many blocks the node table covers: every block before the newest stored one."""
    newest = conn.execute(
        sa.select(sa.func.max(nodes.c.idx)).where(nodes.c.level == NODE_LEVEL)
    ).scalar()
    return 0 if newest is None else int(newest) + 1


def _read_nodes(
    conn: sa.Connection, keys: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored, well-formed hashes of the nodes asked for."""
    out: dict[tuple[int, int], bytes] = {}
    wanted = list(keys)
    if not wanted:
        return out
    # One statement; pairs OR-ed, not a row-value IN, which SQLite answers with a table scan.
    rows = conn.execute(
        sa.select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(
            sa.or_(*(sa.and_(nodes.c.level == lv, nodes.c.idx == ix) for lv, ix in wanted))
        )
    )
    for level, index, text in rows:
        value = _hex32(text)
        if value is not None:
            out[(int(level), int(index))] = value
    return out


def _leaf_rows(conn: sa.Connection, lo: int, hi: int) -> list[bytes]:
    """The leaf hashes of entries lo+1..hi (leaves lo..hi-1); LedgerError at a gap."""
    rows = conn.execute(
        sa.select(entries.c.seq, entries.c.entry_hash)
        .where(entries.c.seq > lo, entries.c.seq <= hi)
        .order_by(entries.c.seq)
    )
    out: list[bytes] = []
    for seq, entry_hash in rows:
        if seq != lo + len(out) + 1:
            break
        out.append(merkle.leaf_hash(bytes.fromhex(entry_hash)))
    if len(out) != hi - lo:
        raise LedgerError(f"entry {lo + len(out) + 1} is missing")
    return out


def _extend_nodes(conn: sa.Connection, size: int) -> int:
    """Store the nodes of every whole block of the first `size` entries not stored yet; the
    number of nodes written. Run inside the writer's lock. Stops, writing what it could, where
    the nodes before it or an entry is missing (verify reports those, not the append)."""
    done, todo = _node_frontier(conn), size >> NODE_LEVEL
    if done >= todo:
        return 0
    # The nodes so far end in the perfect subtrees of its right edge: resume from them.
    edge_keys = [
        (NODE_LEVEL + bit, (done >> bit) - 1)
        for bit in reversed(range(done.bit_length()))
        if done >> bit & 1
    ]
    edge = _read_nodes(conn, edge_keys)
    if len(edge) != len(edge_keys):  # a damaged cache: rebuild those from the nodes below
        tree = merkle.Subtrees(done * BLOCK, _Nodes(conn), level=NODE_LEVEL, stored=done * BLOCK)
        try:
            lost = {k: tree.range_hash(k[1] << k[0], (k[1] + 1) << k[0]) for k in edge_keys}
        except LedgerError:
            return 0  # an entry is missing too: verify reports it
        _insert_nodes(
            conn, [{"level": k[0], "idx": k[1], "hash": v.hex()} for k, v in lost.items()]
        )
        edge = lost
    builder = merkle.RootBuilder.from_edge(done * BLOCK, [edge[k] for k in edge_keys])
    written = 0
    for first in range(done, todo, FILL_BLOCKS):
        last = min(first + FILL_BLOCKS, todo)
        try:
            leaves = _leaf_rows(conn, first * BLOCK, last * BLOCK)
        except LedgerError:
            return written
        made = [
            {"level": level, "idx": index, "hash": node.hex()}
            for leaf in leaves
            for level, index, node in builder.append_nodes(leaf, BLOCK)
        ]
        if made:
            _insert_nodes(conn, made)
        written += len(made)
    return written


def _insert_nodes(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Insert nodes, keeping any row already there: a node deleted below stored ones (the
    frontier then moves back) is rebuilt without the append failing on its stored parents."""
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(nodes).on_conflict_do_nothing(), rows)
    elif conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(nodes).on_conflict_do_nothing(), rows)
    else:
        conn.execute(nodes.insert(), rows)


class _Nodes:
    """`merkle.NodeSource` over an engine (each read in a short connection of its own) or over
    a connection (inside its transaction)."""

    def __init__(self, bind: sa.Engine | sa.Connection) -> None:
        self.bind = bind

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sa.Connection]:
        if isinstance(self.bind, sa.Connection):
            yield self.bind
        else:
            with self.bind.connect() as conn:
                yield conn

    def nodes(self, keys: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self._conn() as conn:
            return _read_nodes(conn, keys)

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        with self._conn() as conn:
            return _leaf_rows(conn, lo, hi)


@dataclass(frozen=True)
class Snapshot:
    """The whole ledger as of one transaction: checkpoint rows, head, and a stream of entries."""

    checkpoints: list[dict[str, Any]]
    size: int
    head: str
    entries: Iterator[dict[str, Any]]


class Store:
    """The `audit_ledger` and `audit_checkpoints` tables behind a SQLAlchemy URL."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the database; with `create`, make it and its tables if missing."""
        self.engine = make_engine(url, create=create)
        self._postgres = self.engine.dialect.name == "postgresql"
        if create:
            create_tables(self.engine, metadata)
            self.has_nodes = True
            with contextlib.suppress(OperationalError):  # locked too long: a later writer fills
                self.fill_nodes()
        else:  # opened to read (an auditor's copy): a ledger from before the table works too
            self.has_nodes = sa.inspect(self.engine).has_table(nodes.name)

    # -- entries ----------------------------------------------------------------------------

    def _lock(self, conn: sa.Connection) -> None:
        if self._postgres:
            # Appenders wait for each other; readers are not blocked.
            conn.exec_driver_sql("LOCK TABLE audit_ledger IN SHARE ROW EXCLUSIVE MODE")

    def append(self, make: Callable[[int, str], Entry], *, event: str) -> Entry:
        """Insert `make(seq, prev_hash)` at the head; concurrent writers queue, so no fork."""
        for _ in range(APPEND_ATTEMPTS):
            try:
                with writer(self.engine).begin() as conn:
                    self._lock(conn)
                    seq, prev = _head(conn)
                    entry = make(seq + 1, prev)
                    conn.execute(entries.insert().values(**entry.columns()))
                    if self.has_nodes and entry.seq % BLOCK == 0:
                        _extend_nodes(conn, entry.seq)  # this block's node and those it completes
                return entry
            except (IntegrityError, OperationalError):
                continue  # another writer took this number, or the lock wait timed out: retry
        raise LedgerError(f"could not append {event!r} after {APPEND_ATTEMPTS} attempts")

    def entries(self, *, since: int = 1, until: int | None = None) -> Iterator[Entry]:
        """Every entry from `since` (to `until`, inclusive), in order; streamed."""
        query = sa.select(entries).where(entries.c.seq >= since).order_by(entries.c.seq)
        if until is not None:
            query = query.where(entries.c.seq <= until)
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(query)
            for row in rows:
                yield Entry(**row._mapping)

    def entry(self, seq: int) -> Entry | None:
        """Entry `seq`, if present."""
        return next(self.entries(since=seq, until=seq), None)

    def find(self, event: str, *, run_id: str, contract_id: str) -> Entry | None:
        """The latest entry of an event for a run, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(entries)
                .where(
                    entries.c.event == str(event),
                    entries.c.run_id == run_id,
                    entries.c.contract_id == contract_id,
                )
                .order_by(entries.c.seq.desc())
                .limit(1)
            ).first()
        return Entry(**row._mapping) if row else None

    def newest(self, event: str, *, contract_id: str) -> Iterator[Entry]:
        """A contract's entries of one event, newest first; streamed from an index."""
        query = (
            sa.select(entries)
            .where(entries.c.contract_id == contract_id, entries.c.event == str(event))
            .order_by(entries.c.seq.desc())
        )
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=100).execute(query)
            for row in rows:
                yield Entry(**row._mapping)

    def head(self) -> tuple[int, str]:
        """The sequence number and hash of the newest entry ((0, GENESIS) if empty)."""
        with self.engine.connect() as conn:
            return _head(conn)

    def leaves(self, size: int | None = None, *, since: int = 1) -> list[bytes]:
        """The Merkle leaf hashes of entries since..size (default: all), in order."""
        query = (
            sa.select(entries.c.seq, entries.c.entry_hash)
            .where(entries.c.seq >= since)
            .order_by(entries.c.seq)
        )
        if size is not None:
            query = query.where(entries.c.seq <= size)
        out: list[bytes] = []
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=10 * STREAM_ROWS)
            for seq, entry_hash in rows.execute(query):
                if seq != since + len(out):
                    raise LedgerError(f"entry {since + len(out)} is missing")
                out.append(merkle.leaf_hash(bytes.fromhex(entry_hash)))
        if size is not None and since + len(out) <= size:
            raise LedgerError(f"the ledger holds {since + len(out) - 1} entries, fewer than {size}")
        return out

    # -- stored Merkle nodes ----------------------------------------------------------------

    def fill_nodes(self) -> int:
        """Store the nodes of whole blocks the table lacks (a ledger made before it, or entries
        appended by an older gateway), in one pass under the writer's lock; nodes written."""
        if not self.has_nodes:
            return 0
        with self.engine.connect() as conn:
            if _node_frontier(conn) >= _head(conn)[0] >> NODE_LEVEL:
                return 0  # the usual case: two indexed look-ups
        with writer(self.engine).begin() as conn:
            self._lock(conn)
            return _extend_nodes(conn, _head(conn)[0])

    def subtrees(self, size: int) -> merkle.Subtrees:
        """The tree of the first `size` entries, for proofs from stored nodes; LedgerError if
        the ledger is shorter."""
        with self.engine.connect() as conn:
            held = _head(conn)[0]
            stored = _node_frontier(conn) << NODE_LEVEL if self.has_nodes else 0
        if size > held:
            raise LedgerError(f"the ledger holds {held} entries, fewer than {size}")
        return merkle.Subtrees(size, _Nodes(self.engine), level=NODE_LEVEL, stored=stored)

    def stray_node(self) -> tuple[int, int] | None:
        """A stored node no append of this ledger writes: (level, index), or None.

        Such a row (a level below the blocks', a negative index, or entries past the head)
        would make the next appends skip writing their nodes, so verify reports it. The head
        is read after the nodes: an append stores its nodes with its entry, so an append
        landing in between cannot look like a node ahead of the entries."""
        if not self.has_nodes:
            return None
        query = sa.select(
            nodes.c.level, sa.func.min(nodes.c.idx), sa.func.max(nodes.c.idx)
        ).group_by(nodes.c.level)
        with self.engine.connect() as conn:
            levels = [(int(a), int(b), int(c)) for a, b, c in conn.execute(query)]
            size = _head(conn)[0]
        for level, low, high in levels:
            if not NODE_LEVEL <= level < 64 or low < 0 or (high + 1) << level > size:
                return level, (low if low < 0 else high)
        return None

    def stored_nodes(self, level: int, count: int) -> Iterator[tuple[int, bytes | None]]:
        """(index, hash; None if malformed) of the stored nodes of `level` below `count`."""
        if not self.has_nodes:
            return
        query = (
            sa.select(nodes.c.idx, nodes.c.hash)
            .where(nodes.c.level == level, nodes.c.idx < count)
            .order_by(nodes.c.idx)
        )
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS)
            for index, text in rows.execute(query):
                yield int(index), _hex32(text)

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint_rows(self) -> list[CheckpointRow]:
        """The stored checkpoints, oldest first, as their columns say (nothing checked)."""
        with self.engine.connect() as conn:
            rows = _checkpoint_rows(conn)
        return [
            CheckpointRow(
                f"checkpoint {r.id} (size {r.tree_size})", r.tree_size, r.root, r.note, r.created_at
            )
            for r in rows
        ]

    def add_checkpoint(self, made: Checkpoint, created_at: str) -> Checkpoint:
        """Store a signed checkpoint; the stored one if this note was stored before."""
        with writer(self.engine).begin() as conn:
            same = conn.execute(
                sa.select(checkpoints.c.note, checkpoints.c.created_at).where(
                    checkpoints.c.tree_size == made.size, checkpoints.c.note == made.note
                )
            ).first()
            if same is not None:
                return Checkpoint.parse(same[0], created_at=same[1])
            conn.execute(
                checkpoints.insert().values(
                    tree_size=made.size, root=made.root_hex, note=made.note, created_at=created_at
                )
            )
        return Checkpoint.parse(made.note, created_at=created_at)

    # -- the whole --------------------------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """Checkpoints and entries read in one transaction, so they agree (for an export)."""
        with self.engine.connect() as conn:
            if self._postgres:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                stored = [dict(row._mapping) for row in _checkpoint_rows(conn)]
                size, head = _head(conn)
                rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
                    sa.select(entries).where(entries.c.seq <= size).order_by(entries.c.seq)
                )
                yield Snapshot(stored, size, head, (dict(row._mapping) for row in rows))

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()
