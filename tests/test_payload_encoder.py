"""payload.Encoder: a file encoded a batch at a time, the header taken when it is made."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exchange import payload

SCHEMA = pa.schema([("person_ref", pa.string()), ("visits", pa.int64())])


def batch(start: int, rows: int) -> pa.RecordBatch:
    refs = [f"=P{i}" if i % 7 == 0 else f"P{i}" for i in range(start, start + rows)]
    return pa.record_batch([pa.array(refs), pa.array(range(rows), pa.int64())], schema=SCHEMA)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_header_is_the_files_start_whenever_it_is_read(fmt: str) -> None:
    """The run reads the header on one thread while another encodes: it must not matter when.
    Read after two batches were encoded, it is still the file's first bytes (for Parquet it
    was once taken from the writer's buffer, and then held a batch's bytes or none)."""
    batches = [batch(0, 500), batch(500, 300)]
    encoder = payload.Encoder(fmt, SCHEMA)
    body = [encoder.encode(b) for b in batches]
    data = encoder.header() + b"".join(body) + encoder.finish()
    assert data == b"".join(payload.encode(batches, fmt, SCHEMA))
    if fmt == "parquet":
        assert encoder.header() == b"PAR1"
        assert pq.read_table(io.BytesIO(data)).equals(pa.Table.from_batches(batches))
    else:
        text = data.decode()
        assert text.startswith('"person_ref","visits"\n"\'=P0",0\n"P1",1\n')
        assert text.count("\n") == 801


def test_an_unknown_format_is_refused_when_the_encoder_is_made() -> None:
    with pytest.raises(ValueError, match="unsupported payload format 'xlsx'"):
        payload.Encoder("xlsx", SCHEMA)
