"""Sources as real extracts are: same-named columns, big fields, stored types, local times."""

from __future__ import annotations

import datetime as dt
import decimal
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import write_contract

from exchange import synth
from exchange.contract import load_contract
from exchange.errors import ContractError, InvalidRequest, SourceError
from exchange.minimise import source_types
from exchange.sources import CsvSource, ParquetSource, Source, check_columns
from exchange.sources.csv import plain_type
from exchange.types import ARROW_TYPES, UTC_TIMESTAMP, SourceTypes, source_times

SECRET = "SENTINEL-XYZ"
LONDON = "Europe/London"


def shown(exc: BaseException) -> str:
    """Everything a logged traceback of `exc` would show, chained exceptions included."""
    return "".join(traceback.format_exception(exc))


def read(source: Source, types: Mapping[str, pa.DataType]) -> pa.Table:
    """Every batch of the source as one table."""
    return pa.Table.from_batches(list(source.batches(types)), schema=pa.schema(types.items()))


def write(path: Path, table: pa.Table) -> Path:
    """`table` as CSV or Parquet, by the path's suffix."""
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


# --- columns that cannot be told apart ------------------------------------------------------


def _same_named(path: Path) -> Path:
    """An extract whose first `postcode` column is really the GP practice code."""
    if path.suffix == ".csv":
        rows = f"P1,{SECRET},SW1A 1AA,a\nP2,B82005,LS1 4AP,b\n"
        path.write_text(f"id,postcode,postcode,notes\n{rows}")
        return path
    values = (["P1", "P2"], [SECRET, "B82005"], ["SW1A", "LS1"], ["a", "b"])
    names = ["id", "postcode", "postcode", "notes"]
    pq.write_table(pa.Table.from_arrays([pa.array(v) for v in values], names=names), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_two_columns_of_one_read_name_are_refused_by_name(tmp_path: Path, suffix: str) -> None:
    """Which `postcode` is meant is unknowable: refused, named, no value shown."""
    path = _same_named(tmp_path / f"x{suffix}")
    source = CsvSource(path) if suffix == ".csv" else ParquetSource(path)
    with pytest.raises(SourceError) as caught:
        list(source.batches({"id": pa.string(), "postcode": pa.string()}))
    assert "'postcode' (2 times)" in str(caught.value)
    assert SECRET not in shown(caught.value)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_repeated_name_the_contract_does_not_read_is_harmless(
    tmp_path: Path, suffix: str
) -> None:
    """Only the columns read must be unique; the unread list names a repeat once."""
    path = _same_named(tmp_path / f"x{suffix}")
    source = CsvSource(path) if suffix == ".csv" else ParquetSource(path)
    assert check_columns(source, ["id", "notes"]) == ["postcode"]
    assert read(source, {"notes": pa.string()})["notes"].to_pylist() == ["a", "b"]


class _Query:
    """A database query whose result has two columns of one name (`SELECT a.x, b.x`)."""

    name = "query"

    def columns(self) -> list[str]:
        return ["id", "x", "x"]


def test_a_query_with_two_columns_of_one_name_is_refused() -> None:
    """Every source (PostgreSQL's too) is checked by check_columns before reading."""
    with pytest.raises(SourceError, match="'x' \\(2 times\\)"):
        check_columns(_Query(), ["id", "x"])


# --- clear errors for ordinary faults -------------------------------------------------------


def test_a_field_larger_than_the_block_size_says_so(tmp_path: Path) -> None:
    """Not "rows do not match the header": the block size, and the fix."""
    path = tmp_path / "big.csv"
    big = SECRET * 20_000
    rows = "".join(f'P{i},"short"\n' for i in range(50))
    path.write_text(f'id,notes\n{rows}P99,"{big}"\nP100,ok\n')
    source = CsvSource(path, block_size=64 * 1024)
    with pytest.raises(SourceError) as caught:
        list(source.batches({"id": pa.string(), "notes": pa.string()}))
    message = str(caught.value)
    assert "block size (65,536 bytes)" in message and "EXCHANGE_CSV_BLOCK_SIZE" in message
    assert SECRET not in shown(caught.value)


def test_the_block_size_setting_reads_a_large_field(tmp_path: Path) -> None:
    """The fix the message names works: EXCHANGE_CSV_BLOCK_SIZE reaches the CSV reader."""
    from exchange.settings import Settings
    from exchange.sources import open_source

    path = tmp_path / "big.csv"
    path.write_text(f'id,notes\nP1,"{"x" * 200_000}"\nP2,ok\n')
    settings = Settings.from_env({"EXCHANGE_CSV_BLOCK_SIZE": str(1 << 20)})
    source = open_source(path, csv_block_size=settings.csv_block_size)
    rows = sum(b.num_rows for b in source.batches({"id": pa.string(), "notes": pa.string()}))
    assert rows == 2
    with pytest.raises(InvalidRequest, match="between 65536"):
        Settings.from_env({"EXCHANGE_CSV_BLOCK_SIZE": "12"})


def test_by_default_a_row_of_a_block_fits_and_one_past_two_names_the_setting(
    tmp_path: Path,
) -> None:
    """The default block (512 KiB) bounds the longest row: a row always fits in one block (and
    pyarrow carries one across a block's end, so up to two may fit where it falls); a field of
    400,000 bytes among short rows is read, one of 1,100,000 stops with the setting named."""
    from exchange.settings import Settings
    from exchange.sources import open_source

    types = {"id": pa.string(), "notes": pa.string()}
    rows = "".join(f'P{i},"short, with a\nline break"\n' for i in range(3000))
    for size, fits in ((400_000, True), (1_100_000, False)):
        path = tmp_path / f"notes_{size}.csv"
        path.write_text(f'id,notes\n{rows}P9,"{"y" * size}"\n{rows}')
        source = open_source(path, csv_block_size=Settings.from_env({}).csv_block_size)
        if fits:
            assert sum(b.num_rows for b in source.batches(types)) == 6001
        else:
            with pytest.raises(SourceError, match="EXCHANGE_CSV_BLOCK_SIZE"):
                list(source.batches(types))


def test_a_row_of_the_wrong_width_gives_counts_not_the_row(tmp_path: Path) -> None:
    """The parser quotes the row; the message keeps only the field counts."""
    path = tmp_path / "wide.csv"
    path.write_text(f"id,notes\nP1,a\nP2,{SECRET},extra\n")
    with pytest.raises(SourceError) as caught:
        list(CsvSource(path).batches({"id": pa.string()}))
    assert "a row has 3 fields where the header has 2" in str(caught.value)
    assert SECRET not in shown(caught.value)


# --- types as declared, never coerced -------------------------------------------------------

REFUSED = [
    ("timestamp", pa.array([1_700_000_000], pa.int64())),  # was sent as 1970 dates
    ("date", pa.array([20_000], pa.int32())),
    ("date", pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("us"))),
    ("timestamp", pa.array([dt.date(2026, 1, 1)], pa.date32())),
    ("timestamp", pa.array(["2026-01-01T00:00:00Z"])),
    ("integer", pa.array([1.5], pa.float64())),
    ("integer", pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2))),
    ("integer", pa.array(["1"])),
    ("number", pa.array(["1.5"])),
    ("boolean", pa.array(["Y"])),
    ("boolean", pa.array([1], pa.int8())),
    ("string", pa.array([1.0], pa.float64())),
    ("string", pa.array([dt.date(2026, 1, 1)], pa.date32())),
    ("string", pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("us", tz="UTC"))),
]


