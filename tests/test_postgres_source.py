"""Integration tests for the PostgreSQL source against a real, private server (tests/pg.py)."""

from __future__ import annotations

import io
import json
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from conftest import SAMPLE, Workspace, inbox_entries
from pg import PrivatePostgres

from exchange import synth
from exchange.contract import load_contract
from exchange.errors import SourceError
from exchange.minimise import source_types
from exchange.sandbox import PartnerSftpServer
from exchange.sources import Source, check_columns

psycopg = pytest.importorskip(
    "psycopg", reason="psycopg is not installed (pip install '.[postgres]')"
)
from exchange.sources.postgres import PostgresSource  # noqa: E402  (needs psycopg)

pytestmark = pytest.mark.integration

ROWS = 5000
SEED = 11
SCHEMA = "exchange_src_test"
# Queries below spell these names out (ruff's S608 flags SQL built with f-strings).
TABLE = "src_attendance"  # in public, found unqualified
QUALIFIED = f"{SCHEMA}.Attendance Export"  # needs quoting: mixed case and a space
SENTINEL = "SENTINEL-XYZ"
READER = "exchange_src_reader"
READER_PASSWORD = "right-Pa55word"
WRONG_PASSWORD = "wrong-SECRET-pw"
WANTED = {"notes": pa.string(), "person_id": pa.string(), "exclusions": pa.int64()}

_DDL = """
CREATE TABLE {name} (
    person_id text, nhs_number text, first_name text, last_name text, date_of_birth date,
    address_line text, postcode text, gender text, ethnicity text, school_urn text,
    attendance_rate double precision, exclusions integer, free_school_meals boolean,
    objection boolean, notes text, last_updated timestamptz
)
"""


@pytest.fixture(scope="module")
def expected() -> pa.Table:
    """The synthetic rows loaded into the tables, sorted by their unique person_id."""
    return pa.Table.from_batches(list(synth.batches(ROWS, seed=SEED))).sort_by("person_id")


@pytest.fixture(scope="module")
def url(postgres: PrivatePostgres) -> Iterator[str]:
    """The server's URL, with the synthetic rows loaded into a plain and a qualified table."""
    libpq = postgres.url(driver=None)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        for name in (f'public."{TABLE}"', f'{SCHEMA}."Attendance Export"'):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(_DDL.format(name=name))
            with conn.cursor().copy(f"COPY {name} FROM STDIN (FORMAT csv)") as copy:
                for batch in synth.batches(ROWS, seed=SEED):
                    buffer = io.BytesIO()
                    pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
                    copy.write(buffer.getvalue())
        conn.execute(f"CREATE TABLE {SCHEMA}.counts (id text, count text, label text)")
        conn.execute(
            "INSERT INTO exchange_src_test.counts "
            "SELECT 'P' || i, CASE WHEN i = 1500 THEN %s ELSE (i %% 7)::text END, "
            "CASE i %% 4 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'NA' ELSE 'NULL' END "
            "FROM generate_series(1, 2000) AS i",
            (SENTINEL,),
        )
        conn.execute(f"CREATE SEQUENCE {SCHEMA}.ticket")
        conn.execute(f"DROP ROLE IF EXISTS {READER}")
        conn.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")
        conn.execute(f"GRANT SELECT ON public.{TABLE} TO {READER}")
    yield postgres.url()
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        conn.execute(f"DROP TABLE public.{TABLE}")
        conn.execute(f"DROP ROLE {READER}")


def read_all(source: Source, types: dict[str, pa.DataType]) -> pa.Table:
    """Every batch of the source as one table, after checking each batch's schema."""
    batches = list(source.batches(types))
    for batch in batches:
        assert batch.schema.names == list(types)
        assert [f.type for f in batch.schema] == list(types.values())
    return pa.Table.from_batches(batches, schema=pa.schema(list(types.items())))


def shown(exc: BaseException) -> str:
    """Everything a logged traceback of `exc` would show, chained exceptions included."""
    return "".join(traceback.format_exception(exc))


def test_columns_are_the_tables_columns(url: str) -> None:
    """columns() lists the table's columns in table order."""
    assert PostgresSource(url, TABLE).columns() == list(synth.COLUMNS)


