"""Signed checkpoints catch what the hash chain cannot: deleted newest entries, a rewritten
chain, a replayed old copy; plus ranged verification and inclusion proofs. Real SQLite files
and a real private PostgreSQL server."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from audit_fixtures import ORIGIN
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import (
    Entry,
    InclusionProof,
    Ledger,
    merkle,
    verify_checkpoint_consistency,
    verify_consistency,
    verify_export,
    verify_inclusion,
)
from exchange.audit.checkpoint import sign_checkpoint
from exchange.audit.ledger import GENESIS
from exchange.errors import LedgerError


def fill(ledger: Ledger, count: int, *, start: int = 1) -> list[Entry]:
    """Append `count` entries numbered from `start` in their bodies."""
    return [
        ledger.append("step", {"n": i, "rows": i * 10}, run_id=f"run-{i}", contract_id="c-1")
        for i in range(start, start + count)
    ]


def tamper(url: str, *statements: str) -> None:
    """Change the tables directly, as someone with database access could."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def rewrite(url: str, ledger: Ledger, *, seq: int, body: dict) -> None:
    """Edit entry `seq` and recompute every hash from there on: a chain that still links."""
    prev = GENESIS
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for entry in list(ledger.entries()):
            new_body = json.dumps(body, sort_keys=True, separators=(",", ":"))
            draft = Entry(
                **{
                    **entry.__dict__,
                    "body": new_body if entry.seq == seq else entry.body,
                    "prev_hash": prev,
                    "entry_hash": "",
                }
            )
            forged = Entry(**{**draft.__dict__, "entry_hash": draft.computed_hash()})
            conn.execute(
                sa.text(
                    "UPDATE audit_ledger SET body = :body, prev_hash = :prev_hash, "
                    "entry_hash = :entry_hash WHERE seq = :seq"
                ),
                {
                    "body": forged.body,
                    "prev_hash": forged.prev_hash,
                    "entry_hash": forged.entry_hash,
                    "seq": forged.seq,
                },
            )
            prev = forged.entry_hash
    engine.dispose()


@pytest.fixture
def ledger(backend_url: str) -> Iterator[Ledger]:
    ledger = Ledger(backend_url)
    yield ledger
    ledger.close()


def test_checkpoint_signs_the_merkle_root_of_every_entry(
    ledger: Ledger, gateway_key: Ed25519PrivateKey
) -> None:
    made = fill(ledger, 5)
    checkpoint = ledger.checkpoint(gateway_key, ORIGIN)
    expected = merkle.root([merkle.leaf_hash(bytes.fromhex(e.entry_hash)) for e in made])
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, 5, expected)
    assert checkpoint.created_at
    assert ledger.root() == expected == ledger.root(5)
    assert ledger.checkpoints() == [checkpoint]
    assert ledger.latest_checkpoint(gateway_key.public_key()) == checkpoint
    again = ledger.checkpoint(gateway_key, ORIGIN)  # nothing new: the same checkpoint
    assert again == checkpoint and len(ledger.checkpoints()) == 1
    result = ledger.verify(public_key=gateway_key.public_key())
    assert result.ok and (result.entries, result.checkpoints, result.signed_size) == (5, 1, 5)
    assert result.signatures_checked
    assert result.message == f"5 entries verified; entries 1..5 signed; head {made[-1].entry_hash}"


def test_an_empty_ledger_can_be_checkpointed(
    ledger: Ledger, gateway_key: Ed25519PrivateKey
) -> None:
    checkpoint = ledger.checkpoint(gateway_key, ORIGIN)
    assert (checkpoint.size, checkpoint.root) == (0, merkle.EMPTY_ROOT)
    assert ledger.verify(public_key=gateway_key.public_key()).ok


