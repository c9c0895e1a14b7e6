"""HMAC-SHA256 over many short values, at about twice the speed of one `hmac.digest` each.

HMAC (RFC 2104) is SHA-256(key ^ opad || SHA-256(key ^ ipad || message)). The two padded-key
states are absorbed once per key; each value then costs two copies of a hashlib state, two
updates and two digests, all in C. The output is exactly HMAC-SHA256 (tests pin it), so
pseudonyms and disclosure hashes made before this module are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import sha256
from typing import Any

BLOCK = 64  # SHA-256 block size


def pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after absorbing the HMAC inner and outer padded keys."""
    if len(key) > BLOCK:
        key = sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    return sha256(bytes(b ^ 0x36 for b in key)), sha256(bytes(b ^ 0x5C for b in key))


class KeyedHash:
    """HMAC-SHA256 under one key, truncated to `width` bytes, over batches of values."""

    def __init__(self, key: bytes, width: int = 32) -> None:
        if not 1 <= width <= 32:
            raise ValueError("width must be between 1 and 32 bytes")
        self._inner, self._outer = pads(key)
        self.width = width

    def digests(self, items: Iterable[bytes]) -> list[bytes]:
        """One truncated MAC per value, in order."""
        inner, outer, width = self._inner.copy, self._outer.copy, self.width
        out: list[bytes] = []
        append = out.append
        for item in items:
            i = inner()
            i.update(item)
            o = outer()
            o.update(i.digest())
            append(o.digest()[:width])
        return out

    def joined(self, items: Iterable[bytes]) -> bytes:
        """The truncated MACs of the values, concatenated (`width` bytes each)."""
        return b"".join(self.digests(items))
