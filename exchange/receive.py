"""The partner's side: verify a drop's signed manifest and checksum, decrypt, count, write out,
then sign an acknowledgement and put it where the sender collects it.

A drop is refused, with nothing written under the final name and no partial file left, when its
manifest signature or payload checksum is wrong, when it is not addressed to the partner's key,
when it was received before (a replay; the record is `.received.json` in the output folder), or
when it does not decrypt to the row count its manifest states.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from exchange import acks, manifest
from exchange.crypto import age, signing
from exchange.errors import CryptoError, DropRejected, TransferError
from exchange.files import open_private, write_private

READ_CHUNK = 1 << 20
RECORD_NAME = ".received.json"
LOCK_NAME = ".received.lock"


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


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(drop: Path, sender_key: Path) -> tuple[dict[str, Any], str]:
    """The verified manifest and the SHA-256 of its exact bytes."""
    try:
        document = (drop / manifest.MANIFEST_NAME).read_bytes()
        signature = (drop / manifest.SIGNATURE_NAME).read_bytes()
    except OSError:
        raise DropRejected(f"drop {drop.name} is incomplete: no manifest or signature") from None
    key = signing.load_public_key(sender_key)  # an unreadable key is the receiver's problem
    try:
        signing.verify(key, document, signature)
    except CryptoError:
        raise DropRejected(f"drop {drop.name}: the manifest signature does not verify") from None
    try:
        body = manifest.from_bytes(document)
    except ValueError as exc:
        raise DropRejected(f"drop {drop.name}: {exc}") from None
    info = body["payload"]
    payload = drop / Path(info["name"]).name
    if not payload.is_file():
        raise DropRejected(f"drop {drop.name}: payload {payload.name} is missing")
    size = payload.stat().st_size
    if size != info["size"]:
        raise DropRejected(
            f"drop {drop.name}: payload is {size} bytes, the manifest says {info['size']} "
            "(truncated or altered)"
        )
    if _sha256(payload) != info["sha256"]:
        raise DropRejected(f"drop {drop.name}: payload does not match the manifest's checksum")
    return body, hashlib.sha256(document).hexdigest()


def verify_manifest(drop: Path, sender_key: Path) -> dict[str, Any]:
    """Check the manifest's signature and the payload's size and SHA-256; return the manifest."""
    return _read_manifest(drop, sender_key)[0]


def _count_rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    reader = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    return sum(batch.num_rows for batch in reader)


def _check_addressed(drop: Path, body: dict[str, Any], identity: Path) -> list[Any]:
    """The partner's identities, if the manifest names one of their public keys."""
    identities = age.load_identities(identity)
    mine = {str(i.to_public()) for i in identities}
    theirs = body["payload"].get("encryption", {}).get("recipients", [])
    if not mine.intersection(theirs):
        raise DropRejected(
            f"drop {drop.name} is not addressed to you: none of the {len(theirs)} recipient "
            f"key(s) in its manifest is a public key of {identity.name}"
        )
    return identities


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock, so two receives cannot both take the same drop."""
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def received_drops(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The record of drops already received into `out_dir` (drop id -> facts)."""
    path = out_dir / RECORD_NAME
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise DropRejected(f"the record of received drops {path} is damaged") from None
    drops = record.get("drops") if isinstance(record, dict) else None
    if not isinstance(drops, dict):
        raise DropRejected(f"the record of received drops {path} is damaged")
    return drops


def _remember(out_dir: Path, drop_id: str, facts: dict[str, Any]) -> None:
    drops = received_drops(out_dir)
    drops[drop_id] = facts
    data = (json.dumps({"drops": drops}, indent=2, sort_keys=True) + "\n").encode()
    temp = out_dir / f"{RECORD_NAME}.tmp"
    write_private(temp, data, overwrite=True)
    os.replace(temp, out_dir / RECORD_NAME)


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
    clock: Callable[[], dt.datetime] = _utcnow,
) -> Received:
    """Verify, decrypt and write a drop's data to `out_dir`; DropRejected leaves no output.

    With `ack_key` (the partner's Ed25519 signing key) a signed acknowledgement is written
    beside the data as `<drop id>.ack.json`, and uploaded to `ack_outbox` if given; an upload
    that fails raises AckNotSent after the data is written. `again` receives a drop a second
    time (after a lost output or ack) instead of refusing it as a replay.
    """
    if ack_outbox is not None and ack_key is None:
        raise CryptoError("an acknowledgement needs the partner's signing key (ack_key)")
    body, manifest_sha256 = _read_manifest(drop, sender_key)
    identities = _check_addressed(drop, body, identity)
    signer = signing.load_private_key(ack_key, ack_key_passphrase) if ack_key else None
    info = body["payload"]
    drop_id = body["drop_id"]
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{drop_id}.{info['format']}"
    partial = out_dir / f".{final.name}.partial"
    with _exclusive(out_dir):
        earlier = received_drops(out_dir).get(drop_id)
        if earlier is not None and not again:
            raise DropRejected(
                f"drop {drop_id} was already received at {earlier.get('received_at')}: "
                "refusing a replay"
            )
        partial.unlink(missing_ok=True)
        try:
            with (
                (drop / Path(info["name"]).name).open("rb") as source,
                open_private(partial) as out,
            ):
                age.decrypt_stream(source, out, identities)
            rows = _count_rows(partial, info["format"])
            if rows != body["rows"]["sent"]:
                raise DropRejected(
                    f"drop {drop_id}: {rows} rows decrypted, manifest says {body['rows']['sent']}"
                )
            os.replace(partial, final)
        except CryptoError as exc:
            raise DropRejected(f"drop {drop_id}: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        received_at = clock().isoformat(timespec="seconds")
        _remember(
            out_dir,
            drop_id,
            {
                "received_at": received_at,
                "manifest_sha256": manifest_sha256,
                "rows": rows,
                "output": final.name,
            },
        )
    got = Received(drop_id, body["contract"]["id"], rows, final, body, manifest_sha256)
    if signer is None:
        return got
    ack = acks.build(
        body,
        manifest_sha256,
        rows=rows,
        received_at=received_at,
        key_id=signing.key_id(signer.public_key()),
    )
    data = acks.sign(ack, signer)
    ack_path = write_private(out_dir / acks.ack_name(drop_id), data, overwrite=True)
    got = replace(got, ack=ack, ack_path=ack_path)
    if ack_outbox is None:
        return got
    try:
        sent = acks.send_ack(ack_outbox, drop_id, data)
    except TransferError as exc:
        raise acks.AckNotSent(
            f"drop {drop_id} was received and written to {final}, but its acknowledgement "
            f"was not uploaded ({exc}); it is kept at {ack_path} to send again",
            received=got,
            ack_path=ack_path,
        ) from exc
    return replace(got, ack_remote=sent.remote_path)
