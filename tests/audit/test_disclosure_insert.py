"""The SQLite bulk insert of disclosure rows: every subject's row lands, across statements."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import exchange.audit.disclosures as disclosures
from exchange.audit import Disclosure, Disclosures
from exchange.audit.disclosures import subject_hash
from exchange.errors import LedgerError

KEY = bytes(range(7, 39))
T0 = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)


def test_every_subject_is_recorded_across_insert_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(disclosures, "SQLITE_INSERT_ROWS", 3)  # 10 subjects: four statements
    store = Disclosures(f"sqlite:///{tmp_path / 'audit.db'}", KEY)
    ids = [f"P{i:08d}" for i in range(10)]
    facts = Disclosure("drop-1", "c", "1.0.0", "Early Help", ("safeguarding",), "s", ("a",), T0)
    recorded = store.record(facts, pa.array([*ids, None, ids[0]]))
    assert (recorded.subjects, recorded.nulls) == (10, 1)
    expected = hashlib.sha256(b"".join(sorted(subject_hash(KEY, i) for i in ids))).hexdigest()
    assert hmac.compare_digest(recorded.digest, expected)
    assert store.verify_digest("drop-1", expected)
    for subject in ids:
        assert [d.drop_id for d in store.lookup(subject)] == ["drop-1"]
    assert store.lookup("P99999999") == []
    store.close()


@pytest.mark.parametrize("count", [1, 1023, 1024, 1025, 2048, 3000])
def test_every_row_lands_in_order_at_the_counters_edges(tmp_path: Path, count: int) -> None:
    """The insert numbers its rows with a 1,024-row counter joined with itself: each size
    around its edges lands whole, and nothing else does."""
    store = Disclosures(f"sqlite:///{tmp_path / 'audit.db'}", KEY)
    ids = [f"P{i:08d}" for i in range(count)]
    facts = Disclosure("drop-1", "c", "1.0.0", "Early Help", ("safeguarding",), "s", ("a",), T0)
    recorded = store.record(facts, pa.array(ids))
    assert recorded.subjects == count
    with store.engine.connect() as conn:
        query = "SELECT subject_hash FROM disclosures ORDER BY subject_hash"
        stored = [bytes(row[0]) for row in conn.exec_driver_sql(query)]
    assert stored == sorted(subject_hash(KEY, i) for i in ids)
    store.close()


def test_a_chunk_larger_than_the_counter_is_refused_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One statement numbers at most 1,024 x 1,024 rows: a bigger chunk (a constant raised
    by mistake) is refused, so a drop is never recorded in part."""
    monkeypatch.setattr(disclosures, "SQLITE_INSERT_ROWS", (1 << 20) + 1024)
    store = Disclosures(f"sqlite:///{tmp_path / 'audit.db'}", KEY)
    hashes = np.arange(2 * ((1 << 20) + 1), dtype=">u8").reshape(-1, 2)
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        with pytest.raises(LedgerError, match=r"took 1048576 of 1048577 subject hashes"):
            disclosures._insert_sqlite(raw, hashes, 1)
    store.close()


def test_a_merge_writes_each_rows_drop_and_refuses_an_id_it_cannot(tmp_path: Path) -> None:
    """A merge binds each row's drop as ten decimal digits: the widest lands exactly, a wider
    or negative id is refused, not cut; so is a database whose text is not UTF-8 (the digits
    would be read as UTF-16 there)."""
    connection = sqlite3.connect(tmp_path / "ids.db")
    connection.execute("CREATE TABLE disclosures_merged (subject_hash BLOB, transfer_id INTEGER)")
    hashes = np.arange(6, dtype=">u8").reshape(3, 2)
    ids = np.array([7, 10, 9_999_999_999])
    disclosures._insert_sqlite(connection, hashes, ids, disclosures.merged)
    stored = connection.execute("SELECT subject_hash, transfer_id FROM disclosures_merged")
    assert [(bytes(h), t) for h, t in stored] == [
        (hashes[i].tobytes(), int(ids[i])) for i in range(3)
    ]
    for wrong in (10**10, -1):
        with pytest.raises(LedgerError, match="out of the disclosure merge's range"):
            disclosures._insert_sqlite(
                connection, hashes[:1], np.array([wrong]), disclosures.merged
            )

    utf16 = sqlite3.connect(tmp_path / "utf16.db")
    utf16.execute("PRAGMA encoding = 'UTF-16le'")
    utf16.execute("CREATE TABLE disclosures_merged (subject_hash BLOB, transfer_id INTEGER)")
    with pytest.raises(LedgerError, match="UTF-8"):
        disclosures._insert_sqlite(utf16, hashes, ids, disclosures.merged)
