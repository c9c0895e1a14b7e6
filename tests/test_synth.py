"""Tests for the synthetic school attendance generator."""

from __future__ import annotations

import datetime
import re
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from exchange import synth

ROOT = Path(__file__).resolve().parents[1]
POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][ABD-HJLNP-UW-Z]{2}$")
ETHNICITY = frozenset(
    [
        "WBRI",
        "WIRI",
        "WOTH",
        "MWBC",
        "MWBA",
        "MWAS",
        "MOTH",
        "AIND",
        "APKN",
        "ABAN",
        "AOTH",
        "BCRB",
        "BAFR",
        "BOTH",
        "CHNE",
        "OOTH",
        "REFU",
        "NOBT",
    ]
)


def table(
    rows: int,
    seed: int = 0,
    batch_rows: int = 100_000,
    today: datetime.date = synth.DEFAULT_TODAY,
) -> pa.Table:
    """Collect generated batches into one table."""
    stream = synth.batches(rows, seed=seed, batch_rows=batch_rows, today=today)
    return pa.Table.from_batches(list(stream), schema=synth.SCHEMA)


def read_csv(path: Path) -> pa.Table:
    """Stream a CSV back with the generator's types, allowing newlines inside values."""
    reader = pacsv.open_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=synth.SCHEMA,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    return reader.read_all()


