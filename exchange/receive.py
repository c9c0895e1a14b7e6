"""The partner's side: verify a drop's signed manifest and checksum, decrypt, count, write out.

Nothing is written under the final name unless every check passed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from exchange import manifest
from exchange.crypto import age, signing
from exchange.errors import CryptoError, DropRejected
from exchange.files import open_private

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Received:
    """A verified, decrypted drop."""

    drop_id: str
    contract_id: str
    rows: int
    output: Path
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_manifest(drop: Path, sender_key: Path) -> dict[str, Any]:
    """Check the manifest's signature and the payload's size and SHA-256; return the manifest."""
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
    if payload.stat().st_size != info["size"] or _sha256(payload) != info["sha256"]:
        raise DropRejected(f"drop {drop.name}: payload does not match the manifest's checksum")
    return body


def _count_rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    reader = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    return sum(batch.num_rows for batch in reader)


def receive(drop: Path, *, identity: Path, sender_key: Path, out_dir: Path) -> Received:
    """Verify, decrypt and write a drop's data to `out_dir`; DropRejected leaves no output."""
    body = verify_manifest(drop, sender_key)
    info = body["payload"]
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{body['drop_id']}.{info['format']}"
    partial = out_dir / f".{final.name}.partial"
    partial.unlink(missing_ok=True)
    try:
        identities = age.load_identities(identity)
        with (drop / Path(info["name"]).name).open("rb") as source, open_private(partial) as out:
            age.decrypt_stream(source, out, identities)
        rows = _count_rows(partial, info["format"])
        if rows != body["rows"]["sent"]:
            raise DropRejected(
                f"drop {drop.name}: {rows} rows decrypted, manifest says {body['rows']['sent']}"
            )
        os.replace(partial, final)
    except CryptoError as exc:
        raise DropRejected(f"drop {drop.name}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return Received(body["drop_id"], body["contract"]["id"], rows, final, body)