def test_reads_only_the_requested_columns_in_order(url: str, expected: pa.Table) -> None:
    """Projection: exactly the requested names, in the requested order, with their types."""
    table = read_all(PostgresSource(url, TABLE), WANTED).sort_by("person_id")
    assert table.column_names == ["notes", "person_id", "exclusions"]
    assert table.num_rows == ROWS
    assert table["person_id"].to_pylist() == expected["person_id"].to_pylist()
    assert table["exclusions"].to_pylist() == expected["exclusions"].to_pylist()
    # Free text with LF, LF LF and CRLF inside survives the trip.
    assert table["notes"].to_pylist() == expected["notes"].to_pylist()
    assert any(n and "\r\n" in n for n in table["notes"].to_pylist())


def test_every_column_round_trips_with_its_type(url: str, expected: pa.Table) -> None:
    """All 16 columns (text, date, float, int, bool, timestamptz, nulls) equal the original."""
    types = {f.name: (pa.int64() if f.name == "exclusions" else f.type) for f in synth.SCHEMA}
    table = read_all(PostgresSource(url, TABLE), types).sort_by("person_id")
    assert table.num_rows == ROWS
    assert table.equals(expected.cast(table.schema))
    assert table.slice(0, 3).to_pylist() == expected.cast(table.schema).slice(0, 3).to_pylist()


def test_reads_the_contracts_columns_as_its_types(url: str, expected: pa.Table) -> None:
    """Reading with the contract's source types gives the contract's columns only."""
    types = source_types(load_contract(SAMPLE))
    table = read_all(PostgresSource(url, TABLE), types).sort_by("person_id")
    assert table.column_names == list(types)
    assert table["date_of_birth"].to_pylist() == expected["date_of_birth"].to_pylist()
    assert table["objection"].to_pylist() == expected["objection"].to_pylist()


def test_schema_qualified_table_with_a_name_that_needs_quoting(
    url: str, expected: pa.Table
) -> None:
    """schema.table is split and each part quoted, so case and spaces are kept."""
    source = PostgresSource(url, QUALIFIED)
    assert source.columns() == list(synth.COLUMNS)
    table = read_all(source, {"person_id": pa.string()})
    assert sorted(table["person_id"].to_pylist()) == expected["person_id"].to_pylist()


def test_named_query_with_a_where_clause(url: str, expected: pa.Table) -> None:
    """A query is read as a subquery: its filter applies and only its columns are offered."""
    query = (
        "SELECT person_id, exclusions, exclusions * 2 AS doubled FROM src_attendance "
        "WHERE exclusions > 1 ORDER BY person_id;"
    )
    source = PostgresSource(url, query=query)
    assert source.columns() == ["person_id", "exclusions", "doubled"]
    table = read_all(source, {"doubled": pa.int64(), "person_id": pa.string()})
    wanted = expected.filter(pc.greater(expected["exclusions"], 1))
    assert table.num_rows == wanted.num_rows > 0
    assert table["person_id"].to_pylist() == wanted["person_id"].to_pylist()
    assert table["doubled"].to_pylist() == [2 * v for v in wanted["exclusions"].to_pylist()]


def test_batches_are_at_most_batch_rows(url: str) -> None:
    """Memory bound: no batch is longer than batch_rows, whatever the CSV block size."""
    source = PostgresSource(url, TABLE, batch_rows=1000, block_size=64 * 1024)
    sizes = [b.num_rows for b in source.batches(WANTED)]
    assert sum(sizes) == ROWS
    assert max(sizes) <= 1000
    assert sizes == [1000] * 5


def test_a_query_with_no_rows_gives_no_batches(url: str) -> None:
    """An empty result is no batches, not an error."""
    source = PostgresSource(url, query="SELECT person_id FROM src_attendance WHERE false")
    assert list(source.batches({"person_id": pa.string()})) == []


def test_null_empty_and_na_text_are_kept_apart(url: str) -> None:
    """NULL stays null; '', 'NA' and 'NULL' are the strings they are."""
    source = PostgresSource(
        url, query="SELECT label FROM exchange_src_test.counts ORDER BY id LIMIT 8"
    )
    labels = read_all(source, {"label": pa.string()})["label"].to_pylist()
    # A one-column NULL is an empty CSV line: it must still count as a row.
    assert len(labels) == 8
    assert set(labels) == {None, "", "NA", "NULL"}


def test_stopping_early_leaves_the_source_readable(url: str) -> None:
    """Abandoning the stream cancels the COPY; the source can be read again at once."""
    source = PostgresSource(url, TABLE, batch_rows=500)
    first = next(iter(source.batches(WANTED)))
    assert first.num_rows == 500
    assert sum(b.num_rows for b in source.batches(WANTED)) == ROWS


