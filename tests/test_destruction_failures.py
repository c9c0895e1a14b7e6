"""`partner expire` when a file will not go, on real folders and through the real command:
a file the system will not let it delete is recorded in the signed receipt and named in a
warning, every later drop is still destroyed, and the command exits non-zero; a warning says
which of the drop's files were left (the data file, the drop folder's, or both).

Files are made undeletable with `chattr +i` (the immutable attribute): the tests run as root,
and root ignores a folder's write permission but not an immutable file, which not even root
may unlink (EPERM). File systems without the attribute (tmpfs) skip these tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from exchange import destruction, keys
from exchange.crypto import signing
from exchange.manifest import MANIFEST_NAME, SIGNATURE_NAME, SSH_SIGNATURE_NAME
from exchange.receive import RECORD_NAME, received_drops

PAYLOAD = "data.csv.age"
DROPS = ("a-first-drop", "b-second-drop")  # expire goes through them in this order
LATE = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)  # after both drops' retention
ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` with the immutable attribute: unlink fails with EPERM, even for root."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    made = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A partner's output folder with two received drops past their retention, recorded as
    `receive` records them, each with its data file and its drop folder as received."""
    out = tmp_path / "received"
    out.mkdir()
    record: dict[str, Any] = {"drops": {}, "witness": {}}
    for drop_id in DROPS:
        folder = tmp_path / "inbox" / drop_id
        folder.mkdir(parents=True)
        document = json.dumps({"drop_id": drop_id}).encode()
        (folder / MANIFEST_NAME).write_bytes(document)
        for name in (PAYLOAD, SIGNATURE_NAME, SSH_SIGNATURE_NAME):
            (folder / name).write_bytes(b"ciphertext of " + drop_id.encode())
        output = f"{drop_id}.csv"
        (out / output).write_text("id,name\n1,someone\n")
        record["drops"][drop_id] = {
            "contract_id": "school-attendance-to-early-help",
            "created_at": "2027-01-01T00:00:00+00:00",
            "received_at": "2027-01-01T01:00:00+00:00",
            "retention": {"period": "30 d", "days": 30, "action": "delete", "grace_days": 7},
            "output": output,
            "payload": PAYLOAD,
            "manifest_sha256": hashlib.sha256(document).hexdigest(),
            "drop_folder": str(folder),
        }
    (out / RECORD_NAME).write_text(json.dumps(record))
    keys.generate("signing", tmp_path / "ack.key")
    return out


def data_file(out: Path, drop_id: str) -> Path:
    return out / f"{drop_id}.csv"


def drop_folder(out: Path, drop_id: str) -> Path:
    return out.parent / "inbox" / drop_id