@pytest.mark.parametrize(("logical", "stored"), REFUSED, ids=lambda v: str(getattr(v, "type", v)))
def test_a_stored_type_the_field_does_not_take_is_refused(
    tmp_path: Path, logical: str, stored: pa.Array
) -> None:
    """Refused before any row is read, naming the column and both types, never a value."""
    path = write(tmp_path / "t.parquet", pa.table({"id": ["P1"], "col": stored}))
    with pytest.raises(SourceError) as caught:
        list(ParquetSource(path).batches({"id": pa.string(), "col": ARROW_TYPES[logical]}))
    message = str(caught.value)
    assert f"column 'col' is stored as {plain_type(stored.type)}, " in message
    assert f"not read as {logical} " in message
    assert "[" not in message.split("(")[0]  # no internal name such as date32[day]


PLAIN = [
    (pa.date32(), "date"),
    (UTC_TIMESTAMP, "timestamp"),
    (pa.int64(), "integer"),
    (pa.float64(), "number"),
    (pa.string(), "string"),
    (pa.bool_(), "boolean"),
    (pa.int32(), "integer (int32)"),
    (pa.decimal128(5, 2), "number (decimal128(5, 2))"),
    (pa.timestamp("us"), "timestamp without a zone (timestamp[us])"),
    (pa.date64(), "date (date64[ms])"),
    (pa.dictionary(pa.int8(), pa.string()), "string"),
]


