"""Export of the ledger to one file, verified offline with only the gateway's public key."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from audit_fixtures import ORIGIN
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import Ledger, verify_export
from exchange.errors import LedgerError

Lines = list[dict]


def make_export(url: str, key: Ed25519PrivateKey, public_key_file: Path, out: Path) -> Path:
    """A ledger of 12 entries with checkpoints at 5 and 10, exported to `out`."""
    ledger = Ledger(url)
    for i in range(1, 13):
        ledger.append("step", {"n": i, "name": "Zoë"}, run_id=f"r{i}", contract_id="c")
        if i in (5, 10):
            ledger.checkpoint(key, ORIGIN)
    ledger.export(out, public_key_file.read_text())
    ledger.close()
    return out


def read(path: Path) -> Lines:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write(path: Path, lines: Lines) -> None:
    path.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in lines), "utf-8")


@pytest.fixture
def exported(
    backend_url: str, tmp_path: Path, gateway_key: Ed25519PrivateKey, public_key_file: Path
) -> Path:
    return make_export(backend_url, gateway_key, public_key_file, tmp_path / "audit.jsonl")


def test_export_is_one_private_self_contained_file(exported: Path, public_key_file: Path) -> None:
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    lines = read(exported)
    header = lines[0]
    assert header["format"] == "exchange-audit-ledger" and header["version"] == 1
    assert (header["entries"], header["checkpoints"]) == (12, 2)
    assert header["public_key"] == public_key_file.read_text().strip()
    assert [list(v) for v in lines[1:3]] == [["checkpoint"], ["checkpoint"]]
    assert [v["entry"]["seq"] for v in lines[3:]] == list(range(1, 13))
    assert header["head"] == lines[-1]["entry"]["entry_hash"]
    assert lines[5]["entry"]["body"] == '{"n":3,"name":"Zoë"}'


def test_export_verifies_offline_without_the_database(
    exported: Path, public_key_file: Path, tmp_path: Path
) -> None:
    for db in tmp_path.glob("audit.db*"):
        db.unlink()  # no database anywhere: the file and the key are enough
    result = verify_export(exported, public_key_file)
    assert result.ok, result.message
    assert (result.entries, result.checkpoints, result.signed_size) == (12, 2, 10)
    assert result.signatures_checked


def test_export_refuses_to_overwrite(exported: Path, public_key_file: Path, tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(FileExistsError):
        ledger.export(exported, public_key_file.read_text())
    ledger.close()


def _edit_body(lines: Lines) -> None:
    lines[7]["entry"]["body"] = '{"n":5,"name":"Someone else"}'


def _delete_middle(lines: Lines) -> None:
    del lines[6]


def _delete_tail(lines: Lines) -> None:
    del lines[-5:]  # entries 8..12, below the checkpoint of size 10
    lines[0]["entries"] = 7


def _swap(lines: Lines) -> None:
    """Entries 2 and 3 change places, renumbered so the sequence has no gap."""
    lines[4], lines[5] = lines[5], lines[4]
    lines[4]["entry"]["seq"], lines[5]["entry"]["seq"] = 2, 3


def _drop_checkpoint_line(lines: Lines) -> None:
    del lines[2]


def _rewrite_checkpoint(lines: Lines) -> None:
    lines[1]["checkpoint"]["note"] = lines[1]["checkpoint"]["note"].replace("\n5\n", "\n4\n")


def _malformed_entry(lines: Lines) -> None:
    lines[6]["entry"]["seq"] = "4"


@pytest.mark.parametrize(
    ("change", "broken_at", "reason"),
    [
        (_edit_body, 5, "content altered"),
        (_delete_middle, 4, "entry missing (sequence gap)"),
        (_delete_tail, 8, "newest entries deleted"),
        (_swap, 2, "does not follow"),
        (_drop_checkpoint_line, None, "the export is incomplete"),
        (_rewrite_checkpoint, None, "checkpoint 1 (size 5): signature by"),
        (_malformed_entry, 4, "line 7 is not a valid entry"),
    ],
)
def test_a_tampered_export_names_the_first_problem(
    exported: Path,
    public_key_file: Path,
    change: Callable[[Lines], None],
    broken_at: int | None,
    reason: str,
) -> None:
    lines = read(exported)
    change(lines)
    write(exported, lines)
    result = verify_export(exported, public_key_file)
    assert not result.ok
    assert result.broken_at == broken_at
    assert reason in result.reason


def test_a_rewritten_export_with_a_stripped_checkpoint_is_caught_by_a_held_one(
    tmp_path: Path, gateway_key: Ed25519PrivateKey, public_key_file: Path
) -> None:
    """Everything after entry 6 rewritten and the checkpoints removed: the export alone looks
    fine, but not beside a checkpoint a partner kept."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    out = make_export(url, gateway_key, public_key_file, tmp_path / "good.jsonl")
    held = [c["checkpoint"]["note"] for c in read(out)[1:3]]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_checkpoints")
        conn.exec_driver_sql("DELETE FROM audit_ledger WHERE seq > 6")
    engine.dispose()
    ledger = Ledger(url)
    for i in range(7, 13):
        ledger.append("step", {"n": i, "name": "rewritten"}, run_id=f"r{i}", contract_id="c")
    ledger.export(tmp_path / "replayed.jsonl", public_key_file.read_text())
    ledger.close()
    assert verify_export(tmp_path / "replayed.jsonl", public_key_file).ok
    result = verify_export(tmp_path / "replayed.jsonl", public_key_file, held=held)
    assert (result.broken_at, result.signed_size) == (6, 5)
    assert "entries 6..10 differ from held checkpoint 2 (size 10)" in result.reason
    short = verify_export(tmp_path / "replayed.jsonl", public_key_file, held=held[:1])
    assert short.ok and short.signed_size == 5


def test_the_wrong_key_or_a_forged_key_line_is_refused(
    exported: Path, tmp_path: Path, gateway_key: Ed25519PrivateKey
) -> None:
    from cryptography.hazmat.primitives import serialization

    other = Ed25519PrivateKey.generate().public_key()
    other_file = tmp_path / "other.pub"
    other_file.write_text(
        other.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
    )
    result = verify_export(exported, other_file)
    assert not result.ok and "the export was made for key ed25519:" in result.reason
    lines = read(exported)
    lines[0]["public_key"] = other_file.read_text()  # claims the other key: signatures fail
    write(exported, lines)
    assert "no signature by" in verify_export(exported, other_file).reason


def test_files_that_are_not_exports_are_refused(tmp_path: Path, public_key_file: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LedgerError, match="is empty"):
        verify_export(empty, public_key_file)
    other = tmp_path / "other.jsonl"
    other.write_text('{"format": "something else"}\n')
    with pytest.raises(LedgerError, match="not an audit ledger export"):
        verify_export(other, public_key_file)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json\n")
    with pytest.raises(LedgerError, match="line 1 is not JSON"):
        verify_export(broken, public_key_file)
    with pytest.raises(LedgerError, match="cannot read export"):
        verify_export(tmp_path / "missing.jsonl", public_key_file)
