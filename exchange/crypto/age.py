"""The age cipher (pyrage): streaming encryption to recipients, decryption with identities."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import pyrage

from exchange.crypto.streams import ChunkReader
from exchange.errors import CryptoError
from exchange.files import UnsafePath, read_private


class Sink(Protocol):
    """Anything bytes can be written to."""

    def write(self, data: bytes, /) -> int: ...


NAME = "age"
SUFFIX = ".age"


def recipients(keys: Sequence[str]) -> list[pyrage.x25519.Recipient]:
    """Parse age public keys ("age1..."); CryptoError names the bad one by position."""
    parsed = []
    for i, key in enumerate(keys):
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(key))
        except pyrage.RecipientError:
            raise CryptoError(f"recipient key #{i + 1} is not a valid age public key") from None
    if not parsed:
        raise CryptoError("no recipient keys: refusing to encrypt to nobody")
    return parsed


def encrypt_chunks(chunks: Iterable[bytes | memoryview], out: Sink, keys: Sequence[str]) -> None:
    """Encrypt a stream of plaintext chunks into `out`; plaintext is never buffered whole."""
    reader = ChunkReader(chunks)
    try:
        pyrage.encrypt_io(reader, out, recipients(keys))
    except pyrage.EncryptError as exc:
        if reader.error is not None:
            raise reader.error from None  # the producer's own error, not pyrage's wrapper
        raise CryptoError("encryption failed") from exc


def load_identities(path: Path) -> list[pyrage.x25519.Identity]:
    """Read an age identity file (as written by age-keygen or `exchange keys generate`)."""
    try:
        lines = read_private(path, "age identity file").decode("utf-8").splitlines()
    except UnsafePath as exc:
        raise CryptoError(str(exc)) from None
    except OSError as exc:
        raise CryptoError(f"cannot read identity file {path.name}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise CryptoError(f"identity file {path.name} is not UTF-8 text") from None
    identities = []
    for line in lines:
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except pyrage.IdentityError:
                raise CryptoError(f"identity file {path.name} holds an invalid key") from None
    if not identities:
        raise CryptoError(f"identity file {path.name} holds no age identity")
    return identities


def decrypt_stream(source: BinaryIO, out: BinaryIO, identities: Sequence[object]) -> None:
    """Decrypt `source` into `out`; one opaque error for any failure."""
    try:
        pyrage.decrypt_io(source, out, list(identities))
    except (pyrage.DecryptError, OSError):  # pyrage reports damage past the header as OSError
        raise CryptoError("decryption failed: not for this key, or damaged") from None
