"""Large drops recorded in blocks of sorted hashes (`disclosure_blocks`): the same digests and
answers as rows, merged in bulk like them, and every way of altering a block refused by the
checked lookup. Blocks of 4 hashes here, so small drops span many; real SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from test_disclosure_layout import (
    KEY,
    PEOPLE,
    bind,
    expected_digest,
    facts,
    refused,
    rows,
    sample,
    sql,
    transfer_id,
)

import exchange.audit.disclosures as layout
from exchange.audit import Disclosures, Ledger
from exchange.audit.disclosures import subject_hash
from exchange.errors import LedgerError


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "BLOCK_HASHES", 4)


def blocks_of(url: str, drop: str) -> list[tuple[bytes, bytes]]:
    """A drop's blocks as stored: (first hash, hashes), in key order."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT first_hash, hashes FROM disclosure_blocks WHERE transfer_id = :t "
                "ORDER BY first_hash"
            ),
            {"t": transfer_id(url, drop)},
        ).all()
    engine.dispose()
    return [(bytes(first), bytes(hashes)) for first, hashes in found]


def rewrite(url: str, drop: str, first: bytes, new_first: bytes, hashes: bytes) -> None:
    """Replace one stored block by hand (as whoever can write the database could)."""
    done = sql(
        url,
        "UPDATE disclosure_blocks SET first_hash = :nf, hashes = :h "
        "WHERE transfer_id = :t AND first_hash = :f",
        nf=new_first,
        h=hashes,
        t=transfer_id(url, drop),
        f=first,
    )
    assert done == 1


def carried_by(n_drops: int) -> dict[str, list[str]]:
    return {p: [f"drop-{n:03d}" for n in range(n_drops) if p in sample(n)] for p in PEOPLE}


def test_a_large_drop_is_blocks_with_the_digest_and_answers_of_rows(backend_url: str) -> None:
    store = Disclosures(backend_url, KEY, blocks_from=10)  # 20 subjects a drop: in blocks
    small = Disclosures(backend_url, KEY)  # the same database, drops below the threshold
    try:
        for n in range(4):
            ids = sample(n)
            recorded = (store if n % 2 else small).record(facts(n), pa.array(ids + ids[:3]))
            assert (recorded.subjects, recorded.digest) == (20, expected_digest(KEY, ids))
        assert rows(backend_url, "disclosures") == 40  # drops 0 and 2, by row
        stored = blocks_of(backend_url, "drop-001")
        assert [len(hashes) for _, hashes in stored] == [64] * 5  # 20 hashes, 4 a block
        joined = b"".join(hashes for _, hashes in stored)
        assert joined == b"".join(sorted(subject_hash(KEY, p) for p in sample(1)))
        assert all(first == hashes[:16] for first, hashes in stored)
        for person, drops in carried_by(4).items():
            assert [d.drop_id for d in store.lookup(person)] == drops
        for n in range(4):
            assert store.verify_digest(f"drop-{n:03d}", expected_digest(KEY, sample(n)))
        # Batches hashed as the drop was made, written out past a small memory: still blocks.
        hashes = store.hashes()
        for start in range(0, 20, 7):
            hashes.add(pa.array(sample(4)[start : start + 7]))
        assert hashes.taken == 20
        assert store.record(facts(4), hashes).digest == expected_digest(KEY, sample(4))
        assert len(blocks_of(backend_url, "drop-004")) == 5
    finally:
        store.close()
        small.close()


def test_a_retried_or_discarded_drop_in_blocks_leaves_no_block(backend_url: str) -> None:
    store = Disclosures(backend_url, KEY, blocks_from=1)
    try:
        store.record(facts(7, sent=False), pa.array(sample(7)))
        again = store.record(facts(7, sent=False), pa.array(sample(8)))  # a retried prepare
        assert again.digest == expected_digest(KEY, sample(8))
        assert rows(backend_url, "disclosure_blocks") == 5
        assert store.lookup(sample(8)[0], include_unsent=True)[0].drop_id == "drop-007"
        assert store.lookup(sample(8)[0]) == []  # not delivered yet
        assert store.discard("drop-007") == 20
        assert rows(backend_url, "disclosure_blocks") == 0
    finally:
        store.close()