def test_missing_column_is_a_source_error_naming_it(url: str) -> None:
    """A requested column the table lacks is a SourceError naming it."""
    source = PostgresSource(url, TABLE)
    with pytest.raises(SourceError, match="consent_flag"):
        list(source.batches({"person_id": pa.string(), "consent_flag": pa.bool_()}))
    with pytest.raises(SourceError) as caught:
        check_columns(source, ["person_id", "consent_flag", "school_name"])
    assert "consent_flag" in str(caught.value) and "school_name" in str(caught.value)


def test_missing_table_is_a_source_error(url: str) -> None:
    """A table that does not exist is a SourceError, not a psycopg error."""
    with pytest.raises(SourceError, match="does not exist"):
        PostgresSource(url, f"{SCHEMA}.absent").columns()


def test_text_in_an_integer_column_names_the_column_not_the_value(url: str) -> None:
    """A non-numeric text value read as int64: the column and type are named, never the value."""
    source = PostgresSource(url, f"{SCHEMA}.counts", batch_rows=700)
    with pytest.raises(SourceError) as caught:
        list(source.batches({"id": pa.string(), "count": pa.int64()}))
    message = str(caught.value)
    assert "'count'" in message and "int64" in message
    assert SENTINEL not in shown(caught.value)


def test_a_server_side_conversion_error_does_not_show_the_value(url: str) -> None:
    """PostgreSQL quotes the bad value in its own error text; the source withholds that text."""
    source = PostgresSource(url, query="SELECT count::integer AS n FROM exchange_src_test.counts")
    with pytest.raises(SourceError) as caught:
        list(source.batches({"n": pa.int64()}))
    assert "22P02" in str(caught.value)
    assert SENTINEL not in shown(caught.value)


def test_a_query_cannot_write(url: str, postgres: PrivatePostgres) -> None:
    """Queries run in a read-only transaction: nextval() is refused, the sequence stays put."""
    source = PostgresSource(url, query="SELECT nextval('exchange_src_test.ticket') AS n")
    with pytest.raises(SourceError, match="25006"):
        list(source.batches({"n": pa.int64()}))
    assert postgres.psql("SELECT last_value FROM exchange_src_test.ticket").strip() == "1"
    writable_cte = (
        "WITH gone AS (DELETE FROM src_attendance RETURNING person_id) SELECT * FROM gone"
    )
    with pytest.raises(SourceError):
        list(PostgresSource(url, query=writable_cte).batches({"person_id": pa.string()}))
    assert postgres.psql("SELECT count(*) FROM src_attendance").strip() == str(ROWS)


ATTACKS = [
    # Closes the gateway's subquery, commits its read-only transaction, then writes.
    "SELECT 1 AS n) AS src LIMIT 0; COMMIT; CREATE TABLE pwned (x int); "
    "SELECT * FROM (SELECT 1 AS n",
    "SELECT 1 AS n; COMMIT; CREATE TABLE pwned (x int)",
    "SELECT 1 AS n) AS src; CREATE TABLE pwned (x int); SELECT * FROM (SELECT 1 AS n",
    "SELECT 1 AS n /* ; */ ) x; COMMIT; CREATE TABLE pwned (x int) --",
]


@pytest.mark.parametrize("query", ATTACKS)
def test_a_query_cannot_escape_its_transaction(
    url: str, postgres: PrivatePostgres, query: str
) -> None:
    """`...; COMMIT; CREATE TABLE pwned` is refused before connecting, and no table appears."""
    with pytest.raises(SourceError, match="single SELECT"):
        PostgresSource(url, query=query).columns()
    assert postgres.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'pwned'") == "0\n"


def test_every_transaction_of_a_source_session_is_read_only(
    url: str, postgres: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Second and third lines of defence, with the statement check switched off.

    The description goes by the extended protocol (one statement only), and a COMMIT sent
    some other way still lands in a session whose every new transaction is read-only.
    """
    from exchange.sources import postgres as module

    monkeypatch.setattr(module, "_single_statement", lambda body: None)
    with pytest.raises(SourceError, match="42601"):  # cannot insert multiple commands
        PostgresSource(url, query=ATTACKS[0]).columns()
    source = PostgresSource(url, TABLE)
    with source._connect() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("COMMIT; CREATE TABLE pwned (x int)")  # simple protocol: both run
        conn.rollback()
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
    assert postgres.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'pwned'") == "0\n"


@pytest.mark.parametrize(
    "query",
    [
        "SELECT ';' AS n",
        "SELECT 'it''s; fine' AS n",
        "SELECT E'\\'; still a string' AS n",
        'SELECT 1 AS "odd;name"""',
        "SELECT $$;$$ AS n",
        "SELECT $q$ ) ; $q$ AS n",
        "SELECT 1 AS n -- a comment; with a semicolon\n",
        "SELECT 1 AS n /* nested /* ; */ ) */",
        "SELECT (1) AS n;",
    ],
)
def test_semicolons_inside_strings_names_and_comments_are_one_statement(
    url: str, query: str
) -> None:
    """The statement check lexes as PostgreSQL does: these are single SELECTs, and they run."""
    assert len(PostgresSource(url, query=query).columns()) == 1