@pytest.mark.parametrize(("kind", "plain"), PLAIN, ids=str)
def test_types_are_named_in_the_contracts_words(kind: pa.DataType, plain: str) -> None:
    assert plain_type(kind) == plain


def test_a_csv_value_of_the_wrong_type_names_the_contracts_type(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,seen\nP1,2026-01-02\nP2,SENTINEL\n")
    with pytest.raises(SourceError) as caught:
        read(CsvSource(path), {"id": pa.string(), "seen": pa.date32()})
    message = str(caught.value)
    assert "column 'seen' has a value that is not a date (values are not shown)" in message
    assert "date32" not in message and "SENTINEL" not in message


ACCEPTED = [
    ("integer", pa.array([7], pa.int16()), 7),
    ("integer", pa.array([7], pa.uint32()), 7),
    ("integer", pa.array([decimal.Decimal(7)], pa.decimal128(10, 0)), 7),
    ("number", pa.array([7], pa.int32()), 7.0),
    ("number", pa.array([1.5], pa.float32()), 1.5),
    ("number", pa.array([decimal.Decimal("1.25")], pa.decimal128(5, 2)), 1.25),
    ("string", pa.array(["a"]).dictionary_encode(), "a"),
    ("string", pa.array(["a"], pa.large_string()), "a"),
    ("string", pa.array([123], pa.int64()), "123"),  # a flag typed 1/0, say
    ("string", pa.array([True]), "true"),
    ("date", pa.array([dt.date(2026, 1, 2)], pa.date64()), dt.date(2026, 1, 2)),
    ("boolean", pa.array([None], pa.null()), None),
]


@pytest.mark.parametrize(
    ("logical", "stored", "value"), ACCEPTED, ids=lambda v: str(getattr(v, "type", v))
)
def test_stored_types_the_field_takes_are_read_exactly(
    tmp_path: Path, logical: str, stored: pa.Array, value: object
) -> None:
    """Narrower integers, decimals, categoricals and empty columns read as their field."""
    path = write(tmp_path / "t.parquet", pa.table({"col": stored}))
    table = read(ParquetSource(path), {"col": ARROW_TYPES[logical]})
    assert table["col"].to_pylist() == [value]


def test_an_integer_that_does_not_fit_is_refused_not_wrapped(tmp_path: Path) -> None:
    """A uint64 beyond int64 is an error naming the column, not a negative number."""
    path = write(tmp_path / "t.parquet", pa.table({"col": pa.array([2**63 + 5], pa.uint64())}))
    with pytest.raises(SourceError, match="'col'"):
        read(ParquetSource(path), {"col": pa.int64()})


# --- times and zones ------------------------------------------------------------------------

WALL = [  # wall-clock times in London through 2026
    dt.datetime(2026, 1, 15, 9, 30),  # GMT: UTC+0
    dt.datetime(2026, 3, 29, 0, 59, 59),  # the last GMT second before the spring change
    dt.datetime(2026, 3, 29, 2, 0),  # BST begins: 01:00 UTC
    dt.datetime(2026, 7, 1, 12, 0),  # BST: UTC+1
    None,
]
UTC = [
    dt.datetime(2026, 1, 15, 9, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 29, 0, 59, 59, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 7, 1, 11, 0, tzinfo=dt.UTC),
    None,
]


def _local(path: Path, times: list[dt.datetime | None]) -> Source:
    """A source of id + naive `seen_at`, as CSV (no offset) or Parquet (no zone)."""
    ids = [f"P{i}" for i in range(len(times))]
    write(path, pa.table({"id": ids, "seen_at": pa.array(times, pa.timestamp("us"))}))
    return CsvSource(path) if path.suffix == ".csv" else ParquetSource(path)


def _types(zone: str | None = LONDON, ambiguous: str = "refuse") -> SourceTypes:
    return SourceTypes(
        {"id": pa.string(), "seen_at": UTC_TIMESTAMP}, time_zone=zone, ambiguous=ambiguous
    )


def test_local_times_read_the_same_from_csv_and_parquet(tmp_path: Path) -> None:
    """Wall-clock times in the declared zone become the same UTC instants from either form."""
    from_csv = read(_local(tmp_path / "s.csv", WALL), _types())
    from_parquet = read(_local(tmp_path / "s.parquet", WALL), _types())
    assert from_csv.equals(from_parquet)
    assert from_csv.schema.field("seen_at").type == UTC_TIMESTAMP
    assert from_csv["seen_at"].to_pylist() == UTC


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_without_a_zone_local_times_are_refused(tmp_path: Path, suffix: str) -> None:
    """No sourceTimeZone: naive times are refused, never silently labelled UTC."""
    source = _local(tmp_path / f"s{suffix}", WALL)
    plain = {"id": pa.string(), "seen_at": UTC_TIMESTAMP}
    for types in (plain, _types(zone=None)):
        with pytest.raises(SourceError) as caught:
            list(source.batches(types))
        assert "'seen_at' holds times without a zone or offset" in str(caught.value)
        assert "sourceTimeZone" in str(caught.value)
        assert "2026" not in shown(caught.value)


SPRING_GAP = dt.datetime(2026, 3, 29, 1, 30)  # clocks go 01:00 GMT -> 02:00 BST: never happened
AUTUMN_TWICE = dt.datetime(2026, 10, 25, 1, 30)  # 01:30 BST, then 01:30 GMT an hour later


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_spring_time_that_does_not_exist_is_refused(tmp_path: Path, suffix: str) -> None:
    """Whatever ambiguousTimes says: a time that never happened cannot be placed."""
    source = _local(tmp_path / f"s{suffix}", [WALL[0], SPRING_GAP])
    for ambiguous in ("refuse", "earlier", "later"):
        with pytest.raises(SourceError) as caught:
            list(source.batches(_types(ambiguous=ambiguous)))
        assert "does not exist in Europe/London" in str(caught.value)
        assert "01:30" not in shown(caught.value)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_autumn_time_that_occurs_twice_is_refused_by_default(
    tmp_path: Path, suffix: str
) -> None:
    """Which of the two 01:30s is unknowable: refused unless the contract chooses."""
    source = _local(tmp_path / f"s{suffix}", [WALL[0], AUTUMN_TWICE])
    with pytest.raises(SourceError) as caught:
        list(source.batches(_types()))
    assert "occurs twice in Europe/London" in str(caught.value)
    assert "ambiguousTimes" in str(caught.value)
    assert "01:30" not in shown(caught.value)


@pytest.mark.parametrize(
    ("ambiguous", "hour"), [("earlier", 0), ("later", 1)], ids=["earlier-BST", "later-GMT"]
)
def test_ambiguous_times_earlier_or_later_as_the_contract_says(
    tmp_path: Path, ambiguous: str, hour: int
) -> None:
    """earlier: the first 01:30 (BST, 00:30 UTC); later: the second (GMT, 01:30 UTC)."""
    want = dt.datetime(2026, 10, 25, hour, 30, tzinfo=dt.UTC)
    tables = [
        read(_local(tmp_path / f"s{suffix}", [AUTUMN_TWICE]), _types(ambiguous=ambiguous))
        for suffix in (".csv", ".parquet")
    ]
    assert tables[0].equals(tables[1])
    assert tables[0]["seen_at"].to_pylist() == [want]


def test_parquet_times_with_a_zone_keep_their_instant(tmp_path: Path) -> None:
    """A zoned Parquet column already names instants: the declared zone does not move them."""
    stored = pa.array([dt.datetime(2026, 7, 1, 12, 0)], pa.timestamp("ms", tz="Europe/Paris"))
    path = write(tmp_path / "t.parquet", pa.table({"id": ["P1"], "seen_at": stored}))
    for types in (_types(), _types(zone=None)):
        [when] = read(ParquetSource(path), types)["seen_at"].to_pylist()
        assert when == dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)


