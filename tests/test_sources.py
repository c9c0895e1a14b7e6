"""Unit tests for CSV and Parquet sources (exchange.sources)."""

from __future__ import annotations

import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE

from exchange import synth
from exchange.contract import load_contract
from exchange.errors import SourceError
from exchange.minimise import source_types
from exchange.sources import CsvSource, ParquetSource, Source, check_columns, open_source

SENTINEL = "SENTINEL-XYZ"
ROWS = 4000
SEED = 5
BLOCK = 64 * 1024
WANTED = {"notes": pa.string(), "person_id": pa.string(), "exclusions": pa.int64()}


@pytest.fixture(scope="module")
def expected() -> pa.Table:
    """The synthetic rows the source files are written from."""
    return pa.Table.from_batches(list(synth.batches(ROWS, seed=SEED)))


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic CSV export, several 64 KiB blocks long, with newlines inside quoted notes."""
    return synth.write(tmp_path_factory.mktemp("csv") / "export.csv", ROWS, seed=SEED)


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same synthetic export as Parquet."""
    return synth.write(tmp_path_factory.mktemp("pq") / "export.parquet", ROWS, seed=SEED)


def read_all(source: Source, types: dict[str, pa.DataType]) -> pa.Table:
    """Every batch of the source, as one table."""
    batches = list(source.batches(types))
    assert batches, "a non-empty source yields at least one batch"
    for batch in batches:
        assert batch.schema.names == list(types)
        assert [f.type for f in batch.schema] == list(types.values())
    return pa.Table.from_batches(batches)


def shown(exc: BaseException) -> str:
    """Everything a logged traceback of `exc` would show, chained exceptions included."""
    return "".join(traceback.format_exception(exc))


def source_of(kind: str, csv_file: Path, parquet_file: Path) -> Source:
    """The CSV or the Parquet source of the same rows."""
    return CsvSource(csv_file, block_size=BLOCK) if kind == "csv" else ParquetSource(parquet_file)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_reads_only_the_requested_columns_in_order(
    kind: str, csv_file: Path, parquet_file: Path, expected: pa.Table
) -> None:
    """Projection: exactly the requested names, in the requested order, with their types."""
    table = read_all(source_of(kind, csv_file, parquet_file), WANTED)
    assert table.column_names == ["notes", "person_id", "exclusions"]
    assert table.num_rows == ROWS
    assert table["person_id"].to_pylist() == expected["person_id"].to_pylist()
    assert table["exclusions"].to_pylist() == expected["exclusions"].to_pylist()


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_reads_the_contracts_columns_as_its_types(
    kind: str, csv_file: Path, parquet_file: Path, expected: pa.Table
) -> None:
    """Reading with the contract's source types gives the contract's columns only."""
    types = source_types(load_contract(SAMPLE))
    table = read_all(source_of(kind, csv_file, parquet_file), types)
    assert table.column_names == list(types)
    assert "nhs_number" not in table.column_names
    assert table["date_of_birth"].to_pylist() == expected["date_of_birth"].to_pylist()
    assert table["objection"].to_pylist() == expected["objection"].to_pylist()


def test_parquet_reads_in_row_batches(parquet_file: Path) -> None:
    """A Parquet source streams in batches of at most batch_rows rows."""
    batches = list(ParquetSource(parquet_file, batch_rows=1000).batches(WANTED))
    assert len(batches) == 4
    assert all(b.num_rows <= 1000 for b in batches)


def test_csv_newlines_inside_quoted_values_span_blocks(csv_file: Path, expected: pa.Table) -> None:
    """Notes with LF, LF LF and CRLF inside quotes are read exactly, across block boundaries."""
    assert csv_file.stat().st_size > 4 * BLOCK
    notes = expected["notes"].to_pylist()
    assert sum(1 for n in notes if n and "\r\n" in n) > 0
    assert sum(1 for n in notes if n and "\n\n" in n) > 0
    batches = list(CsvSource(csv_file, block_size=BLOCK).batches(WANTED))
    assert len(batches) > 4
    table = pa.Table.from_batches(batches)
    assert table["notes"].to_pylist() == notes
    assert table["person_id"].to_pylist() == expected["person_id"].to_pylist()


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_check_columns_returns_the_unread_columns(
    kind: str, csv_file: Path, parquet_file: Path
) -> None:
    """The columns the source has and the contract does not read are listed, in file order."""
    source = source_of(kind, csv_file, parquet_file)
    assert source.columns() == list(synth.COLUMNS)
    unread = check_columns(source, list(source_types(load_contract(SAMPLE))))
    assert unread == [
        "nhs_number",
        "first_name",
        "last_name",
        "address_line",
        "notes",
        "last_updated",
    ]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_check_columns_names_every_missing_column(
    kind: str, csv_file: Path, parquet_file: Path
) -> None:
    """A source lacking a wanted column is a SourceError naming each missing column."""
    source = source_of(kind, csv_file, parquet_file)
    with pytest.raises(SourceError) as caught:
        check_columns(source, ["person_id", "consent_flag", "school_name"])
    message = str(caught.value)
    assert "consent_flag" in message and "school_name" in message
    assert source.name in message


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_batches_with_a_missing_column_is_a_source_error(
    kind: str, csv_file: Path, parquet_file: Path
) -> None:
    """Asking batches() for a column the file lacks is a SourceError naming it."""
    source = source_of(kind, csv_file, parquet_file)
    with pytest.raises(SourceError, match="consent_flag"):
        list(source.batches({"person_id": pa.string(), "consent_flag": pa.bool_()}))


