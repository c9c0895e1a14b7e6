"""Seeded 64-bit hashes of byte strings, a column at a time in numpy, for counting repeated keys.

Not a cryptographic hash, and it needs not be one: each store of a run's key hashes draws its
own seed, so nobody can aim values at a collision in advance, and a collision could only fail
a run (a repeat seen where there is none), never pass a repeated key. (A 64-bit prefix of
SHA-256, used before, was no stronger against a chosen collision: 2**32 tries find one.) A
value of up to `SHORT` bytes is padded with zero bytes to whole 8-byte words by Arrow's kernel
and read in place; its length starts the mixing, so padding cannot make two values alike.
A longer value goes through its SHA-256 prefix first, which bounds the work per value. Per
million values of 10-32 bytes: 30-40 ms, against 120-130 ms for SHA-256 in DataFusion.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.crypto.keyed import sha256_prefixes

SHORT = 64  # longer values are hashed by their SHA-256 prefix first
_WORD = 8
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK = (1 << 64) - 1


def hashes(values: pa.Array, seed: int) -> np.ndarray:
    """A uint64 for each value of a text or binary array without nulls: equal values alike
    under one seed, whatever their position, slicing or Arrow string type."""
    if values.null_count:
        raise ValueError("hashes takes no nulls")
    values = values.cast(pa.large_binary())
    lengths = np.diff(_offsets(values))
    state = _mixed(lengths.astype(np.uint64) * _GOLDEN ^ np.uint64(seed & _MASK))
    long = lengths > SHORT
    if not long.any():
        return _chained(state, _words(values, lengths), lengths)
    out = np.empty(len(values), np.uint64)
    out[long] = _mixed(state[long] ^ sha256_prefixes(values.filter(pa.array(long))))
    short = ~long
    out[short] = _chained(
        state[short], _words(values.filter(pa.array(short)), lengths[short]), lengths[short]
    )
    return out


def _offsets(values: pa.Array) -> np.ndarray:
    """A large binary array's value offsets (one more than its values)."""
    first = values.offset
    return np.frombuffer(values.buffers()[1], np.int64)[first : first + len(values) + 1]


def _words(values: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """Each value as little-endian 8-byte words, padded with zero bytes to the longest's."""
    width = -(-int(lengths.max(initial=0)) // _WORD) * _WORD
    if not width:
        return np.empty((len(values), 0), np.uint64)
    # Padded in Arrow's kernel (bytes, whatever they encode), then read in place.
    padded = pc.ascii_rpad(values.view(pa.large_string()), width, padding="\0")
    padded = padded.view(pa.large_binary())
    offsets = _offsets(padded)
    data = np.frombuffer(padded.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(len(values), width).view("<u8")


def _chained(state: np.ndarray, words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each value's words mixed into its state in turn, as many as its length fills."""
    needed = -(-lengths // _WORD)
    for column in range(words.shape[1]):
        step = _mixed(state ^ words[:, column])
        state = np.where(column < needed, step, state)
    return state


def _mixed(words: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, word by word: a bijection, so distinct words stay distinct."""
    z = words ^ (words >> np.uint64(30))
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
