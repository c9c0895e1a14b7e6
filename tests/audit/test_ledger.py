"""Unit tests for the hash-chained audit ledger (exchange.audit.ledger) on real SQLite."""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.audit import Ledger
from exchange.audit.ledger import GENESIS

WRITERS = 4
PER_WRITER = 25


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the ledger's SQLite file lives."""
    return tmp_path / "audit.sqlite"


@pytest.fixture
def ledger(db: Path) -> Iterator[Ledger]:
    """A ledger with five entries."""
    ledger = Ledger(f"sqlite:///{db}")
    for i in range(1, 6):
        ledger.append("step", {"n": i, "rows": i * 10}, run_id=f"run-{i}", contract_id="c-1")
    yield ledger
    ledger.close()


def tamper(db: Path, *statements: str) -> None:
    """Change the ledger's table directly, as someone with file access could."""
    with sqlite3.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)


def test_append_chains_and_verifies(db: Path) -> None:
    """Entries are numbered from 1, each linked to the one before, and the chain verifies."""
    ticks = itertools.count()

    def clock() -> dt.datetime:
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=next(ticks))

    ledger = Ledger(f"sqlite:///{db}", clock=clock)
    assert ledger.head() == (0, GENESIS)
    assert ledger.verify().ok and ledger.verify().entries == 0
    first = ledger.append("run-started", {"rows": 3, "name": "Zoë"}, run_id="r1")
    second = ledger.append("run-finished", {"sent": 2}, run_id="r1", contract_id="c")
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS
    assert second.prev_hash == first.entry_hash
    assert first.entry_hash == first.computed_hash() != second.entry_hash
    assert first.recorded_at == "2026-01-01T00:00:00.000000+00:00"
    stored = list(ledger.entries())
    assert stored == [first, second]
    assert stored[0].data == {"rows": 3, "name": "Zoë"}
    assert list(ledger.entries(since=2)) == [second]
    result = ledger.verify()
    assert (result.ok, result.entries, result.head, result.broken_at) == (
        True,
        2,
        second.entry_hash,
        None,
    )
    assert ledger.head() == (2, second.entry_hash)
    ledger.close()


def test_reopened_ledger_continues_the_chain(db: Path, ledger: Ledger) -> None:
    """A second Ledger on the same file appends after the existing head."""
    seq, head = ledger.head()
    again = Ledger(f"sqlite:///{db}")
    entry = again.append("later", {})
    assert (entry.seq, entry.prev_hash) == (seq + 1, head)
    assert again.verify().ok and again.verify().entries == 6
    again.close()


def test_edited_body_is_detected(db: Path, ledger: Ledger) -> None:
    """Changing an entry's body breaks the chain at that entry."""
    tamper(db, """UPDATE audit_ledger SET body = '{"n":3,"rows":0}' WHERE seq = 3""")
    result = ledger.verify()
    assert (result.broken_at, result.reason) == (3, "content altered (hash mismatch)")
    assert result.entries == 2
    assert result.head == next(e for e in ledger.entries() if e.seq == 2).entry_hash


@pytest.mark.parametrize(
    ("column", "value"),
    [("event", "'nothing-happened'"), ("run_id", "NULL"), ("recorded_at", "'2020-01-01'")],
)
def test_edited_metadata_is_detected(db: Path, ledger: Ledger, column: str, value: str) -> None:
    """The event, ids and time are covered by the hash as well as the body."""
    tamper(db, f"UPDATE audit_ledger SET {column} = {value} WHERE seq = 4")  # noqa: S608
    result = ledger.verify()
    assert (result.broken_at, result.reason) == (4, "content altered (hash mismatch)")


def test_deleted_middle_entry_is_detected(db: Path, ledger: Ledger) -> None:
    """Removing an entry leaves a gap in the sequence, named at the missing number."""
    tamper(db, "DELETE FROM audit_ledger WHERE seq = 3")
    result = ledger.verify()
    assert (result.broken_at, result.reason) == (3, "entry missing (sequence gap)")
    assert result.entries == 2


def test_deleted_first_entry_is_detected(db: Path, ledger: Ledger) -> None:
    """Removing the genesis entry is a gap at 1."""
    tamper(db, "DELETE FROM audit_ledger WHERE seq = 1")
    result = ledger.verify()
    assert (result.broken_at, result.reason, result.entries) == (
        1,
        "entry missing (sequence gap)",
        0,
    )


