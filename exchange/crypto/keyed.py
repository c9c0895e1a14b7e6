"""HMAC-SHA256 over many short values: about twice the speed of `hmac.digest` per value, and
run on another core when there are many.

HMAC (RFC 2104) is SHA-256(key ^ opad || SHA-256(key ^ ipad || message)). The two padded-key
states are absorbed once per key; each value then costs two copies of a hashlib state, two
updates and two digests. The output is exactly HMAC-SHA256 (tests pin it), so pseudonyms and
disclosure hashes made before this module are unchanged.

Hashing short values holds Python's GIL, so a thread cannot hash beside the rest of a run.
Large arrays are therefore handed to a helper process (this module run with `python -m`,
started once per process and fed through pipes; it imports only the standard library): the
calling thread waits on the pipe without the GIL while the helper hashes on another core. If
the helper cannot start or dies, the values are hashed here instead, with the same result.
The key goes to the helper over its stdin pipe only; nothing is logged or written to disk.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from hashlib import sha256
from typing import IO, Any

from exchange.pipes import read_exactly, write_all

BLOCK = 64  # SHA-256 block size
WORKER_MIN_ITEMS = 4096  # fewer values than this are hashed in-process (a round trip costs more)
_HEADER = struct.Struct("<QIIQQ")  # request number, key length, width, values, data bytes
_REPLY = struct.Struct("<QQ")  # request number, values: checked before the digests are used
# A helper that has not answered by then is treated as dead (the values are hashed here).
_DEADLINE_SECONDS = 60.0
_SECONDS_PER_VALUE = 50e-6


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
        self._key = key
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

    def array(self, values: Any) -> bytes:
        """`joined` over an Arrow binary array without nulls, on the helper process if large."""
        import numpy as np
        import pyarrow as pa

        count = len(values)
        if count >= WORKER_MIN_ITEMS:
            wide = values.cast(pa.large_binary())
            _, offsets_buffer, data_buffer = wide.buffers()
            offsets = np.frombuffer(offsets_buffer, dtype="<i8")[
                wide.offset : wide.offset + count + 1
            ]
            first, last = int(offsets[0]), int(offsets[-1])
            data = memoryview(data_buffer)[first:last] if data_buffer is not None else b""
            result = _helper().run(self._key, self.width, offsets - first, data, count)
            if result is not None:
                return result
        return self.joined(values.to_pylist())


class _Helper:
    """One helper process per process, used by one caller at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._broken = False
        self._sequence = 0

    def _start(self) -> subprocess.Popen[bytes] | None:
        if self._process is not None and self._pid == os.getpid():
            return self._process
        self._process = None  # a forked child must not share its parent's pipes
        if not sys.executable:  # an embedded interpreter: nothing to start
            self._broken = True
            return None
        try:
            # -P: `-m` would otherwise put the working folder first on sys.path, and a planted
            # exchange/crypto/keyed.py there would be handed the key and the subject ids.
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-m", "exchange.crypto.keyed"],
                cwd="/",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self._broken = True
            return None
        self._pid = os.getpid()
        assert self._process.stdin is not None and self._process.stdout is not None
        for pipe in (self._process.stdin, self._process.stdout):
            os.set_blocking(pipe.fileno(), False)  # so a deadline holds mid-write too
        return self._process

    def run(self, key: bytes, width: int, offsets: Any, data: Any, count: int) -> bytes | None:
        """The joined MACs, or None if the helper is not available (hash in-process then).

        Every exchange has a deadline and its reply must echo the request's number and size,
        so a stuck or confused helper costs a fallback, never a hang or a wrong digest."""
        if self._broken:
            return None
        with self._lock:
            process = self._start()
            if process is None:
                return None
            assert process.stdin is not None and process.stdout is not None
            self._sequence += 1
            deadline = time.monotonic() + _DEADLINE_SECONDS + count * _SECONDS_PER_VALUE
            request = [
                _HEADER.pack(self._sequence, len(key), width, count, len(data)),
                key,
                memoryview(offsets.astype("<i8", copy=False)).cast("B"),
                data,
            ]
            result = None
            try:
                for part in request:
                    write_all(process.stdin.fileno(), part, deadline)
                reply = read_exactly(process.stdout.fileno(), _REPLY.size, deadline)
                if reply is not None and _REPLY.unpack(reply) == (self._sequence, count):
                    result = read_exactly(process.stdout.fileno(), count * width, deadline)
            except OSError:
                result = None
            if result is None:  # dead, stuck or confused: never trust it again in this process
                self._broken = True
                self.close()
            return result

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and self._pid == os.getpid():
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):  # unsent bytes to a helper that died
                        pipe.close()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    parts: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


_HELPER: _Helper | None = None
_HELPER_LOCK = threading.Lock()


def _helper() -> _Helper:
    global _HELPER
    with _HELPER_LOCK:
        if _HELPER is None:
            _HELPER = _Helper()
            atexit.register(_HELPER.close)
        return _HELPER


def _serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The helper's loop: read a request, write the joined MACs; stop at end of input."""
    while True:
        header = _read_exactly(source, _HEADER.size)
        if header is None:
            return
        number, key_length, width, count, size = _HEADER.unpack(header)
        key = _read_exactly(source, key_length) if key_length else b""
        offsets_bytes = _read_exactly(source, 8 * (count + 1))
        data = _read_exactly(source, size) if size else b""
        if key is None or offsets_bytes is None or data is None:
            return
        bounds = memoryview(offsets_bytes).cast("q").tolist()
        items = [data[start:end] for start, end in itertools.pairwise(bounds)]
        sink.write(_REPLY.pack(number, count))
        sink.write(KeyedHash(key, width).joined(items))
        sink.flush()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
