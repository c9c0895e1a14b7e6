"""Keyed 64-bit hashes of byte strings, a column at a time in numpy, for counting repeated keys.

Strongly universal hashing (multilinear over 32-bit words, as in Lemire and Kaser, "Strongly
universal string hashing is fast", 2014), twice with independent keys for 64 bits: any two
different values collide with probability 2**-64 over the keys, and each store of a run's key
hashes draws its own (`new_keys`), so nobody can aim key values at a collision. A collision
could only refuse a run (a repeat seen where there is none), never pass a repeated key.

A value of up to `SHORT` bytes is zero-padded to whole words by Arrow's padding kernel and read
in place, after a word holding its length: padding cannot make two values alike, and a value
hashes alike whatever the widths of the values beside it. A longer value is hashed as its
SHA-256 digest and its length (a collision would need one of SHA-256), which bounds the work
per value.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.crypto.keyed import sha256_digests

SHORT = 64  # longer values are hashed as their SHA-256 digest
_WORD = 4  # bytes a word: products of a word and a 64-bit key are summed modulo 2**64
_FAMILIES = 2  # independent 32-bit hashes, side by side
_POSITIONS = 2 + SHORT // _WORD  # a constant, the length, then the words


def new_keys() -> np.ndarray:
    """Random keys for one store of hashes: one 64-bit key a position, a column a family."""
    raw = os.urandom(8 * _POSITIONS * _FAMILIES)
    return np.frombuffer(raw, "<u8").reshape(_POSITIONS, _FAMILIES).copy()


def hashes(values: pa.Array, keys: np.ndarray) -> np.ndarray:
    """A uint64 for each value of a text or binary array without nulls: equal values alike
    under one set of keys, whatever their position, slicing or Arrow string type."""
    if values.null_count:
        raise ValueError("hashes takes no nulls")
    if not len(values):
        return np.empty(0, np.uint64)
    values = values.cast(pa.large_binary())
    lengths = np.diff(_offsets(values))
    long = lengths > SHORT
    if not long.any():
        return _hashed(keys, lengths, _words(values, lengths))
    out = np.empty(len(values), np.uint64)
    digests = sha256_digests(values.filter(pa.array(long)))
    out[long] = _hashed(keys, lengths[long], digests.view("<u4"))
    short = ~long
    out[short] = _hashed(
        keys, lengths[short], _words(values.filter(pa.array(short)), lengths[short])
    )
    return out


def fixed(rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """A uint64 for each row of an (n, w) array of 64-bit words, each row one value of 8w
    bytes (a number's own bytes, or several hashes side by side): equal rows alike under one
    set of keys. Rows longer than `SHORT` bytes go as binary values, by their digest."""
    rows = np.ascontiguousarray(rows, dtype=np.uint64)
    count, width = rows.shape
    if 8 * width > SHORT:
        data = pa.py_buffer(rows.tobytes())
        values = pa.FixedSizeBinaryArray.from_buffers(pa.binary(8 * width), count, [None, data])
        return hashes(values, keys)
    lengths = np.full(count, 8 * width, np.uint64)
    return _hashed(keys, lengths, rows.view("<u4"))


def _offsets(values: pa.Array) -> np.ndarray:
    """A large binary array's value offsets (one more than its values)."""
    first = values.offset
    return np.frombuffer(values.buffers()[1], np.int64)[first : first + len(values) + 1]


def _words(values: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """Each value as little-endian 4-byte words, padded with zero bytes to the longest's."""
    width = -(-int(lengths.max(initial=0)) // _WORD) * _WORD
    if not width:
        return np.empty((len(values), 0), np.uint32)
    # Padded in Arrow's kernel (bytes, whatever they encode), then read in place.
    padded = pc.ascii_rpad(values.view(pa.large_string()), width, padding="\0")
    padded = padded.view(pa.large_binary())
    offsets = _offsets(padded)
    data = np.frombuffer(padded.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(len(values), width).view("<u4")


def _hashed(keys: np.ndarray, lengths: np.ndarray, words: np.ndarray) -> np.ndarray:
    """The two families' sums (modulo 2**64: numpy's unsigned arithmetic wraps), the upper 32
    bits of each side by side. Words past a value's end are zero, so they add nothing."""
    count = words.shape[1]
    sums = words.astype(np.uint64) @ keys[2 : 2 + count]
    sums += np.outer(lengths.astype(np.uint64), keys[1])
    sums += keys[0]
    return (sums[:, 0] >> np.uint64(32)) << np.uint64(32) | (sums[:, 1] >> np.uint64(32))
