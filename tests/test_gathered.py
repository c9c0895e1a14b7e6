"""Source batches gathered before minimising: joined in order, by size, one schema at a time."""

from __future__ import annotations

import pyarrow as pa

from exchange.pipeline.prepare import gathered

INT64 = pa.int64()


def numbered(start: int, rows: int, kind: pa.DataType = INT64) -> pa.RecordBatch:
    return pa.record_batch({"n": pa.array(range(start, start + rows), kind)})


def test_consecutive_batches_are_joined_in_order_until_the_row_bound() -> None:
    batches = [numbered(i * 10, 10) for i in range(7)]
    out = list(gathered(batches, rows=25, size=1 << 30))
    assert [b.num_rows for b in out] == [30, 30, 10]  # the last one as far as the input went
    assert pa.Table.from_batches(out).column("n").to_pylist() == list(range(70))


def test_the_byte_bound_closes_a_batch_too() -> None:
    batches = [numbered(i * 100, 100) for i in range(4)]  # 800 bytes each
    assert [b.num_rows for b in gathered(batches, rows=1_000_000, size=1_500)] == [200, 200]


def test_a_large_batch_passes_as_it_is_and_nothing_comes_of_nothing() -> None:
    big = numbered(0, 50_000)
    (out,) = gathered([big], rows=16_384, size=1 << 30)
    assert out is big
    assert list(gathered([], rows=10, size=10)) == []


def test_batches_of_different_schemas_are_not_joined() -> None:
    batches = [numbered(0, 5), numbered(5, 5, pa.int32()), numbered(10, 5, pa.int32())]
    out = list(gathered(batches, rows=100, size=1 << 30))
    assert [(b.num_rows, b.schema.field("n").type) for b in out] == [
        (5, pa.int64()),
        (10, pa.int32()),
    ]
