"""Keyed universal 64-bit hashes of text and binary columns (the whole-run uniqueness check's)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from exchange.quality import _hashable
from exchange.universal_hash import SHORT, hashes, new_keys

KEYS = new_keys()


def by_value(values: pa.Array, keys: np.ndarray = KEYS) -> dict[bytes, int]:
    """Each value's hash, checking that equal values in the array hashed alike."""
    seen: dict[bytes, int] = {}
    for value, digest in zip(
        values.cast(pa.binary()).to_pylist(), hashes(values, keys), strict=True
    ):
        assert seen.setdefault(value, int(digest)) == int(digest)
    return seen


def test_equal_values_hash_alike_by_any_route() -> None:
    """In place (one width), a width at a time (mixed widths), through SHA-256 (long), sliced,
    or as another Arrow string type: one number per value."""
    fixed = [f"P{i:08d}" for i in range(2000)]
    long = ["x" * (SHORT + 1), "é" * 100, "y" * 1000]
    odd = ["", "ab", "P0000", "é", "ﬀ" * 21, "a\0"]  # widths 0 to 63 bytes
    mixed = fixed[::7] + long + odd
    expected = by_value(pa.array(fixed)) | by_value(pa.array(long))
    for value in odd:
        expected |= by_value(pa.array([value]))
    for values in (
        pa.array(mixed),
        pa.array(mixed, pa.large_string()),
        pa.array(mixed, pa.string_view()),
        pa.array([v.encode() for v in mixed], pa.binary()),
        pa.array(["pad", *mixed]).slice(1),
        pa.array(fixed).slice(3, 500),  # one width, not starting at the buffer's start
        pa.array([v.encode() for v in mixed], pa.binary_view()),
        pa.array([v.encode() for v in mixed], pa.large_binary()).slice(2),
    ):
        assert by_value(values).items() <= expected.items()


def test_the_quality_gate_hashes_dictionary_and_chunked_text_alike() -> None:
    """Through the gate's own conversion (`quality._hashable`): dictionary-encoded, chunked
    and plain columns of the same values give the same numbers."""
    values = ["P1", "P22", "x" * 70, "P1", "", "é"]
    plain = _hashable(pa.chunked_array([pa.array(values)]), KEYS)
    for column in (
        pa.chunked_array([pa.array(values).dictionary_encode()]),
        pa.chunked_array([pa.array(values[:2]), pa.array(values[2:], pa.string())]),
        pa.chunked_array(
            [pa.array(values[:3], pa.large_string()), pa.array(values[3:], pa.large_string())]
        ),
        pa.chunked_array([pa.array(values, pa.string_view())]),
    ):
        assert _hashable(column, KEYS).tolist() == plain.tolist()


def test_bytes_that_are_not_text_hash_alike_by_any_route() -> None:
    """Binary keys are padded byte by byte, whatever they would decode to."""
    odd = [b"\xff\xfe", b"\x80", b"\xc3", b"\0\xff" * 20]
    alone = {v: by_value(pa.array([v], pa.binary()))[v] for v in odd}
    among = by_value(pa.array([*odd, b"x" * 70, b"y" * 8], pa.large_binary()))
    assert {v: among[v] for v in odd} == alone


def test_values_differing_only_in_length_or_zero_bytes_differ() -> None:
    """Short values are padded with zeros to whole words: the length keeps them apart."""
    values = [b"", b"\0", b"ab", b"ab\0", b"ab\0\0\0\0\0\0", b"ab\0\0\0\0\0\0\0", b"\0" * 64]
    values += [b"a" * 64, b"a" * 65, b"a" * 64 + b"b", b"a" * 64 + b"b" * 100]
    got = by_value(pa.array(values, pa.binary()))
    assert len(set(got.values())) == len(values)


def test_no_collisions_among_many_distinct_values() -> None:
    rng = np.random.default_rng(11)
    widths = rng.integers(0, 90, size=200_000)
    values = list({rng.bytes(int(w)) for w in widths})
    digests = hashes(pa.array(values, pa.binary()), KEYS)
    assert len(np.unique(digests)) == len(values)
    ids = pa.array([f"{i:010d}" for i in range(300_000)])  # one width, in place
    assert len(np.unique(hashes(ids, KEYS))) == 300_000


def test_new_keys_change_every_hash() -> None:
    values = pa.array(["a", "bb", "c" * 70, "d" * 8])
    assert not set(hashes(values, new_keys())) & set(hashes(values, new_keys()))


def test_no_difference_of_values_collides_whatever_the_keys() -> None:
    """A mix of fixed steps (splitmix64's, tried first) let pairs of values with a chosen XOR
    difference collide about once in 2**10 under any seed; a universal hash under fresh keys
    gives no pair better odds than 2**-64."""
    rng = np.random.default_rng(2)
    first = rng.integers(0, 2**64, size=(4000, 2), dtype=np.uint64)
    second = first ^ np.array([0x8000000200000008, 0x53112150A62242A0], dtype=np.uint64)
    values = [row.astype("<u8").tobytes() for row in (*first, *second)]
    for _ in range(3):
        digests = hashes(pa.array(values, pa.binary()), new_keys())
        assert len(np.unique(digests)) == len(values)


def test_empty_and_null() -> None:
    assert hashes(pa.array([], pa.string()), KEYS).tolist() == []
    assert len(hashes(pa.array(["", ""]), KEYS)) == 2
    with pytest.raises(ValueError, match="no nulls"):
        hashes(pa.array(["a", None]), KEYS)
