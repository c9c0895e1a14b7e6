"""HMAC-SHA256 over many short values: a column at a time in Apache DataFusion, off the GIL.

HMAC (RFC 2104) is SHA-256(key ^ opad || SHA-256(key ^ ipad || message)). Over an Arrow column
that is two `digest(concat(pad, value), 'sha256')` expressions, which DataFusion evaluates in
native code without holding Python's GIL, so the rest of a run goes on beside it: about 0.4 us
of CPU per value against about 1.8 us for the Python loop below, one call per value
(BENCHMARKS.md, fifth round). The loop stays for small inputs, where importing DataFusion and
planning the expression would cost more, and in a process forked after DataFusion started
(its thread pool does not survive a fork). Both give exactly HMAC-SHA256 (tests pin it against
the `hmac` module), so pseudonyms and disclosure hashes are unchanged.

The padded key is a literal in an expression held only in memory. An error from DataFusion may
print its plan, so its message is never passed on: the values are hashed by the loop instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from hashlib import sha256
from typing import Any

import numpy as np
import pyarrow as pa

BLOCK = 64  # SHA-256 block size
MAC_BYTES = 32
COLUMNAR_MIN_ITEMS = 2048  # fewer values than this are hashed by the loop (planning costs more)

log = logging.getLogger(__name__)


def padded_keys(key: bytes) -> tuple[bytes, bytes]:
    """The HMAC inner and outer padded keys (key ^ ipad, key ^ opad), one block each."""
    if len(key) > BLOCK:
        key = sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


class KeyedHash:
    """HMAC-SHA256 under one key, truncated to `width` bytes, over batches of values."""

    def __init__(self, key: bytes, width: int = MAC_BYTES) -> None:
        if not 1 <= width <= MAC_BYTES:
            raise ValueError("width must be between 1 and 32 bytes")
        self._pads = padded_keys(key)
        # The padded keys absorbed once: each value then costs two state copies, not four blocks.
        self._inner, self._outer = sha256(self._pads[0]), sha256(self._pads[1])
        self.width = width

    def digests(self, items: Iterable[bytes]) -> list[bytes]:
        """One truncated MAC per value, in order (the Python loop)."""
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

    def array(self, values: pa.Array) -> bytes:
        """`joined` over an Arrow binary array without nulls, column-wise when it is large."""
        if values.null_count:
            raise ValueError("keyed hashing takes no nulls")
        if len(values) >= COLUMNAR_MIN_ITEMS and _columnar.usable():
            macs = _columnar.macs(self._pads, values)
            if macs is not None:
                return np.ascontiguousarray(macs[:, : self.width]).tobytes()
        return self.joined(values.to_pylist())


class _Columnar:
    """DataFusion, imported on first use; given up on in a forked child or after an error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started_in: int | None = None  # the process that imported DataFusion
        self._failed = False

    def usable(self) -> bool:
        return not self._failed and self._started_in in (None, os.getpid())

    def macs(self, pads: tuple[bytes, bytes], values: pa.Array) -> np.ndarray | None:
        """An (n, 32) array of HMAC-SHA256 of each value, or None if DataFusion failed."""
        with self._lock:  # the first import, once
            from datafusion import SessionConfig, SessionContext, col, lit
            from datafusion import functions as f

            self._started_in = os.getpid()

        def mac(pad: bytes, message: Any) -> Any:
            return f.digest(f.concat(lit(pa.scalar(pad, pa.binary())), message), "sha256")

        try:
            # A fresh context each time: a context keeps every table it is given.
            context = SessionContext(SessionConfig().with_target_partitions(1))
            frame = context.from_arrow(pa.table({"v": values}))
            result = frame.select(mac(pads[1], mac(pads[0], col("v"))).alias("mac"))
            column = result.to_arrow_table().column("mac").combine_chunks()
            fixed = column.cast(pa.binary(MAC_BYTES))  # raises unless every MAC is 32 bytes
        except Exception:  # any: its message may quote the plan, and so the padded key
            self._failed = True
            log.warning("columnar keyed hashing failed; hashing value by value instead")
            return None
        if len(fixed) != len(values):
            self._failed = True
            log.warning("columnar keyed hashing lost rows; hashing value by value instead")
            return None
        data = np.frombuffer(fixed.buffers()[1], dtype=np.uint8)
        start = fixed.offset * MAC_BYTES
        return data[start : start + len(fixed) * MAC_BYTES].reshape(-1, MAC_BYTES)


_columnar = _Columnar()
