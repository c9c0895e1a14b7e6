"""Signed checkpoints of the ledger's Merkle tree, in the C2SP formats.

A checkpoint (c2sp.org/tlog-checkpoint) is the text::

    <origin>
    <tree size>
    <base64 of the 32-byte root hash>

signed as a C2SP signed note (c2sp.org/signed-note): the text, a blank line, then one line per
signature, ``— <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>``. The key name
is the origin; the key hash is the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || the
32-byte public key). Go's golang.org/x/mod/sumdb/note, transparency-dev and sigstore read it.

Lines from other keys (a partner's cosignature, say) are kept and ignored, as the spec says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.errors import LedgerError

ED25519 = b"\x01"  # the signed-note signature type of Ed25519
DASH = "\u2014 "  # an em dash and a space start every signature line
MAX_SIGNATURES = 100  # as golang.org/x/mod/sumdb/note
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise LedgerError("a key name must be non-empty, without spaces or '+'")


def key_hash(name: str, key: Ed25519PublicKey) -> bytes:
    """The 4-byte key hash of the signed-note spec for an Ed25519 key of that name."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + _raw(key)).digest()[:4]


def verifier_key(name: str, key: Ed25519PublicKey) -> str:
    """The key as signed-note verifier text, ``<name>+<hex key hash>+<base64(0x01 || key)>``.

    This is what Go's note.NewVerifier and the C2SP witness tools take, so a partner can check
    our checkpoints with them.
    """
    _check_name(name)
    material = base64.b64encode(ED25519 + _raw(key)).decode()
    return f"{name}+{key_hash(name, key).hex()}+{material}"


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """The signed note: `text` (ending in a newline, no blank line), then the signature."""
    _check_name(name)
    if not text.endswith("\n") or "\n\n" in text:
        raise LedgerError("a note's text must end with a newline and hold no blank line")
    signature = key.sign(text.encode())
    blob = base64.b64encode(key_hash(name, key.public_key()) + signature).decode()
    return f"{text}\n{DASH}{name} {blob}\n"


def open_note(note: str, name: str, key: Ed25519PublicKey) -> str:
    """The text of `note` if it carries a good signature by `key` under `name`.

    Raises LedgerError when the note is malformed, has no signature by that key, or the
    signature does not verify.
    """
    if len(note) > 1_000_000:
        raise LedgerError("signed note is too large")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise LedgerError("malformed signed note: no signature block")
    text, block = note[: cut + 1], note[cut + 2 :]
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise LedgerError("malformed signed note: too many signatures")
    wanted = key_hash(name, key)
    for line in lines:
        if not line.startswith(DASH):
            raise LedgerError("malformed signed note: a signature line does not start with '—'")
        signer, _, blob = line[len(DASH) :].rpartition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise LedgerError("malformed signed note: a signature is not base64") from None
        if not signer or len(raw) < 5:
            raise LedgerError("malformed signed note: a signature line is incomplete")
        if signer != name or raw[:4] != wanted:
            continue  # another key's signature (a witness, say): not ours to judge
        try:
            key.verify(raw[4:], text.encode())
        except InvalidSignature:
            raise LedgerError(f"signature by {name} does not verify") from None
        return text
    raise LedgerError(f"no signature by {name} with key hash {wanted.hex()}")


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the ledger's tree: `size` entries with Merkle root `root`."""

    origin: str
    size: int
    root: bytes
    note: str  # the whole signed note, as stored and handed out
    created_at: str = ""

    @property
    def root_hex(self) -> str:
        """The root hash as lower-case hex."""
        return self.root.hex()

    @property
    def text(self) -> str:
        """The checkpoint body that the signatures cover."""
        return body(self.origin, self.size, self.root)

    @classmethod
    def parse(cls, note: str, *, created_at: str = "") -> Checkpoint:
        """Read a checkpoint note WITHOUT checking its signature (see `open`)."""
        cut = note.rfind("\n\n")
        lines = note[: cut + 1 if cut >= 0 else len(note)].split("\n")
        if cut < 0 or len(lines) < 4:
            raise LedgerError("malformed checkpoint: expected origin, size and root lines")
        origin, size, root_b64 = lines[0], lines[1], lines[2]
        if not origin:
            raise LedgerError("malformed checkpoint: empty origin")
        if not _SIZE.fullmatch(size):
            raise LedgerError("malformed checkpoint: the tree size is not a decimal number")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except (binascii.Error, ValueError):
            root = b""
        if len(root) != 32:
            raise LedgerError("malformed checkpoint: the root is not 32 bytes of base64")
        return cls(origin, int(size), root, note, created_at)

    @classmethod
    def open(
        cls, note: str, key: Ed25519PublicKey, *, origin: str | None = None, created_at: str = ""
    ) -> Checkpoint:
        """Parse a checkpoint and check its signature by `key` (and its origin, if given)."""
        checkpoint = cls.parse(note, created_at=created_at)
        if origin is not None and checkpoint.origin != origin:
            raise LedgerError(f"checkpoint is from origin {checkpoint.origin!r}, not {origin!r}")
        open_note(note, checkpoint.origin, key)
        return checkpoint


@dataclass(frozen=True)
class CheckpointRow:
    """A checkpoint as a table row or export line: its columns, before its note is trusted."""

    label: str  # how a message names it, e.g. "checkpoint 12 (size 40)"
    tree_size: int | None
    root: str | None  # hex
    note: str
    created_at: str


def body(origin: str, size: int, root: bytes) -> str:
    """The checkpoint text for a tree, before signing."""
    if not origin or "\n" in origin:
        raise LedgerError("a checkpoint origin must be one non-empty line")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, key: Ed25519PrivateKey) -> Checkpoint:
    """A checkpoint of the tree (size, root), signed by `key` under the origin as key name."""
    note = sign_note(body(origin, size, root), origin, key)
    return Checkpoint(origin, size, root, note)