def bad_csv(path: Path, rows: int, bad_row: int) -> Path:
    """A CSV of id,count,notes whose `count` holds the sentinel in row `bad_row`."""
    lines = ["id,count,notes"]
    for i in range(rows):
        count = SENTINEL if i == bad_row else str(i % 7)
        lines.append(f'P{i:08d},{count},"note {i} with some padding text to fill the block"')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_bad_number_names_the_column_not_the_value(tmp_path: Path) -> None:
    """A non-numeric value in an int column: the column is named, the value never shown."""
    path = bad_csv(tmp_path / "bad.csv", 5000, 4000)
    assert path.stat().st_size > 4 * BLOCK
    source = CsvSource(path, block_size=BLOCK)
    types = {"id": pa.string(), "count": pa.int64(), "notes": pa.string()}
    with pytest.raises(SourceError) as caught:
        list(source.batches(types))
    assert "'count'" in str(caught.value)
    assert SENTINEL not in shown(caught.value)


def test_csv_bad_number_in_a_projected_read_names_the_right_column(tmp_path: Path) -> None:
    """Reading only some columns still names the one that holds the bad value."""
    path = bad_csv(tmp_path / "bad.csv", 5000, 4000)
    source = CsvSource(path, block_size=BLOCK)
    with pytest.raises(SourceError) as caught:
        list(source.batches({"notes": pa.string(), "count": pa.int64()}))
    assert "'count'" in str(caught.value)
    assert SENTINEL not in shown(caught.value)


def test_csv_bad_number_in_the_first_block(tmp_path: Path) -> None:
    """A bad value near the top of the file is reported like any other: column, no value."""
    path = bad_csv(tmp_path / "bad.csv", 10, 3)
    types = {"id": pa.string(), "count": pa.int64(), "notes": pa.string()}
    with pytest.raises(SourceError) as caught:
        list(CsvSource(path).batches(types))
    assert "'count'" in str(caught.value)
    assert SENTINEL not in shown(caught.value)


def test_parquet_uncastable_column_names_it_not_the_value(tmp_path: Path) -> None:
    """A Parquet column that cannot be cast is named; its values are not shown."""
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["P1", "P2"], "count": ["1", SENTINEL]}), path)
    with pytest.raises(SourceError) as caught:
        list(ParquetSource(path).batches({"id": pa.string(), "count": pa.int64()}))
    assert "'count'" in str(caught.value)
    assert SENTINEL not in shown(caught.value)


@pytest.mark.parametrize("name", ["absent.csv", "absent.parquet"])
def test_missing_file_is_a_source_error(tmp_path: Path, name: str) -> None:
    """A source file that does not exist is a SourceError naming it."""
    source = open_source(tmp_path / name)
    with pytest.raises(SourceError, match=f"{name} does not exist"):
        source.columns()
    with pytest.raises(SourceError, match="does not exist"):
        list(source.batches({"id": pa.string()}))


def test_not_a_parquet_file(tmp_path: Path) -> None:
    """A file that is not Parquet is a SourceError, not a pyarrow error."""
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        ParquetSource(path).columns()


def test_open_source_picks_by_suffix(tmp_path: Path) -> None:
    """.csv, .parquet and .pq (any case) pick the right reader."""
    assert isinstance(open_source(tmp_path / "a.CSV"), CsvSource)
    assert isinstance(open_source(tmp_path / "a.parquet"), ParquetSource)
    assert isinstance(open_source(tmp_path / "a.pq"), ParquetSource)


@pytest.mark.parametrize(("name", "shown_suffix"), [("a.xlsx", "'.xlsx'"), ("a", "'(none)'")])
def test_open_source_refuses_other_suffixes(tmp_path: Path, name: str, shown_suffix: str) -> None:
    """An unsupported file type is refused by name."""
    with pytest.raises(SourceError) as caught:
        open_source(tmp_path / name)
    assert shown_suffix in str(caught.value)
