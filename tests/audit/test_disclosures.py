"""The disclosure ledger (exchange.audit.disclosures): record, look up, never hold an id in clear.
Real SQLite files and a real private PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from pg import PrivatePostgres

from exchange.audit import Disclosure, Disclosures, Ledger
from exchange.audit.disclosures import key_id, subject_hash
from exchange.errors import LedgerError

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(200, 232))
SENTINEL = "SENTINEL-9990001234"
T0 = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)


def facts(drop: str, recipient: str = "Early Help", *, at: dt.datetime | None = T0) -> Disclosure:
    return Disclosure(
        drop_id=drop,
        contract_id="school-attendance-to-early-help",
        contract_version="1.2.0",
        recipient=recipient,
        purposes=("safeguarding", "service-planning"),
        legal_basis="Children Act 2004 s.10; UK GDPR 6(1)(e)",
        fields=("person_ref", "attendance_rate"),
        sent_at=at,
        run_id=f"run-{drop}",
    )


def expected_digest(key: bytes, ids: list[str]) -> str:
    """Independently: SHA-256 over the sorted distinct truncated HMACs."""
    hashes = sorted({hmac.new(key, i.encode(), hashlib.sha256).digest()[:16] for i in ids})
    return hashlib.sha256(b"".join(hashes)).hexdigest()


@pytest.fixture
def disclosures(backend_url: str) -> Iterator[Disclosures]:
    store = Disclosures(backend_url, KEY)
    yield store
    store.close()


def test_who_received_data_about_a_person(disclosures: Disclosures) -> None:
    first = disclosures.record(facts("drop-a"), pa.array(["p1", "p2", "p3"]))
    later = T0 + dt.timedelta(days=7)
    disclosures.record(facts("drop-b", "Youth Justice", at=later), pa.array(["p2", "p4"]))
    assert (first.subjects, first.nulls) == (3, 0)
    found = disclosures.lookup("p2")
    assert [(d.drop_id, d.recipient, d.sent_at) for d in found] == [
        ("drop-a", "Early Help", T0),
        ("drop-b", "Youth Justice", later),
    ]
    assert found[0] == facts("drop-a")  # every fact comes back as recorded
    assert [d.drop_id for d in disclosures.lookup("p4")] == ["drop-b"]
    assert disclosures.lookup("nobody") == []
    assert disclosures.transfer("drop-a") == (facts("drop-a"), 3, first.digest)
    assert disclosures.transfer("drop-z") is None


def test_duplicates_nulls_integers_and_chunks(disclosures: Disclosures) -> None:
    got = disclosures.record(facts("ints"), pa.array([9990000018, 42, 42, None], pa.int64()))
    assert (got.subjects, got.nulls) == (2, 1)
    assert [d.drop_id for d in disclosures.lookup(42)] == ["ints"]
    assert [d.drop_id for d in disclosures.lookup("9990000018")] == ["ints"]  # as text
    chunked = pa.chunked_array([["a", "b"], ["b", "c"]])
    assert disclosures.record(facts("chunked"), chunked).subjects == 3
    batches = [pa.array(["c", "d"]), pa.array(["d", "e"])]
    assert disclosures.record(facts("batches"), iter(batches)).subjects == 3
    dictionary = pa.array(["x", "y", "x"]).dictionary_encode()
    assert disclosures.record(facts("dict"), dictionary).subjects == 2
    assert disclosures.record(facts("empty"), []).subjects == 0
    assert [d.drop_id for d in disclosures.lookup("c")] == ["chunked", "batches"]
    with pytest.raises(LedgerError, match="strings or integers") as caught:
        disclosures.record(facts("floats"), pa.array([1.5, 2.5]))
    assert "1.5" not in str(caught.value)


def test_an_id_padded_by_its_source_is_the_same_person(disclosures: Disclosures) -> None:
    """Spaces, tabs and line breaks at either end of an id (a fixed-width source column) are
    not part of it: recorded, it is found by the bare id and by the padded one, and one person
    sent padded and bare in one drop counts once. The hash of a bare id is unchanged."""
    got = disclosures.record(
        facts("padded"), pa.array(["p1   ", " p1", "\tp2\r\n", "p3", "p\u00a04 "])
    )
    assert got.subjects == 4  # p1 once; a no-break space (not ASCII) is part of an id
    for asked in ("p1", "  p1 ", "p2", "p2\n"):
        assert [d.drop_id for d in disclosures.lookup(asked)] == ["padded"], asked
    assert [d.drop_id for d in disclosures.lookup("p\u00a04")] == ["padded"]
    assert got.digest == expected_digest(KEY, ["p1", "p2", "p3", "p\u00a04"])
    assert subject_hash(KEY, " p3\t") == subject_hash(KEY, "p3")
    assert subject_hash(KEY, "p3") == hmac.new(KEY, b"p3", hashlib.sha256).digest()[:16]


def test_a_padded_id_recorded_before_ids_were_trimmed_is_found_as_typed(
    disclosures: Disclosures, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record made by the code before (the id hashed with its padding) is still found when
    the id is given as it was recorded; the bare id finds only the newer records."""
    import exchange.audit.subjects as subjects

    monkeypatch.setattr(subjects, "subject_texts", lambda ids: ids)  # the code before
    disclosures.record(facts("before"), pa.array(["P1   "]))
    monkeypatch.undo()
    disclosures.record(facts("after"), pa.array(["P1   "]))
    assert [d.drop_id for d in disclosures.lookup("P1   ")] == ["before", "after"]
    assert [d.drop_id for d in disclosures.lookup("P1")] == ["after"]