def test_deletion_hidden_by_renumbering_is_detected(db: Path, ledger: Ledger) -> None:
    """Deleting entry 3 and renumbering 4 and 5 down leaves no gap but breaks the links."""
    tamper(
        db,
        "DELETE FROM audit_ledger WHERE seq = 3",
        "UPDATE audit_ledger SET seq = 3 WHERE seq = 4",
        "UPDATE audit_ledger SET seq = 4 WHERE seq = 5",
    )
    result = ledger.verify()
    assert (result.broken_at, result.reason) == (3, "does not follow the entry before it")


def test_swapped_entries_are_detected(db: Path, ledger: Ledger) -> None:
    """Reordering two entries (swapping their numbers) breaks the chain at the first."""
    tamper(
        db,
        "UPDATE audit_ledger SET seq = -2 WHERE seq = 2",
        "UPDATE audit_ledger SET seq = 2 WHERE seq = 3",
        "UPDATE audit_ledger SET seq = 3 WHERE seq = -2",
    )
    result = ledger.verify()
    assert (result.broken_at, result.reason) == (2, "does not follow the entry before it")
    assert result.entries == 1


def test_changed_prev_hash_is_detected(db: Path, ledger: Ledger) -> None:
    """Relinking an entry to another predecessor is detected at that entry."""
    tamper(db, f"UPDATE audit_ledger SET prev_hash = '{GENESIS}' WHERE seq = 4")  # noqa: S608
    result = ledger.verify()
    assert (result.broken_at, result.reason) == (4, "does not follow the entry before it")


def test_rehashed_edit_is_still_detected(db: Path, ledger: Ledger) -> None:
    """Editing an entry and recomputing its own hash breaks the link of the next entry."""
    entry = next(e for e in ledger.entries() if e.seq == 2)
    forged = type(entry)(**{**entry.__dict__, "body": '{"n":2,"rows":0}', "entry_hash": ""})
    tamper(
        db,
        f"UPDATE audit_ledger SET body = '{forged.body}', "  # noqa: S608
        f"entry_hash = '{forged.computed_hash()}' WHERE seq = 2",
    )
    result = ledger.verify()
    assert (result.broken_at, result.reason) == (3, "does not follow the entry before it")


def _append_many(url: str, writer: int, count: int) -> None:
    """Worker: append `count` entries from a separate process."""
    ledger = Ledger(url)
    for i in range(count):
        ledger.append("concurrent", {"writer": writer, "i": i}, run_id=f"w{writer}")
    ledger.close()


def test_concurrent_appends_from_processes_keep_one_chain(db: Path) -> None:
    """Four processes appending at once give every entry, one verifying chain, no fork."""
    url = f"sqlite:///{db}"
    Ledger(url).close()  # create the table before the writers race
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_append_many, args=(url, w, PER_WRITER)) for w in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * WRITERS
    ledger = Ledger(url)
    entries = list(ledger.entries())
    assert [e.seq for e in entries] == list(range(1, WRITERS * PER_WRITER + 1))
    assert sorted((e.data["writer"], e.data["i"]) for e in entries) == [
        (w, i) for w in range(WRITERS) for i in range(PER_WRITER)
    ]
    result = ledger.verify()
    assert result.ok and result.entries == WRITERS * PER_WRITER
    assert ledger.head() == (WRITERS * PER_WRITER, result.head)
    ledger.close()


def test_engines_are_closed_at_exit_but_a_forked_child_leaves_its_parents_alone(
    tmp_path: Path,
) -> None:
    """An engine still alive at exit is disposed (SQLite then folds its write-ahead log into
    the file), but only by the process that made it: a forked child ending normally must not
    close the connections it inherited (on PostgreSQL that ends the parent's session)."""
    database, closes = tmp_path / "audit.db", tmp_path / "closes"
    code = (
        "import os, sys\n"  # noqa: S608 (a test script, no input)
        "import sqlalchemy as sa\n"
        "from exchange.audit.storage import make_engine\n"
        f"engine = make_engine('sqlite:///{database}', create=True)\n"
        "with engine.begin() as conn:\n"
        "    conn.exec_driver_sql('CREATE TABLE t (x)')\n"
        "    conn.exec_driver_sql('INSERT INTO t VALUES (1)')\n"
        "def closed(*_):\n"
        f"    with open({str(closes)!r}, 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
        "sa.event.listen(engine.pool, 'close', closed)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    sys.exit(0)  # a normal end: its exit handlers run\n"
        "os.waitpid(child, 0)\n"
        "with engine.connect() as conn:\n"
        "    print(os.getpid(), conn.exec_driver_sql('SELECT x FROM t').scalar())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    parent, value = done.stdout.split()
    assert value == "1"
    assert set(closes.read_text().split()) == {parent}  # closed at exit, by the parent only
    assert not database.with_name("audit.db-wal").exists()
