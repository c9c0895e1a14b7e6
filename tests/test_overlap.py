"""The pipeline's two overlapping stages: a producer thread behind a bounded queue."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from exchange.audit import disclosures
from exchange.audit.disclosures import SubjectHashes
from exchange.audit.subjects import HASH_BYTES, sorted_distinct, sorted_hashes
from exchange.errors import SourceError
from exchange.pipeline.overlap import background


def test_items_arrive_in_order_from_another_thread() -> None:
    threads: set[int] = set()

    def produce() -> Iterator[int]:
        for i in range(1000):
            threads.add(threading.get_ident())
            yield i

    with background(produce, depth=4) as items:
        assert list(items) == list(range(1000))
    assert threads and threading.get_ident() not in threads


def test_a_producer_error_is_raised_unchanged_in_the_consumer() -> None:
    def produce() -> Iterator[int]:
        yield 1
        raise SourceError("source x: row 2 is not a date")

    with background(produce) as items, pytest.raises(SourceError, match="row 2 is not a date"):
        assert next(items) == 1
        next(items)


def test_the_queue_bounds_how_far_the_producer_runs_ahead_and_stops_it_early() -> None:
    made: list[int] = []
    closed = threading.Event()

    def produce() -> Iterator[int]:
        try:
            for i in range(10_000):
                made.append(i)
                yield i
        finally:
            closed.set()  # a source's clean-up runs when the consumer gives up

    with background(produce, depth=3) as items:
        assert next(items) == 0
        threading.Event().wait(0.3)  # give the producer time to fill the queue
        assert len(made) <= 1 + 3 + 1  # taken, queued, and one waiting to be queued
    assert closed.is_set()
    assert len(made) < 10


def test_the_bytes_bound_holds_back_the_producer_but_always_lets_one_item_through() -> None:
    made: list[int] = []

    def produce() -> Iterator[int]:
        for size in (40, 40, 40, 500, 10):
            made.append(size)
            yield size

    with background(produce, depth=100, weigh=lambda size: size, max_bytes=100) as items:
        assert next(items) == 40
        threading.Event().wait(0.3)
        # queued: 40 + 40; the 500 waits, as it would take the queue past 100 bytes
        assert made == [40, 40, 40, 500]
        rest = list(items)
    assert rest == [40, 40, 500, 10]  # the 500-byte item alone is over the bound, yet passes


def test_subject_hashes_by_batch_equal_the_whole_drop_hashed_at_once() -> None:
    key = bytes(range(32))
    batches = [pa.array(["a", "b", None]), pa.array(["b", "c"]), pa.array([None, "a", "d"])]
    taken = SubjectHashes(key)
    for batch in batches:
        taken.add(batch)
    whole, nulls = sorted_hashes(key, pa.chunked_array(batches))
    assert taken.nulls == nulls == 2
    assert taken.distinct().tobytes() == whole.tobytes()
    assert len(whole) == 4


def test_subject_hashes_in_pieces_are_the_sorted_distinct_hashes_of_the_whole_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many batches, repeats across them: the pieces (runs of leading bytes, about
    ORDERED_BYTES each) join up in order."""
    key = bytes(range(32, 64))
    batches = [pa.array([f"id{(i * 7919 + j) % 5000}" for j in range(700)]) for i in range(12)]
    taken = SubjectHashes(key)
    for batch in batches:
        taken.add(batch)
    whole, _ = sorted_hashes(key, pa.chunked_array(batches))
    assert len(whole) == len(set(pa.chunked_array(batches).to_pylist()))
    assert [piece.tobytes() for piece in taken.ordered()] == [whole.tobytes()]  # 80 KB: one
    monkeypatch.setattr(disclosures, "ORDERED_BYTES", 64 * HASH_BYTES)  # about 64 hashes
    pieces = list(taken.ordered())
    assert 40 < len(pieces) <= 256
    assert all(0 < len(piece) <= 128 for piece in pieces)  # a leading byte holds about 20
    assert b"".join(piece.tobytes() for piece in pieces) == whole.tobytes()


@pytest.mark.parametrize("ordered_bytes", [64 * HASH_BYTES, disclosures.ORDERED_BYTES])
def test_subject_hashes_written_out_past_their_memory_bound_read_back_the_same(
    monkeypatch: pytest.MonkeyPatch, ordered_bytes: int
) -> None:
    """Past memory_bytes the parts go to a temporary file; the pieces and digest are the same,
    read back in pieces of many leading bytes or of one."""
    monkeypatch.setattr(disclosures, "ORDERED_BYTES", ordered_bytes)
    key = bytes(range(64, 96))
    batches = [pa.array([f"p{(i * 104729 + j) % 9000}" for j in range(900)]) for i in range(10)]
    spilled = SubjectHashes(key, memory_bytes=3 * 900 * 16)  # written out every few batches
    held = SubjectHashes(key, memory_bytes=1 << 30)
    for batch in batches:
        spilled.add(batch)
        held.add(batch)
    assert spilled._file is not None and spilled._written  # it did write out
    assert len(spilled._parts) < 4  # and holds at most the last few parts
    one = b"".join(piece.tobytes() for piece in spilled.ordered())
    assert one == b"".join(piece.tobytes() for piece in held.ordered())
    whole, _ = sorted_hashes(key, pa.chunked_array(batches))
    assert one == whole.tobytes()
    spilled.close()
    assert spilled._file is None


def test_sorting_by_the_first_word_falls_back_when_first_words_tie() -> None:
    """Hashes are sorted by their first 64 bits; rows that share them but differ after (rare in
    real hashes, forced here) still come out in full byte order, each once."""
    rows = [(5, 9), (5, 1), (2, 7), (5, 9), (2**64 - 1, 0), (2, 7), (5, 3), (0, 2**64 - 1)]
    words = np.array(rows, dtype=np.uint64).astype(">u8")
    got = [tuple(int(x) for x in row) for row in sorted_distinct(words)]
    assert got == sorted(set(rows))
    # No tie beyond exact repeats: the fast path, the same contract.
    plain = [(7, 1), (3, 3), (7, 1), (1, 8)]
    got = sorted_distinct(np.array(plain, dtype=np.uint64).astype(">u8"))
    assert [tuple(int(x) for x in row) for row in got] == sorted(set(plain))