@pytest.mark.parametrize(
    "query",
    ["SELECT 'unterminated", "SELECT 1 /* open", "SELECT (1", "SELECT 1) x", "SELECT $a$ x"],
)
def test_queries_that_cannot_be_lexed_are_refused(query: str) -> None:
    """Unbalanced quotes, comments or parentheses: refused before connecting."""
    with pytest.raises(SourceError, match="single SELECT"):
        PostgresSource("postgresql://127.0.0.1/db", query=query)


# -- transport security ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@db.example.org/d",
        "postgresql+psycopg://u@10.1.2.3:5433/d",
        "postgresql://u@127.0.0.1,db.example.org/d",  # one remote host is enough
        "postgresql://u@localhost/d?hostaddr=192.0.2.7",  # the address libpq really dials
    ],
)
def test_a_remote_host_without_sslmode_gets_verify_full(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq's default `prefer` falls back to plaintext: a remote source gets verify-full."""
    monkeypatch.setenv("PGSSLMODE", "disable")  # the environment cannot weaken it either
    assert PostgresSource(url, "t")._connect_args["sslmode"] == "verify-full"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1:5432/d",
        "postgresql://u@127.9.9.9/d",
        "postgresql://u@[::1]/d",
        "postgresql://u@localhost/d",
        "postgresql:///d?host=/run/postgresql",
        "postgresql:///d",
    ],
)
def test_a_socket_or_loopback_host_needs_no_tls(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing crosses a network: the URL's settings stand."""
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    assert "sslmode" not in PostgresSource(url, "t")._connect_args


def test_a_remote_pghost_counts_when_the_url_names_no_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq falls back to PGHOST: the check does too."""
    monkeypatch.setenv("PGHOST", "db.example.org")
    assert PostgresSource("postgresql:///d", "t")._connect_args["sslmode"] == "verify-full"


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca"])
def test_a_weaker_sslmode_to_a_remote_host_needs_the_override(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused with a message naming the override; accepted (and logged) with it."""
    url = f"postgresql://u:{WRONG_PASSWORD}@db.example.org/d?sslmode={mode}"
    with pytest.raises(SourceError, match="exchange_tls=unverified") as caught:
        PostgresSource(url, "t")
    assert WRONG_PASSWORD not in shown(caught.value)
    with caplog.at_level("WARNING"):
        args = PostgresSource(url + "&exchange_tls=unverified", "t")._connect_args
    assert args["sslmode"] == mode and "exchange_tls" not in args
    assert "TLS is not verified" in caplog.text


def test_the_override_without_sslmode_still_encrypts() -> None:
    """`exchange_tls=unverified` alone gives `require`, never a silent plaintext fall-back."""
    url = "postgresql://u@db.example.org/d?exchange_tls=unverified"
    assert PostgresSource(url, "t")._connect_args["sslmode"] == "require"
    with pytest.raises(SourceError, match="must be 'unverified'"):
        PostgresSource("postgresql://u@db.example.org/d?exchange_tls=yes", "t")


def test_verify_full_is_what_libpq_really_uses(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the real (TLS-less) test server taken as remote: refused, naming the fix."""
    from exchange.sources import postgres as module

    assert PostgresSource(url, TABLE).columns()  # over loopback it connects as before
    monkeypatch.setattr(module, "is_local", lambda args, env=None: False)
    with pytest.raises(SourceError, match="verify-full") as caught:
        PostgresSource(url, TABLE).columns()
    assert "sslrootcert" in str(caught.value)


def test_a_role_with_the_right_password_reads(postgres: PrivatePostgres, url: str) -> None:
    """A password-protected role reads what it was granted (the password may come separately)."""
    in_url = postgres.url(user=READER, password=READER_PASSWORD)
    assert PostgresSource(in_url, TABLE).columns() == list(synth.COLUMNS)
    apart = PostgresSource(postgres.url(user=READER), TABLE, password=READER_PASSWORD)
    assert sum(b.num_rows for b in apart.batches({"person_id": pa.string()})) == ROWS


def test_wrong_password_is_a_source_error_without_secrets(
    postgres: PrivatePostgres, url: str
) -> None:
    """Authentication failure names host and database, never the password or the URL."""
    bad = postgres.url(user=READER, password=WRONG_PASSWORD)
    with pytest.raises(SourceError) as caught:
        PostgresSource(bad, TABLE).columns()
    text = shown(caught.value)
    assert WRONG_PASSWORD not in text and bad not in text
    assert f"{postgres.host}:{postgres.port}/{postgres.database}" in str(caught.value)
    assert "authentication failed" in str(caught.value)


def test_unreachable_server_is_a_source_error_without_secrets(postgres: PrivatePostgres) -> None:
    """Nothing listening on the port: a SourceError naming the address, not the password."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the source dials it
    bad = f"postgresql+psycopg://{READER}:{WRONG_PASSWORD}@127.0.0.1:{port}/{postgres.database}"
    with pytest.raises(SourceError) as caught:
        list(PostgresSource(bad, TABLE).batches({"person_id": pa.string()}))
    text = shown(caught.value)
    assert WRONG_PASSWORD not in text
    assert f"127.0.0.1:{port}" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "table", "query"),
    [
        (f"mysql://u:{WRONG_PASSWORD}@h/db", "t", None),
        (f"postgresql://u:{WRONG_PASSWORD}@h/db?no_such_option=1", "t", None),
        ("postgresql://h/db", None, None),
        ("postgresql://h/db", "t", "SELECT 1"),
        ("postgresql://h/db", "a..b", None),
        ("postgresql://h/db", None, " ; "),
    ],
)
def test_bad_settings_are_source_errors_without_secrets(
    url: str, table: str | None, query: str | None
) -> None:
    """Bad URLs, both or neither of table and query, or a malformed name: refused at once."""
    with pytest.raises(SourceError) as caught:
        PostgresSource(url, table, query)
    assert WRONG_PASSWORD not in shown(caught.value)


