"""Signed acknowledgements: the partner's proof that a drop arrived whole and was read.

The partner's `receive` signs one after verifying and decrypting a drop, with the partner's own
Ed25519 key, and puts it in the agreed acknowledgement folder on the SFTP server as
`<drop id>.ack.json`. The sender collects the acknowledgements there and keeps only those whose
signature verifies with a key the partner published. An acknowledgement also signs back the
sender's ledger position (and checkpoint, when the manifest carries one), so the partner
witnesses the sender's audit log.

The file is JSON: {"body": {...}, "signature": "<base64>"}, the signature being a raw Ed25519
signature over the body's canonical form (sorted keys, no spaces, UTF-8). Like a manifest it
carries ids, counts and hashes only.

A partner without this package may instead put the body alone in `<drop id>.ack.json`, in any
JSON layout, and beside it `<drop id>.ack.json.sig`: an OpenSSH signature of that file's exact
bytes, as `ssh-keygen -Y sign -n exchange-ack@exchange-gateway` writes it (SSH_NAMESPACE). The
same checks apply to both forms.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.crypto import signing, sshsig
from exchange.errors import ConnectionLost, CryptoError, TransferError
from exchange.manifest import ManifestError, is_safe_id, strict_json
from exchange.transport.base import Delivery, OnAttempt, Remote, Transport

log = logging.getLogger(__name__)

ACK_VERSION = "exchange-ack/1"
ACK_SUFFIX = ".ack.json"
SSH_SIGNATURE_SUFFIX = ".sig"  # the name `ssh-keygen -Y sign FILE` gives its signature
SSH_NAMESPACE = "exchange-ack@exchange-gateway"
MAX_ACK_BYTES = 64 << 10
_KEY_ID = re.compile(r"ed25519:[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Ack:
    """A verified acknowledgement of one drop."""

    drop_id: str
    manifest_sha256: str
    received_at: str
    rows: int
    key_id: str
    body: dict[str, Any]
    # How it was signed, so an auditor can check it again offline: {"signature": base64} for
    # an envelope, {"file": base64 of the bare body's bytes, "sshsig": armored} for OpenSSH.
    proof: dict[str, str] | None = None


@dataclass(frozen=True)
class RejectedAck:
    """An acknowledgement file that could not be trusted, and why (a possible security event)."""

    name: str
    reason: str
    key_id: str | None = None


@dataclass(frozen=True)
class AckOutbox:
    """Where a partner puts its acknowledgements: a folder on the sender's agreed server."""

    transport: Transport
    folder: str


class AckNotSent(TransferError):
    """The drop was received and written, but its acknowledgement could not be uploaded."""

    def __init__(self, message: str, *, received: Any, ack_path: Path) -> None:
        self.received = received
        self.ack_path = ack_path
        super().__init__(message)


def ack_name(drop_id: str) -> str:
    """The acknowledgement's file name for a drop; ValueError for an id unsafe as a name."""
    if not is_safe_id(drop_id):
        raise ValueError("a drop id that is not a safe file name")
    return f"{drop_id}{ACK_SUFFIX}"


def _shown(value: object) -> str:
    """A value from an untrusted file, fit for a one-line message: only if it is a safe id."""
    return repr(value) if isinstance(value, str) and is_safe_id(value) else "<not a safe id>"


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build(
    manifest: Mapping[str, Any],
    manifest_sha256: str,
    *,
    rows: int,
    received_at: str,
    key_id: str,
    cosignature: str | None = None,
) -> dict[str, Any]:
    """The body of an acknowledgement of a verified, decrypted drop.

    `cosignature`: the partner's tlog-cosignature line over the manifest's checkpoint, which
    the partner verified extends every checkpoint of the log it saw before."""
    contract = manifest.get("contract", {})
    body: dict[str, Any] = {
        "type": ACK_VERSION,
        "drop_id": manifest["drop_id"],
        "run_id": manifest.get("run_id"),
        "contract": {k: contract.get(k) for k in ("id", "version", "sha256")},
        "manifest_sha256": manifest_sha256,
        "payload_sha256": manifest["payload"]["sha256"],
        "received_at": received_at,
        "rows": rows,
        "verified": True,
        "key_id": key_id,
    }
    # Signing the sender's ledger position back makes the partner a witness of that log.
    for witnessed in ("ledger", "checkpoint"):
        if witnessed in manifest:
            body[witnessed] = manifest[witnessed]
    if isinstance(body.get("ledger"), Mapping):  # the proofs were for the partner alone
        body["ledger"] = {k: v for k, v in body["ledger"].items() if k != "consistency"}
    if cosignature is not None:
        body["cosignature"] = cosignature
    return body


