"""The SQLite bulk insert of disclosure rows: every subject's row lands, across statements."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path

import pyarrow as pa
import pytest

import exchange.audit.disclosures as disclosures
from exchange.audit import Disclosure, Disclosures
from exchange.audit.disclosures import subject_hash

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