def test_digest_binds_the_record_to_the_ledger(disclosures: Disclosures, backend_url: str) -> None:
    ids = [f"person-{i}" for i in range(500)] + ["person-7"]
    got = disclosures.record(facts("drop-d"), pa.array(ids))
    assert got.digest == expected_digest(KEY, ids)
    assert got.as_dict() == {"subjects": 500, "digest": got.digest, "key_id": key_id(KEY)}
    assert disclosures.verify_digest("drop-d", got.digest)
    assert not disclosures.verify_digest("drop-unknown", got.digest)
    engine = sa.create_engine(backend_url)
    with engine.begin() as conn:  # someone hides one disclosure
        conn.execute(
            sa.text("DELETE FROM disclosures WHERE subject_hash = :h"),
            {"h": subject_hash(KEY, "person-7")},
        )
    engine.dispose()
    assert disclosures.lookup("person-7") == []
    assert not disclosures.verify_digest("drop-d", got.digest)


def test_prepared_drops_are_visible_once_sent(disclosures: Disclosures) -> None:
    disclosures.record(facts("drop-p", at=None), pa.array(["p1"]))
    assert disclosures.lookup("p1") == []
    assert [d.sent_at for d in disclosures.lookup("p1", include_unsent=True)] == [None]
    again = disclosures.record(facts("drop-p", at=None), pa.array(["p1", "p2"]))  # a retry
    stored = disclosures.transfer("drop-p")
    assert again.subjects == 2 and stored is not None and stored[1] == 2
    disclosures.mark_sent("drop-p", T0)
    assert [d.sent_at for d in disclosures.lookup("p2")] == [T0]
    with pytest.raises(LedgerError, match="already recorded as sent"):
        disclosures.record(facts("drop-p"), pa.array(["p3"]))
    with pytest.raises(LedgerError, match="no disclosure record for drop drop-x"):
        disclosures.mark_sent("drop-x", T0)
    with pytest.raises(LedgerError, match="was sent"):
        disclosures.discard("drop-p")
    disclosures.record(facts("drop-q", at=None), pa.array(["p1", "p9"]))
    assert disclosures.discard("drop-q") == 2
    assert disclosures.lookup("p9", include_unsent=True) == []
    assert disclosures.discard("drop-q") == 0


