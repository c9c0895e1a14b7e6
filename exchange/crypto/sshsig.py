"""OpenSSH signatures (SSHSIG) of manifests, which a partner checks with `ssh-keygen -Y verify`.

The format is OpenSSH's PROTOCOL.sshsig, for an Ed25519 key: the blob is the magic "SSHSIG",
version 1, the signer's public key, the namespace, an empty reserved string, the hash algorithm
("sha512") and the signature, armored as "-----BEGIN SSH SIGNATURE-----". What the key signs is
"SSHSIG", the namespace, the reserved string, the hash algorithm and the hash of the message, so
a signature made for one namespace (ours: NAMESPACE) never verifies for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.errors import CryptoError

NAMESPACE = "exchange-manifest@exchange-gateway"
MAGIC = b"SSHSIG"
VERSION = 1
KEY_TYPE = b"ssh-ed25519"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
_HASHES = {b"sha512": hashlib.sha512, b"sha256": hashlib.sha256}  # what OpenSSH accepts
_LINE = 70  # ssh-keygen wraps its armor at 70 characters
MAX_BYTES = 4096  # an Ed25519 SSHSIG is about 300 bytes armored


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def public_blob(key: Ed25519PublicKey) -> bytes:
    """The key in SSH wire format: string "ssh-ed25519", string the 32 raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(KEY_TYPE) + _string(raw)


def _signed_data(namespace: bytes, hash_name: bytes, message: bytes) -> bytes:
    digest = _HASHES[hash_name](message).digest()
    return MAGIC + _string(namespace) + _string(b"") + _string(hash_name) + _string(digest)


def sign(key: Ed25519PrivateKey, message: bytes, namespace: str = NAMESPACE) -> bytes:
    """An armored SSHSIG signature of `message`, as `ssh-keygen -Y sign -n NAMESPACE` makes."""
    ns = namespace.encode()
    signature = key.sign(_signed_data(ns, b"sha512", message))
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_blob(key.public_key()))
        + _string(ns)
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(KEY_TYPE) + _string(signature))
    )
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + _LINE] for i in range(0, len(text), _LINE)]
    return "\n".join([BEGIN, *lines, END, ""]).encode("ascii")


class _Reader:
    """Reads SSH wire-format fields; CryptoError on anything short or left over."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, size: int) -> bytes:
        if size > len(self._data) - self._at:
            raise CryptoError("SSH signature is truncated")
        part = self._data[self._at : self._at + size]
        self._at += size
        return part

    def string(self) -> bytes:
        (size,) = struct.unpack(">I", self.take(4))
        return self.take(size)

    def end(self) -> None:
        if self._at != len(self._data):
            raise CryptoError("SSH signature has trailing bytes")


def _unarmor(armored: bytes) -> bytes:
    try:
        lines = armored.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        raise CryptoError("SSH signature is not ASCII armor") from None
    lines = [line.strip() for line in lines]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise CryptoError("SSH signature is not an armored SSHSIG")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("SSH signature is not valid base64") from None


def verify(
    key: Ed25519PublicKey, message: bytes, armored: bytes, namespace: str = NAMESPACE
) -> None:
    """Raise CryptoError unless `armored` is an SSHSIG of `message` by `key` in `namespace`."""
    if len(armored) > MAX_BYTES:
        raise CryptoError("SSH signature is too large")
    blob = _Reader(_unarmor(armored))
    if blob.take(len(MAGIC)) != MAGIC or struct.unpack(">I", blob.take(4))[0] != VERSION:
        raise CryptoError("not an SSHSIG signature of version 1")
    signer = blob.string()
    ns, reserved, hash_name, wrapped = blob.string(), blob.string(), blob.string(), blob.string()
    blob.end()
    if not hmac.compare_digest(signer, public_blob(key)):
        raise CryptoError("SSH signature is by another key")
    if ns != namespace.encode() or reserved or hash_name not in _HASHES:
        raise CryptoError("SSH signature is for another namespace or hash algorithm")
    inner = _Reader(wrapped)
    kind, signature = inner.string(), inner.string()
    inner.end()
    if kind != KEY_TYPE:
        raise CryptoError("SSH signature is not an Ed25519 signature")
    try:
        key.verify(signature, _signed_data(ns, hash_name, message))
    except InvalidSignature:
        raise CryptoError("SSH signature does not verify") from None


def allowed_signers_line(key: Ed25519PublicKey, principal: str = "gateway") -> str:
    """An `allowed_signers` line for `ssh-keygen -Y verify`, limited to our namespace."""
    text = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f'{principal} namespaces="{NAMESPACE}" {text.decode("ascii")}'
