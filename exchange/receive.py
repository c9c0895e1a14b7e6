"""The partner's side: verify a drop's signed manifest and checksum, decrypt, count, write out,
then sign an acknowledgement and put it where the sender collects it.

A drop is refused, with nothing written under the final name and no partial file left, when its
manifest signature (or, if the drop has one, its OpenSSH signature) or payload checksum is
wrong, when it is not addressed to the partner's key, when it was received before (a replay; the
record is `.received.json` in the output folder), or when it does not decrypt to the row count
its manifest states.

The sending gateway is trusted for who sent a drop, never for names on the partner's file system
(DESIGN.md section 11). So the manifest is validated against its schema before anything is
derived from it; every file written is one safe name inside the output folder, opened relative to
that folder without following symbolic links; an existing file is replaced only when asked
(`overwrite`); and the payload is opened once, so the bytes decrypted are the bytes hashed.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange import acks, manifest
from exchange.audit import witness
from exchange.audit.checkpoint import Checkpoint
from exchange.crypto import age, signing, sshsig
from exchange.errors import CryptoError, DropRejected, InvalidRequest, LedgerError, TransferError

READ_CHUNK = 1 << 20
RECORD_NAME = ".received.json"
EVIDENCE_FOLDER = ".witness-evidence"  # a refused log's manifest and what was held against it
LOCK_NAME = ".received.lock"
SENDER_PREFIX = "ed25519:"  # the witness state is kept per sender key id (signing.key_id)
MAX_SIGNATURE_BYTES = 4096

# Never follow a symbolic link; never block on a FIFO planted where a file is expected.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Received:
    """A verified, decrypted drop, and its acknowledgement if one was made."""

    drop_id: str
    contract_id: str
    rows: int
    output: Path
    manifest: dict[str, Any]
    manifest_sha256: str = ""
    ack: dict[str, Any] | None = None
    ack_path: Path | None = None
    ack_remote: str | None = None
    log_size: int = 0  # the sender's ledger checkpoint this drop carried, verified
    log_held: int | None = None  # the size witnessed before it (None: first sight of the log)


@dataclass(frozen=True)
class Step:
    """How far a receive has got, for a progress display: `done` of `total` in `unit`."""

    # "verifying", "decrypting", "counting rows", "acknowledging",
    # "uploading the acknowledgement"
    stage: str
    done: int = 0
    total: int | None = None
    unit: str = "bytes"  # "bytes" or "rows"


Progress = Callable[[Step], None]


class LogRefused(DropRejected):
    """A drop refused because the sender's log does not extend the one the partner witnessed."""

    def __init__(self, message: str, *, reason: str, held: witness.Seen | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.held = held


class _NotRegular(Exception):
    """A name that should be a plain file is a link, a folder, a FIFO or a device."""


class _Hashing:
    """A reader that hashes and counts exactly the bytes it hands on (and tells `counted`)."""

    def __init__(self, source: BinaryIO, counted: Callable[[int], None] | None = None) -> None:
        self._source = source
        self._counted = counted
        self._next = READ_CHUNK  # age reads 8 KiB at a time: tell `counted` once a READ_CHUNK
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        """Read, hash and count."""
        data = self._source.read(size)
        self.digest.update(data)
        self.size += len(data)
        if self._counted is not None and (self.size >= self._next or not data):
            self._next = self.size + READ_CHUNK
            self._counted(self.size)
        return data


class _HashingSink:
    """A writer that hashes what it writes (the plaintext, to compare with an earlier output)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        """Hash and write."""
        self.digest.update(data)
        return self._out.write(data)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _label(drop: Path) -> str:
    """The drop folder's name for a message, escaped unless it is a safe id."""
    return drop.name if manifest.is_safe_id(drop.name) else repr(drop.name)[:80]


def _open_file(dir_fd: int, name: str) -> BinaryIO:
    """Open a plain file in a folder for reading; OSError, or _NotRegular for anything else."""
    handle = os.fdopen(os.open(name, _READ, dir_fd=dir_fd), "rb")
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise _NotRegular(name)
    return handle


def _create(dir_fd: int, name: str) -> BinaryIO:
    """Create a new 0600 file in a folder; never an existing name, never through a link."""
    fd = os.open(name, _CREATE, 0o600, dir_fd=dir_fd)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _unlink(dir_fd: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _sha256(handle: BinaryIO, counted: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    while chunk := handle.read(READ_CHUNK):
        digest.update(chunk)
        if counted is not None:
            done += len(chunk)
            counted(done)
    return digest.hexdigest()


@contextmanager
def _folder(path: Path) -> Iterator[int]:
    """A folder held open, so later names are looked up in it even if the path is moved."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _read_small(drop_fd: int, label: str, name: str, limit: int) -> bytes:
    try:
        with _open_file(drop_fd, name) as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise DropRejected(f"drop {label} is incomplete: no manifest or signature") from None
    except (_NotRegular, OSError):
        raise DropRejected(f"drop {label}: {name} is not a plain file (a link?)") from None
    if len(data) > limit:
        raise DropRejected(f"drop {label}: {name} is larger than {limit} bytes")
    return data


@dataclass(frozen=True)
class _Signed:
    """A verified manifest: its body, the SHA-256 of its bytes, the bytes and signature."""

    body: dict[str, Any]
    sha256: str
    document: bytes
    signature: bytes
    key: Ed25519PublicKey


def _read_manifest(drop_fd: int, label: str, sender_key: Path) -> tuple[dict[str, Any], str]:
    """The verified, schema-valid manifest and the SHA-256 of its exact bytes."""
    signed = _read_signed(drop_fd, label, sender_key)
    return signed.body, signed.sha256


def _read_signed(drop_fd: int, label: str, sender_key: Path) -> _Signed:
    """The verified, schema-valid manifest with its bytes and signature."""
    document = _read_small(drop_fd, label, manifest.MANIFEST_NAME, manifest.MAX_BYTES)
    signature = _read_small(drop_fd, label, manifest.SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
    key = signing.load_public_key(sender_key)  # an unreadable key is the receiver's problem
    try:
        signing.verify(key, document, signature)
    except CryptoError:
        raise DropRejected(f"drop {label}: the manifest signature does not verify") from None
    _check_ssh_signature(drop_fd, label, key, document)
    try:
        body = manifest.from_bytes(document)
    except manifest.ManifestError as exc:
        raise DropRejected(f"drop {label}: {exc}") from None
    return _Signed(body, hashlib.sha256(document).hexdigest(), document, signature, key)


def _check_ssh_signature(drop_fd: int, label: str, key: Ed25519PublicKey, document: bytes) -> None:
    """The OpenSSH signature, when the drop has one, must verify too: a partner who checks
    with `ssh-keygen -Y verify` and one who uses this command must accept the same drops.
    A drop without it (from a gateway older than the SSHSIG file) is accepted on the raw
    signature alone, which has been verified already."""
    if _lstat(drop_fd, manifest.SSH_SIGNATURE_NAME) is None:
        return
    armored = _read_small(drop_fd, label, manifest.SSH_SIGNATURE_NAME, sshsig.MAX_BYTES)
    try:
        sshsig.verify(key, document, armored)
    except CryptoError:
        raise DropRejected(
            f"drop {label}: the manifest's SSH signature ({manifest.SSH_SIGNATURE_NAME}) "
            "does not verify"
        ) from None


def _open_payload(
    drop_fd: int, label: str, info: dict[str, Any], progress: Progress | None = None
) -> BinaryIO:
    """The payload, opened once, its size and SHA-256 checked; the caller closes it."""
    name = info["name"]  # one of the schema's fixed names, never a path
    try:
        handle = _open_file(drop_fd, name)
    except FileNotFoundError:
        raise DropRejected(f"drop {label}: payload {name} is missing") from None
    except (_NotRegular, OSError):
        raise DropRejected(f"drop {label}: payload {name} is not a plain file (a link?)") from None
    with ExitStack() as keep:
        keep.callback(handle.close)
        size = os.fstat(handle.fileno()).st_size
        if size != info["size"]:
            raise DropRejected(
                f"drop {label}: payload is {size} bytes, the manifest says {info['size']} "
                "(truncated or altered)"
            )
        counted = _reporter(progress, "verifying", size)
        if _sha256(handle, counted) != info["sha256"]:
            raise DropRejected(f"drop {label}: payload does not match the manifest's checksum")
        handle.seek(0)
        keep.pop_all()
    return handle


def verify_manifest(drop: Path, sender_key: Path) -> dict[str, Any]:
    """Check the manifest's signature and schema and the payload's size and SHA-256."""
    label = _label(drop)
    with _drop_folder(drop, label) as drop_fd:
        body, _ = _read_manifest(drop_fd, label, sender_key)
        _open_payload(drop_fd, label, body["payload"]).close()
    return body


@contextmanager
def _drop_folder(drop: Path, label: str) -> Iterator[int]:
    """The drop folder held open: a folder swapped in after the manifest is read is not used."""
    try:
        fd = os.open(drop, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise DropRejected(f"drop {label} is not a readable folder") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _reporter(
    progress: Progress | None, stage: str, total: int | None, unit: str = "bytes"
) -> Callable[[int], None] | None:
    """A function told how much of `stage` is done, passing it on to `progress` (if any)."""
    if progress is None:
        return None
    progress(Step(stage, 0, total, unit))
    return lambda done: progress(Step(stage, done, total, unit))


def _count_rows(handle: BinaryIO, fmt: str, counted: Callable[[int], None] | None = None) -> int:
    if fmt == "parquet":
        rows = int(pq.ParquetFile(handle).metadata.num_rows)
        if counted is not None:
            counted(rows)
        return rows
    reader = pacsv.open_csv(handle, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        if counted is not None:
            counted(rows)
    return rows


def _check_addressed(label: str, body: dict[str, Any], identity: Path) -> list[Any]:
    """The partner's identities, if the manifest names one of their public keys."""
    identities = age.load_identities(identity)
    mine = {str(i.to_public()) for i in identities}
    theirs = body["payload"]["encryption"]["recipients"]
    if not mine.intersection(theirs):
        raise DropRejected(
            f"drop {label} is not addressed to you: none of the {len(theirs)} recipient "
            f"key(s) in its manifest is a public key of {identity.name}"
        )
    return identities


@contextmanager
def _exclusive(out_fd: int) -> Iterator[None]:
    """Hold the output folder's lock, so two receives cannot both take the same drop."""
    fd = os.open(
        LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=out_fd
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _damaged(where: Path, why: str) -> DropRejected:
    """The record cannot be trusted as it is: receiving on would lose replay protection or
    the witnessed log, so nothing is received until it is put right."""
    return DropRejected(
        f"the record of received drops {where} is damaged ({why}); nothing was received: "
        "restore it from your backup, then receive again"
    )


def _record(out_fd: int, where: Path) -> dict[str, Any]:
    """The whole record: `drops` (drop id -> facts) and `witness` (sender key id -> Seen).

    It lives in the output folder, so it may have been edited: each drop's entry must be an
    object under a drop id, or the record is refused (DropRejected) rather than half read."""
    try:
        with _open_file(out_fd, RECORD_NAME) as handle:
            record = json.loads(handle.read())
    except FileNotFoundError:
        return {"drops": {}, "witness": {}}
    except _NotRegular:
        raise _damaged(where, "not a plain file") from None
    except OSError as exc:
        why = "not a plain file: a link?" if exc.errno == errno.ELOOP else "unreadable"
        raise _damaged(where, why) from None
    except (ValueError, RecursionError):
        raise _damaged(where, "not readable JSON") from None
    drops = record.get("drops") if isinstance(record, dict) else None
    seen = record.get("witness", {}) if isinstance(record, dict) else None
    if not isinstance(drops, dict) or not isinstance(seen, dict):
        raise _damaged(where, "no table of drops and of witnessed logs")
    for drop_id, facts in drops.items():
        if not manifest.is_safe_id(drop_id):
            raise _damaged(where, "an entry is not named by a drop id")
        if not isinstance(facts, dict):
            raise _damaged(where, f"the entry of drop {drop_id} is not an object")
    return {"drops": drops, "witness": _by_sender_key(seen, drops, where)}


def _by_sender_key(seen: dict[str, Any], drops: dict[str, Any], where: Path) -> dict[str, Any]:
    """The witness state keyed by sender key id; a record written when it was keyed by log
    origin is moved over, each entry to the key that signed the drop it was taken from.

    Keyed by origin, a log renamed by whoever holds the sender's key was a log never seen
    before, so the origin check could not fire (issue 15, finding 1)."""
    moved: dict[str, Any] = {}
    for name, value in seen.items():
        if name.startswith(SENDER_PREFIX):
            moved.setdefault(name, value)
            continue
        drop = value.get("drop_id") if isinstance(value, dict) else None
        facts = drops.get(drop) if isinstance(drop, str) else None
        sender = facts.get("sender_key_id") if isinstance(facts, dict) else None
        if not isinstance(sender, str) or not re.fullmatch(r"ed25519:[0-9a-f]{16}", sender):
            raise DropRejected(
                f"the record of received drops {where} keeps a witnessed log ({name[:80]!r}) "
                "that cannot be tied to a sender key: move its `witness` entry under the "
                "sender's key id (ed25519:...) by hand, then receive again"
            )
        key = sender
        if key in moved or key in seen:
            raise DropRejected(
                f"the record of received drops {where} keeps two witnessed logs for sender key "
                f"{key}: keep the one you trust under that key, then receive again"
            )
        moved[key] = value
    return moved


def _when(facts: dict[str, Any]) -> str:
    """When the record says a drop was received, for a message: only a plain ISO 8601 time."""
    at = facts.get("received_at")
    try:
        if isinstance(at, str) and len(at) <= 40 and at.isprintable():
            dt.datetime.fromisoformat(at)
            return f"at {at}"
    except ValueError:
        pass
    return "(at a time the record does not state plainly)"


def _recorded(out_fd: int, where: Path) -> dict[str, dict[str, Any]]:
    drops: dict[str, dict[str, Any]] = _record(out_fd, where)["drops"]
    return drops


def _held(out_fd: int, where: Path, sender: str) -> witness.Seen | None:
    """The newest checkpoint the partner verified of the log signed by this sender key id."""
    value = _record(out_fd, where)["witness"].get(sender)
    if value is None:
        return None
    try:
        seen = witness.Seen.from_dict(value)
    except LedgerError:
        seen = None
    # Its drop id is repeated in messages: one receive wrote is always a safe id.
    if seen is None or not manifest.is_safe_id(seen.drop_id):
        raise _damaged(where, f"the checkpoint witnessed of sender {sender} is not one it keeps")
    return seen


def witnessed(out_dir: Path) -> dict[str, witness.Seen]:
    """The newest verified checkpoint per sender key id, as kept in `out_dir`'s record."""
    if not out_dir.is_dir():
        return {}
    with _folder(out_dir) as out_fd:
        seen = _record(out_fd, out_dir / RECORD_NAME)["witness"]
    return {sender: witness.Seen.from_dict(value) for sender, value in seen.items()}


def received_drops(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The record of drops already received into `out_dir` (drop id -> facts)."""
    if not out_dir.is_dir():
        return {}
    with _folder(out_dir) as out_fd:
        return _recorded(out_fd, out_dir / RECORD_NAME)


def _install(out_fd: int, temp: str, name: str, *, replace_existing: bool) -> None:
    """Give a finished temporary file its final name; without leave, never over another file."""
    if replace_existing:
        # rename() replaces a link itself, never the file it points to.
        os.replace(temp, name, src_dir_fd=out_fd, dst_dir_fd=out_fd)
        return
    # A hard link fails if the name exists, so a file that appeared meanwhile is never replaced.
    os.link(temp, name, src_dir_fd=out_fd, dst_dir_fd=out_fd, follow_symlinks=False)
    _unlink(out_fd, temp)


def _write_new(out_fd: int, name: str, data: bytes, *, replace_existing: bool) -> None:
    temp = f".{name}.tmp"
    _unlink(out_fd, temp)
    try:
        with _create(out_fd, temp) as handle:
            handle.write(data)
        _install(out_fd, temp, name, replace_existing=replace_existing)
    finally:
        _unlink(out_fd, temp)


def _remember(
    out_fd: int,
    where: Path,
    drop_id: str,
    facts: dict[str, Any],
    seen: tuple[str, witness.Seen] | None = None,
) -> None:
    _save(out_fd, where, lambda record: record["drops"].__setitem__(drop_id, facts), seen)


def _save(
    out_fd: int,
    where: Path,
    change: Callable[[dict[str, Any]], None],
    seen: tuple[str, witness.Seen] | None = None,
) -> None:
    """Rewrite the record (0600, atomically) after `change`, with `seen` (sender key id, its
    log's newest checkpoint) kept."""
    record = _record(out_fd, where)
    change(record)
    if seen is not None:
        record["witness"][seen[0]] = seen[1].as_dict()
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    _write_new(out_fd, RECORD_NAME, data, replace_existing=True)


@contextmanager
def record_lock(
    out_dir: Path,
) -> Iterator[tuple[int, dict[str, dict[str, Any]], Callable[[dict[str, Any]], None]]]:
    """The output folder held open and locked, its record of drops, and a function that
    saves a changed record (for `exchange.destruction`)."""
    out_path = out_dir.resolve(strict=True)
    where = out_path / RECORD_NAME
    with _folder(out_path) as out_fd, _exclusive(out_fd):
        drops = _recorded(out_fd, where)

        def save(changed: dict[str, Any]) -> None:
            _save(out_fd, where, lambda record: record.__setitem__("drops", changed))

        yield out_fd, drops, save


def write_file(out_fd: int, name: str, data: bytes) -> None:
    """Write a 0600 file in the output folder, replacing one of that name (never a link)."""
    _write_new(out_fd, name, data, replace_existing=True)


def _report_refusal(
    outbox: acks.AckOutbox, signer: Any, signed: _Signed, exc: LogRefused, at: str
) -> None:
    """Tell the sender, signed, beside the acknowledgements: its IG lead sees an incident."""
    body = witness.refusal(
        signed.body["drop_id"],
        signed.sha256,
        exc.reason,
        exc.held,
        signed.body["ledger"]["checkpoint"],
        at=at,
        key_id=signing.key_id(signer.public_key()),
    )
    data = acks.sign(body, signer)  # the same envelope as an acknowledgement
    try:
        outbox.transport.put_bytes(outbox.folder, witness.refusal_name(body["drop_id"]), data)
    except TransferError as upload:
        exc.args = (f"{exc.args[0]}; the signed report to the sender was not uploaded ({upload})",)


def _witness(
    out_fd: int, where: Path, signed: _Signed, *, at: str
) -> tuple[Checkpoint, witness.Seen, witness.Seen | None]:
    """Check the drop's checkpoint extends the newest one this partner verified of the log.

    A log that does not is refused, and the evidence (the signed manifest and the checkpoint
    held) is kept in EVIDENCE_FOLDER for the partner to show the sender or an auditor."""
    body, drop_id = signed.body, signed.body["drop_id"]
    held, origin = None, "?"
    try:
        origin = Checkpoint.parse(body["ledger"]["checkpoint"]).origin
        # Held per sender key, never per the origin the checkpoint names: else a log renamed
        # by whoever holds the key would be "first seen" and trusted afresh.
        held = _held(out_fd, where, signing.key_id(signed.key))
        checkpoint, seen = witness.check(held, body["ledger"], signed.key, drop_id=drop_id, at=at)
        return checkpoint, seen, held
    except witness.ForkedLog as exc:
        kept = _keep_evidence(out_fd, signed, held, str(exc), at)
        raise LogRefused(
            f"drop {drop_id} refused: the sender's audit log ({origin}) is not an extension of "
            f"the one you witnessed: {exc}; evidence kept in {where.parent / kept}: send it to "
            "the sender's information governance lead and your own",
            reason=str(exc),
            held=held,
        ) from None
    except LedgerError as exc:
        raise DropRejected(f"drop {drop_id}: the manifest's ledger checkpoint: {exc}") from None


def _keep_evidence(
    out_fd: int, signed: _Signed, held: witness.Seen | None, reason: str, at: str
) -> str:
    """Write the refused manifest, its signature and the held checkpoint to a 0600 file."""
    with suppress(FileExistsError):
        os.mkdir(EVIDENCE_FOLDER, 0o700, dir_fd=out_fd)
    found = _lstat(out_fd, EVIDENCE_FOLDER)
    if found is None or not stat.S_ISDIR(found.st_mode):
        raise DropRejected(f"{EVIDENCE_FOLDER} in the output folder is not a folder")
    evidence = {
        "refused_at": at,
        "drop_id": signed.body["drop_id"],
        "reason": reason,
        "held": held.as_dict() if held else None,
        "manifest_sha256": signed.sha256,
        "manifest": base64.b64encode(signed.document).decode(),
        "manifest_signature": signed.signature.decode("ascii", "replace").strip(),
    }
    stamp = at.replace(":", "").replace("+0000", "Z")
    name = f"{signed.body['drop_id']}.{stamp}.json"
    dir_fd = os.open(EVIDENCE_FOLDER, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=out_fd)
    try:
        data = (json.dumps(evidence, indent=2, sort_keys=True) + "\n").encode()
        _write_new(dir_fd, name, data, replace_existing=True)
    finally:
        os.close(dir_fd)
    return f"{EVIDENCE_FOLDER}/{name}"


def _plain_target(out_fd: int, drop_id: str, name: str) -> bool:
    """Whether `name` exists in the output folder; refuse a link or anything not a file."""
    found = _lstat(out_fd, name)
    if found is None:
        return False
    if stat.S_ISLNK(found.st_mode):
        raise DropRejected(
            f"drop {drop_id}: {name} in the output folder is a symbolic link; refusing to "
            "write through it"
        )
    if not stat.S_ISREG(found.st_mode):
        raise DropRejected(f"drop {drop_id}: {name} in the output folder is not a plain file")
    return True


def _refuse_overwrite(drop_id: str, name: str, why: str = "") -> DropRejected:
    return DropRejected(
        f"drop {drop_id}: {name} already exists in the output folder{why}; refusing to "
        "overwrite it (--overwrite replaces it)"
    )


def _same_content(out_fd: int, name: str, sha256: str) -> bool:
    try:
        with _open_file(out_fd, name) as handle:
            return _sha256(handle) == sha256
    except (_NotRegular, OSError):
        return False


def _own_ack(
    out_fd: int, name: str, signer: Any, drop_id: str, manifest_sha256: str | None = None
) -> bytes | None:
    """The bytes of `name` if it holds this partner's own signed acknowledgement of this drop
    (and, given `manifest_sha256`, of exactly that manifest); None for anything else."""
    try:
        with _open_file(out_fd, name) as handle:
            data = handle.read(acks.MAX_ACK_BYTES + 1)
    except (_NotRegular, OSError):
        return None
    public = signer.public_key()
    found = acks.verify(name, data, {signing.key_id(public): public})
    if not isinstance(found, acks.Ack) or found.drop_id != drop_id:
        return None
    if manifest_sha256 is not None and found.manifest_sha256 != manifest_sha256:
        return None
    return data


def _output_names(drop_id: str, fmt: str) -> tuple[str, str, str]:
    """The data file, its hidden partial and the acknowledgement: single names, never paths."""
    names = (f"{drop_id}.{fmt}", f".{drop_id}.{fmt}.partial", acks.ack_name(drop_id))
    for name in names:
        # The manifest was validated; this keeps a future change from reopening the hole.
        if not name or "/" in name or "\0" in name or name in {".", ".."} or ".." in name:
            raise DropRejected(f"drop {drop_id}: unsafe output name")
    return names


def receive(
    drop: Path,
    *,
    identity: Path,
    sender_key: Path,
    out_dir: Path,
    ack_key: Path | None = None,
    ack_key_passphrase: bytes | None = None,
    ack_outbox: acks.AckOutbox | None = None,
    again: bool = False,
    overwrite: bool = False,
    clock: Callable[[], dt.datetime] = _utcnow,
    progress: Progress | None = None,
) -> Received:
    """Verify, decrypt and write a drop's data to `out_dir`; DropRejected leaves no output.

    With `ack_key` (the partner's Ed25519 signing key) a signed acknowledgement is written
    beside the data as `<drop id>.ack.json`, and uploaded to `ack_outbox` if given; an upload
    that fails raises AckNotSent after the data is written. `again` receives a drop a second
    time (after a lost output or ack) instead of refusing it as a replay; an existing output
    is then kept if it holds exactly this drop's data. `overwrite` replaces existing files of
    the output names; without it they are never replaced (except the partner's own earlier
    acknowledgement of the same drop). `progress`, if given, is told each stage and how much
    of it is done (bytes or rows; never a value), often: it must be cheap.
    """
    if ack_outbox is not None and ack_key is None:
        raise CryptoError("an acknowledgement needs the partner's signing key (ack_key)")
    label = _label(drop)
    with ExitStack() as stack:
        drop_fd = stack.enter_context(_drop_folder(drop, label))
        signed = _read_signed(drop_fd, label, sender_key)
        body, manifest_sha256 = signed.body, signed.sha256
        info = body["payload"]
        payload = stack.enter_context(_open_payload(drop_fd, label, info, progress))
        identities = _check_addressed(label, body, identity)
        signer = signing.load_private_key(ack_key, ack_key_passphrase) if ack_key else None
        drop_id, fmt = body["drop_id"], info["format"]
        final, partial, ack_file = _output_names(drop_id, fmt)
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        out_path = out_dir.resolve(strict=True)
        out_fd = stack.enter_context(_folder(out_path))
        where = out_path / RECORD_NAME
        with _exclusive(out_fd):
            earlier = _recorded(out_fd, where).get(drop_id)
            if earlier is not None and not again:
                raise DropRejected(
                    f"drop {drop_id} was already received {_when(earlier)}: refusing a replay "
                    "(--again takes it a second time, after a lost output or acknowledgement)"
                )
            exists = _plain_target(out_fd, drop_id, final)
            if exists and not (overwrite or again):
                raise _refuse_overwrite(drop_id, final)
            replace_ack = False
            if signer is not None and _plain_target(out_fd, drop_id, ack_file):
                replace_ack = overwrite or _own_ack(out_fd, ack_file, signer, drop_id) is not None
                if not replace_ack:
                    raise _refuse_overwrite(drop_id, ack_file, " and is not your ack of it")
            now = clock()
            received_at = now.isoformat(timespec="seconds")
            try:
                checkpoint, seen, held = _witness(out_fd, where, signed, at=received_at)
            except LogRefused as exc:
                if signer is not None and ack_outbox is not None:
                    _report_refusal(ack_outbox, signer, signed, exc, received_at)
                raise
            rows = _decrypt_into(
                out_fd, partial, final, payload, body, identities, exists, overwrite, progress
            )
            facts = {
                "received_at": received_at,
                "manifest_sha256": manifest_sha256,
                "rows": rows,
                "output": final,
                "created_at": body["created_at"],
                "contract_id": body["contract"]["id"],
                "sender_key_id": body["sender"]["key_id"],
                "checkpoint_size": checkpoint.size,
                # What `exchange partner expire` deletes when the retention ends.
                "drop_folder": str(drop.resolve()),  # a folder reached through a link: its own
                "payload": info["name"],
                **({"retention": body["retention"]} if "retention" in body else {}),
            }
            _remember(out_fd, where, drop_id, facts, (signing.key_id(signed.key), seen))
        got = Received(
            drop_id,
            body["contract"]["id"],
            rows,
            out_path / final,
            body,
            manifest_sha256,
            log_size=checkpoint.size,
            log_held=held.size if held else None,
        )
        if signer is None:
            return got
        if progress is not None:
            progress(Step("acknowledging", unit=""))
        ack, data = _signed_ack(
            signed,
            signer,
            rows=rows,
            received_at=received_at,
            checkpoint=checkpoint,
            held=seen,
            now=now,
        )
        _write_new(out_fd, ack_file, data, replace_existing=replace_ack)
        got = replace(got, ack=ack, ack_path=out_path / ack_file)
    if ack_outbox is None:
        return got
    if progress is not None:
        progress(Step("uploading the acknowledgement", unit=""))
    try:
        sent = acks.send_ack(ack_outbox, drop_id, data)
    except TransferError as exc:
        raise acks.AckNotSent(
            f"drop {drop_id} was received and written to {got.output}, but its acknowledgement "
            f"was not uploaded ({exc}); it is kept at {got.ack_path} to send again",
            received=got,
            ack_path=out_path / ack_file,
        ) from exc
    return replace(got, ack_remote=sent.remote_path)


@dataclass(frozen=True)
class Acknowledged:
    """A signed acknowledgement of a received drop, and where it was uploaded."""

    drop_id: str
    ack_path: Path
    reused: bool  # the acknowledgement `receive` had already signed, sent again unchanged
    remote: str | None = None


def acknowledge(
    drop: Path,
    *,
    sender_key: Path,
    out_dir: Path,
    ack_key: Path,
    ack_key_passphrase: bytes | None = None,
    outbox: acks.AckOutbox | None = None,
) -> Acknowledged:
    """Sign and upload the acknowledgement of a drop already received into `out_dir`.

    The drop's manifest and payload are verified again, and the acknowledgement states what
    `receive` recorded (its time and row count). The partner's own earlier acknowledgement of
    the same manifest is sent as it is. Raises DropRejected (the drop does not verify, or an
    ack file that is not the partner's is in the way), InvalidRequest (not received into
    `out_dir`), TransferError (the upload)."""
    label = _label(drop)
    with ExitStack() as stack:
        drop_fd = stack.enter_context(_drop_folder(drop, label))
        signed = _read_signed(drop_fd, label, sender_key)
        body, manifest_sha256 = signed.body, signed.sha256
        _open_payload(drop_fd, label, body["payload"]).close()
        signer = signing.load_private_key(ack_key, ack_key_passphrase)
        drop_id = body["drop_id"]
        _, _, ack_file = _output_names(drop_id, body["payload"]["format"])
        out_path = out_dir.resolve()
        if not out_path.is_dir():
            raise InvalidRequest(_not_received(drop_id, out_dir, drop))
        out_fd = stack.enter_context(_folder(out_path))
        with _exclusive(out_fd):
            record = _recorded(out_fd, out_path / RECORD_NAME).get(drop_id)
            rows = record.get("rows") if isinstance(record, dict) else None
            received_at = record.get("received_at") if isinstance(record, dict) else None
            if (
                not isinstance(record, dict)
                or record.get("manifest_sha256") != manifest_sha256
                or type(rows) is not int
                or not isinstance(received_at, str)
            ):
                raise InvalidRequest(_not_received(drop_id, out_dir, drop))
            data = _own_ack(out_fd, ack_file, signer, drop_id, manifest_sha256)
            reused = data is not None
            if data is None:
                if _plain_target(out_fd, drop_id, ack_file):
                    raise _refuse_overwrite(drop_id, ack_file, " and is not your ack of it")
                checkpoint = Checkpoint.parse(body["ledger"]["checkpoint"])
                held = _held(out_fd, out_path / RECORD_NAME, signing.key_id(signed.key))
                _, data = _signed_ack(
                    signed,
                    signer,
                    rows=rows,
                    received_at=received_at,
                    checkpoint=checkpoint,
                    held=held,
                    now=dt.datetime.now(dt.UTC),
                )
                _write_new(out_fd, ack_file, data, replace_existing=False)
    done = Acknowledged(drop_id, out_path / ack_file, reused)
    if outbox is None:
        return done
    sent = acks.send_ack(outbox, drop_id, data)
    return replace(done, remote=sent.remote_path)


def _signed_ack(
    signed: _Signed,
    signer: Any,
    *,
    rows: int,
    received_at: str,
    checkpoint: Checkpoint,
    held: witness.Seen | None,
    now: dt.datetime,
) -> tuple[dict[str, Any], bytes]:
    """The acknowledgement of a verified drop and its signed file's bytes (`receive` and
    `acknowledge` both make it), cosigning the drop's checkpoint if it is `held`."""
    ack = acks.build(
        signed.body,
        signed.sha256,
        rows=rows,
        received_at=received_at,
        key_id=signing.key_id(signer.public_key()),
        cosignature=_cosign(checkpoint, held, signer, now),
    )
    return ack, acks.sign(ack, signer)


def _cosign(
    checkpoint: Checkpoint, held: witness.Seen | None, signer: Any, when: dt.datetime
) -> str | None:
    """A tlog-cosignature of the drop's checkpoint when it is the newest one witnessed: a
    cosignature says "the largest tree I have seen", so an older drop's is not cosigned."""
    if held is None or (held.origin, held.size, held.root) != (
        checkpoint.origin,
        checkpoint.size,
        checkpoint.root_hex,
    ):
        return None
    name = witness.witness_name(signing.key_id(signer.public_key()))
    return witness.cosign(checkpoint.text, name, signer, when)


def _not_received(drop_id: str, out_dir: Path, drop: Path) -> str:
    return (
        f"drop {drop_id} was not received into {out_dir}: receive it first "
        f"(exchange receive {drop} --out {out_dir} ...), then acknowledge it"
    )


def _decrypt_into(
    out_fd: int,
    partial: str,
    final: str,
    payload: BinaryIO,
    body: dict[str, Any],
    identities: list[Any],
    exists: bool,
    overwrite: bool,
    progress: Progress | None = None,
) -> int:
    """Decrypt the open payload into `final`, checking the bytes decrypted; the row count."""
    drop_id, info = body["drop_id"], body["payload"]
    _unlink(out_fd, partial)
    try:
        reader = _Hashing(payload, _reporter(progress, "decrypting", info["size"]))
        with _create(out_fd, partial) as out:
            sink = _HashingSink(out)
            try:
                age.decrypt_stream(cast(BinaryIO, reader), cast(BinaryIO, sink), identities)
            except CryptoError as exc:
                raise DropRejected(f"drop {drop_id}: {exc}") from None
        while reader.read(READ_CHUNK):  # age refuses trailing bytes; hash all there is anyway
            pass
        # The file may have changed since it was checked: what counts is what was decrypted.
        if reader.size != info["size"] or reader.digest.hexdigest() != info["sha256"]:
            raise DropRejected(
                f"drop {drop_id}: the payload changed while it was read; refusing it"
            )
        try:
            with _open_file(out_fd, partial) as decrypted:
                counted = _reporter(progress, "counting rows", body["rows"]["sent"], "rows")
                rows = _count_rows(decrypted, info["format"], counted)
        except (pa.ArrowException, OSError, _NotRegular):
            raise DropRejected(
                f"drop {drop_id}: the decrypted data is not a readable {info['format']} file"
            ) from None
        if rows != body["rows"]["sent"]:
            raise DropRejected(
                f"drop {drop_id}: {rows} rows decrypted, manifest says {body['rows']['sent']}"
            )
        if exists and not overwrite:
            # Taken `again`: an output holding exactly this data stays; anything else is kept too.
            if not _same_content(out_fd, final, sink.digest.hexdigest()):
                raise _refuse_overwrite(drop_id, final, " with other content")
            return rows
        _plain_target(out_fd, drop_id, final)  # a link planted meanwhile is refused, not followed
        _install(out_fd, partial, final, replace_existing=overwrite)
    finally:
        _unlink(out_fd, partial)
    return rows
