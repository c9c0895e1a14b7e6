"""HMAC-SHA256 over many short values: a column at a time in Apache DataFusion, off the GIL.

HMAC (RFC 2104) is SHA-256(key ^ opad || SHA-256(key ^ ipad || message)). Over an Arrow column
that is two `digest(concat(pad, value), 'sha256')` expressions, which DataFusion evaluates in
native code without holding Python's GIL, so the rest of a run goes on beside it: about 0.4 us
of CPU per value against about 1.8 us for the Python loop below, one call per value
(BENCHMARKS.md, fifth round). The loop stays for small inputs, where importing DataFusion and
planning the expression would cost more, and in a process forked after DataFusion started
(its thread pool is not relied on after a fork). Both give exactly HMAC-SHA256 (tests pin it against
the `hmac` module), so pseudonyms and disclosure hashes are unchanged.

The same path gives plain SHA-256 digests (`sha256_digests`), which the whole-run uniqueness
check takes of key values longer than 64 bytes (`exchange.universal_hash`) to bound their cost.

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

    def digests(self, items: Iterable[bytes], width: int | None = None) -> list[bytes]:
        """One MAC per value, in order (the Python loop), truncated to `width` bytes (the
        hash's own width by default)."""
        inner, outer = self._inner.copy, self._outer.copy
        width = self.width if width is None else width
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

    def macs(self, values: pa.Array) -> np.ndarray:
        """Each value's MAC as a row of an (n, width) uint8 array, over an Arrow binary array
        without nulls; column-wise when it is large (a view of DataFusion's output: no copy)."""
        if values.null_count:
            raise ValueError("keyed hashing takes no nulls")
        if len(values) >= COLUMNAR_MIN_ITEMS and _columnar.usable():
            macs = _columnar.digests(values, self)
            if macs is not None:
                return macs[:, : self.width]
        joined = self.joined(values.to_pylist())
        return np.frombuffer(joined, dtype=np.uint8).reshape(-1, self.width)


# DataFusion logs its plans at DEBUG through Python's logging, and a plan holds the padded key
# as a literal: these loggers are set to WARNING here, before it loads, and while any of them
# is lowered again the loop is used instead.
DATAFUSION_LOGGERS = (
    "datafusion",
    "datafusion_common",
    "datafusion_datasource",
    "datafusion_execution",
    "datafusion_expr",
    "datafusion_functions",
    "datafusion_optimizer",
    "datafusion_physical_expr",
    "datafusion_physical_optimizer",
    "datafusion_physical_plan",
    "datafusion_python",
    "datafusion_sql",
    "sqlparser",
)
for _name in DATAFUSION_LOGGERS:
    logging.getLogger(_name).setLevel(logging.WARNING)
_CHECK_EVERY = 4096  # rows between two compared with the loop after each columnar call


class _Columnar:
    """DataFusion, imported on first use; given up on in a forked child or after an error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started_in: int | None = None  # the process that began importing DataFusion
        self._failed = False

    def usable(self) -> bool:
        if self._failed or self._started_in not in (None, os.getpid()):
            return False  # a forked child never touches the lock or the pool it inherited
        return not _datafusion_may_log()

    def digests(self, values: pa.Array, keyed: KeyedHash | None = None) -> np.ndarray | None:
        """An (n, 32) array of each value's HMAC-SHA256 under `keyed`'s key (or its plain
        SHA-256 without it), or None if DataFusion failed."""
        self._started_in = os.getpid()  # before the lock: a child forked meanwhile stays out
        failed = None
        try:
            with self._lock:  # the first import, once
                from datafusion import SessionConfig, SessionContext, col, lit
                from datafusion import functions as f

            def mac(pad: bytes, message: Any) -> Any:
                return f.digest(f.concat(lit(pa.scalar(pad, pa.binary())), message), "sha256")

            # A fresh context each time (a context keeps every table it is given); one
            # partition, so the rows come back in the order they went in.
            context = SessionContext(SessionConfig().with_target_partitions(1))
            frame = context.from_arrow(pa.table({"v": values}))
            value = col("v")
            if keyed is None:
                digest = f.digest(value, "sha256")
            else:
                digest = mac(keyed._pads[1], mac(keyed._pads[0], value))
            result = frame.select(digest.alias("mac"))
            column = result.to_arrow_table().column("mac").combine_chunks()
            fixed = column.cast(pa.binary(MAC_BYTES))  # raises unless every MAC is 32 bytes
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # any other, a Rust panic too: its text may quote the plan
            failed = "failed"  # (a panic's own message is printed to stderr by Rust first)
        if failed is None and not _agrees(fixed, keyed, values):
            failed = "gave digests in another order or of other values"
        if failed is not None:  # logged outside the handler, so no traceback can carry the plan
            self._failed = True
            log.warning("columnar hashing %s; hashing value by value instead", failed)
            return None
        data = np.frombuffer(fixed.buffers()[1], dtype=np.uint8)
        start = fixed.offset * MAC_BYTES
        return data[start : start + len(fixed) * MAC_BYTES].reshape(-1, MAC_BYTES)


def _datafusion_may_log() -> bool:
    """Whether any of DataFusion's loggers, or one below them, is set to pass an INFO record.

    By level alone: a logger that is disabled but set low still hands its level to the child
    loggers DataFusion makes on first use, and those are not disabled."""
    names = [*DATAFUSION_LOGGERS]
    names += [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.partition(".")[0] in DATAFUSION_LOGGERS and "." in name
    ]
    return any(logging.getLogger(name).getEffectiveLevel() <= logging.INFO for name in names)


def _agrees(digests: pa.FixedSizeBinaryArray, keyed: KeyedHash | None, values: pa.Array) -> bool:
    """As many digests as values, and the first, the last and one row in every 4,096 equal to
    the loop's (DataFusion works in batches of 8,192 rows): batches reordered are caught, for a
    few microseconds per 4,096 rows."""
    count = len(values)
    if len(digests) != count:
        return False
    rows = sorted({*range(0, count, _CHECK_EVERY), count - 1, count // 2})
    items = [values[row].as_py() for row in rows]
    if keyed is None:
        expected = [sha256(item).digest() for item in items]
    else:
        expected = keyed.digests(items, width=MAC_BYTES)  # whole MACs, whatever it keeps
    return all(digests[row].as_py() == want for row, want in zip(rows, expected, strict=True))


def sha256_digests(values: pa.Array) -> np.ndarray:
    """Each value's SHA-256 as a row of an (n, 32) uint8 array, a column at a time when large
    (the loop otherwise: the same bytes). Values are binary; no nulls."""
    if values.null_count:
        raise ValueError("sha256_digests takes no nulls")
    digests = None
    if len(values) >= COLUMNAR_MIN_ITEMS and _columnar.usable():
        digests = _columnar.digests(values)
    if digests is None:
        joined = b"".join(sha256(item).digest() for item in values.to_pylist())
        digests = np.frombuffer(joined, dtype=np.uint8).reshape(-1, MAC_BYTES)
    return np.ascontiguousarray(digests)


_columnar = _Columnar()