def expire_command(out: Path) -> subprocess.CompletedProcess[str]:
    """`exchange partner expire`, run as a user runs it, its output read through pipes."""
    return subprocess.run(
        [sys.executable, "-m", "exchange", "partner", "expire", "--out", str(out), "--key",
         str(out.parent / "ack.key"), "--at", LATE.isoformat()],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip


def expire_here(out: Path) -> tuple[list[destruction.Destroyed], list[str]]:
    key = signing.load_private_key(out.parent / "ack.key", None)
    warnings: list[str] = []
    done = destruction.expire(out, key=key, outbox=None, now=LATE, on_skipped=warnings.append)
    return done, warnings


def receipt(out: Path, drop_id: str) -> dict[str, Any]:
    """The drop's receipt body, after checking its signature with the partner's public key."""
    key = signing.load_private_key(out.parent / "ack.key", None).public_key()
    name = destruction.receipt_name(drop_id)
    checked = destruction.verify(name, (out / name).read_bytes(), {signing.key_id(key): key})
    assert isinstance(checked, destruction.Receipt), checked
    return checked.body


def statuses(out: Path, drop_id: str) -> list[tuple[str, str]]:
    return [(d["name"], d["status"]) for d in receipt(out, drop_id)["deleted"]]


def second_drop_destroyed(out: Path) -> None:
    second = DROPS[1]
    assert not data_file(out, second).exists() and not drop_folder(out, second).exists()
    assert received_drops(out)[second]["destroyed_at"] == LATE.isoformat(timespec="seconds")
    assert {status for _, status in statuses(out, second)} == {"deleted"}


# -- a file the system will not delete ---------------------------------------------------------


def test_a_data_file_that_cannot_be_deleted_is_in_the_receipt_and_the_next_drop_still_goes(
    out: Path,
) -> None:
    """Before, the PermissionError escaped `expire` with a traceback: no receipt for this
    drop, and no later drop destroyed."""
    first = DROPS[0]
    with immutable(data_file(out, first)):
        ran = expire_command(out)
    assert "Traceback" not in ran.stderr
    assert ran.returncode == 1, ran.stderr  # FAILED: a refusal alone exits 0
    assert ran.stderr.splitlines() == [
        f"exchange: warning: drop {first}: its data file could not be deleted (permission "
        "denied) (its receipt says so); delete the drop's files by hand if they are still "
        "somewhere"
    ]
    assert f"drop {first} not fully destroyed (see the warning); signed receipt" in ran.stdout
    assert f"drop {DROPS[1]} destroyed; signed receipt" in ran.stdout
    assert data_file(out, first).read_text() == "id,name\n1,someone\n"  # still there
    assert statuses(out, first) == [
        (f"{first}.csv", "failed: permission denied"),
        (PAYLOAD, "deleted"),
        (SIGNATURE_NAME, "deleted"),
        (SSH_SIGNATURE_NAME, "deleted"),
        (MANIFEST_NAME, "deleted"),
    ]
    second_drop_destroyed(out)


def test_a_drop_folder_file_that_cannot_be_deleted_is_named_as_the_folders(out: Path) -> None:
    first = DROPS[0]
    with immutable(drop_folder(out, first) / SIGNATURE_NAME):
        done, warnings = expire_here(out)
        assert (drop_folder(out, first) / SIGNATURE_NAME).is_file()
    assert [(d.drop_id, d.failed) for d in done] == [(first, True), (DROPS[1], False)]
    assert warnings == [
        f"drop {first}: its data file is deleted, but some of its files in the drop folder "
        "could not be deleted (permission denied) (its receipt says so); delete the drop's "
        "files by hand if they are still somewhere"
    ]
    assert not data_file(out, first).exists()
    assert (SIGNATURE_NAME, "failed: permission denied") in statuses(out, first)
    second_drop_destroyed(out)


# -- the warning says which files were refused -------------------------------------------------


def test_a_data_file_that_is_a_link_is_the_only_file_the_warning_names(out: Path) -> None:
    """Before, this warned "its data file is deleted, but some of its files in the drop folder
    were not plain files": both halves false."""
    first = DROPS[0]
    elsewhere = out.parent / "someone-elses.csv"
    elsewhere.write_text("not the drop's")
    data_file(out, first).unlink()
    data_file(out, first).symlink_to(elsewhere)

    ran = expire_command(out)
    assert ran.returncode == 0, ran.stderr  # a refusal is the safe outcome
    assert ran.stderr.splitlines() == [
        f"exchange: warning: drop {first}: its data file is not a plain file (a link?) and was "
        "left (its receipt says so); delete the drop's files by hand if they are still somewhere"
    ]
    assert data_file(out, first).is_symlink() and elsewhere.read_text() == "not the drop's"
    assert not drop_folder(out, first).exists()  # the drop folder was fine, and is gone
    assert statuses(out, first)[0] == (f"{first}.csv", "refused: not a plain file")
    second_drop_destroyed(out)


def test_a_link_in_the_drop_folder_is_the_only_file_the_warning_names(out: Path) -> None:
    first = DROPS[0]
    link = drop_folder(out, first) / SSH_SIGNATURE_NAME
    link.unlink()
    link.symlink_to(out.parent / "nowhere")
    done, warnings = expire_here(out)
    assert warnings == [
        f"drop {first}: its data file is deleted, but some of its files in the drop folder "
        "were not plain files and were left (its receipt says so); delete the drop's files by "
        "hand if they are still somewhere"
    ]
    assert not any(d.failed for d in done)
    assert link.is_symlink() and not data_file(out, first).exists()


def test_when_both_are_refused_the_warning_names_both(out: Path) -> None:
    first = DROPS[0]
    data_file(out, first).unlink()
    data_file(out, first).symlink_to(out.parent / "nowhere")
    (drop_folder(out, first) / MANIFEST_NAME).unlink()
    _, warnings = expire_here(out)
    assert warnings == [
        f"drop {first}: its data file is not a plain file (a link?) and was left; the drop "
        "folder its record names holds no manifest, so nothing there was deleted (its receipt "
        "says so); delete the drop's files by hand if they are still somewhere"
    ]


def test_a_drop_with_nothing_refused_warns_of_nothing(out: Path) -> None:
    ran = expire_command(out)
    assert (ran.returncode, ran.stderr) == (0, "")
    assert all(not data_file(out, d).exists() for d in DROPS)


# -- the output folder itself ------------------------------------------------------------------


def test_an_output_folder_that_cannot_be_written_is_one_line_not_a_traceback(out: Path) -> None:
    """Nothing can be recorded there (no receipt, no record): the command says so and fails."""
    with immutable(out):
        ran = expire_command(out)
        assert all(data_file(out, d).exists() for d in DROPS)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert ran.stderr == (
        "exchange: file: Operation not permitted: .received.lock in --out; make it writable "
        "and run again\n"
    )
    assert "destroyed_at" not in received_drops(out)[DROPS[0]]
