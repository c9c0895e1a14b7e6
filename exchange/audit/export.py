"""A self-contained export of the ledger that an auditor verifies offline, with no database.

The file is JSON Lines, UTF-8, written 0600:

1. a header: ``{"format": "exchange-audit-ledger", "version": 1, "exported_at": ...,
   "public_key": "ssh-ed25519 ...", "key_id": "ed25519:...", "entries": N, "checkpoints": K,
   "head": "<hash of entry N>"}``
2. K lines ``{"checkpoint": {"id", "tree_size", "root", "note", "created_at"}}``, oldest first
   (every stored checkpoint, so one larger than the entries shows deleted entries);
3. N lines ``{"entry": {"seq", "recorded_at", "event", "run_id", "contract_id", "body",
   "prev_hash", "entry_hash"}}`` in `seq` order: the table's columns as they are.

Everything is read in one database transaction, so the entries and checkpoints agree.
`verify_export` needs only the file and the gateway's public key, obtained separately: the
key named inside the file is checked against it, never trusted.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.audit.chain import ChainCheck, Verification, from_checkpoints, held_checkpoints
from exchange.audit.checkpoint import CheckpointRow
from exchange.audit.entry import GENESIS, Entry
from exchange.audit.storage import Store
from exchange.crypto import signing
from exchange.errors import CryptoError, LedgerError
from exchange.files import open_private

FORMAT = "exchange-audit-ledger"
VERSION = 1
ENTRY_FIELDS = (
    "seq",
    "recorded_at",
    "event",
    "run_id",
    "contract_id",
    "body",
    "prev_hash",
    "entry_hash",
)


def _line(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def _ssh_key(text: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, TypeError, IndexError):
        raise CryptoError("the public key is not an OpenSSH public key line") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CryptoError("the public key is not an Ed25519 key")
    return key


def write_export(
    store: Store, path: Path, public_key_text: str, *, overwrite: bool = False
) -> Path:
    """Write the ledger to `path` (see the module's docstring); FileExistsError unless overwrite."""
    key = _ssh_key(public_key_text)
    with store.snapshot() as snapshot:
        header = {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "public_key": public_key_text.strip(),
            "key_id": signing.key_id(key),
            "entries": snapshot.size,
            "checkpoints": len(snapshot.checkpoints),
            "head": snapshot.head,
        }
        with open_private(path, overwrite=overwrite) as raw:
            out = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            out.write(_line(header))
            for checkpoint in snapshot.checkpoints:
                out.write(_line({"checkpoint": checkpoint}))
            for entry in snapshot.entries:
                out.write(_line({"entry": entry}))
            out.flush()
            out.detach()
    return path


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"cannot read export {path.name}: {exc.strerror}") from exc
    with handle:
        for number, text in enumerate(handle, start=1):
            try:
                value = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise LedgerError(f"export {path.name}: line {number} is not JSON") from None
            if not isinstance(value, dict):
                raise LedgerError(f"export {path.name}: line {number} is not a JSON object")
            yield number, value


def _entry(value: Any) -> Entry | None:
    if not isinstance(value, dict) or set(value) != set(ENTRY_FIELDS):
        return None
    ints, texts = ("seq",), ("recorded_at", "event", "body", "prev_hash", "entry_hash")
    if not all(type(value[k]) is int for k in ints):
        return None
    if not all(isinstance(value[k], str) for k in texts):
        return None
    if not all(value[k] is None or isinstance(value[k], str) for k in ("run_id", "contract_id")):
        return None
    return Entry(**value)


def _row(number: int, value: Any) -> CheckpointRow:
    if not isinstance(value, dict) or not isinstance(value.get("note"), str):
        raise LedgerError(f"line {number} is not a valid checkpoint")
    size, root = value.get("tree_size"), value.get("root")
    return CheckpointRow(
        f"checkpoint {value.get('id', '?')} (size {size})",
        size if type(size) is int else -1,
        root if isinstance(root, str) else "",
        value["note"],
        str(value.get("created_at", "")),
    )


def verify_export(
    path: str | Path,
    public_key_path: str | Path,
    *,
    held: Iterable[str] = (),
    origin: str | None = None,
) -> Verification:
    """Verify an export offline: chain, checkpoints' signatures and roots, completeness.

    `held` are checkpoint notes obtained elsewhere (from partners' manifests, an earlier
    audit); each must be signed by the key and consistent with the exported entries. Given
    `origin`, every checkpoint must name that log (a checkpoint of another log signed with
    the same key is refused). Raises
    LedgerError (unreadable or not an export) or CryptoError (unusable key file).
    """
    path, key = Path(path), signing.load_public_key(Path(public_key_path))
    records = _records(path)
    try:
        _, header = next(records)
    except StopIteration:
        raise LedgerError(f"export {path.name} is empty") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise LedgerError(f"{path.name} is not an audit ledger export (version {VERSION})")
    named = _ssh_key(str(header.get("public_key", "")))
    if named.public_bytes_raw() != key.public_bytes_raw():
        return Verification(
            0,
            GENESIS,
            reason=f"the export was made for key {signing.key_id(named)}, "
            f"not the given {signing.key_id(key)}",
        )
    rows: list[CheckpointRow] = []
    check: ChainCheck | None = None
    count = 0
    for number, record in records:
        if "checkpoint" in record and check is None:
            rows.append(_row(number, record["checkpoint"]))
            continue
        if check is None:
            check = _start(rows, held, key, origin)
            if check.problem is not None:
                return check.finish()
        entry = _entry(record.get("entry"))
        if entry is None:
            check.fail(check.expected, f"line {number} is not a valid entry")
            return check.finish()
        count += 1
        if not check.add(entry):
            return check.finish()
    if check is None:
        check = _start(rows, held, key, origin)
        if check.problem is not None:
            return check.finish()
    announced = header.get("entries")
    result = check.finish()
    if result.ok and (announced != count or header.get("checkpoints") != len(rows)):
        return Verification(
            result.entries,
            result.head,
            None,
            f"the export is incomplete: the header announces {announced} entries and "
            f"{header.get('checkpoints')} checkpoints, the file holds {count} and {len(rows)}",
            result.checkpoints,
            result.signed_size,
            True,
        )
    return result


def _start(
    rows: list[CheckpointRow], held: Iterable[str], key: Ed25519PublicKey, origin: str | None
) -> ChainCheck:
    return from_checkpoints(rows, key, origin, lambda: held_checkpoints(held, key, origin))