def sign(body: Mapping[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The acknowledgement file's bytes: the body and its signature."""
    signature = signing.sign(key, canonical(body)).decode().strip()
    return (json.dumps({"body": body, "signature": signature}, indent=2) + "\n").encode()


def needs_ssh_signature(data: bytes) -> bool:
    """Whether an acknowledgement file is a bare body, signed by an OpenSSH signature beside it."""
    try:
        envelope = strict_json(data, limit=MAX_ACK_BYTES, what="acknowledgement")
    except ManifestError:
        return False
    return isinstance(envelope, dict) and "signature" not in envelope and "type" in envelope


@dataclass(frozen=True)
class Opened:
    """A partner's signed file, parsed: its body, the key id that signed it, and the
    envelope's signature (None for a bare body, whose OpenSSH signature is beside it)."""

    body: dict[str, Any]
    key_id: str
    signature: str | None


def open_signed(
    name: str,
    data: bytes,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    version: str,
    kind: str,
    short: str,
    limit: int,
    bare: bool = False,
) -> Opened | RejectedAck:
    """Open a partner's signed file: an envelope `{"body", "signature"}` (acknowledgements,
    refusal reports, destruction receipts), or with `bare` also a body alone.

    The body must be of `version` and name a key in `keys`; an envelope's signature is
    verified here, a bare body's is left to the caller. `kind` ("an acknowledgement file")
    and `short` ("acknowledgement") word the rejections."""
    try:
        envelope = strict_json(data, limit=limit, what=short)
        if not isinstance(envelope, dict):
            raise TypeError
        alone = bare and "signature" not in envelope and "type" in envelope
        body, signature = (envelope, None) if alone else (envelope["body"], envelope["signature"])
        if not isinstance(body, dict) or not (alone or isinstance(signature, str)):
            raise TypeError
    except (ManifestError, KeyError, TypeError):
        return RejectedAck(name, f"not {kind} (unreadable JSON or no signature)")
    key_id = body.get("key_id")
    # Only a well-formed key id is repeated in messages and the ledger.
    key_id = key_id if isinstance(key_id, str) and _KEY_ID.fullmatch(key_id) else None
    if body.get("type") != version:
        return RejectedAck(name, f"not an {version} {short}", key_id)
    if key_id is None or key_id not in keys:
        return RejectedAck(name, f"signed by a key the partner has not published ({key_id})")
    if signature is not None:
        try:
            signing.verify(keys[key_id], canonical(body), signature.encode())
        except (CryptoError, ValueError, RecursionError):  # lone surrogates do not encode
            return RejectedAck(name, f"signature does not verify with partner key {key_id}", key_id)
    return Opened(body, key_id, signature)


def verify(
    name: str,
    data: bytes,
    keys: Mapping[str, Ed25519PublicKey],
    ssh_signature: bytes | None = None,
) -> Ack | RejectedAck:
    """Check one acknowledgement file against the partner's keys (by key id).

    The file is an envelope with its signature, or a bare body with `ssh_signature`, the
    OpenSSH signature of the file's exact bytes (`<name>.sig`)."""
    if len(data) > MAX_ACK_BYTES:
        return RejectedAck(name, f"larger than {MAX_ACK_BYTES} bytes")
    opened = open_signed(
        name,
        data,
        keys,
        version=ACK_VERSION,
        kind="an acknowledgement file",
        short="acknowledgement",
        limit=MAX_ACK_BYTES,
        bare=True,
    )
    if isinstance(opened, RejectedAck):
        return opened
    body, key_id = opened.body, opened.key_id
    if opened.signature is not None:
        proof = {"signature": opened.signature}
    elif ssh_signature is None:
        return RejectedAck(
            name,
            f"no signature: neither a signed envelope nor an OpenSSH signature "
            f"{name}{SSH_SIGNATURE_SUFFIX} beside it",
            key_id,
        )
    else:
        try:
            sshsig.verify(keys[key_id], data, ssh_signature, SSH_NAMESPACE)
        except (CryptoError, ValueError, RecursionError):
            return RejectedAck(
                name,
                f"OpenSSH signature ({SSH_NAMESPACE}) does not verify with partner key {key_id}",
                key_id,
            )
        proof = {
            "file": base64.b64encode(data).decode(),
            "sshsig": ssh_signature.decode("ascii", "replace"),
        }
    checked = _checked(name, body, key_id)
    return replace(checked, proof=proof) if isinstance(checked, Ack) else checked


def _checked(name: str, body: dict[str, Any], key_id: str) -> Ack | RejectedAck:
    """What a verified acknowledgement must state, whichever form signed it."""
    drop_id, rows = body.get("drop_id"), body.get("rows")
    if not isinstance(drop_id, str) or not is_safe_id(drop_id) or name != ack_name(drop_id):
        return RejectedAck(
            name, f"names drop {_shown(drop_id)}, not the one its file name says", key_id
        )
    if body.get("verified") is not True or type(rows) is not int or rows < 0:
        return RejectedAck(name, "does not state a verified drop with a row count", key_id)
    manifest_sha256, received_at = body.get("manifest_sha256"), body.get("received_at")
    if not isinstance(manifest_sha256, str) or not _SHA256.fullmatch(manifest_sha256):
        return RejectedAck(name, "does not name the manifest by its SHA-256", key_id)
    if not isinstance(received_at, str) or not _received_at_ok(received_at):
        return RejectedAck(name, "does not state when the drop was received", key_id)
    return Ack(drop_id, manifest_sha256, received_at, rows, key_id, body)


def _received_at_ok(value: str) -> bool:
    """An ISO 8601 time with its UTC offset, as `receive` writes it."""
    if len(value) > 40:
        return False
    try:
        return dt.datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def send_ack(
    outbox: AckOutbox,
    drop_id: str,
    data: bytes,
    *,
    on_attempt: OnAttempt = None,
) -> Delivery:
    """Upload a signed acknowledgement into the outbox (temporary name, then rename)."""
    return outbox.transport.put_bytes(outbox.folder, ack_name(drop_id), data, on_attempt=on_attempt)


def collect_acks(
    remote: Remote,
    folder: str,
    partner_keys: Sequence[Ed25519PublicKey],
    *,
    expected: Mapping[str, str] | None = None,
    on_rejected: Callable[[RejectedAck], None] | None = None,
) -> list[Ack]:
    """The acknowledgements in `folder` that verify with one of the partner's published keys.

    `expected` (drop id -> manifest SHA-256), when given, limits the result to those drops, and
    an acknowledgement of one of them that names another manifest is rejected. Every rejected
    file is passed to `on_rejected` (logged as a warning if there is none). Raises
    ConnectionLost if the connection drops, TransferError if the folder cannot be listed.
    """
    keys = {signing.key_id(key): key for key in partner_keys}
    report = on_rejected or _log_rejected
    found: list[Ack] = []
    for entry in remote.list(folder):
        name = entry.name
        if name.startswith(".") or not name.endswith(ACK_SUFFIX) or entry.is_folder:
            continue
        drop_id = name[: -len(ACK_SUFFIX)]
        if expected is not None and drop_id not in expected:
            continue
        if not is_safe_id(drop_id):  # never repeat a hostile name in a log line or the ledger
            report(RejectedAck("<unsafe name>", "file name is not a drop id"))
            continue
        if entry.size > MAX_ACK_BYTES:
            report(RejectedAck(name, f"larger than {MAX_ACK_BYTES} bytes"))
            continue
        result = _read_ack(remote, folder, name, keys)
        sent = expected.get(drop_id) if expected is not None else None
        if isinstance(result, Ack) and sent is not None and result.manifest_sha256 != sent:
            result = RejectedAck(
                name,
                f"acknowledges manifest {result.manifest_sha256[:16]}, not the one sent "
                f"({sent[:16]})",
                result.key_id,
            )
        if isinstance(result, Ack):
            found.append(result)
        else:
            report(result)
    return found


def _read_ack(
    remote: Remote, folder: str, name: str, keys: Mapping[str, Ed25519PublicKey]
) -> Ack | RejectedAck:
    """Read and verify one acknowledgement file (and its OpenSSH signature, for a bare body);
    a lost connection still raises."""
    try:
        data = remote.read(f"{folder}/{name}", MAX_ACK_BYTES)
    except ConnectionLost:
        raise
    except TransferError:
        return RejectedAck(name, "unreadable on the server")
    armored = None
    if needs_ssh_signature(data):
        try:
            armored = remote.read(f"{folder}/{name}{SSH_SIGNATURE_SUFFIX}", sshsig.MAX_BYTES)
        except ConnectionLost:
            raise
        except TransferError:
            armored = None  # verify names the missing file
    return verify(name, data, keys, armored)


def _log_rejected(rejected: RejectedAck) -> None:
    log.warning("acknowledgement %s rejected: %s", rejected.name, rejected.reason)
