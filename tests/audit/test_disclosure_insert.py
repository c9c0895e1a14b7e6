"""The SQLite bulk insert of disclosure rows: every subject's row lands, across statements."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
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
