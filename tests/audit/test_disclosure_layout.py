"""The per-drop disclosure layout: recent drops keyed by drop, older ones merged in bulk into a
subject-ordered table, a ledger in the layout before it migrated once; answers unchanged and
tampering in either table refused. Real SQLite files and a real private PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import random
from collections.abc import Iterator

import pyarrow as pa
import pytest
import sqlalchemy as sa

import exchange.audit.disclosures as layout
from exchange.audit import Disclosure, Disclosures, Ledger
from exchange.audit.disclosures import key_id, subject_hash
from exchange.errors import LedgerError

KEY = bytes(range(60, 92))
OLD_KEY = bytes(range(160, 192))
T0 = dt.datetime(2026, 5, 1, 2, 0, tzinfo=dt.UTC)
PEOPLE = [f"P{i:05d}" for i in range(60)]


def facts(n: int, *, sent: bool = True) -> Disclosure:
    return Disclosure(
        drop_id=f"drop-{n:03d}",
        contract_id="school-attendance-to-early-help",
        contract_version="1.2.0",
        recipient=f"Partner {n % 3}",
        purposes=("safeguarding",),
        legal_basis="Children Act 2004 s.10",
        fields=("person_ref", "attendance_rate"),
        sent_at=T0 + dt.timedelta(days=n) if sent else None,
        run_id=f"run-{n:03d}",
    )


def expected_digest(key: bytes, ids: list[str]) -> str:
    """Independently: SHA-256 over the sorted distinct truncated HMACs."""
    hashes = sorted({hmac.new(key, i.encode(), hashlib.sha256).digest()[:16] for i in ids})
    return hashlib.sha256(b"".join(hashes)).hexdigest()


def sample(n: int) -> list[str]:
    """Drop n's people: a fixed random third of everyone, so people are in several drops."""
    return random.Random(n).sample(PEOPLE, 20)  # noqa: S311 (a fixed sample, not a secret)