def test_csv_times_with_an_offset_when_the_zone_is_declared_are_refused(tmp_path: Path) -> None:
    """A declared zone says the source writes wall-clock times: an offset contradicts it."""
    path = tmp_path / "s.csv"
    path.write_text("id,seen_at\nP1,2026-07-01T12:00:00+01:00\n")
    with pytest.raises(SourceError) as caught:
        list(CsvSource(path).batches(_types()))
    assert "'seen_at' has a time with a zone offset" in str(caught.value)
    assert "2026" not in shown(caught.value)


def test_csv_times_with_an_offset_still_read_without_a_zone(tmp_path: Path) -> None:
    """Today's behaviour is kept: CSV times carrying an offset or Z need no sourceTimeZone."""
    path = tmp_path / "s.csv"
    path.write_text("id,seen_at\nP1,2026-07-01T12:00:00+01:00\nP2,2026-01-01T00:00:00Z\n")
    table = read(CsvSource(path), {"id": pa.string(), "seen_at": UTC_TIMESTAMP})
    assert table["seen_at"].to_pylist() == [
        dt.datetime(2026, 7, 1, 11, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    ]


# --- the sharing term, through the contract -------------------------------------------------

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"


def _with_zone(value: object, *, incremental: bool = False) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["customProperties"].append({"property": "sourceTimeZone", "value": value})
        if incremental:  # reads the last_updated timestamp column too
            document["customProperties"].append(
                {"property": "incremental", "value": {"column": "last_updated"}}
            )

    return edit


@pytest.mark.parametrize(
    ("value", "ambiguous"),
    [("Europe/London", "refuse"), ({"zone": "Europe/London", "ambiguousTimes": "later"}, "later")],
)
def test_source_time_zone_reaches_the_source_types(
    tmp_path: Path, value: object, ambiguous: str
) -> None:
    """The term, as a name or an object, is what the source is asked to read times in."""
    contract = load_contract(write_contract(tmp_path / "c.yaml", RECIPIENT, _with_zone(value)))
    assert (contract.source_time_zone, contract.ambiguous_times) == ("Europe/London", ambiguous)
    types = source_types(contract)
    assert isinstance(types, SourceTypes)
    assert (types.time_zone, types.ambiguous) == ("Europe/London", ambiguous)


def test_without_the_term_sources_refuse_local_times(tmp_path: Path) -> None:
    """Absent: no zone is assumed."""
    contract = load_contract(write_contract(tmp_path / "c.yaml", RECIPIENT))
    assert contract.source_time_zone is None
    assert source_times(source_types(contract)) == (None, "raise")


@pytest.mark.parametrize(
    ("value", "where", "said"),
    [
        ("Europe/Londn", "value", "unknown IANA time zone 'Europe/Londn'"),
        ({"zone": "Mars/Olympus"}, "value.zone", "unknown IANA time zone 'Mars/Olympus'"),
        ({"zone": "Europe/London", "ambiguousTimes": "first"}, "value.ambiguousTimes", ""),
        ("../../etc/passwd", "value", ""),
    ],
)
def test_an_unknown_zone_or_rule_fails_lint(
    tmp_path: Path, value: object, where: str, said: str
) -> None:
    """A misspelt zone is a contract problem, not a failure of every run."""
    path = write_contract(tmp_path / "c.yaml", RECIPIENT, _with_zone(value))
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    text = str(caught.value)
    assert f"].{where}" in text and said in text


def test_one_contract_gives_the_same_rows_from_csv_and_parquet_local_times(
    tmp_path: Path,
) -> None:
    """The sample, with local last_updated times: identical Arrow output from either form."""
    edit = _with_zone({"zone": "Europe/London", "ambiguousTimes": "earlier"}, incremental=True)
    contract = load_contract(write_contract(tmp_path / "c.yaml", RECIPIENT, edit))
    table = pa.Table.from_batches(list(synth.batches(3000, seed=7)))
    # Wall-clock times every 137 minutes from 30 March 2026 (after the spring gap), through the
    # autumn change; the first row is the 01:30 that occurs twice.
    start = dt.datetime(2026, 3, 30)
    times = [start + dt.timedelta(minutes=137 * i) for i in range(table.num_rows)]
    times[0] = AUTUMN_TWICE
    column = pa.array(times, pa.timestamp("us"))
    local = table.set_column(table.schema.get_field_index("last_updated"), "last_updated", column)
    types = source_types(contract)
    csv_rows = read(CsvSource(write(tmp_path / "s.csv", local)), types)
    parquet_rows = read(ParquetSource(write(tmp_path / "s.parquet", local)), types)
    assert csv_rows.equals(parquet_rows)
    assert csv_rows["last_updated"].type == UTC_TIMESTAMP
    assert csv_rows["last_updated"][0].as_py() == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)