def test_drops_in_blocks_merge_in_pieces_and_every_answer_stays_the_same(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merged 4 drops at a time in pieces by leading hash bits, which cut blocks: a cut
    block keeps its rest under its new first hash until a later piece moves it."""
    monkeypatch.setattr(layout, "MERGE_PIECE_ROWS", 8)  # 80 hashes a merge: 8 pieces
    store = Disclosures(backend_url, KEY, merge_after=3, blocks_from=1)
    digests: dict[str, str] = {}
    try:
        for n in range(10):
            digests[f"drop-{n:03d}"] = store.record(facts(n), pa.array(sample(n))).digest
            for person, drops in carried_by(n + 1).items():
                assert [d.drop_id for d in store.lookup(person)] == drops, (n, person)
        assert rows(backend_url, "disclosures_merged") == 8 * 20
        assert rows(backend_url, "disclosures") == 0
        for drop, digest in digests.items():
            assert store.verify_digest(drop, digest), drop
        assert store.merge(after=0) == 2 and rows(backend_url, "disclosure_blocks") == 0
        for person, drops in carried_by(10).items():
            assert [d.drop_id for d in store.lookup(person)] == drops
        assert all(store.verify_digest(drop, digest) for drop, digest in digests.items())
    finally:
        store.close()


# -- trust: a block altered by hand is refused ------------------------------------------------


@pytest.fixture
def delivered(backend_url: str) -> Iterator[tuple[Disclosures, Ledger]]:
    """Three delivered drops in blocks, bound in a real audit ledger."""
    store = Disclosures(backend_url, KEY, blocks_from=1)
    ledger = Ledger(backend_url)
    for n in range(3):
        store.record(facts(n), pa.array(sample(n)))
        bind(ledger, store, f"drop-{n:03d}")
    for person, drops in carried_by(3).items():
        found, verified = store.verified_lookup(person, ledger)
        assert verified.ok and [d.drop_id for d in found] == drops
    yield store, ledger
    ledger.close()
    store.close()


def test_a_hash_added_to_or_removed_from_a_block_is_refused(
    delivered: tuple[Disclosures, Ledger], backend_url: str
) -> None:
    store, ledger = delivered
    outsider = next(p for p in PEOPLE if p not in sample(1))
    forged = subject_hash(KEY, outsider)
    stored = blocks_of(backend_url, "drop-001")
    first, hashes = ([block for block in stored if block[0] <= forged] or stored)[
        -1 if stored[0][0] <= forged else 0
    ]
    # Put where a lookup finds it: the hashes in order, the key still the first.
    values = sorted([hashes[i : i + 16] for i in range(0, len(hashes), 16)] + [forged])
    rewrite(backend_url, "drop-001", first, values[0], b"".join(values))
    assert "drop-001" in [d.drop_id for d in store.lookup(outsider)]
    assert "drop drop-001: its 21 subject rows differ from the 20" in refused(store, ledger)
    rewrite(backend_url, "drop-001", values[0], first, hashes)  # put back, then one removed
    rewrite(backend_url, "drop-001", first, first, hashes[:16] + hashes[32:])
    assert "drop drop-001: its 19 subject rows differ from the 20" in refused(store, ledger)
    assert not store.verify_digest("drop-001", expected_digest(KEY, sample(1)))


def test_a_block_keyed_past_its_first_hash_is_refused(
    delivered: tuple[Disclosures, Ledger], backend_url: str
) -> None:
    """Every hash still there and in order, so the digest alone would pass; but a lookup's
    probe (the last block keyed at or below the hash) would miss the block's first hashes."""
    store, ledger = delivered
    stored = blocks_of(backend_url, "drop-002")
    first, hashes = stored[2]
    hidden = hashes[:16]
    rewrite(backend_url, "drop-002", first, hashes[16:32], hashes)
    person = next(p for p in sample(2) if subject_hash(KEY, p) == hidden)
    assert "drop-002" not in [d.drop_id for d in store.lookup(person)]  # hidden...
    assert "drop drop-002: its stored subject hashes are malformed" in refused(store, ledger)
    assert not store.verify_digest("drop-002", expected_digest(KEY, sample(2)))
    rewrite(backend_url, "drop-002", hashes[16:32], first, hashes[:40])  # not whole hashes
    assert "drop drop-002: its stored subject hashes are malformed" in refused(store, ledger)


def test_a_deleted_block_and_hashes_moved_between_tables(
    delivered: tuple[Disclosures, Ledger], backend_url: str
) -> None:
    store, ledger = delivered
    tid = transfer_id(backend_url, "drop-000")
    first, hashes = blocks_of(backend_url, "drop-000")[0]
    # Moved by hand to the table by row, unchanged: the same answers, and the check passes.
    sql(
        backend_url,
        "DELETE FROM disclosure_blocks WHERE transfer_id = :t AND first_hash = :f",
        t=tid,
        f=first,
    )
    for at in range(0, len(hashes), 16):
        sql(
            backend_url,
            "INSERT INTO disclosures (subject_hash, transfer_id) VALUES (:h, :t)",
            h=hashes[at : at + 16],
            t=tid,
        )
    for person, drops in carried_by(3).items():
        assert [d.drop_id for d in store.verified_lookup(person, ledger)[0]] == drops
    # Gone from both: refused, whoever is asked about.
    sql(backend_url, "DELETE FROM disclosures WHERE transfer_id = :t", t=tid)
    assert "drop drop-000: its 16 subject rows differ from the 20" in refused(store, ledger)
    # A hash in a block and again as a row is one too many.
    sql(
        backend_url,
        "INSERT INTO disclosure_blocks (transfer_id, first_hash, hashes) VALUES (:t, :f, :h)",
        t=tid,
        f=first,
        h=hashes,
    )
    sql(
        backend_url,
        "INSERT INTO disclosures (subject_hash, transfer_id) VALUES (:h, :t)",
        h=hashes[:16],
        t=tid,
    )
    assert "drop drop-000: its 21 subject rows differ from the 20" in refused(store, ledger)


def test_a_merge_of_blocks_stopped_by_a_forged_row_changes_no_other_answer(
    delivered: tuple[Disclosures, Ledger], backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row put by hand in the subject-ordered table stops the merge at its piece (the
    database's own error, from the bulk insert); the pieces before stay moved, the blocks cut
    there keep their rest, and every checked answer is still right."""
    store, ledger = delivered
    monkeypatch.setattr(layout, "MERGE_PIECE_ROWS", 4)  # 60 hashes: 16 pieces
    person = max(sample(2), key=lambda p: subject_hash(KEY, p))  # in one of the last pieces
    forge = "INSERT INTO disclosures_merged (subject_hash, transfer_id) VALUES (:h, :t)"
    tid = transfer_id(backend_url, "drop-002")
    sql(backend_url, forge, h=subject_hash(KEY, person), t=tid)
    with pytest.raises(LedgerError, match="merged only in part: disclosures_merged already"):
        store.merge(after=0)
    left = rows(backend_url, "disclosures_merged")
    assert 1 < left < 61 and rows(backend_url, "disclosure_blocks") > 0
    assert "drop drop-002: its 21 subject rows differ from the 20" in refused(store, ledger)
    sql(
        backend_url,
        "DELETE FROM disclosures_merged WHERE subject_hash = :h AND transfer_id = :t",
        h=subject_hash(KEY, person),
        t=tid,
    )
    for someone, drops in carried_by(3).items():  # drops split between the tables
        assert [d.drop_id for d in store.verified_lookup(someone, ledger)[0]] == drops
    assert store.merge(after=0) == 3 and rows(backend_url, "disclosure_blocks") == 0
    for someone, drops in carried_by(3).items():
        assert [d.drop_id for d in store.verified_lookup(someone, ledger)[0]] == drops


def test_a_hash_counts_only_where_it_is_whole(backend_url: str) -> None:
    """A lookup finds a hash in a block only at a hash's offset: bytes that happen to match
    across two hashes are no one (a block written by hand could put them first)."""
    store = Disclosures(backend_url, KEY, blocks_from=1)
    try:
        store.record(facts(1), pa.array(sample(1)))
        person = sample(1)[5]
        wanted = subject_hash(KEY, person)
        sql(backend_url, "DELETE FROM disclosure_blocks")
        for blob in (bytes(8) + wanted + bytes(8), bytes(8) + wanted + bytes(8) + wanted):
            sql(backend_url, "DELETE FROM disclosure_blocks")
            sql(
                backend_url,
                "INSERT INTO disclosure_blocks (transfer_id, first_hash, hashes) "
                "VALUES (:t, :f, :h)",
                t=transfer_id(backend_url, "drop-001"),
                f=blob[:16],
                h=blob,
            )
            whole = len(blob) == 48
            assert [d.drop_id for d in store.lookup(person)] == (["drop-001"] if whole else [])
    finally:
        store.close()


@pytest.mark.parametrize("kept", ["rows", "blocks"])
def test_two_hashes_joined_in_one_row_are_refused(
    kept: str, backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two of a drop's hashes put in one row and an empty row beside it keep its count and
    its digest (the same bytes in the same order) while no row is either hash: refused."""
    store = Disclosures(backend_url, KEY, blocks_from=1 if kept == "blocks" else 10**9)
    ledger = Ledger(backend_url)
    try:
        for n in range(2):
            store.record(facts(n), pa.array(sample(n)))
            bind(ledger, store, f"drop-{n:03d}")
        tid = transfer_id(backend_url, "drop-001")
        hashes = sorted(subject_hash(KEY, p) for p in sample(1))
        victim = next(p for p in sample(1) if subject_hash(KEY, p) == hashes[5])
        sql(backend_url, "DELETE FROM disclosures WHERE transfer_id = :t", t=tid)
        sql(backend_url, "DELETE FROM disclosure_blocks WHERE transfer_id = :t", t=tid)
        kept_rows = [*hashes[:5], hashes[5] + hashes[6], b"", *hashes[7:]]
        for value in kept_rows:
            sql(
                backend_url,
                "INSERT INTO disclosures (transfer_id, subject_hash) VALUES (:t, :h)",
                t=tid,
                h=value,
            )
        assert "drop-001" not in [d.drop_id for d in store.lookup(victim)]  # hidden...
        problem = refused(store, ledger, victim)  # ...and refused
        assert "drop drop-001: its stored subject hashes are malformed" in problem
        assert not store.verify_digest("drop-001", expected_digest(KEY, sample(1)))
    finally:
        ledger.close()
        store.close()


def test_the_answer_for_a_drop_read_twice_comes_from_the_reading_that_was_checked(
    pg_url: str,
) -> None:
    """A drop in both tables by drop is read again for its digest. A view that shows its
    block to that second reading only cannot make the check pass on one reading while the
    answer comes from the other: the answer is taken from the reading that was hashed, and
    then differs from the lookup's own, so it is refused."""
    store = Disclosures(pg_url, KEY, blocks_from=1)
    ledger = Ledger(pg_url)
    try:
        for n in range(3):
            store.record(facts(n), pa.array(sample(n)))
            bind(ledger, store, f"drop-{n:03d}")
        tid = transfer_id(pg_url, "drop-001")
        first, hashes = blocks_of(pg_url, "drop-001")[0]
        victim_hash = blocks_of(pg_url, "drop-001")[2][1][:16]
        victim = next(p for p in sample(1) if subject_hash(KEY, p) == victim_hash)
        sql(
            pg_url,
            "DELETE FROM disclosure_blocks WHERE transfer_id = :t AND first_hash = :f",
            t=tid,
            f=first,
        )
        for at in range(0, len(hashes), 16):
            sql(
                pg_url,
                "INSERT INTO disclosures (subject_hash, transfer_id) VALUES (:h, :t)",
                h=hashes[at : at + 16],
                t=tid,
            )
        sql(pg_url, "ALTER TABLE disclosure_blocks RENAME TO real_blocks")
        # Shown only to a server-side cursor fetching 65,536 rows at a time: the re-reading.
        sql(
            pg_url,
            "CREATE VIEW disclosure_blocks AS SELECT * FROM real_blocks WHERE NOT ("  # noqa: S608
            f"transfer_id = {tid} AND position('\\x{victim_hash.hex()}'::bytea in hashes) > 0 "
            "AND current_query() NOT LIKE '%FETCH FORWARD 65536%')",
        )
        assert "drop-001" not in [d.drop_id for d in store.lookup(victim)]
        refused(store, ledger, victim)  # never an answer without drop-001
    finally:
        ledger.close()
        store.close()


def test_hashes_left_by_a_deleted_drop_are_not_a_new_drops(tmp_path: Path) -> None:
    """A drop removed by hand (or by an older version's discard, which knew no blocks) may
    leave blocks under its id where the foreign key is not enforced (SQLite), and SQLite
    would give the next drop that id again. The next drop takes an id above every one in use,
    so its record holds its own hashes only, and the ones left stay as they were found."""
    backend_url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = Disclosures(backend_url, KEY, blocks_from=1)
    ledger = Ledger(backend_url)
    try:
        store.record(facts(0, sent=False), pa.array(sample(0)))
        old = transfer_id(backend_url, "drop-000")
        left = blocks_of(backend_url, "drop-000")
        sql(backend_url, "DELETE FROM transfers WHERE id = :t", t=old)  # its blocks left
        store.record(facts(1), pa.array(sample(1)))
        bind(ledger, store, "drop-001")
        assert transfer_id(backend_url, "drop-001") == old + 1
        assert rows(backend_url, "disclosure_blocks") == 10  # the 5 left, and the new 5
        for person in PEOPLE:
            wanted = ["drop-001"] if person in sample(1) else []
            assert [d.drop_id for d in store.verified_lookup(person, ledger)[0]] == wanted
        engine = sa.create_engine(backend_url)
        with engine.connect() as conn:
            still = conn.execute(
                sa.text(
                    "SELECT first_hash, hashes FROM disclosure_blocks WHERE transfer_id = :t "
                    "ORDER BY first_hash"
                ),
                {"t": old},
            ).all()
        engine.dispose()
        assert [(bytes(f), bytes(h)) for f, h in still] == left  # kept as found
    finally:
        ledger.close()
        store.close()


def test_a_merge_the_database_fails_waits_and_the_drop_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database's own error in a merge's bulk insert (here an overflow raised by a
    trigger, standing in for a full disk or a lock) rolls the piece back and is logged; the
    run's drop is recorded, and a later run merges."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = Disclosures(url, KEY, blocks_from=1, merge_after=1)
    try:
        for n in range(2):
            store.record(facts(n), pa.array(sample(n)))
        sql(
            url,
            "CREATE TRIGGER boom AFTER INSERT ON disclosures_merged "
            "BEGIN SELECT abs(-9223372036854775807 - 1); END",
        )
        with caplog.at_level(logging.WARNING, logger="exchange.audit.disclosures"):
            assert store.record(facts(2), pa.array(sample(2))).subjects == 20
        assert "the disclosure merge failed (OperationalError)" in caplog.text
        assert rows(url, "disclosures_merged") == 0 and rows(url, "disclosure_blocks") == 15
        sql(url, "DROP TRIGGER boom")
        store.record(facts(3), pa.array(sample(3)))
        assert rows(url, "disclosures_merged") == 60
        for person, drops in carried_by(4).items():
            assert [d.drop_id for d in store.lookup(person)] == drops
    finally:
        store.close()
