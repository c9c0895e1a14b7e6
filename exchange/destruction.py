"""Destruction receipts: the partner's signed statement that a drop was deleted when its
retention ended, and the sender's check of it.

`exchange receive` records each drop's retention (the manifest's `retention`) and where it read
the drop from. `expire` deletes, once `created_at` + `retention.days` has passed, the plaintext
the partner wrote and the drop's files it read (ciphertext, signatures, the manifest last; only
from a folder whose manifest is still the one received), then signs a receipt with the
partner's acknowledgement key and puts it beside the acknowledgements on the sender's server
as `<drop id>.destroyed.json`. The file is an envelope like an acknowledgement's: {"body":
{...}, "signature": base64 Ed25519 over the body's canonical JSON}; docs/formats.md.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange import acks, manifest
from exchange.acks import AckOutbox, RejectedAck
from exchange.crypto import signing
from exchange.errors import ConnectionLost, InvalidRequest, TransferError
from exchange.manifest import is_safe_id
from exchange.transport.base import Remote

RECEIPT_VERSION = "exchange-destruction/1"
RECEIPT_SUFFIX = ".destroyed.json"
MAX_RECEIPT_BYTES = 64 << 10
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIGNATURES = (manifest.SIGNATURE_NAME, manifest.SSH_SIGNATURE_NAME)
_FAILED = "failed: "  # a receipt status: the system would not delete the file


def receipt_name(drop_id: str) -> str:
    """The receipt's file name for a drop; ValueError for an unsafe id."""
    if not is_safe_id(drop_id):
        raise ValueError("a drop id that is not a safe file name")
    return f"{drop_id}{RECEIPT_SUFFIX}"


@dataclass(frozen=True)
class Receipt:
    """A verified destruction receipt."""

    drop_id: str
    manifest_sha256: str
    destroyed_at: str
    key_id: str
    body: dict[str, Any]
    signature: str


@dataclass(frozen=True)
class Destroyed:
    """One drop deleted at the partner, and where its receipt went; `failed` if a file of it
    could not be deleted in this run (its receipt says which)."""

    drop_id: str
    receipt: Path
    remote: str | None
    failed: bool = False


class _NoEndDate(ValueError):
    """A drop's recorded retention gives no end date (hostile or damaged)."""


def _due(facts: Mapping[str, Any], now: dt.datetime) -> bool:
    """Whether the drop's retention has ended; _NoEndDate if its facts give no end date."""
    retention = facts.get("retention")
    if not isinstance(retention, dict) or facts.get("destroyed_at"):
        return False
    if retention.get("action") != "delete":
        return False  # archiving is the partner's own business; nothing to prove
    try:
        created = dt.datetime.fromisoformat(str(facts["created_at"]))
        # The sender chose `days`: 1e10 overflows timedelta, nan and inf do not compare.
        return created + dt.timedelta(days=float(retention["days"])) <= now
    except (OverflowError, ValueError, TypeError, KeyError):
        raise _NoEndDate() from None


def _unlink_plain(dir_fd: int, name: str) -> str:
    """Delete a plain file (never through a link): deleted, absent, refused or failed."""
    if not name or "/" in name or name in {".", ".."}:
        return "refused: not a file name"
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(found.st_mode):
            return "refused: not a plain file"
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:  # an immutable file, a read-only mount: this file, not the run
        return _failure(exc)
    return "deleted"


def _failure(exc: OSError) -> str:
    """A receipt status for a deletion the system refused: the cause only, never a path."""
    if exc.errno in (errno.EPERM, errno.EACCES):
        return f"{_FAILED}permission denied"
    if exc.errno == errno.EROFS:
        return f"{_FAILED}read-only file system"
    return _FAILED + (os.strerror(exc.errno).lower() if exc.errno else "error")