def nhs_valid(number: str) -> bool:
    """Independent modulus-11 check of an NHS number."""
    if not re.fullmatch(r"[0-9]{10}", number):
        return False
    total = sum(int(d) * w for d, w in zip(number[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(number[9])


def age_on(born: datetime.date, day: datetime.date) -> int:
    """Whole years of age on a given day."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    """A few thousand rows over several batches."""
    return table(5_000, seed=3, batch_rows=700)


def test_columns_match_schema() -> None:
    """COLUMNS lists the 16 source columns in schema order."""
    assert len(synth.COLUMNS) == 16
    assert synth.COLUMNS[0] == "person_id"
    assert synth.COLUMNS[-1] == "last_updated"
    assert tuple(synth.SCHEMA.names) == synth.COLUMNS


def test_row_count_across_batches() -> None:
    """Rows split into full batches plus a remainder; zero rows yields nothing."""
    sizes = [b.num_rows for b in synth.batches(2_537, seed=1, batch_rows=500)]
    assert sizes == [500, 500, 500, 500, 500, 37]
    assert list(synth.batches(0)) == []
    assert all(b.schema.equals(synth.SCHEMA) for b in synth.batches(10, batch_rows=4))


def test_batches_differ_and_prefix_is_stable() -> None:
    """Each batch has its own stream, and earlier batches ignore the total size."""
    short = list(synth.batches(250, seed=5, batch_rows=100))
    long = list(synth.batches(1_000, seed=5, batch_rows=100))
    assert short[0].equals(long[0])
    assert short[1].equals(long[1])
    assert short[0]["nhs_number"] != short[1]["nhs_number"]
    assert short[0]["attendance_rate"] != short[1]["attendance_rate"]


@pytest.mark.parametrize(("rows", "seed", "batch_rows"), [(-1, 0, 10), (10, 0, 0), (10, -1, 10)])
def test_rejects_bad_arguments(rows: int, seed: int, batch_rows: int) -> None:
    """Negative sizes, empty batches and negative seeds are refused."""
    with pytest.raises(ValueError):
        next(synth.batches(rows, seed=seed, batch_rows=batch_rows))


def test_person_id_unique_across_batches(sample: pa.Table) -> None:
    """person_id is P plus 8 digits and never repeats across batches."""
    ids = sample["person_id"].to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"P[0-9]{8}", i) for i in ids)


def test_nhs_numbers_valid_and_unique(sample: pa.Table) -> None:
    """Every NHS number passes modulus 11 and none repeats."""
    numbers = sample["nhs_number"].to_pylist()
    assert all(nhs_valid(n) for n in numbers)
    assert all(n.startswith("999") for n in numbers)
    assert len(set(numbers)) == len(numbers)


def test_postcodes_look_british(sample: pa.Table) -> None:
    """Postcodes match the UK pattern and cover the common outward shapes."""
    codes = sample["postcode"].to_pylist()
    assert all(POSTCODE.match(c) for c in codes)
    outward = {c.split()[0] for c in codes}
    shapes = {re.sub("[A-Z]", "A", re.sub("[0-9]", "9", o)) for o in outward}
    assert {"A9", "A99", "AA9", "AA99"} <= shapes
    assert shapes & {"A9A", "AA9A"}


@pytest.mark.parametrize("today", [synth.DEFAULT_TODAY, datetime.date(2028, 2, 29)])
def test_dates_of_birth_give_ages_4_to_18(today: datetime.date) -> None:
    """Ages at `today` span exactly 4 to 18, including on a leap day."""
    born = table(3_000, seed=9, batch_rows=1_000, today=today)["date_of_birth"].to_pylist()
    ages = {age_on(b, today) for b in born}
    assert min(ages) == 4
    assert max(ages) == 18


def test_value_domains(sample: pa.Table) -> None:
    """Categorical, numeric and timestamp columns stay in their documented ranges."""
    assert set(sample["gender"].drop_null().to_pylist()) == {"F", "M", "X"}
    assert 0 < sample["gender"].null_count < sample.num_rows * 0.02
    assert set(sample["ethnicity"].to_pylist()) <= ETHNICITY
    assert all(re.fullmatch(r"[0-9]{6}", u) for u in sample["school_urn"].to_pylist())
    assert 100 < pc.count_distinct(sample["school_urn"]).as_py() <= 200
    rates = sample["attendance_rate"].to_pylist()
    assert all(0.0 <= r <= 100.0 and round(r, 1) == r for r in rates)
    assert sum(r >= 85.0 for r in rates) > 0.8 * len(rates)
    exclusions = sample["exclusions"].to_pylist()
    assert min(exclusions) == 0
    assert max(exclusions) <= 10
    assert 0.15 < pc.mean(sample["free_school_meals"]).as_py() < 0.35
    assert 0.005 < pc.mean(sample["objection"]).as_py() < 0.06
    updated = pc.min_max(sample["last_updated"]).as_py()
    midnight = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
    assert midnight - datetime.timedelta(days=731) < updated["min"]
    assert updated["max"] < midnight


def test_awkward_text_is_present(sample: pa.Table) -> None:
    """Notes, surnames and addresses include the characters that trip up parsers."""
    notes = sample["notes"].drop_null().to_pylist()
    assert sample["notes"].null_count > sample.num_rows / 2
    tricky = [n for n in notes if "\n" in n]
    assert tricky
    assert all('"' in n and "," in n for n in tricky)
    assert any("\r\n" in n for n in tricky)
    surnames = set(sample["last_name"].to_pylist())
    assert any("'" in s for s in surnames)
    assert any("-" in s for s in surnames)
    assert any("," in a for a in sample["address_line"].to_pylist())


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_same_seed_same_bytes(tmp_path: Path, suffix: str) -> None:
    """The same seed gives identical bytes and another seed does not."""
    a = synth.write(tmp_path / f"a{suffix}", 1_500, seed=11, batch_rows=400)
    b = synth.write(tmp_path / f"b{suffix}", 1_500, seed=11, batch_rows=400)
    c = synth.write(tmp_path / f"c{suffix}", 1_500, seed=12, batch_rows=400)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_csv_round_trip_with_embedded_newlines(tmp_path: Path) -> None:
    """A newline-aware streaming read of the CSV gives back the generated table."""
    expected = table(3_000, seed=4, batch_rows=800)
    path = synth.write(tmp_path / "out.csv", 3_000, seed=4, batch_rows=800)
    with path.open("rb") as handle:
        header = handle.readline().decode()
        physical_lines = 1 + sum(1 for _ in handle)
    assert header.strip() == ",".join(f'"{c}"' for c in synth.COLUMNS)
    # More physical lines than records proves the naive-reader trap is really there.
    assert physical_lines > expected.num_rows + 1
    got = read_csv(path)
    assert got.num_rows == expected.num_rows
    assert got.schema.equals(expected.schema)
    assert got.equals(expected)
    multiline = pc.indices_nonzero(pc.match_substring(expected["notes"], "\n")).to_pylist()
    for i in multiline[:5]:
        assert got.slice(i, 1).to_pylist() == expected.slice(i, 1).to_pylist()


def test_parquet_round_trip(tmp_path: Path) -> None:
    """Parquet reads back equal, one row group per batch."""
    expected = table(2_000, seed=8, batch_rows=600)
    path = synth.write(tmp_path / "out.parquet", 2_000, seed=8, batch_rows=600)
    got = pq.read_table(path)
    assert got.schema.equals(expected.schema)
    assert got.equals(expected)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4


@pytest.mark.parametrize("name", ["x.csv", "x.parquet"])
def test_file_mode_is_0600(tmp_path: Path, name: str) -> None:
    """Output is 0600 even over a looser existing file, with no temp file left."""
    path = tmp_path / name
    path.write_text("old")
    path.chmod(0o644)
    synth.write(path, 50)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_format_from_argument_or_suffix(tmp_path: Path) -> None:
    """Unknown suffixes are refused unless the format is given."""
    with pytest.raises(ValueError):
        synth.write(tmp_path / "x.txt", 5)
    assert not list(tmp_path.iterdir())
    path = synth.write(tmp_path / "x.dat", 5, fmt="parquet")
    assert pq.read_table(path).num_rows == 5


def test_cli_writes_file(tmp_path: Path) -> None:
    """python -m exchange.synth writes the same data as the library."""
    out = tmp_path / "cli.csv"
    subprocess.run(
        [sys.executable, "-m", "exchange.synth", str(out), "--rows", "120", "--seed", "2"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert read_csv(out).equals(table(120, seed=2))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


# -- the NHS trust's emergency-department extract (the second sample agreement) -----------------


def read_ed_csv(path: Path) -> pa.Table:
    """Read the ED CSV back with the extract's types (naive times, empty flags as null)."""
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=synth.ED_SCHEMA, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )


def test_ed_extract_csv_and_parquet_hold_the_same_rows(tmp_path: Path) -> None:
    """One seed gives the same rows as CSV and Parquet, byte-identical files run to run."""
    expected = synth.ed_attenders_table(300, seed=5)
    a = synth.write_ed_attenders(tmp_path / "a.csv", 300, seed=5)
    b = synth.write_ed_attenders(tmp_path / "b.csv", 300, seed=5)
    c = synth.write_ed_attenders(tmp_path / "c.csv", 300, seed=6)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert read_ed_csv(a).equals(expected)
    parquet = synth.write_ed_attenders(tmp_path / "a.parquet", 300, seed=5)
    assert pq.read_table(parquet).equals(expected)
    assert stat.S_IMODE(a.stat().st_mode) == stat.S_IMODE(parquet.stat().st_mode) == 0o600


def test_ed_extract_is_as_a_hospital_writes_it(tmp_path: Path) -> None:
    """Local times (the repeated autumn hour, never the spring gap), Y/N flags some empty or
    untidy, quoted commas and line breaks, and columns no agreement reads."""
    t = synth.ed_attenders_table(1_000, seed=1)
    times = t["arrival_datetime"].to_pylist()
    assert t.schema.field("arrival_datetime").type == pa.timestamp("us")  # naive
    assert not any(synth.SPRING_GAP[0] <= x < synth.SPRING_GAP[1] for x in times)
    assert any(synth.AUTUMN_REPEAT[0] <= x < synth.AUTUMN_REPEAT[1] for x in times)
    flags = t["national_data_opt_out"].to_pylist()
    assert {"Y", "N", "y", " N", None} == set(flags)
    assert set(t["s42_enquiry_open"].to_pylist()) == {"Y", "N", None}
    assert (
        len(set(zip(t["attendance_id"].to_pylist(), t["site_code"].to_pylist(), strict=True)))
        == 1_000
    )
    assert {"gp_practice_code", "triage_notes", "patient_name"} <= set(synth.ED_COLUMNS)
    text = synth.write_ed_attenders(tmp_path / "x.csv", 1_000, seed=1).read_bytes().decode()
    assert '"Seen by frailty team,\r\nreferred to ASC"' in text
    dup = synth.ed_attenders_table(50, seed=1, duplicate_attendance=True)
    keys = list(zip(dup["attendance_id"].to_pylist(), dup["site_code"].to_pylist(), strict=True))
    assert dup.num_rows == 51 and len(set(keys)) == 50


def test_exchange_synth_kind_ed_attenders(tmp_path: Path) -> None:
    """`exchange synth --kind ed-attenders` writes the same extract as the library."""
    out = tmp_path / "ed.parquet"
    exe = str(Path(sys.executable).with_name("exchange"))
    subprocess.run(
        [exe, "synth", str(out), "--rows", "30", "--seed", "4", "--kind", "ed-attenders"],
        check=True,
        capture_output=True,
    )
    assert pq.read_table(out).equals(synth.ed_attenders_table(30, seed=4))
