"""`Ledger.verify_from`: a verified prefix resumed cheaply, and every way a ledger can stop
extending it between two calls (someone with write access to the database in between).
Real SQLite files (and the main cases on a real private PostgreSQL server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from audit_fixtures import ORIGIN, counting
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import Ledger, merkle
from exchange.audit.entry import seal
from exchange.audit.ledger import GENESIS, Verified
from exchange.audit.storage import BLOCK, entries


def fill(ledger: Ledger, count: int, *, start: int = 1) -> None:
    for i in range(start, start + count):
        ledger.append("step", {"n": i}, run_id=f"run-{i}", contract_id="c-1")


def tamper(url: str, *statements: str) -> None:
    """Change the tables directly, as someone with database access could."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def rewrite_from(url: str, ledger: Ledger, seq: int) -> None:
    """Edit entry `seq` and recompute every hash after it: a chain that links and hashes."""
    prev = next(ledger.entries(since=seq - 1, until=seq - 1)).entry_hash if seq > 1 else GENESIS
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for entry in list(ledger.entries(since=seq)):
            body = json.loads(entry.body)
            if entry.seq == seq:
                body = {**body, "n": -1}
            forged = seal(
                entry.seq,
                prev,
                recorded_at=entry.recorded_at,
                event=entry.event,
                body=body,
                run_id=entry.run_id,
                contract_id=entry.contract_id,
            )
            conn.execute(
                sa.text(
                    "UPDATE audit_ledger SET body = :b, prev_hash = :p, entry_hash = :h "
                    "WHERE seq = :s"
                ),
                {"b": forged.body, "p": forged.prev_hash, "h": forged.entry_hash, "s": entry.seq},
            )
            prev = forged.entry_hash
    engine.dispose()


