"""A PostgreSQL source as real databases are: same-named result columns, types, local times."""

from __future__ import annotations

import datetime as dt
import traceback
from collections.abc import Iterator

import pyarrow as pa
import pytest
from pg import PrivatePostgres

from exchange.errors import SourceError
from exchange.types import ARROW_TYPES, UTC_TIMESTAMP, SourceTypes

psycopg = pytest.importorskip(
    "psycopg", reason="psycopg is not installed (pip install '.[postgres]')"
)
from exchange.sources.postgres import PostgresSource  # noqa: E402  (needs psycopg)

pytestmark = pytest.mark.integration

SCHEMA = "exchange_quirks_test"


@pytest.fixture(scope="module")
def url(postgres: PrivatePostgres) -> Iterator[str]:
    """A table of wall-clock times (timestamp without time zone), numbers and text."""
    libpq = postgres.url(driver=None)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.seen (id text, seen_at timestamp, n bigint, stamp text)"
        )
        conn.execute(
            "INSERT INTO exchange_quirks_test.seen VALUES "
            "('P1', '2026-01-15 09:30', 1, '2026-01-15T09:30:00Z'), "
            "('P2', '2026-07-01 12:00', 2, '2026-07-01T12:00:00Z')"
        )
        conn.execute(f"CREATE TABLE {SCHEMA}.autumn (id text, seen_at timestamp)")
        conn.execute("INSERT INTO exchange_quirks_test.autumn VALUES ('P1', '2026-10-25 01:30')")
    yield postgres.url()
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


def _times(zone: str | None, ambiguous: str = "refuse") -> SourceTypes:
    return SourceTypes(
        {"id": pa.string(), "seen_at": UTC_TIMESTAMP}, time_zone=zone, ambiguous=ambiguous
    )


def test_a_query_returning_two_columns_of_one_name_is_refused(url: str) -> None:
    """`SELECT a.x, b.x`: which one the contract means is unknowable."""
    query = f"SELECT id, n AS x, id AS x FROM {SCHEMA}.seen"  # noqa: S608
    source = PostgresSource(url, query=query)
    with pytest.raises(SourceError, match="'x' \\(2 times\\)"):
        list(source.batches({"id": pa.string(), "x": pa.int64()}))


def test_timestamp_without_time_zone_is_refused_without_a_declared_zone(url: str) -> None:
    """Never silently taken as UTC."""
    source = PostgresSource(url, table=f"{SCHEMA}.seen")
    with pytest.raises(SourceError, match="'seen_at' holds times without a zone"):
        list(source.batches(_times(None)))


def test_timestamp_without_time_zone_is_localised_in_the_declared_zone(url: str) -> None:
    """The same rule as CSV and Parquet: local wall-clock times, sent in UTC."""
    source = PostgresSource(url, table=f"{SCHEMA}.seen")
    table = pa.Table.from_batches(list(source.batches(_times("Europe/London"))))
    assert table["seen_at"].type == UTC_TIMESTAMP
    assert table.sort_by("id")["seen_at"].to_pylist() == [
        dt.datetime(2026, 1, 15, 9, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 7, 1, 11, 0, tzinfo=dt.UTC),
    ]


def test_an_autumn_time_that_occurs_twice_is_refused_unless_chosen(url: str) -> None:
    """25 Oct 2026 01:30 in London: refused by default, `later` is the GMT one."""
    source = PostgresSource(url, table=f"{SCHEMA}.autumn")
    with pytest.raises(SourceError, match="occurs twice") as caught:
        list(source.batches(_times("Europe/London")))
    assert "01:30" not in "".join(traceback.format_exception(caught.value))
    [batch] = source.batches(_times("Europe/London", "later"))
    assert batch["seen_at"].to_pylist() == [dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC)]


@pytest.mark.parametrize(
    ("column", "logical"), [("n", "timestamp"), ("stamp", "timestamp"), ("seen_at", "date")]
)
def test_a_database_type_the_field_does_not_take_is_refused(
    url: str, column: str, logical: str
) -> None:
    """bigint or text for a timestamp, a timestamp for a date: refused, not converted."""
    source = PostgresSource(url, table=f"{SCHEMA}.seen")
    with pytest.raises(SourceError, match=f"column '{column}' is PostgreSQL type"):
        list(source.batches({column: ARROW_TYPES[logical]}))
