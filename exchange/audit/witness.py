"""Partners as witnesses of the gateway's ledger: consistency proofs out, cosignatures back.

Gateway side: each manifest carries, beside its signed checkpoint, RFC 9162 consistency proofs
from the checkpoints the gateway last handed to the same recipient (`manifest_ledger`). Which
checkpoint went with which drop is kept outside the database, in ``handed.jsonl`` beside the
anchor's own files (one JSON line per manifest: drop, run, contract, recipient, tree size);
a drop counts as handed once the ledger records its `transfer.sent`.

Partner side: the partner keeps the newest checkpoint verified per sender key (never per the
origin a checkpoint names, which the key's holder chooses) and checks that every new one is of
the same log and extends it, refusing a log that was renamed, rewritten, truncated or forked.
A partner that accepted a checkpoint cosigns it in the C2SP tlog-cosignature/v1 form
(Ed25519): the note signature line ``— <name> base64(key hash || u64 timestamp || signature)`` over
``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint text, the key hash being
SHA-256(name || 0x0A || 0x04 || public key)[:4].
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.audit import merkle
from exchange.audit.anchor import lines_newest_first
from exchange.audit.checkpoint import DASH, Checkpoint
from exchange.errors import LedgerError

if TYPE_CHECKING:
    from exchange.audit.entry import Entry
    from exchange.audit.ledger import Ledger

HANDED = "handed.jsonl"
MAX_BASES = 4  # proofs from this many recent checkpoints: a partner holding any of them can check
HISTORY = 256  # (size, root) pairs a partner remembers, so an older drop received late is known
COSIGNATURE_TYPE = b"\x04"  # tlog-cosignature/v1, Ed25519
COSIGNATURE_HEADER = "cosignature/v1"


# -- cosignatures (C2SP tlog-cosignature/v1, Ed25519) ----------------------------------------


def witness_name(key_id: str) -> str:
    """The cosigner name a partner signs under: derived from its key id, so nothing to agree."""
    return f"exchange-partner/{key_id.removeprefix('ed25519:')}"


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cosigner_key_hash(name: str, key: Ed25519PublicKey) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || key)[:4], the cosignature's 4-byte key id."""
    return hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_TYPE + _raw(key)).digest()[:4]


def cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What a v1 cosignature signs: the header line, the time line, the checkpoint text."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{checkpoint_text}".encode()


def cosign(checkpoint_text: str, name: str, key: Ed25519PrivateKey, when: dt.datetime) -> str:
    """The cosignature line (without its newline) for a checkpoint's text, at `when`."""
    timestamp = int(when.timestamp())
    if not 0 <= timestamp < 1 << 63:
        raise LedgerError("a cosignature time must be after 1970")
    signature = key.sign(cosigned_message(checkpoint_text, timestamp))
    blob = cosigner_key_hash(name, key.public_key()) + struct.pack(">Q", timestamp) + signature
    return f"{DASH}{name} {base64.b64encode(blob).decode()}"


def open_cosignature(line: str, checkpoint_text: str, name: str, key: Ed25519PublicKey) -> int:
    """The timestamp of a good cosignature by `key` under `name`; LedgerError otherwise."""
    if len(line) > 1000 or not line.startswith(DASH):
        raise LedgerError("a cosignature is not a signed-note signature line")
    signer, _, blob = line[len(DASH) :].rpartition(" ")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerError("a cosignature is not base64") from None
    if signer != name or len(raw) != 4 + 8 + 64:
        raise LedgerError(f"not a cosignature by {name}")
    if raw[:4] != cosigner_key_hash(name, key):
        raise LedgerError(f"the cosignature's key hash is not that of {name}'s key")
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    if timestamp >= 1 << 63:
        raise LedgerError("the cosignature's time is out of range")
    try:
        key.verify(raw[12:], cosigned_message(checkpoint_text, timestamp))
    except InvalidSignature:
        raise LedgerError(f"the cosignature by {name} does not verify") from None
    return int(timestamp)


def cosigned_note(note: str, line: str) -> str:
    """The checkpoint note with a cosignature line added, as C2SP tools read it."""
    return f"{note}{line}\n"