@pytest.fixture
def ledger(backend_url: str, tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(backend_url, anchor=tmp_path / "anchor")
    yield ledger
    ledger.close()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[tuple[Ledger, str]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url, anchor=tmp_path / "anchor")
    yield ledger, url
    ledger.close()


def verified(ledger: Ledger, key: Ed25519PrivateKey, count: int) -> Verified:
    """A ledger of `count` entries with a checkpoint handed out, verified whole; the mark."""
    fill(ledger, count)
    ledger.checkpoint(key, ORIGIN)
    result, mark = ledger.verify_from(None, public_key=key.public_key(), origin=ORIGIN)
    assert result.ok and mark is not None and mark.size == count
    assert result == ledger.verify(public_key=key.public_key(), origin=ORIGIN)
    return mark


def test_entries_appended_normally_are_all_that_is_read(
    ledger: Ledger, gateway_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = verified(ledger, gateway_key, BLOCK + 10)
    fill(ledger, BLOCK, start=BLOCK + 11)  # completes a second block: its node is stored
    read = counting(ledger, monkeypatch)
    result, after = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert read == list(range(BLOCK + 10, 2 * BLOCK + 11))  # the verified head, then the new
    assert result.ok and after is not None and after.size == 2 * BLOCK + 10
    assert after.full_at == mark.full_at  # not a full verification: its age is the mark's
    monkeypatch.undo()
    assert result == ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)
    tree = merkle.RootBuilder()
    for leaf in ledger.leaves():
        tree.append(leaf)
    assert after.edge == tuple(tree.edge)  # the right edge of the whole tree, from the new leaves
    again, last = ledger.verify_from(after, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert again.ok and last == after  # nothing new: the same mark


def test_a_rewrite_below_the_verified_head_fails_on_the_next_call(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    """Hashes recomputed to the head, so the chain links; no checkpoint covers entry 12, so a
    full verification alone passes: the verified head's hash is what tells."""
    mark = verified(ledger, gateway_key, 10)
    fill(ledger, 5, start=11)
    result, mark = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert result.ok and mark is not None and mark.size == 15
    rewrite_from(backend_url, ledger, 12)
    assert ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN).ok
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert (result.ok, result.broken_at, kept) == (False, 15, mark)
    assert "history below the verified head rewritten" in result.reason
    # It keeps failing, also when the whole is read again (as the view does every few
    # minutes), and when a checkpoint signed since makes that read necessary anyway.
    again, _ = ledger.verify_from(kept, public_key=gateway_key.public_key(), origin=ORIGIN)
    whole, _ = ledger.verify_from(
        kept, whole=True, public_key=gateway_key.public_key(), origin=ORIGIN
    )
    ledger.checkpoint(gateway_key, ORIGIN)  # entries 1..10 unchanged: the signer agrees
    signed, _ = ledger.verify_from(kept, public_key=gateway_key.public_key(), origin=ORIGIN)
    for later in (again, whole, signed):
        assert (later.ok, later.broken_at, later.reason) == (False, 15, result.reason)


def test_a_rewrite_a_checkpoint_covers_fails_as_a_full_verification_does(
    sqlite_ledger: tuple[Ledger, str], gateway_key: Ed25519PrivateKey
) -> None:
    ledger, url = sqlite_ledger
    mark = verified(ledger, gateway_key, 10)
    rewrite_from(url, ledger, 4)
    full = ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert not full.ok and result == full and kept == mark
    assert result.message.startswith("entry 1: entries 1..10 differ from")


@pytest.mark.parametrize(
    ("statement", "broken_at"),
    [
        ("DELETE FROM audit_ledger WHERE seq = 5", 5),  # below the head: a gap
        ("DELETE FROM audit_ledger WHERE seq = 10", 10),  # the verified head itself
        ("UPDATE audit_ledger SET body = '{\"n\":99}' WHERE seq = 10", 10),  # head edited
    ],
)
def test_an_entry_deleted_or_the_head_edited_fails_as_a_full_verification_does(
    sqlite_ledger: tuple[Ledger, str],
    gateway_key: Ed25519PrivateKey,
    statement: str,
    broken_at: int,
) -> None:
    ledger, url = sqlite_ledger
    mark = verified(ledger, gateway_key, 10)
    fill(ledger, 3, start=11)
    tamper(url, statement)
    full = ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert (result, kept) == (full, mark)
    assert not result.ok and result.broken_at == broken_at


def test_a_truncated_ledger_fails_even_where_no_checkpoint_covers_the_lost_entries(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    mark = verified(ledger, gateway_key, 6)
    fill(ledger, 6, start=7)
    result, mark = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert result.ok and mark is not None
    tamper(backend_url, "DELETE FROM audit_ledger WHERE seq > 9")
    assert ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN).ok
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert (result.ok, result.broken_at, kept) == (False, 10, mark)
    assert "the ledger ends at entry 9 but entries 1..12 verified before" in result.reason
    whole, _ = ledger.verify_from(mark, whole=True, public_key=gateway_key.public_key())
    assert whole.ok  # other options (no origin): the whole is verified, with no mark to extend
    whole, _ = ledger.verify_from(
        mark, whole=True, public_key=gateway_key.public_key(), origin=ORIGIN
    )
    assert (whole.ok, whole.reason) == (False, result.reason)


def test_a_forged_append_that_does_not_chain_fails(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    mark = verified(ledger, gateway_key, 5)
    forged = seal(6, "ab" * 32, recorded_at="2026-01-01T00:00:00", event="step", body={})
    engine = sa.create_engine(backend_url)
    with engine.begin() as conn:
        conn.execute(entries.insert().values(**forged.columns()))
    engine.dispose()
    full = ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert (result, kept) == (full, mark)
    assert result.message == "entry 6: does not follow the entry before it"


def test_a_checkpoint_signed_in_between_is_verified_whole_and_counted(
    sqlite_ledger: tuple[Ledger, str], gateway_key: Ed25519PrivateKey
) -> None:
    ledger, _ = sqlite_ledger
    mark = verified(ledger, gateway_key, 4)
    fill(ledger, 3, start=5)
    ledger.checkpoint(gateway_key, ORIGIN)
    result, after = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert result.ok and (result.checkpoints, result.signed_size) == (4, 7)  # 2 stored, 2 handed
    assert after is not None and after.sealed != mark.sealed


def test_an_altered_stored_node_fails_as_a_full_verification_does(
    sqlite_ledger: tuple[Ledger, str], gateway_key: Ed25519PrivateKey
) -> None:
    ledger, url = sqlite_ledger
    mark = verified(ledger, gateway_key, BLOCK + 1)
    tamper(url, "UPDATE audit_merkle_nodes SET hash = '" + "00" * 32 + "' WHERE level = 8")
    full = ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert (result, kept) == (full, mark) and "stored Merkle node at level 8" in result.reason


def test_other_options_or_no_key_verify_the_whole_again(
    sqlite_ledger: tuple[Ledger, str], gateway_key: Ed25519PrivateKey
) -> None:
    ledger, _ = sqlite_ledger
    mark = verified(ledger, gateway_key, 3)
    result, after = ledger.verify_from(mark)  # no key: not what the mark was made with
    assert result.ok and not result.signatures_checked
    assert after is not None and after.full_at >= mark.full_at and after.options != mark.options


def test_an_old_entry_edited_in_place_is_found_only_by_reading_every_entry(
    sqlite_ledger: tuple[Ledger, str], gateway_key: Ed25519PrivateKey
) -> None:
    """The boundary the docs state: a mark vouches for entries it does not read again, so a
    body edited in place below the verified head (the chain left broken there) is found by
    the next full verification, not by the cheap call."""
    ledger, url = sqlite_ledger
    mark = verified(ledger, gateway_key, 10)
    tamper(url, "UPDATE audit_ledger SET body = '{\"n\":99}' WHERE seq = 3")
    cheap, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert cheap.ok and kept == mark
    full, kept = ledger.verify_from(
        mark, whole=True, public_key=gateway_key.public_key(), origin=ORIGIN
    )
    assert (full.ok, full.broken_at, kept) == (False, 3, mark)
    assert full == ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)


def test_an_empty_ledger_verified_then_appended_to(
    sqlite_ledger: tuple[Ledger, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, _ = sqlite_ledger
    result, mark = ledger.verify_from(None)
    assert result.ok and mark is not None and (mark.size, mark.head) == (0, GENESIS)
    fill(ledger, BLOCK + 1)
    read = counting(ledger, monkeypatch)
    result, after = ledger.verify_from(mark)
    assert read == list(range(1, BLOCK + 2)) and after is not None and after.full_at == mark.full_at
    monkeypatch.undo()
    assert result == ledger.verify() and result.entries == BLOCK + 1


# The key and column type are what make a count prove "no gap": rebuilt without them (CREATE
# TABLE AS copies rows, not constraints), a row can stand twice where another was deleted.
UNKEYED = (
    "CREATE TABLE audit_copy AS SELECT * FROM audit_ledger",
    "DROP TABLE audit_ledger",
    "ALTER TABLE audit_copy RENAME TO audit_ledger",
    "DELETE FROM audit_ledger WHERE seq = 5",
)


@pytest.mark.parametrize(
    ("copied", "broken_at"),
    [
        ("INSERT INTO audit_ledger SELECT * FROM audit_ledger WHERE seq = 13", 5),  # the head
        # below the head: the full read, in order, finds the second 3 where 4 should be
        ("INSERT INTO audit_ledger SELECT * FROM audit_ledger WHERE seq = 3", 4),
    ],
)
def test_an_entry_deleted_and_another_copied_in_a_table_without_its_key_fails(
    ledger: Ledger,
    backend_url: str,
    gateway_key: Ed25519PrivateKey,
    copied: str,
    broken_at: int,
) -> None:
    mark = verified(ledger, gateway_key, 10)
    fill(ledger, 3, start=11)
    result, mark = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert result.ok and mark is not None
    ledger.close()  # the table is dropped and replaced under it
    tamper(backend_url, *UNKEYED, copied)
    full = ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)
    assert full.message == f"entry {broken_at}: entry missing (sequence gap)"
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert (result, kept) == (full, mark)


def test_an_entry_renumbered_between_two_others_fails(
    sqlite_ledger: tuple[Ledger, str], gateway_key: Ed25519PrivateKey
) -> None:
    """4.5 is not 5, yet SQLite keeps it in a BIGINT primary key (PostgreSQL's bigint won't)."""
    ledger, url = sqlite_ledger
    mark = verified(ledger, gateway_key, 10)
    tamper(url, "UPDATE audit_ledger SET seq = 4.5 WHERE seq = 5")
    full = ledger.verify(public_key=gateway_key.public_key(), origin=ORIGIN)
    assert not full.ok
    result, kept = ledger.verify_from(mark, public_key=gateway_key.public_key(), origin=ORIGIN)
    assert (result, kept) == (full, mark)
