"""Keyed hashes of subject ids: what the disclosure ledger records instead of the ids.

The hash is the first 128 bits of HMAC-SHA256, under a dedicated disclosure key (never the
pseudonymisation key), of the subject id's text (integers in decimal), UTF-8, without white
space at either end: a system that pads its ids in a fixed-width column records the same person
as one that does not, and a lookup finds them. Without the key the hashes say
nothing about who is in the table.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.crypto.keyed import KeyedHash
from exchange.errors import LedgerError

HASH_BYTES = 16
HASH_CHUNK = 65_536  # subject ids hashed (and rows inserted) at a time
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
_KEY_ID_LABEL = b"exchange disclosure key id"
_LOOKUP_LABEL = b"exchange subject lookup\x00"


def subject_text(subject_id: str | int) -> str:
    """A subject id as it is hashed and compared: its text without white space at either end.
    By Arrow's `utf8_trim_whitespace`, as `subject_texts` cuts a column: the two always agree."""
    trimmed = subject_texts(pa.array([str(subject_id)], pa.string()))[0].as_py()
    assert isinstance(trimmed, str)
    return trimmed


def subject_texts(ids: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text subject ids as `subject_text` gives each (a system that pads its ids in a
    fixed-width column means the same person as one that does not)."""
    return pc.utf8_trim_whitespace(ids)


def key_id(key: bytes) -> str:
    """A fingerprint of a disclosure key: 16 hex of HMAC(key, a fixed label)."""
    return hmac.digest(key, _KEY_ID_LABEL, "sha256")[:8].hex()


def lookup_hash(key: bytes, subject_id: str | int) -> str:
    """The keyed hash a lookup is audited under: not the recorded hash, so the audit entry
    does not point at the person's disclosure rows; the same person gives the same value."""
    text = subject_text(subject_id).encode("utf-8")
    return hmac.digest(key, _LOOKUP_LABEL + text, "sha256")[:16].hex()


def subject_hash(key: bytes, subject_id: str | int) -> bytes:
    """The 16-byte keyed hash recorded for a subject id."""
    return text_hash(key, subject_text(subject_id))


def text_hash(key: bytes, text: str) -> bytes:
    """The 16-byte keyed hash of exactly this text (`subject_hash` takes it of the id's
    `subject_text`; records made before ids were trimmed took it of the id as given)."""
    return hmac.digest(key, text.encode("utf-8"), "sha256")[:HASH_BYTES]


def _as_text(subjects: pa.Array | pa.ChunkedArray | Iterable[pa.Array]) -> pa.ChunkedArray:
    if isinstance(subjects, pa.Array):
        chunked = pa.chunked_array([subjects])
    elif isinstance(subjects, pa.ChunkedArray):
        chunked = subjects
    else:
        arrays = list(subjects)
        if not arrays:
            return pa.chunked_array([], type=pa.large_string())
        chunked = pa.chunked_array(arrays)
    if pa.types.is_dictionary(chunked.type):
        chunked = chunked.cast(chunked.type.value_type)
    if not (pa.types.is_integer(chunked.type) or pa.types.is_string(chunked.type)) and not (
        pa.types.is_large_string(chunked.type)
    ):
        raise LedgerError(f"subject ids must be strings or integers, not {chunked.type}")
    return subject_texts(pc.cast(chunked, pa.large_string()))


def sorted_hashes(
    key: bytes, subjects: pa.Array | pa.ChunkedArray | Iterable[pa.Array]
) -> tuple[np.ndarray, int]:
    """The distinct subjects' hashes in ascending byte order (an (n, 2) big-endian uint64 array),
    and how many rows had no subject id."""
    text = _as_text(subjects)
    nulls = text.null_count
    distinct = pc.unique(text.drop_null() if nulls else text)
    mac = KeyedHash(key, HASH_BYTES)  # subject_hash's HMAC, faster (exchange.crypto.keyed)
    data = pc.cast(distinct, pa.large_binary())
    parts = [mac.macs(data.slice(at, HASH_CHUNK)) for at in range(0, len(data), HASH_CHUNK)]
    macs = np.concatenate(parts) if parts else np.empty((0, HASH_BYTES), np.uint8)
    return sorted_distinct(macs.view(">u8")), nulls  # each row's 16 bytes as two words


def sorted_distinct(words: np.ndarray) -> np.ndarray:
    """Hashes (rows of two big-endian words) sorted ascending, each once (a subject in two
    batches is recorded once). Sorted by the first word alone, as integers (a quicksort: the
    order of rows whose first words tie is settled below, so a stable sort is not needed, and
    it took four times as long); rows whose first words tie but second words differ (about one
    in 2**64) are sorted by both instead."""
    first = words[:, 0].astype(np.uint64)
    order = np.argsort(first)
    words, first = words.take(order, axis=0), first[order]  # take: 4x a 2-D fancy index
    same = first[1:] == first[:-1]
    if not same.any():
        return words
    if (same & (words[1:, 1] != words[:-1, 1])).any():
        words = words[np.lexsort((words[:, 1], words[:, 0]))]
        same = np.all(words[1:] == words[:-1], axis=1)
    return words[np.concatenate(([True], ~same))]