def test_an_exchange_runs_from_a_postgres_table(
    postgres: PrivatePostgres, partner: PartnerSftpServer, workspace: Workspace, url: str
) -> None:
    """`exchange run --source postgres:NAME` reads the table named by physicalName."""
    libpq = postgres.url(driver=None)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.attendance_export")
        conn.execute(_DDL.format(name="public.attendance_export"))
        with conn.cursor().copy("COPY public.attendance_export FROM STDIN (FORMAT csv)") as copy:
            for batch in synth.batches(700, seed=SEED):
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
                copy.write(buffer.getvalue())
    secrets_file = Path(workspace.env["EXCHANGE_SECRETS"])
    stored = json.loads(secrets_file.read_text())
    try:
        # Sources are named connections only (a URL is refused): first as the superuser.
        stored.setdefault("connections", {})["school-mis-admin"] = {"url": postgres.url()}
        secrets_file.write_text(json.dumps(stored))
        result = workspace.gateway().run(workspace.contract, "postgres:school-mis-admin")
        # A password-protected role: the password lives in the secrets store.
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT ON public.attendance_export TO {READER}")
        connection = {"url": postgres.url(user=READER), "password": READER_PASSWORD}
        stored["connections"]["school-mis"] = connection
        secrets_file.write_text(json.dumps(stored))
        again = workspace.gateway().run(workspace.contract, "postgres:school-mis")
        assert again.rows_read == 700 and again.rows_sent == result.rows_sent
        # A named query kept with the connection reads a subset instead of the whole table.
        stored["connections"]["school-mis"]["query"] = (
            "SELECT * FROM public.attendance_export WHERE exclusions > 0"
        )
        secrets_file.write_text(json.dumps(stored))
        subset = workspace.gateway().run(workspace.contract, "postgres:school-mis")
        assert 0 < subset.rows_read < 700
        objecting = pc.sum(
            pa.Table.from_batches(list(synth.batches(700, seed=SEED)))["objection"]
        ).as_py()
        assert result.rows_read == 700 and result.rows_sent == 700 - objecting
        assert len(inbox_entries(partner)) == 3
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute("DROP TABLE public.attendance_export")