def rows(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
    engine.dispose()
    return int(found)


def sql(url: str, statement: str, **params: object) -> int:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        done = conn.execute(sa.text(statement), params).rowcount
    engine.dispose()
    return int(done)


def transfer_id(url: str, drop: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT id FROM transfers WHERE drop_id = :d"), {"d": drop}
        ).scalar_one()
    engine.dispose()
    return int(found)


def bind(ledger: Ledger, store: Disclosures, drop: str) -> None:
    """The two entries the gateway writes for a delivered drop (run.prepared, transfer.sent)."""
    stored = store.transfer(drop)
    assert stored is not None
    told, count, digest = stored
    ledger.append(
        "run.prepared",
        {
            "drop_id": drop,
            "disclosures": {"subjects": count, "digest": digest, "key_id": key_id(KEY)},
        },
        run_id=told.run_id,
        contract_id=told.contract_id,
    )
    ledger.append(
        "transfer.sent",
        {
            "drop_id": drop,
            "id": told.contract_id,
            "version": told.contract_version,
            "recipient": told.recipient,
            "purposes": list(told.purposes),
            "legal_basis": told.legal_basis,
            "fields_sent": list(told.fields),
        },
        run_id=told.run_id,
        contract_id=told.contract_id,
    )


@pytest.fixture
def merging(backend_url: str) -> Iterator[Disclosures]:
    """A store that merges once more than 3 delivered drops wait."""
    store = Disclosures(backend_url, KEY, merge_after=3)
    yield store
    store.close()


def test_drops_merge_in_bulk_and_every_answer_stays_the_same(
    merging: Disclosures, backend_url: str
) -> None:
    carried: dict[str, list[str]] = {person: [] for person in PEOPLE}
    digests: dict[str, str] = {}
    recent_sizes = []
    for n in range(14):
        ids = sample(n)
        recorded = merging.record(facts(n), pa.array(ids))
        assert recorded.digest == expected_digest(KEY, ids)
        digests[recorded.drop_id] = recorded.digest
        for person in ids:
            carried[person].append(recorded.drop_id)
        recent_sizes.append(rows(backend_url, "disclosures") // 20)
        for person in PEOPLE:  # after every drop, whichever table holds its rows
            assert [d.drop_id for d in merging.lookup(person)] == carried[person], (n, person)
    # Merged in bulk (4 drops at a time), so a lookup never probes more than 4 recent drops.
    assert recent_sizes == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    assert rows(backend_url, "disclosures_merged") == 12 * 20
    for drop, digest in digests.items():
        assert merging.verify_digest(drop, digest), drop
        assert merging.transfer(drop)[1:] == (20, digest)  # type: ignore[index]
    assert merging.lookup("nobody") == []
    assert merging.merge(after=0) == 2 and rows(backend_url, "disclosures") == 0
    assert merging.merge(after=0) == 0
    for person in PEOPLE:
        assert [d.drop_id for d in merging.lookup(person)] == carried[person]
    assert all(merging.verify_digest(drop, digest) for drop, digest in digests.items())


def test_undelivered_drops_stay_by_drop_and_can_be_retried_or_discarded(
    merging: Disclosures, backend_url: str
) -> None:
    merging.record(facts(100, sent=False), pa.array(["P00001", "P00002"]))
    for n in range(5):
        merging.record(facts(n), pa.array(sample(n)))
    assert rows(backend_url, "disclosures_merged") == 4 * 20  # the 4 delivered drops only
    assert "drop-100" in [d.drop_id for d in merging.lookup("P00002", include_unsent=True)]
    again = merging.record(facts(100, sent=False), pa.array(["P00003"]))  # a retried prepare
    assert again.subjects == 1 and merging.verify_digest("drop-100", again.digest)
    assert "drop-100" not in [d.drop_id for d in merging.lookup("P00002", include_unsent=True)]
    assert merging.discard("drop-100") == 1
    assert merging.transfer("drop-100") is None
    carried = [f"drop-{n:03d}" for n in range(5) if "P00003" in sample(n)]
    assert [d.drop_id for d in merging.lookup("P00003", include_unsent=True)] == carried


def test_retired_keys_are_still_searched_across_both_tables(backend_url: str) -> None:
    old = Disclosures(backend_url, OLD_KEY, merge_after=1)
    for n in range(3):
        old.record(facts(n), pa.array(["P00001", f"other-{n}"]))
    old.close()
    store = Disclosures(backend_url, KEY, old_keys=[OLD_KEY], merge_after=1)
    store.record(facts(3), pa.array(["P00001"]))
    store.record(facts(4), pa.array(["P00001"]))
    assert rows(backend_url, "disclosures_merged") == 7  # drops 0-3; 4 waits
    assert [d.drop_id for d in store.lookup("P00001")] == [f"drop-{n:03d}" for n in range(5)]
    only_new = Disclosures(backend_url, KEY)
    assert [d.drop_id for d in only_new.lookup("P00001")] == ["drop-003", "drop-004"]
    only_new.close()
    store.close()


# -- trust: the digest checks see both tables ----------------------------------------------------


@pytest.fixture
def delivered(backend_url: str) -> Iterator[tuple[Disclosures, Ledger]]:
    """Six delivered drops bound in a real audit ledger: four merged, two kept by drop."""
    store = Disclosures(backend_url, KEY, merge_after=3)
    ledger = Ledger(backend_url)
    for n in range(6):
        store.record(facts(n), pa.array(sample(n)))
        bind(ledger, store, f"drop-{n:03d}")
    assert rows(backend_url, "disclosures_merged") == 80
    assert rows(backend_url, "disclosures") == 40
    found, verified = store.verified_lookup(sample(0)[0], ledger)
    assert verified.ok and found
    yield store, ledger
    ledger.close()
    store.close()


def refused(store: Disclosures, ledger: Ledger, subject: str = "P00001") -> str:
    with pytest.raises(LedgerError) as caught:
        store.verified_lookup(subject, ledger)
    return str(caught.value)


def test_an_altered_merged_row_is_refused(
    delivered: tuple[Disclosures, Ledger], backend_url: str
) -> None:
    store, ledger = delivered
    victim = sample(1)[0]
    tid = transfer_id(backend_url, "drop-001")
    changed = sql(
        backend_url,
        "UPDATE disclosures_merged SET subject_hash = :new WHERE subject_hash = :h AND "
        "transfer_id = :t",
        new=subject_hash(KEY, "someone-else"),
        h=subject_hash(KEY, victim),
        t=tid,
    )
    assert changed == 1
    assert "drop-001" not in [d.drop_id for d in store.lookup(victim)]  # hidden...
    assert "drop drop-001: its 20 subject rows differ from the 20" in refused(store, ledger)
    assert not store.verify_digest("drop-001", expected_digest(KEY, sample(1)))  # ...and caught


def test_forged_and_deleted_rows_in_either_table_are_refused(
    delivered: tuple[Disclosures, Ledger], backend_url: str
) -> None:
    store, ledger = delivered
    outsider = next(p for p in PEOPLE if p not in sample(5))
    insert = "INSERT INTO {} (subject_hash, transfer_id) VALUES (:h, :t)"
    recent, old = transfer_id(backend_url, "drop-005"), transfer_id(backend_url, "drop-000")
    # A row claiming a recent drop carried someone, put in the subject-ordered table.
    sql(backend_url, insert.format("disclosures_merged"), h=subject_hash(KEY, outsider), t=recent)
    assert "drop-005" in [d.drop_id for d in store.lookup(outsider)]
    assert "drop drop-005: its 21 subject rows differ from the 20" in refused(store, ledger)
    assert not store.verify_digest("drop-005", expected_digest(KEY, sample(5)))
    sql(backend_url, "DELETE FROM disclosures_merged WHERE transfer_id = :t", t=recent)
    assert "drop-005" not in [d.drop_id for d in store.verified_lookup(outsider, ledger)[0]]
    # A row for a merged drop, put in the table by drop.
    outsider = next(p for p in PEOPLE if p not in sample(0))
    sql(backend_url, insert.format("disclosures"), h=subject_hash(KEY, outsider), t=old)
    assert "drop-000" in [d.drop_id for d in store.lookup(outsider)]
    assert "drop drop-000: its 21 subject rows differ from the 20" in refused(store, ledger)
    sql(backend_url, "DELETE FROM disclosures WHERE transfer_id = :t", t=old)
    # A merged row deleted.
    sql(
        backend_url,
        "DELETE FROM disclosures_merged WHERE subject_hash = :h AND transfer_id = :t",
        h=subject_hash(KEY, sample(0)[3]),
        t=old,
    )
    assert "drop drop-000: its 19 subject rows differ from the 20" in refused(store, ledger)


def test_a_row_moved_between_tables_changes_no_answer(
    delivered: tuple[Disclosures, Ledger], backend_url: str
) -> None:
    """Moved by hand, unchanged: a lookup still finds it and the check still passes (a drop's
    rows are its rows in both tables); the same row in both is one row too many."""
    store, ledger = delivered
    person, tid = sample(4)[0], transfer_id(backend_url, "drop-004")
    sql(
        backend_url,
        "INSERT INTO disclosures_merged (subject_hash, transfer_id) VALUES (:h, :t)",
        h=subject_hash(KEY, person),
        t=tid,
    )
    assert "drop drop-004: its 21 subject rows differ from the 20" in refused(store, ledger)
    sql(
        backend_url,
        "DELETE FROM disclosures WHERE subject_hash = :h AND transfer_id = :t",
        h=subject_hash(KEY, person),
        t=tid,
    )
    found, verified = store.verified_lookup(person, ledger)
    assert verified.ok and "drop-004" in [d.drop_id for d in found]
    assert store.verify_digest("drop-004", expected_digest(KEY, sample(4)))


def test_a_merge_stopped_part_way_by_a_forged_row_changes_no_other_answer(
    delivered: tuple[Disclosures, Ledger],
    backend_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The merge moves its rows in pieces by leading hash bits (16 here); a row put by hand
    in the subject-ordered table stops it at that piece. The pieces before stay moved, the
    two recent drops are then split between the tables, and every answer is still right."""
    store, ledger = delivered
    monkeypatch.setattr(layout, "MERGE_PIECE_ROWS", 4)  # 40 rows: 16 pieces
    person = max(sample(5), key=lambda p: subject_hash(KEY, p))  # in one of the last pieces
    tid = transfer_id(backend_url, "drop-005")
    forge = "INSERT INTO disclosures_merged (subject_hash, transfer_id) VALUES (:h, :t)"
    sql(backend_url, forge, h=subject_hash(KEY, person), t=tid)
    with pytest.raises(LedgerError, match="merged only in part: disclosures_merged already"):
        store.merge(after=0)
    recent, old = rows(backend_url, "disclosures"), rows(backend_url, "disclosures_merged")
    assert recent + old == 121 and 0 < recent < 40  # moved up to the forged row's piece
    assert "drop drop-005: its 21 subject rows differ from the 20" in refused(store, ledger)
    assert "more)" not in refused(store, ledger)  # drop-004, split too, checks
    store.merge_after = 0
    with caplog.at_level(logging.WARNING, logger="exchange.audit.disclosures"):
        store.record(facts(6), pa.array(sample(6)))  # the run goes on; the merge waits
    assert "merged only in part" in caplog.text and person not in caplog.text
    assert rows(backend_url, "disclosures") == recent + 20
    bind(ledger, store, "drop-006")
    sql(
        backend_url,
        "DELETE FROM disclosures_merged WHERE subject_hash = :h AND transfer_id = :t",
        h=subject_hash(KEY, person),
        t=tid,
    )
    for someone in PEOPLE:  # split drops answer as whole ones
        wanted = [f"drop-{n:03d}" for n in range(7) if someone in sample(n)]
        assert [d.drop_id for d in store.verified_lookup(someone, ledger)[0]] == wanted
    assert store.verify_digest("drop-005", expected_digest(KEY, sample(5)))
    assert store.merge(after=0) == 3 and rows(backend_url, "disclosures") == 0
    assert [d.drop_id for d in store.verified_lookup(person, ledger)[0]][-2] == "drop-005"


def test_a_merge_committed_while_checking_is_not_seen_half_done(
    delivered: tuple[Disclosures, Ledger], backend_url: str
) -> None:
    """The check reads the subject-ordered table, then the one by drop: a merge committed in
    between would show the merged drops in neither, unless both are read as of one moment."""
    store, ledger = delivered
    other = Disclosures(backend_url, KEY)
    merged_meanwhile: list[int] = []

    def merge_before_the_second_table(
        _conn: object, _cursor: object, statement: str, *_: object
    ) -> None:
        if "ORDER BY disclosures.transfer_id" in statement and not merged_meanwhile:
            merged_meanwhile.append(other.merge(after=0))

    sa.event.listen(store.engine, "before_cursor_execute", merge_before_the_second_table)
    found, verified = store.verified_lookup(sample(5)[0], ledger)
    sa.event.remove(store.engine, "before_cursor_execute", merge_before_the_second_table)
    assert merged_meanwhile == [2] and rows(backend_url, "disclosures") == 0
    assert verified.ok and "drop-005" in [d.drop_id for d in found]
    other.close()


# -- migrating a ledger written in the layout before ---------------------------------------------


def old_layout(url: str) -> None:
    """The tables as the code before this layout made them: `transfers` as now, and one
    `disclosures` table keyed (subject_hash, transfer_id), WITHOUT ROWID on SQLite."""
    before = sa.MetaData()
    layout.transfers.to_metadata(before)
    sa.Table(
        "disclosures",
        before,
        sa.Column("subject_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("transfer_id", sa.Integer, sa.ForeignKey("transfers.id"), nullable=False),
        sa.PrimaryKeyConstraint("subject_hash", "transfer_id"),
        sqlite_with_rowid=False,
    )
    engine = sa.create_engine(url)
    before.create_all(engine)
    engine.dispose()


def fill_old(url: str, drops: dict[int, list[str]], *, unsent: set[int]) -> dict[str, str]:
    """Drops written as the code before wrote them (one transfers row, then the hashes)."""
    engine = sa.create_engine(url)
    digests = {}
    with engine.begin() as conn:
        for n, ids in drops.items():
            told = facts(n, sent=n not in unsent)
            digest = expected_digest(KEY, ids)
            tid = conn.execute(
                sa.text(
                    "INSERT INTO transfers (drop_id, run_id, contract_id, contract_version, "
                    "recipient, purposes, legal_basis, fields, sent_at, recorded_at, subjects, "
                    "digest, key_id) VALUES (:d, :r, :c, :v, :p, :pu, :l, :f, :s, :at, :n, "
                    ":dg, :k) RETURNING id"
                ),
                {
                    "d": told.drop_id,
                    "r": told.run_id,
                    "c": told.contract_id,
                    "v": told.contract_version,
                    "p": told.recipient,
                    "pu": '["safeguarding"]',
                    "l": told.legal_basis,
                    "f": '["person_ref", "attendance_rate"]',
                    "s": told.sent_at.isoformat(timespec="microseconds") if told.sent_at else None,
                    "at": T0.isoformat(timespec="microseconds"),
                    "n": len(set(ids)),
                    "dg": digest,
                    "k": key_id(KEY),
                },
            ).scalar_one()
            conn.execute(
                sa.text("INSERT INTO disclosures (subject_hash, transfer_id) VALUES (:h, :t)"),
                [{"h": subject_hash(KEY, i), "t": tid} for i in set(ids)],
            )
            digests[told.drop_id] = digest
    engine.dispose()
    return digests


def test_a_ledger_in_the_layout_before_is_migrated_once_with_answers_unchanged(
    backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    drops = {n: sample(n) for n in range(8)}
    old_layout(backend_url)
    digests = fill_old(backend_url, drops, unsent={7})
    ledger = Ledger(backend_url)
    with caplog.at_level(logging.WARNING, logger="exchange.audit.disclosures"):
        store = Disclosures(backend_url, KEY, merge_after=3)
    assert store.migration == (
        "disclosure ledger migrated to the per-drop layout: the table of 8 drops (160 subject "
        "rows) is now disclosures_merged, renamed, not copied; 1 drop(s) not yet delivered (20 "
        "rows) moved to disclosures, where new drops go"
    )
    assert store.migration in caplog.text
    assert (rows(backend_url, "disclosures_merged"), rows(backend_url, "disclosures")) == (140, 20)
    for n in range(7):
        bind(ledger, store, f"drop-{n:03d}")
    for person in PEOPLE:  # every answer is the one the rows written before give
        wanted = [f"drop-{n:03d}" for n in range(7) if person in drops[n]]
        found, verified = store.verified_lookup(person, ledger)
        assert verified.ok and [d.drop_id for d in found] == wanted, person
        unsent = ["drop-007"] if person in drops[7] else []  # sorts first or last per database
        assert sorted(d.drop_id for d in store.lookup(person, include_unsent=True)) == [
            *wanted,
            *unsent,
        ]
    for drop, digest in digests.items():
        assert store.verify_digest(drop, digest), drop
        assert store.transfer(drop)[1:] == (20, digest)  # type: ignore[index]
    assert store.discard("drop-007") == 20 and rows(backend_url, "disclosures") == 0
    store.record(facts(8), pa.array(sample(8)))  # new drops go by drop
    assert rows(backend_url, "disclosures") == 20
    store.close()
    again = Disclosures(backend_url, KEY)  # once only
    assert again.migration is None
    assert [d.drop_id for d in again.lookup(sample(8)[0])][-1] == "drop-008"
    again.close()
    ledger.close()


def test_a_failed_migration_leaves_the_ledger_as_it_was(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_layout(backend_url)
    digests = fill_old(backend_url, {0: sample(0), 1: sample(1)}, unsent={1})

    def fail(*_args: object, **_kwargs: object) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(layout.disclosures, "create", fail)
    with pytest.raises(sa.exc.OperationalError):
        Disclosures(backend_url, KEY)
    engine = sa.create_engine(backend_url)
    inspector = sa.inspect(engine)
    assert not inspector.has_table("disclosures_merged")
    assert inspector.get_pk_constraint("disclosures")["constrained_columns"] == [
        "subject_hash",
        "transfer_id",
    ]
    engine.dispose()
    assert rows(backend_url, "disclosures") == 40
    monkeypatch.undo()
    store = Disclosures(backend_url, KEY)
    assert store.migration is not None and "2 drops (40 subject rows)" in store.migration
    assert all(store.verify_digest(drop, digest) for drop, digest in digests.items())
    store.close()


def test_rows_hidden_after_the_check_cannot_drop_a_recipient_from_a_verified_answer(
    delivered: tuple[Disclosures, Ledger], backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who can write the database waits for the check's scan to end, removes the
    person's rows from both tables and would put them back after the answer (found by review:
    the answer came from a second query). The answer is now the rows the check read, and a
    second reading that differs refuses the answer instead of leaving a recipient out."""
    store, ledger = delivered
    person = "P00001"
    honest = [d.drop_id for d in store.verified_lookup(person, ledger)[0]]
    assert len(honest) >= 2
    checking = store._check

    def then_hidden(*args: object) -> object:
        done = checking(*args)  # type: ignore[arg-type]
        hashed = subject_hash(KEY, person)
        for table in ("disclosures_merged", "disclosures"):
            sql(backend_url, f"DELETE FROM {table} WHERE subject_hash = :h", h=hashed)  # noqa: S608
        return done

    monkeypatch.setattr(store, "_check", then_hidden)
    with pytest.raises(LedgerError, match="different answers to two readings"):
        store.verified_lookup(person, ledger)