# -- gateway side: which checkpoint went to whom ----------------------------------------------


def _handed_path(ledger: Ledger) -> Path | None:
    return ledger.anchor.folder / HANDED if ledger.anchor is not None else None


def _handed(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of handed.jsonl, newest first (read from the end: the newest are wanted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as handle:
        for line in lines_newest_first(handle):
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict):
                    yield row


def _note_handed(path: Path, row: Mapping[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(dict(row), sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def handed_sizes(ledger: Ledger, recipient: str, below: int) -> list[int]:
    """Tree sizes to prove consistency from (newest first): the checkpoints of the last
    MAX_BASES drops delivered to `recipient`, and of up to MAX_BASES newer ones prepared but not
    yet known delivered (a retried delivery can reach the partner after a later drop: the
    later drop's proof from it makes it known there)."""
    path = _handed_path(ledger)
    if path is None:
        return []
    delivered: list[int] = []
    pending: list[int] = []
    for row in _handed(path):
        if row.get("recipient") != recipient:
            continue
        size = row.get("size")
        if type(size) is not int or not 0 < size < below or size in delivered + pending:
            continue
        run_id, contract_id = row.get("run_id"), row.get("contract_id")
        if not isinstance(run_id, str) or not isinstance(contract_id, str):
            continue
        if ledger.find("transfer.sent", run_id=run_id, contract_id=contract_id) is not None:
            delivered.append(size)
        elif not delivered and len(pending) < MAX_BASES:
            pending.append(size)  # newer than every delivered one: it may still arrive
        if len(delivered) == MAX_BASES:
            break
    return sorted(delivered + pending, reverse=True)


def manifest_ledger(
    ledger: Ledger,
    *,
    contract_id: str,
    recipient: str,
    drop_id: str,
    run_id: str,
    head: tuple[int, str],
    checkpoint: Checkpoint,
) -> dict[str, Any]:
    """The manifest's `ledger`: head, signed checkpoint and consistency proofs to it from the
    checkpoints last delivered to this recipient. Records the checkpoint as handed for the drop."""
    facts: dict[str, Any] = {"seq": head[0], "hash": head[1], "checkpoint": checkpoint.note}
    bases = handed_sizes(ledger, recipient, checkpoint.size)
    if bases:
        # From each base's edge, kept by the anchor: only the entries since are read (issue 13).
        proofs = [(m, *ledger.consistency(m, checkpoint.size)) for m in bases]
        facts["consistency"] = [
            {"from_size": m, "from_root": root.hex(), "proof": [h.hex() for h in proof]}
            for m, root, proof in proofs
        ]
    path = _handed_path(ledger)
    if path is not None:
        row = {
            "drop_id": drop_id,
            "run_id": run_id,
            "contract_id": contract_id,
            "recipient": recipient,
            "size": checkpoint.size,
            "root": checkpoint.root_hex,
            "at": ledger.clock().isoformat(timespec="seconds"),
        }
        _note_handed(path, row)
    return facts


# -- partner side: the witness's state and its check ------------------------------------------


class ForkedLog(LedgerError):
    """The sender's log is not an extension of what this partner saw before."""


@dataclass(frozen=True)
class Seen:
    """The newest checkpoint a partner verified for one log, and the (size, root) it saw."""

    origin: str
    size: int
    root: str  # hex
    note: str
    drop_id: str
    at: str
    history: tuple[tuple[int, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the record keeps it under `witness`)."""
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root,
            "note": self.note,
            "drop_id": self.drop_id,
            "at": self.at,
            "history": [list(pair) for pair in self.history],
        }

    @classmethod
    def from_dict(cls, value: Any) -> Seen:
        """Inverse of as_dict; LedgerError if the record is damaged."""
        try:
            history = tuple((int(s), str(r)) for s, r in value.get("history", []))
            return cls(
                str(value["origin"]),
                int(value["size"]),
                str(value["root"]),
                str(value["note"]),
                str(value["drop_id"]),
                str(value["at"]),
                history,
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            raise LedgerError("the witness record is damaged") from None


def _proofs(value: Any) -> dict[int, tuple[str, list[bytes]]]:
    """The manifest's consistency proofs: starting size -> (its root as hex, the proof)."""
    found: dict[int, tuple[str, list[bytes]]] = {}
    for item in value or ():
        try:
            root = bytes.fromhex(item["from_root"])
            proof = [bytes.fromhex(h) for h in item["proof"]]
            found[int(item["from_size"])] = (root.hex(), proof)
        except (KeyError, TypeError, ValueError):
            raise LedgerError("a consistency proof in the manifest is malformed") from None
    return found


def check(
    held: Seen | None,
    ledger_facts: Mapping[str, Any],
    sender: Ed25519PublicKey,
    *,
    drop_id: str,
    at: str,
) -> tuple[Checkpoint, Seen]:
    """Check a drop's checkpoint against the one held for its sender key; the checkpoint and
    the state to keep (`held` must be looked up by the key, not by the checkpoint's origin).

    Every consistency proof the manifest carries must verify against the new root; the trees
    they start from are then proven prefixes, remembered so that an older drop received late
    is recognised. Raises ForkedLog naming the sizes when the new checkpoint does not extend
    the held one (rewritten, truncated, forked) or cannot be shown to; LedgerError when its
    signature fails.
    """
    new = Checkpoint.open(str(ledger_facts["checkpoint"]), sender)
    proofs = _proofs(ledger_facts.get("consistency"))
    history = dict(held.history) if held else {}
    if held is not None:
        if new.origin != held.origin:
            raise ForkedLog(
                f"the checkpoint is of a log named {new.origin!r}, but the sender's key signed "
                f"log {held.origin!r} of {held.size} entries you verified (drop "
                f"{held.drop_id}): a renamed log is a new history that cannot be shown to "
                "extend what you saw"
            )
        history[held.size] = held.root
        if new.size <= held.size:
            known = history.get(new.size)
            if known == new.root_hex:
                return new, held  # verified before: an older drop, or the same one again
            if known is not None:
                raise ForkedLog(
                    f"the log is forked: its checkpoint of size {new.size} has another root "
                    f"than the one you verified (you hold size {held.size}, from drop "
                    f"{held.drop_id})"
                )
            raise ForkedLog(
                f"the log was truncated or rewritten: this checkpoint has {new.size} "
                f"entries, you verified {held.size} (drop {held.drop_id}), and size "
                f"{new.size} is not one you saw"
            )
        mine = proofs.get(held.size)
        if mine is None:
            raise ForkedLog(
                f"the drop carries no consistency proof from the checkpoint of size "
                f"{held.size} you verified (drop {held.drop_id}) to its size {new.size}: it "
                "cannot be shown to extend what you saw"
            )
        if mine[0] != held.root or not merkle.verify_consistency(
            held.size, new.size, bytes.fromhex(held.root), new.root, mine[1]
        ):
            raise ForkedLog(
                f"the log was rewritten: entries 1..{held.size} you verified (drop "
                f"{held.drop_id}) are not a prefix of its tree of size {new.size}"
            )
    proven: dict[int, str] = {}
    for size, (root, proof) in proofs.items():
        if size > new.size or not merkle.verify_consistency(
            size, new.size, bytes.fromhex(root), new.root, proof
        ):
            raise ForkedLog(
                f"the log was rewritten: its own proof from size {size} to {new.size} does "
                "not verify"
            )
        if history.get(size, root) != root:
            raise ForkedLog(
                f"the log is forked: its tree of size {size} has another root than the one "
                "you verified"
            )
        proven[size] = root
    if held is None:  # first sight of this log: trust on first use, as any witness
        proven[new.size] = new.root_hex
        kept = tuple(sorted(proven.items())[-HISTORY:])
        return new, Seen(new.origin, new.size, new.root_hex, new.note, drop_id, at, kept)
    history.update(proven)
    history[new.size] = new.root_hex
    kept = tuple(sorted(history.items())[-HISTORY:])
    return new, Seen(new.origin, new.size, new.root_hex, new.note, drop_id, at, kept)


# -- the gateway's view of its witnesses ------------------------------------------------------


@dataclass(frozen=True)
class Cosigned:
    """The largest tree a partner key has cosigned, and when (the cosignature's own time)."""

    witness: str
    key_id: str
    contract_id: str
    origin: str
    size: int
    at: str
    recorded_at: str


def largest_cosigned(entries: Iterable[Entry]) -> list[Cosigned]:
    """Per partner key, the largest verified cosignature among `ack.received` entries."""
    best: dict[str, Cosigned] = {}
    for entry in entries:
        keep_largest(best, entry)
    return ranked(best)


def keep_largest(best: dict[str, Cosigned], entry: Entry) -> None:
    """Keep in `best` (partner key -> cosignature) the entry's verified cosignature, if it is
    the largest so far for its key (a later one of equal size and time wins)."""
    if entry.event != "ack.received":
        return
    found = entry.data.get("cosignature")
    if not isinstance(found, dict) or found.get("verified") is not True:
        return
    cosigned = Cosigned(
        str(found["witness"]),
        str(entry.data.get("key_id")),
        entry.contract_id or "",
        str(found["origin"]),
        int(found["size"]),
        str(found["at"]),
        entry.recorded_at,
    )
    kept = best.get(cosigned.witness)
    if kept is None or (cosigned.size, cosigned.at) >= (kept.size, kept.at):
        best[cosigned.witness] = cosigned


def ranked(best: dict[str, Cosigned]) -> list[Cosigned]:
    """The cosignatures kept, by agreement then partner key."""
    return sorted(best.values(), key=lambda c: (c.contract_id, c.witness))


# -- a partner's refusal, reported back to the sender -----------------------------------------

REFUSAL_VERSION = "exchange-witness-refusal/1"
REFUSAL_SUFFIX = ".refused.json"
MAX_REFUSAL_BYTES = 64 << 10


def refusal_name(drop_id: str) -> str:
    """The refusal report's file name, beside the acknowledgements."""
    return f"{drop_id}{REFUSAL_SUFFIX}"


def refusal(
    drop_id: str,
    manifest_sha256: str,
    reason: str,
    held: Seen | None,
    offered: str,
    *,
    at: str,
    key_id: str,
) -> dict[str, Any]:
    """The body of a partner's signed report that it refused a drop's log."""
    return {
        "type": REFUSAL_VERSION,
        "drop_id": drop_id,
        "manifest_sha256": manifest_sha256,
        "reason": reason,
        "held": {"size": held.size, "root": held.root, "note": held.note} if held else None,
        "offered": offered,
        "refused_at": at,
        "key_id": key_id,
    }


@dataclass(frozen=True)
class Refusal:
    """A partner's verified report of a refused log."""

    drop_id: str
    key_id: str
    held_size: int | None
    offered_size: int | None
    body: dict[str, Any]
    signature: str


def open_refusal(
    data: bytes, keys: Mapping[str, Ed25519PublicKey], canonical: Callable[[Any], bytes]
) -> Refusal:
    """Check a refusal report's signature by a partner key; LedgerError says why not."""
    from exchange.manifest import ManifestError, strict_json

    try:
        envelope = strict_json(data, limit=MAX_REFUSAL_BYTES, what="refusal report")
        body, signature = envelope["body"], envelope["signature"]
        if not isinstance(body, dict) or not isinstance(signature, str):
            raise TypeError
        key = keys[body["key_id"]]
        key.verify(base64.b64decode(signature), canonical(body))
    except (ManifestError, KeyError, TypeError, ValueError, binascii.Error):
        raise LedgerError("not a refusal report signed by a partner key") from None
    except InvalidSignature:
        raise LedgerError("the refusal report's signature does not verify") from None
    if body.get("type") != REFUSAL_VERSION or not isinstance(body.get("drop_id"), str):
        raise LedgerError(f"not an {REFUSAL_VERSION} report")

    def size(note: Any) -> int | None:
        try:
            return Checkpoint.parse(str(note)).size
        except LedgerError:
            return None

    held = body.get("held")
    return Refusal(
        body["drop_id"],
        str(body["key_id"]),
        size(held.get("note")) if isinstance(held, dict) else None,
        size(body.get("offered")),
        body,
        signature,
    )
