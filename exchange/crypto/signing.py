"""Ed25519 signatures (cryptography): the gateway signs manifests, partners verify them."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.errors import CryptoError
from exchange.files import UnsafePath, read_private


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM PKCS#8 or OpenSSH format)."""
    try:
        data = read_private(path, "signing key")
    except UnsafePath as exc:
        raise CryptoError(str(exc)) from None
    except OSError as exc:
        raise CryptoError(f"cannot read signing key {path.name}: {exc.strerror}") from exc
    load = (
        serialization.load_ssh_private_key
        if data.startswith(b"-----BEGIN OPENSSH")
        else serialization.load_pem_private_key
    )
    key: object
    try:
        key = load(data, passphrase)
    except (ValueError, TypeError):
        raise CryptoError(_unloadable(path, load, data, passphrase)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CryptoError(f"signing key {path.name} is not an Ed25519 key")
    return key


def _unloadable(path: Path, load: Any, data: bytes, passphrase: bytes | None) -> str:
    """Why a private key did not load: encrypted with no passphrase, a wrong passphrase, a
    passphrase for a key that has none, or not a private key at all."""
    try:
        load(data, None)
        encrypted = False
    except TypeError:  # the key is encrypted and no passphrase was given
        encrypted = True
    except ValueError:
        return (
            f"signing key {path} is unreadable: it is not a readable private key "
            "(PEM PKCS#8 or OpenSSH, Ed25519)"
        )
    if encrypted and passphrase is None:
        return (
            f"signing key {path} is encrypted: give its passphrase "
            "(--ask-passphrase or --passphrase-env VAR)"
        )
    if encrypted:
        return f"signing key {path}: the passphrase is wrong"
    return (
        f"signing key {path} is not encrypted, and a passphrase was given: "
        "leave out --ask-passphrase and --passphrase-env"
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key (an OpenSSH `ssh-ed25519 ...` line or PEM)."""
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise CryptoError(f"cannot read public key {path.name}: {exc.strerror}") from exc
    key: object
    try:
        if data.startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CryptoError(f"public key {path.name} is unreadable") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CryptoError(f"public key {path.name} is not an Ed25519 key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable fingerprint: SHA-256 of the raw public key, as 'ed25519:' + 16 hex."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """A detached signature, base64 text with a newline (so it travels as a small text file)."""
    return base64.b64encode(key.sign(message)) + b"\n"


def verify(key: Ed25519PublicKey, message: bytes, signature: bytes) -> None:
    """Raise CryptoError unless `signature` (base64 text) signs `message` under `key`."""
    try:
        key.verify(base64.b64decode(signature.strip(), validate=True), message)
    except (InvalidSignature, ValueError):
        raise CryptoError("signature does not verify") from None