def test_retired_keys_are_still_searched(backend_url: str) -> None:
    old = Disclosures(backend_url, OTHER_KEY)
    old.record(facts("before-rotation"), pa.array(["p1"]))
    old.close()
    store = Disclosures(backend_url, KEY, old_keys=[OTHER_KEY])
    store.record(facts("after-rotation"), pa.array(["p1"]))
    assert [d.drop_id for d in store.lookup("p1")] == ["before-rotation", "after-rotation"]
    assert [d.drop_id for d in Disclosures(backend_url, KEY).lookup("p1")] == ["after-rotation"]
    assert store.unsearchable() == []
    without = Disclosures(backend_url, KEY)  # the old key no longer given: say which drops
    assert without.unsearchable() == [("before-rotation", key_id(OTHER_KEY))]
    without.close()
    store.close()


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="at least 32 random bytes"):
        Disclosures(f"sqlite:///{tmp_path / 'a.db'}", b"short")
    with pytest.raises(ValueError, match="timezone-aware"):
        Disclosures(f"sqlite:///{tmp_path / 'a.db'}", KEY).record(
            facts("naive", at=dt.datetime(2026, 1, 1)), pa.array(["p"])
        )


def _record_everywhere(url: str) -> None:
    """A transfer with the sentinel among others, the way the gateway records it."""
    ledger = Ledger(url)
    store = Disclosures(url, KEY)
    ids = [SENTINEL, *(f"SENTINEL-{i:010d}" for i in range(2000))]
    recorded = store.record(facts("drop-s"), pa.array(ids))
    ledger.append("transfer.sent", {"drop_id": "drop-s", "disclosures": recorded.as_dict()})
    assert [d.drop_id for d in store.lookup(SENTINEL)] == ["drop-s"]
    store.close()
    ledger.close()


def test_no_subject_id_is_stored_in_clear_in_sqlite(tmp_path: Path) -> None:
    """Every byte of the database, its WAL and shared memory: no sentinel, in any encoding."""
    _record_everywhere(f"sqlite:///{tmp_path / 'audit.db'}")
    files = sorted(tmp_path.glob("audit.db*"))
    assert files and tmp_path / "audit.db" in files
    for path in files:
        data = path.read_bytes()
        for needle in (SENTINEL.encode(), SENTINEL.encode("utf-16-le"), b"9990001234"):
            assert needle not in data, path.name


def test_no_subject_id_is_stored_in_clear_in_postgres(
    pg_url: str, postgres: PrivatePostgres
) -> None:
    """The database's files and the server's write-ahead log, after a checkpoint."""
    _record_everywhere(pg_url)
    name = pg_url.rsplit("/", 1)[1]
    oid = postgres.psql(f"SELECT oid FROM pg_database WHERE datname = '{name}'").strip()  # noqa: S608
    postgres.psql("CHECKPOINT")
    files = [
        p
        for folder in (postgres.data_dir / "base" / oid, postgres.data_dir / "pg_wal")
        for p in folder.iterdir()
        if p.is_file()
    ]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        assert SENTINEL.encode() not in data and b"9990001234" not in data, path.name
    # The hashes are there: the lookup works from the stored bytes alone.
    assert postgres.psql("SELECT count(*) FROM disclosures", database=name).strip() == "2001"


def test_hashes_taken_by_batch_and_written_out_record_the_same_drop(
    disclosures: Disclosures,
) -> None:
    """A drop's hashes taken batch by batch, most of them in a temporary file: same rows,
    count and digest as the ids given at once, inserted one leading byte at a time."""
    ids = [f"pupil-{n % 3000}" for n in range(4000)]  # 3000 people, some in two batches
    taken = disclosures.hashes()
    taken._memory_bytes = 16 * 500  # write out every batch or so
    for start in range(0, len(ids), 400):
        taken.add(pa.array(ids[start : start + 400]))
    assert taken._written
    recorded = disclosures.record(facts("drop-batched"), taken)
    taken.close()
    assert (recorded.subjects, recorded.nulls) == (3000, 0)
    assert recorded.digest == expected_digest(KEY, ids)
    assert disclosures.verify_digest("drop-batched", recorded.digest)
    assert [d.drop_id for d in disclosures.lookup("pupil-2999")] == ["drop-batched"]
    assert disclosures.transfer("drop-batched")[1:] == (3000, recorded.digest)  # type: ignore[index]