@contextmanager
def _opened(folder: Path) -> Iterator[int | str]:
    """The folder held open, or the receipt status saying why it is not: "absent" only when
    it is not there (a link or a file in its place is refused, not called absent)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        yield "absent"
        return
    except OSError as exc:
        yield (
            "refused: not a folder" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else _failure(exc)
        )
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _manifest_sha256(dir_fd: int) -> str | None:
    """The SHA-256 of the folder's manifest; None if it has none, "" if it is not a plain
    readable file (a link, a pipe: never opened so that it could block)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(manifest.MANIFEST_NAME, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    with open(fd, "rb") as h:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            return hashlib.sha256(h.read(manifest.MAX_BYTES + 1)).hexdigest()
        except OSError:
            return ""


def _delete_drop(folder: Path, facts: Mapping[str, Any]) -> list[dict[str, str]]:
    """Delete the drop's files the partner read, only if its manifest is still the one
    received there. The manifest goes last, so a folder without one is either done (a run
    that stopped midway left the manifest to try again) or not the drop's, and is left alone."""
    payload = str(facts.get("payload") or "")
    names = [*([payload] if payload in _payload_names() else []), *_SIGNATURES]

    def left_alone(status: str) -> list[dict[str, str]]:
        return [{"what": "ciphertext", "name": payload, "status": status}]

    with _opened(folder) as fd:
        if isinstance(fd, str):
            return left_alone(fd)
        same = _manifest_sha256(fd)
        if same is None:
            # None of the drop's names either: an earlier run finished here.
            present = [n for n in names if _exists(fd, n)]
            return left_alone("refused: no manifest" if present else "absent")
        if not same:
            return left_alone("refused: manifest unreadable")
        if same != facts.get("manifest_sha256"):
            return left_alone("refused: another drop")
        done = [
            {
                "what": "ciphertext" if n == payload else "manifest",
                "name": n,
                "status": _unlink_plain(fd, n),
            }
            for n in [*names, manifest.MANIFEST_NAME]
        ]
    with suppress(OSError):
        folder.rmdir()  # only if nothing else is left in it
    return done


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: say it is there, so the folder is reported, not "absent"
    return True


_REFUSALS = {
    "refused: not a folder": "is a link or not a folder",
    "refused: no manifest": "holds no manifest",
    "refused: manifest unreadable": "holds a manifest that is not a plain readable file",
    "refused: another drop": "holds another drop's manifest",
}


def _warning(drop_id: str, deleted: Sequence[Mapping[str, str]]) -> str | None:
    """What went wrong with a drop's deletion, from its receipt's entries; None if nothing."""
    data = [d["status"] for d in deleted if d["what"] == "plaintext"]
    there = [d["status"] for d in deleted if d["what"] != "plaintext"]
    wrong = []
    for status in data:
        if status == "refused: not a plain file":
            wrong.append("its data file is not a plain file (a link?) and was left")
        elif status.startswith("refused"):
            wrong.append("its recorded data file name is not a plain file name and was left")
        elif status.startswith(_FAILED):
            wrong.append(f"its data file could not be deleted ({status.removeprefix(_FAILED)})")
    folder = [s for s in there if s in _REFUSALS]
    if folder:
        wrong.append(
            f"the drop folder its record names {_REFUSALS[folder[0]]}, so nothing there was deleted"
        )
    if any(s.startswith("refused") and s not in _REFUSALS for s in there):
        wrong.append("some of its files in the drop folder were not plain files and were left")
    causes = sorted({s.removeprefix(_FAILED) for s in there if s.startswith(_FAILED)})
    if causes:
        wrong.append(
            f"some of its files in the drop folder could not be deleted ({', '.join(causes)})"
        )
    if not wrong:
        return None
    fine = not any(s.startswith(("refused", _FAILED)) for s in data)
    said = ("its data file is deleted, but " if fine else "") + "; ".join(wrong)
    return (
        f"drop {drop_id}: {said} (its receipt says so); "
        "delete the drop's files by hand if they are still somewhere"
    )


def _payload_names() -> set[str]:
    return {manifest.payload_name(f) for f in manifest.FORMATS}


def build(
    drop_id: str,
    facts: Mapping[str, Any],
    deleted: Sequence[Mapping[str, str]],
    *,
    destroyed_at: str,
    key_id: str,
) -> dict[str, Any]:
    """The body of a destruction receipt."""
    return {
        "type": RECEIPT_VERSION,
        "drop_id": drop_id,
        "contract_id": facts.get("contract_id"),
        "manifest_sha256": facts.get("manifest_sha256"),
        "received_at": facts.get("received_at"),
        "retention": facts.get("retention"),
        "destroyed_at": destroyed_at,
        "deleted": [dict(d) for d in deleted],
        "key_id": key_id,
    }


def sign(body: Mapping[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The receipt file's bytes: the same signed envelope as an acknowledgement."""
    return acks.sign(body, key)


def verify(name: str, data: bytes, keys: Mapping[str, Ed25519PublicKey]) -> Receipt | RejectedAck:
    """Check one receipt file against the partner's keys (by key id)."""
    opened = acks.open_signed(
        name,
        data,
        keys,
        version=RECEIPT_VERSION,
        kind="a destruction receipt",
        short="receipt",
        limit=MAX_RECEIPT_BYTES,
    )
    if isinstance(opened, RejectedAck):
        return opened
    body, key_id, signature = opened.body, opened.key_id, str(opened.signature)
    drop_id, sha, at = body.get("drop_id"), body.get("manifest_sha256"), body.get("destroyed_at")
    if not isinstance(drop_id, str) or not is_safe_id(drop_id) or name != receipt_name(drop_id):
        return RejectedAck(name, "names another drop than its file name says", key_id)
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        return RejectedAck(name, "does not name the manifest by its SHA-256", key_id)
    try:
        if not isinstance(at, str) or dt.datetime.fromisoformat(at).tzinfo is None:
            raise ValueError
    except ValueError:
        return RejectedAck(name, "does not state when the drop was destroyed", key_id)
    return Receipt(drop_id, sha, at, key_id, body, signature)


def collect(
    remote: Remote,
    folder: str,
    keys: Mapping[str, Ed25519PublicKey],
    expected: Mapping[str, str],
    on_rejected: Callable[[RejectedAck], None],
) -> list[Receipt]:
    """The receipts in `folder` for the drops `expected` (drop id -> manifest SHA-256)."""
    found = []
    for entry in remote.list(folder):
        name = entry.name
        if entry.is_folder or not name.endswith(RECEIPT_SUFFIX) or name.startswith("."):
            continue
        drop_id = name[: -len(RECEIPT_SUFFIX)]
        if drop_id not in expected:
            continue
        if entry.size > MAX_RECEIPT_BYTES:
            on_rejected(RejectedAck(name, f"larger than {MAX_RECEIPT_BYTES} bytes"))
            continue
        try:
            data = remote.read(f"{folder}/{name}", MAX_RECEIPT_BYTES)
        except ConnectionLost:
            raise
        except TransferError:
            on_rejected(RejectedAck(name, "unreadable on the server"))
            continue
        result = verify(name, data, keys)
        if isinstance(result, Receipt) and result.manifest_sha256 != expected[drop_id]:
            result = RejectedAck(name, "is for another manifest than the one sent", result.key_id)
        if isinstance(result, Receipt):
            found.append(result)
        else:
            on_rejected(result)
    return found


def expire(
    out_dir: Path,
    *,
    key: Ed25519PrivateKey,
    outbox: AckOutbox | None,
    now: dt.datetime,
    on_skipped: Callable[[str], None] | None = None,
) -> list[Destroyed]:
    """Delete every drop received into `out_dir` whose retention has ended; sign and send a
    receipt for each (and send again any receipt not sent before). A drop whose recorded
    retention gives no end date is kept, and `on_skipped` told why, so one hostile manifest
    cannot stop every other drop being destroyed; `on_skipped` is also told of a recorded drop
    folder left alone (no manifest, or another drop's: an edited record cannot aim the deletion
    elsewhere). A file the system will not let it delete (permission denied, a read-only
    file system) is a `failed: ...` status in the receipt, `on_skipped` is told and the drop's
    `Destroyed.failed` is set; the next drops are still destroyed. Raises InvalidRequest if
    `out_dir` holds no record, TransferError if an upload fails (the receipt stays to
    resend), OSError if a receipt or the record cannot be written."""
    from exchange.receive import RECORD_NAME, record_lock, write_file

    if not (out_dir / RECORD_NAME).is_file():
        raise InvalidRequest(f"{out_dir} holds no record of received drops: give receive's --out")
    key_id = signing.key_id(key.public_key())
    made: list[Destroyed] = []
    failed: set[str] = set()
    with record_lock(out_dir) as (out_fd, drops, save):
        for drop_id, facts in sorted(drops.items()):
            if not is_safe_id(drop_id):
                continue
            try:
                if not _due(facts, now):
                    continue
            except _NoEndDate:
                if on_skipped is not None:
                    on_skipped(
                        f"drop {drop_id} kept: its recorded retention gives no end date "
                        "(days out of range or created_at unreadable); delete it by hand "
                        "when the agreement says, and tell the sender"
                    )
                continue
            output = str(facts["output"])
            deleted = [
                {"what": "plaintext", "name": output, "status": _unlink_plain(out_fd, output)}
            ]
            if facts.get("drop_folder"):
                deleted += _delete_drop(Path(facts["drop_folder"]), facts)
            if any(d["status"].startswith(_FAILED) for d in deleted):
                failed.add(drop_id)
            warning = _warning(drop_id, deleted)
            if warning is not None and on_skipped is not None:
                on_skipped(warning)
            at = now.isoformat(timespec="seconds")
            data = sign(build(drop_id, facts, deleted, destroyed_at=at, key_id=key_id), key)
            write_file(out_fd, receipt_name(drop_id), data)
            facts["destroyed_at"] = at
            save(drops)
        pending = [
            d
            for d, f in sorted(drops.items())
            if f.get("destroyed_at") and not f.get("receipt_sent")
        ]
        for drop_id in pending:
            path = out_dir / receipt_name(drop_id)
            remote = None
            if outbox is not None:
                sent = outbox.transport.put_bytes(
                    outbox.folder, receipt_name(drop_id), path.read_bytes()
                )
                remote = sent.remote_path
                drops[drop_id]["receipt_sent"] = remote
                save(drops)
            made.append(Destroyed(drop_id, path, remote, drop_id in failed))
    return made
