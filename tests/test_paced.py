"""The CSV reader reads only a few blocks ahead of the batches taken, and never hangs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from exchange.sources import CsvSource
from exchange.sources.paced import READ_AHEAD_BLOCKS, Paced

BLOCK = 64 * 1024


@pytest.fixture
def many_blocks(tmp_path: Path) -> Path:
    """A CSV of about 60 blocks, with quoted newlines and commas across block boundaries."""
    path = tmp_path / "people.csv"
    rows = [f'{i},"note {i}, line one\nline two",{i % 97}' for i in range(120_000)]
    path.write_text("id,note,n\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size > 50 * BLOCK
    return path


def _reader(paced: Paced) -> pacsv.CSVStreamingReader:
    return pacsv.open_csv(
        pa.PythonFile(paced, mode="r"),
        read_options=pacsv.ReadOptions(block_size=BLOCK),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )


def test_reads_stay_a_few_blocks_ahead_of_the_batches_taken(many_blocks: Path) -> None:
    paced = Paced(many_blocks.open("rb"))
    reader = _reader(paced)
    try:
        for _ in range(3):
            reader.read_next_batch()
            paced.taken()
        time.sleep(0.3)  # unpaced, pyarrow's thread would have read 32 blocks by now
        assert paced._reads <= 3 + READ_AHEAD_BLOCKS + 1
        rows = 0
        while True:
            try:
                rows += reader.read_next_batch().num_rows
            except StopIteration:
                break
            paced.taken()
    finally:
        paced.close()
        reader.close()
    assert rows > 0 and paced._reads > 50


def test_the_same_rows_as_reading_the_file_whole(many_blocks: Path) -> None:
    types = {"id": pa.int64(), "note": pa.string(), "n": pa.int64()}
    batches = list(CsvSource(many_blocks, block_size=BLOCK).batches(types))
    assert len(batches) > 50
    whole = pacsv.read_csv(
        many_blocks,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=types),
    )
    assert pa.Table.from_batches(batches).equals(whole)


def test_a_read_waiting_for_its_turn_ends_when_the_run_stops(many_blocks: Path) -> None:
    paced = Paced(many_blocks.open("rb"), ahead=0)
    assert len(paced.read(BLOCK)) == BLOCK
    waited: list[bytes] = []
    waiting = threading.Thread(target=lambda: waited.append(paced.read(BLOCK)))
    waiting.start()
    time.sleep(0.1)
    assert waiting.is_alive() and not waited  # no batch taken: it waits
    paced.close()
    waiting.join(timeout=5)
    assert waited == [b""] and paced.closed


def test_a_run_that_stops_early_leaves_no_reader_waiting(many_blocks: Path) -> None:
    """Taking two batches and dropping the rest ends the reading at once, every time."""
    types = {"id": pa.int64(), "note": pa.string(), "n": pa.int64()}
    started = time.monotonic()
    for _ in range(20):
        batches = CsvSource(many_blocks, block_size=BLOCK).batches(types)
        next(batches)
        next(batches)
        batches.close()
    assert time.monotonic() - started < 10
    assert threading.active_count() < 20


def test_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    from exchange.errors import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        list(CsvSource(tmp_path / "gone.csv").batches({"id": pa.int64()}))