def test_deleted_newest_entries_are_detected_after_a_checkpoint(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    fill(ledger, 8)
    ledger.checkpoint(gateway_key, ORIGIN)
    tamper(backend_url, "DELETE FROM audit_ledger WHERE seq >= 7")
    for key in (gateway_key.public_key(), None):
        result = ledger.verify(public_key=key)
        assert (result.ok, result.broken_at, result.entries) == (False, 7, 6)
        assert "ends at entry 6" in result.reason and "newest entries deleted" in result.reason
        assert result.message.startswith("entry 7: entry missing")


def test_deleted_entries_replaced_by_new_ones_are_detected(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    """Deleting 7..8 and appending two others keeps the size: the root tells."""
    fill(ledger, 5)
    ledger.checkpoint(gateway_key, ORIGIN)
    fill(ledger, 3, start=6)
    ledger.checkpoint(gateway_key, ORIGIN)
    tamper(backend_url, "DELETE FROM audit_ledger WHERE seq >= 7")
    fill(ledger, 2, start=70)
    result = ledger.verify(public_key=gateway_key.public_key())
    assert (result.broken_at, result.checkpoints, result.signed_size) == (6, 1, 5)
    assert result.reason.startswith("entries 6..8 differ from checkpoint 2 (size 8)")
    with pytest.raises(LedgerError, match="will not sign"):
        ledger.checkpoint(gateway_key, ORIGIN)


def test_a_rewritten_chain_with_recomputed_hashes_is_detected(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    fill(ledger, 6)
    ledger.checkpoint(gateway_key, ORIGIN)
    rewrite(backend_url, ledger, seq=2, body={"n": 2, "rows": 0})
    assert ledger.verify(to_seq=6, from_seq=2).ok  # the chain alone links up again
    result = ledger.verify(public_key=gateway_key.public_key())
    assert (result.broken_at, result.entries) == (1, 6)
    assert "entries 1..6 differ from checkpoint 1 (size 6)" in result.reason
    assert "rewritten" in result.reason


def test_a_forged_checkpoint_does_not_pass_with_the_gateway_key(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    """Someone who rewrites the chain cannot sign a matching checkpoint with our key."""
    fill(ledger, 4)
    ledger.checkpoint(gateway_key, ORIGIN)
    rewrite(backend_url, ledger, seq=3, body={"n": 3, "rows": 0})
    forged = sign_checkpoint(ORIGIN, 4, ledger.root(), Ed25519PrivateKey.generate())
    tamper(
        backend_url,
        f"UPDATE audit_checkpoints SET note = '{forged.note}', "  # noqa: S608
        f"root = '{forged.root_hex}'",
    )
    assert ledger.verify().ok  # without the key a forged row cannot be told from ours...
    result = ledger.verify(public_key=gateway_key.public_key())  # ...with it, it can
    assert (result.ok, result.broken_at) == (False, None)
    assert result.reason.startswith("checkpoint 1 (size 4): no signature by")
    assert result.message == result.reason


def test_a_checkpoint_row_that_differs_from_its_note_is_detected(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    fill(ledger, 3)
    ledger.checkpoint(gateway_key, ORIGIN)
    tamper(backend_url, "UPDATE audit_checkpoints SET tree_size = 2")
    result = ledger.verify(public_key=gateway_key.public_key())
    assert "differs from its signed note" in result.reason and not result.ok


def test_checkpoint_refuses_a_ledger_that_does_not_verify(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    fill(ledger, 3)
    tamper(backend_url, """UPDATE audit_ledger SET body = '{"n":0}' WHERE seq = 2""")
    with pytest.raises(LedgerError, match="entry 2: content altered"):
        ledger.checkpoint(gateway_key, ORIGIN)
    assert ledger.checkpoints() == []


def test_ranged_verification_names_the_first_broken_entry(ledger: Ledger, backend_url: str) -> None:
    fill(ledger, 8)
    result = ledger.verify(3, 6)
    assert (result.ok, result.entries) == (True, 4)
    tamper(backend_url, """UPDATE audit_ledger SET body = '{"n":5}' WHERE seq = 5""")
    result = ledger.verify(3, 6)
    assert (result.broken_at, result.reason, result.entries) == (
        5,
        "content altered (hash mismatch)",
        2,
    )
    assert ledger.verify(6, 8).ok  # entries after it still link to its stored hash
    assert ledger.verify(1, 4).ok
    tamper(backend_url, "DELETE FROM audit_ledger WHERE seq = 2")
    assert ledger.verify(3).broken_at == 2  # the entry before the range is needed
    assert ledger.verify(to_seq=4).broken_at == 2


def test_a_replayed_old_copy_is_caught_by_a_newer_held_checkpoint(
    tmp_path: Path, gateway_key: Ed25519PrivateKey
) -> None:
    """The operator restores last month's SQLite file: it verifies on its own, but not against
    the checkpoint a partner holds."""
    db = tmp_path / "audit.db"
    url, key = f"sqlite:///{db}", gateway_key.public_key()
    ledger = Ledger(url)
    fill(ledger, 10)
    held_old = ledger.checkpoint(gateway_key, ORIGIN).note  # partners got this one...
    ledger.close()
    shutil.copy(db, tmp_path / "old-copy.db")
    ledger = Ledger(url)
    fill(ledger, 10, start=11)
    held_new = ledger.checkpoint(gateway_key, ORIGIN).note  # ...and later this one
    assert verify_consistency(held_old, ledger, key).size == 20
    ledger.close()

    shutil.copy(tmp_path / "old-copy.db", db)  # the replay
    ledger = Ledger(url)
    assert ledger.verify(public_key=key).ok  # self-consistent: only held checkpoints tell
    with pytest.raises(LedgerError, match="holds 10 entries, fewer than the 20"):
        verify_consistency(held_new, ledger, key)
    assert verify_consistency(held_old, ledger, key).size == 10

    fill(ledger, 15, start=100)  # the operator carries on over the old copy...
    ledger.checkpoint(gateway_key, ORIGIN)
    with pytest.raises(LedgerError, match=r"entries 1\.\.20 differ from the held checkpoint"):
        verify_consistency(held_new, ledger, key)
    assert verify_consistency(held_old, ledger, key).size == 25
    assert ledger.verify(public_key=key).ok  # the ledger alone cannot tell
    ledger.close()


def test_consistency_with_held_checkpoints_on_both_backends(
    ledger: Ledger, backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    key = gateway_key.public_key()
    fill(ledger, 5)
    five = ledger.checkpoint(gateway_key, ORIGIN)
    fill(ledger, 7, start=6)
    assert verify_consistency(five.note, ledger, key).note == five.note  # newest signed one
    twelve = ledger.checkpoint(gateway_key, ORIGIN)
    assert verify_consistency(five.note, ledger, key) == twelve
    proof = ledger.prove_consistency(5, 12)
    old, new = verify_checkpoint_consistency(five.note, twelve.note, proof, key)
    assert (old.size, new.size) == (5, 12)
    with pytest.raises(LedgerError, match="does not extend"):
        verify_checkpoint_consistency(five.note, twelve.note, proof[1:], key)
    with pytest.raises(LedgerError, match="fewer than"):
        verify_checkpoint_consistency(twelve.note, five.note, proof, key)
    tamper(backend_url, "DELETE FROM audit_checkpoints")  # the ledger's own are gone...
    unsigned = verify_consistency(twelve.note, ledger, key)  # ...so: the current tree
    assert (unsigned.size, unsigned.note, unsigned.root) == (12, "", twelve.root)
    ledger.checkpoint(gateway_key, ORIGIN)
    tamper(backend_url, "DELETE FROM audit_ledger WHERE seq > 8")
    with pytest.raises(LedgerError, match="fewer than its own checkpoint of size 12"):
        verify_consistency(five.note, ledger, key)


def test_inclusion_proofs_verify_against_the_signed_checkpoint(
    ledger: Ledger, gateway_key: Ed25519PrivateKey
) -> None:
    key = gateway_key.public_key()
    made = fill(ledger, 11)
    with pytest.raises(LedgerError, match="make a checkpoint first"):
        ledger.prove_inclusion(3)
    checkpoint = ledger.checkpoint(gateway_key, ORIGIN)
    fill(ledger, 2, start=12)
    for entry in made:
        proof = ledger.prove_inclusion(entry.seq)
        assert (proof.seq, proof.entry_hash, proof.tree_size) == (entry.seq, entry.entry_hash, 11)
        assert InclusionProof.from_dict(json.loads(json.dumps(proof.to_dict()))) == proof
        assert verify_inclusion(proof, checkpoint.note, key).note == checkpoint.note
    proof = ledger.prove_inclusion(4)
    wrong_entry = InclusionProof(4, made[4].entry_hash, 11, proof.path)
    with pytest.raises(LedgerError, match="is not in the signed tree of size 11"):
        verify_inclusion(wrong_entry, checkpoint.note, key)
    altered = InclusionProof(4, proof.entry_hash, 11, (proof.path[0][::-1], *proof.path[1:]))
    with pytest.raises(LedgerError, match="not in the signed tree"):
        verify_inclusion(altered, checkpoint.note, key)
    with pytest.raises(LedgerError, match="size 13"):
        verify_inclusion(ledger.prove_inclusion(4, 13), checkpoint.note, key)
    with pytest.raises(LedgerError, match=r"does not verify|no signature"):
        verify_inclusion(proof, checkpoint.note.replace("\n11\n", "\n12\n"), key)
    with pytest.raises(LedgerError, match="malformed"):
        InclusionProof.from_dict({"seq": 1, "entry_hash": "zz", "tree_size": 1, "path": []})
    with pytest.raises(LedgerError, match="not within"):
        ledger.prove_inclusion(14, 13)


def test_a_ledger_from_before_checkpoints_still_verifies_and_exports(
    tmp_path: Path, public_key_file: Path
) -> None:
    """An older ledger file (no checkpoint table) opened read-only, as `audit verify` does."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ledger = Ledger(url)
    fill(ledger, 3)
    ledger.close()
    tamper(url, "DROP TABLE audit_checkpoints")
    reader = Ledger(url, create=False)
    assert reader.verify().ok and reader.checkpoints() == []
    reader.export(tmp_path / "old.jsonl", public_key_file.read_text())
    reader.close()
    assert verify_export(tmp_path / "old.jsonl", public_key_file).entries == 3


@pytest.mark.parametrize(
    ("sql_type", "reason"),
    [
        # Second review: a Decimal (not JSON) made verify crash instead of failing.
        ("numeric", "sequence number is not an integer"),
        # The view's cheap check, and a full verify, met a database error (comparisons no
        # longer type-check): a server error on the page.
        ("text", "a column of audit_ledger was altered"),
    ],
)
def test_a_sequence_column_retyped_fails_verification_by_name(
    pg_url: str, sql_type: str, reason: str
) -> None:
    """On PostgreSQL whoever owns the table can retype `seq`: verify, and the view's cheap
    check between full reads, fail by name instead of crashing."""
    ledger = Ledger(pg_url)
    try:
        fill(ledger, 4)
        _, mark = ledger.verify_from(None)
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE audit_ledger ALTER COLUMN seq TYPE {sql_type}")
        engine.dispose()
        result = ledger.verify()
        assert not result.ok and result.broken_at == 1
        assert reason in result.reason
        cheap, kept = ledger.verify_from(mark)  # the view's check between full reads, too
        assert not cheap.ok and reason in cheap.reason
        assert kept == mark
    finally:
        ledger.close()
