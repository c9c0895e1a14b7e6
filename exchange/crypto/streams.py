"""Small stream adapters: a pull-reader over byte chunks and a hashing writer."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO


class ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks.

    An exception raised while producing chunks is kept in `error`, so the caller can re-raise
    the original after a library that reads from us has wrapped it.
    """

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks: Iterator[bytes | memoryview] = iter(chunks)
        self._pending = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
            except BaseException as exc:
                self.error = exc
                raise
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class HashingWriter(io.RawIOBase):
    """Writes through to a file while counting bytes and hashing them with SHA-256."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._target.write(data)
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    @property
    def sha256(self) -> str:
        """Hex digest of everything written so far."""
        return self._sha.hexdigest()
