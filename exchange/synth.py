"""Seedable, bounded-memory generator of synthetic school attendance source data."""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

DEFAULT_TODAY = datetime.date(2026, 11, 1)
MAX_ROWS = 10**8

SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),
        ("nhs_number", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("date_of_birth", pa.date32()),
        ("address_line", pa.string()),
        ("postcode", pa.string()),
        ("gender", pa.string()),
        ("ethnicity", pa.string()),
        ("school_urn", pa.string()),
        ("attendance_rate", pa.float64()),
        ("exclusions", pa.int32()),
        ("free_school_meals", pa.bool_()),
        ("objection", pa.bool_()),
        ("notes", pa.string()),
        ("last_updated", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)

_FEMALE = (
    "Olivia",
    "Amelia",
    "Isla",
    "Ava",
    "Mia",
    "Ivy",
    "Lily",
    "Isabella",
    "Rosie",
    "Sophia",
    "Grace",
    "Freya",
    "Willow",
    "Florence",
    "Emily",
    "Ella",
    "Poppy",
    "Evie",
    "Elsie",
    "Charlotte",
    "Evelyn",
    "Sienna",
    "Daisy",
    "Phoebe",
    "Sofia",
    "Alice",
    "Harper",
    "Matilda",
    "Ruby",
    "Aisha",
    "Maryam",
    "Fatima",
    "Zara",
    "Amara",
    "Chloe",
    "Jessica",
    "Siân",
    "Zoë",
    "Niamh",
    "Aoife",
    "Megan",
    "Hannah",
    "Leah",
    "Nia",
    "Maja",
    "Zuzanna",
)
_MALE = (
    "Muhammad",
    "Noah",
    "Oliver",
    "George",
    "Leo",
    "Arthur",
    "Oscar",
    "Theodore",
    "Freddie",
    "Harry",
    "Jack",
    "Charlie",
    "Alfie",
    "Henry",
    "Archie",
    "Thomas",
    "Jacob",
    "James",
    "Joshua",
    "William",
    "Isaac",
    "Ethan",
    "Lucas",
    "Finley",
    "Mason",
    "Reggie",
    "Tommy",
    "Ibrahim",
    "Yusuf",
    "Ali",
    "Aarav",
    "Arjun",
    "Kai",
    "Dylan",
    "Rhys",
    "Owen",
    "Callum",
    "Connor",
    "Liam",
    "Seán",
    "Kacper",
    "Jakub",
    "Tomás",
    "Rafael",
)
_SURNAMES = (
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Harris",
    "Clarke",
    "Patel",
    "Jackson",
    "Wood",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Lee",
    "King",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
    "Mitchell",
    "Kelly",
    "Cook",
    "Carter",
    "Richardson",
    "Bailey",
    "Collins",
    "Bell",
    "Shaw",
    "Murphy",
    "Khan",
    "Ahmed",
    "Hussain",
    "Ali",
    "Begum",
    "Singh",
    "Kaur",
    "Nowak",
    "Kowalski",
    "Okafor",
    "Mensah",
    "Nguyen",
    "Chen",
    "McDonald",
    "MacLeod",
    "O'Sullivan",
    "O'Neill",
    "O'Brien",
    "O'Connor",
    "D'Souza",
    "Smith-Jones",
    "Lloyd-Williams",
    "Hughes-Davies",
    "Ashby-Clarke",
)
_STREET_BASES = (
    "Station",
    "Church",
    "Park",
    "Victoria",
    "Mill",
    "School",
    "Manor",
    "Chapel",
    "Orchard",
    "Springfield",
    "Meadow",
    "Albert",
    "Queen's",
    "King's",
    "Windsor",
    "York",
    "Grange",
    "Highfield",
    "Beech",
    "Oak",
    "Willow",
    "Elm",
    "Cedar",
    "Hollybush",
    "St John's",
    "Westfield",
    "Brook",
    "Woodland",
    "Richmond",
    "Clarence",
    "Alexandra",
    "Nelson",
    "Mount Pleasant",
    "Chestnut",
    "Coronation",
)
_STREET_TYPES = (
    "Road",
    "Street",
    "Lane",
    "Avenue",
    "Close",
    "Drive",
    "Crescent",
    "Grove",
    "Way",
    "Gardens",
    "Terrace",
    "Place",
    "View",
    "Court",
)
# (area, first district, last district): plausible ranges, not an authoritative list.
_POSTCODE_AREAS = (
    ("B", 1, 99),
    ("E", 1, 18),
    ("G", 1, 84),
    ("L", 1, 40),
    ("M", 1, 90),
    ("N", 2, 22),
    ("S", 1, 81),
    ("LS", 1, 29),
    ("BD", 1, 24),
    ("WF", 1, 17),
    ("HD", 1, 9),
    ("HX", 1, 7),
    ("YO", 1, 62),
    ("HG", 1, 5),
    ("SK", 1, 23),
    ("OL", 1, 16),
    ("BL", 0, 9),
    ("WN", 1, 8),
    ("PR", 1, 26),
    ("NE", 1, 71),
    ("SR", 1, 8),
    ("DH", 1, 9),
    ("CF", 3, 48),
    ("SA", 1, 73),
    ("NP", 4, 44),
    ("BS", 1, 49),
    ("BA", 1, 22),
    ("EX", 1, 39),
    ("PL", 1, 35),
    ("OX", 1, 49),
    ("RG", 1, 45),
    ("SO", 14, 53),
    ("PO", 1, 41),
    ("BN", 1, 45),
    ("CB", 1, 25),
    ("NR", 1, 35),
    ("IP", 1, 33),
    ("CV", 1, 47),
    ("NG", 1, 34),
    ("LE", 1, 19),
    ("DE", 1, 75),
    ("ST", 1, 21),
    ("WV", 1, 16),
    ("EH", 1, 55),
    ("AB", 10, 56),
    ("NW", 2, 11),
    ("SE", 2, 28),
    ("SW", 2, 20),
    ("CR", 0, 9),
    ("BR", 1, 8),
    ("HA", 0, 9),
)
# Central London sub-districts supply the rarer A9A and AA9A outward formats.
_LONDON_SUBDISTRICTS = (
    "W1A",
    "W1B",
    "W1D",
    "W1F",
    "W1G",
    "W1H",
    "W1J",
    "W1K",
    "W1S",
    "W1T",
    "W1U",
    "W1W",
    "WC1A",
    "WC1B",
    "WC1E",
    "WC1H",
    "WC1N",
    "WC1R",
    "WC1V",
    "WC1X",
    "WC2A",
    "WC2B",
    "WC2E",
    "WC2H",
    "WC2N",
    "WC2R",
    "EC1A",
    "EC1M",
    "EC1N",
    "EC1R",
    "EC1V",
    "EC1Y",
    "EC2A",
    "EC2M",
    "EC2V",
    "EC3A",
    "EC3M",
    "EC4A",
    "EC4M",
    "EC4V",
    "SW1A",
    "SW1E",
    "SW1H",
    "SW1P",
    "SW1V",
    "SW1W",
    "SW1X",
    "SW1Y",
    "E1W",
    "N1C",
    "N1P",
    "NW1W",
    "SE1P",
)
_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_ETHNICITY = {
    "WBRI": 62.0,
    "WIRI": 0.4,
    "WOTH": 7.0,
    "MWBC": 1.6,
    "MWBA": 0.9,
    "MWAS": 1.5,
    "MOTH": 2.5,
    "AIND": 3.5,
    "APKN": 4.6,
    "ABAN": 1.9,
    "AOTH": 2.0,
    "BCRB": 1.0,
    "BAFR": 4.0,
    "BOTH": 0.6,
    "CHNE": 0.5,
    "OOTH": 2.0,
    "REFU": 1.0,
    "NOBT": 3.0,
}
_SHORT_NOTES = (
    "Attends breakfast club",
    "EHCP in place",
    "SEN support",
    "Young carer",
    "Moved from out of area",
    "Looked after child",
    "EAL",
    "Part-time timetable agreed",
    "Home to school transport",
    "Sibling at same school",
    "Persistent lateness",
    "Mum's mobile number updated",
    "Medical evidence on file",
    "Term-time holiday requested",
)
_TRICKY_OPENINGS = (
    'Met parent, said "fine".',
    'Called home, mum said "ring back later".',
    'Letter sent, "final warning" issued.',
    'Parent said: "he\'s unwell, back Monday".',
    'Spoke to carer, agreed "support plan".',
    'Pupil said "bullied at lunch", DSL informed.',
)
# CRLF inside a value is the nastiest case for line-oriented readers, so keep some.
_TRICKY_BREAKS = ("\n", "\n\n", "\r\n")
_TRICKY_CLOSINGS = (
    "Follow up in Jan",
    'Review at next PEP, see "actions" tab',
    "EWO visit booked, 10am",
    "No further action",
    'Chase GP letter; "urgent"',
)


@dataclass(frozen=True)
class _Pools:
    """Per-file lookup tables and permutation parameters shared by every batch."""

    first_names: pa.Array
    first_cdf_f: np.ndarray
    first_cdf_m: np.ndarray
    n_female: int
    last_names: pa.Array
    last_cdf: np.ndarray
    streets: pa.Array
    flats: pa.Array
    outward: pa.Array
    outward_cdf: np.ndarray
    inward: pa.Array
    genders: pa.Array
    ethnicity: pa.Array
    ethnicity_cdf: np.ndarray
    urns: pa.Array
    primary_cdf: np.ndarray
    secondary_cdf: np.ndarray
    n_primary: int
    notes: pa.Array
    n_short_notes: int
    id_mul: int
    id_add: int
    nhs_mul: int
    nhs_add: int
    dob_lo: int
    dob_hi: int
    today_s: int


def _zipf_cdf(n: int, shift: float = 4.0) -> np.ndarray:
    """Cumulative weights favouring the start of a list, so common names dominate."""
    w = 1.0 / (np.arange(n, dtype=np.float64) + shift)
    return _cdf(w)


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Normalised cumulative distribution of non-negative weights."""
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


def _pick(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """Draw n indices distributed by cdf."""
    idx = np.searchsorted(cdf, rng.random(n), side="right")
    return np.minimum(idx, len(cdf) - 1)


def _coprime_multiplier(rng: np.random.Generator) -> int:
    """Random multiplier coprime with 10**8 so that i -> a*i + b mod 10**8 is a bijection."""
    a = int(rng.integers(1, MAX_ROWS - 3)) | 1
    return a + 2 if a % 5 == 0 else a


def _years_before(day: datetime.date, years: int) -> datetime.date:
    """Same calendar day `years` earlier, with 29 February falling back to the 28th."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _pools(seed: int, today: datetime.date) -> _Pools:
    """Build the per-file tables; everything random here comes from the file-level stream."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    n_schools, n_primary = 200, 160
    urns = rng.choice(np.arange(100_000, 150_000), size=n_schools, replace=False)
    school_size = rng.lognormal(0.0, 0.6, size=n_schools)
    districts = [f"{a}{d}" for a, lo, hi in _POSTCODE_AREAS for d in range(lo, hi + 1)]
    outward_w = np.concatenate(
        [
            np.full(len(districts), 0.97 / len(districts)),
            np.full(len(_LONDON_SUBDISTRICTS), 0.03 / len(_LONDON_SUBDISTRICTS)),
        ]
    )
    inward = [f"{d}{a}{b}" for d, a, b in itertools.product("0123456789", *[_INWARD_LETTERS] * 2)]
    tricky = [
        f"{o}{b}{c}"
        for o, b, c in itertools.product(_TRICKY_OPENINGS, _TRICKY_BREAKS, _TRICKY_CLOSINGS)
    ]
    epoch = datetime.date(1970, 1, 1)
    oldest = _years_before(today, 19) + datetime.timedelta(days=1)
    youngest = _years_before(today, 4)
    zipf_f, zipf_m = _zipf_cdf(len(_FEMALE)), _zipf_cdf(len(_MALE))
    return _Pools(
        first_names=pa.array(_FEMALE + _MALE),
        first_cdf_f=zipf_f,
        first_cdf_m=zipf_m,
        n_female=len(_FEMALE),
        last_names=pa.array(_SURNAMES),
        last_cdf=_zipf_cdf(len(_SURNAMES), shift=8.0),
        streets=pa.array([f" {b} {t}" for b in _STREET_BASES for t in _STREET_TYPES]),
        flats=pa.array([""] + [f"Flat {i}, " for i in range(1, 41)]),
        outward=pa.array([*districts, *_LONDON_SUBDISTRICTS]),
        outward_cdf=_cdf(outward_w),
        inward=pa.array(inward),
        genders=pa.array(["F", "M", "X"]),
        ethnicity=pa.array(list(_ETHNICITY)),
        ethnicity_cdf=_cdf(np.array(list(_ETHNICITY.values()))),
        urns=pa.array([str(u) for u in urns]),
        primary_cdf=_cdf(school_size[:n_primary]),
        secondary_cdf=_cdf(school_size[n_primary:]),
        n_primary=n_primary,
        notes=pa.array([*_SHORT_NOTES, *tricky]),
        n_short_notes=len(_SHORT_NOTES),
        id_mul=_coprime_multiplier(rng),
        id_add=int(rng.integers(0, MAX_ROWS)),
        nhs_mul=_coprime_multiplier(rng),
        nhs_add=int(rng.integers(0, MAX_ROWS)),
        dob_lo=(oldest - epoch).days,
        dob_hi=(youngest - epoch).days,
        today_s=(today - epoch).days * 86_400,
    )


# NHS numbers starting 999 are never issued to patients: they are reserved for testing.
TEST_NHS_PREFIX = 99_900_000


def _digits(values: np.ndarray, width: int) -> pa.Array:
    """Zero-padded decimal strings of non-negative integers."""
    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width=width, padding="0")


def _nhs_numbers(rng: np.random.Generator, core: np.ndarray) -> pa.Array:
    """Valid NHS numbers in the 999 range kept for testing, so none can be a real person's.

    The digits after 999 come from `core`, so they are unique within any 100,000 rows.
    """
    core = TEST_NHS_PREFIX + core % 100_000
    ninth = rng.integers(0, 10, size=len(core))
    powers = 10 ** np.arange(7, -1, -1, dtype=np.int64)
    first8 = (core[:, None] // powers) % 10
    partial = first8 @ np.arange(10, 2, -1, dtype=np.int64)
    # Check digit 10 means invalid; bumping the 9th digit (weight 2) always escapes it.
    ninth = np.where((partial + 2 * ninth) % 11 == 1, (ninth + 1) % 10, ninth)
    check = (11 - (partial + 2 * ninth) % 11) % 11
    return _digits(core * 100 + ninth * 10 + check, 10)


def _batch(p: _Pools, rng: np.random.Generator, start: int, n: int) -> pa.RecordBatch:
    """Generate rows [start, start + n) of the file."""
    row = np.arange(start, start + n, dtype=np.int64)
    person_id = pc.binary_join_element_wise(
        "P", _digits((p.id_mul * row + p.id_add) % MAX_ROWS, 8), ""
    )
    nhs = _nhs_numbers(rng, (p.nhs_mul * row + p.nhs_add) % MAX_ROWS)

    g = _pick(rng, np.array([0.49, 0.99, 0.995, 1.0]), n)
    gender = p.genders.take(pa.array(np.minimum(g, 2), mask=g == 3))
    female = (g == 0) | ((g >= 2) & (rng.random(n) < 0.5))
    first_idx = np.where(
        female,
        _pick(rng, p.first_cdf_f, n),
        p.n_female + _pick(rng, p.first_cdf_m, n),
    )
    first_name = p.first_names.take(pa.array(first_idx))
    last_name = p.last_names.take(pa.array(_pick(rng, p.last_cdf, n)))

    dob = rng.integers(p.dob_lo, p.dob_hi + 1, size=n)
    date_of_birth = pa.array(dob.astype("datetime64[D]"))

    house = np.minimum(rng.geometric(0.03, size=n), 250)
    flat = np.where(rng.random(n) < 0.1, rng.integers(1, len(p.flats), size=n), 0)
    address = pc.binary_join_element_wise(
        p.flats.take(pa.array(flat)),
        pc.cast(pa.array(house), pa.string()),
        p.streets.take(pa.array(rng.integers(0, len(p.streets), size=n))),
        "",
    )
    postcode = pc.binary_join_element_wise(
        p.outward.take(pa.array(_pick(rng, p.outward_cdf, n))),
        p.inward.take(pa.array(rng.integers(0, len(p.inward), size=n))),
        " ",
    )
    ethnicity = p.ethnicity.take(pa.array(_pick(rng, p.ethnicity_cdf, n)))

    secondary_age = (p.today_s // 86_400 - dob) >= 11 * 365.25
    school = np.where(
        secondary_age,
        p.n_primary + _pick(rng, p.secondary_cdf, n),
        _pick(rng, p.primary_cdf, n),
    )
    school_urn = p.urns.take(pa.array(school))

    persistent = rng.random(n) < 0.08
    absence = np.where(
        persistent, 10.0 + 90.0 * rng.beta(1.5, 4.0, size=n), rng.gamma(1.3, 3.5, size=n)
    )
    attendance = np.round(np.clip(100.0 - absence, 0.0, 100.0), 1)
    excluded = rng.random(n) < np.where(persistent, 0.15, 0.03)
    exclusions = np.where(excluded, np.minimum(rng.geometric(0.5, size=n), 10), 0)
    fsm = rng.random(n) < 0.25
    objection = rng.random(n) < 0.03

    kind = rng.random(n)
    note_idx = np.where(
        kind < 0.02,
        p.n_short_notes + rng.integers(0, len(p.notes) - p.n_short_notes, size=n),
        rng.integers(0, p.n_short_notes, size=n),
    )
    notes = p.notes.take(pa.array(note_idx, mask=kind >= 0.2))

    seconds_ago = rng.integers(1, 730 * 86_400 + 1, size=n)
    last_updated = pa.array(
        (p.today_s - seconds_ago) * 1_000_000, type=pa.timestamp("us", tz="UTC")
    )
    return pa.RecordBatch.from_arrays(
        [
            person_id,
            nhs,
            first_name,
            last_name,
            date_of_birth,
            address,
            postcode,
            gender,
            ethnicity,
            school_urn,
            pa.array(attendance),
            pa.array(exclusions.astype(np.int32)),
            pa.array(fsm),
            pa.array(objection),
            notes,
            last_updated,
        ],
        schema=SCHEMA,
    )


def batches(
    rows: int,
    *,
    seed: int = 0,
    batch_rows: int = 100_000,
    today: datetime.date = DEFAULT_TODAY,
) -> Iterator[pa.RecordBatch]:
    """Yield `rows` synthetic rows as record batches of at most `batch_rows` rows."""
    if not 0 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be between 0 and {MAX_ROWS}")
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    pools = _pools(seed, today)
    for index, start in enumerate(range(0, rows, batch_rows)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
        yield _batch(pools, rng, start, min(batch_rows, rows - start))


def _format_for(path: Path, fmt: str | None) -> str:
    """Resolve the output format from `fmt` or the file suffix."""
    chosen = (fmt or path.suffix.lstrip(".")).lower()
    if chosen not in ("csv", "parquet"):
        raise ValueError(f"cannot tell format of {path}; use a .csv or .parquet name")
    return chosen


def write(
    path: Path,
    rows: int,
    *,
    seed: int = 0,
    fmt: str | None = None,
    batch_rows: int = 100_000,
    today: datetime.date = DEFAULT_TODAY,
) -> Path:
    """Write synthetic rows to `path` as CSV or Parquet with mode 0600; return the path."""
    path = Path(path)
    chosen = _format_for(path, fmt)
    stream = batches(rows, seed=seed, batch_rows=batch_rows, today=today)
    # mkstemp creates the file 0600 from the start (the writers reopen it without changing
    # the mode), and the rename means a failed run never leaves a partial file behind.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if chosen == "csv":
            with pacsv.CSVWriter(str(tmp), SCHEMA) as csv_writer:
                for batch in stream:
                    csv_writer.write_batch(batch)
        else:
            with pq.ParquetWriter(str(tmp), SCHEMA) as pq_writer:
                for batch in stream:
                    pq_writer.write_batch(batch)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- An NHS acute trust's emergency-department frequent-attenders extract ----------------------
# Written as the trust's system writes it, for contracts/acute-trust-ed-frequent-attenders-to-
# adult-social-care.yaml: local (Europe/London) wall-clock arrival times without an offset, Y/N
# flags (some empty, some lower case), free text with commas, quotes and line breaks, and columns
# the contract does not read. The CSV and Parquet forms of one seed hold the same rows.

ED_SCHEMA = pa.schema(
    [
        ("attendance_id", pa.string()),
        ("site_code", pa.string()),
        ("nhs_number", pa.string()),
        ("patient_name", pa.string()),
        ("date_of_birth", pa.date32()),
        ("postcode", pa.string()),
        ("gp_practice_code", pa.string()),
        ("arrival_datetime", pa.timestamp("us")),  # naive: the department's local clock
        ("arrival_mode", pa.string()),
        ("attendances_last_12_months", pa.int64()),
        ("national_data_opt_out", pa.string()),
        ("s42_enquiry_open", pa.string()),
        ("triage_notes", pa.string()),
    ]
)
ED_COLUMNS: tuple[str, ...] = tuple(ED_SCHEMA.names)
ED_TODAY = datetime.date(2026, 11, 28)
# Europe/London in 2026: 29 March 01:00-01:59 never happened (the clocks went forward); 25
# October 01:00-01:59 happened twice (the clocks went back). The extract never holds the first
# (a real system cannot record it) and always holds some of the second.
SPRING_GAP = (datetime.datetime(2026, 3, 29, 1, 0), datetime.datetime(2026, 3, 29, 2, 0))
AUTUMN_REPEAT = (datetime.datetime(2026, 10, 25, 1, 0), datetime.datetime(2026, 10, 25, 2, 0))
_ED_MODES = ("ambulance", "walk-in", "police", "other")
_ED_NOTES = (
    "Fall at home",
    "Chest pain, resolved",
    'Brought in by neighbour, said "not coping"',
    "Alcohol related; discharged, advised GP",
    'Query self-neglect.\nHome "very cold", no food in fridge',
    "Seen by frailty team,\r\nreferred to ASC",
    "Bruising to arms, explanation inconsistent; safeguarding concern raised",
    '=HYPERLINK("http://example.invalid","ward")',
)


def ed_attenders_table(
    rows: int, *, seed: int = 0, duplicate_attendance: bool = False, today: datetime.date = ED_TODAY
) -> pa.Table:
    """`rows` attendances (plus one re-exported attendance if `duplicate_attendance`)."""
    import random

    if not 0 <= rows <= 1_000_000:
        raise ValueError("rows must be between 0 and 1000000")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    rng = random.Random(f"ed-attenders/{seed}")  # noqa: S311 (synthetic data, not secrets)
    people = max(1, rows // 4)
    core = rng.sample(range(100_000), k=min(people, 100_000))
    cores = np.array([core[i % len(core)] for i in range(people)], dtype=np.int64)
    nhs = _nhs_numbers(np.random.default_rng(seed), cores).to_pylist()
    born = [today - datetime.timedelta(days=rng.randint(18 * 366, 99 * 365)) for _ in range(people)]
    home = [
        f"{rng.choice(['LS', 'BD', 'WF', 'HX'])}{rng.randint(1, 9)} "
        f"{rng.randint(0, 9)}{rng.choice(_INWARD_LETTERS)}{rng.choice(_INWARD_LETTERS)}"
        for _ in range(people)
    ]
    out: dict[str, list[object]] = {name: [] for name in ED_COLUMNS}
    start = datetime.datetime(today.year - 1, today.month, today.day)
    span = int((datetime.datetime(today.year, today.month, today.day) - start).total_seconds())
    for i in range(rows):
        who = i % people
        if i % 50 == 7:  # the hour that occurs twice when the clocks go back
            arrival = AUTUMN_REPEAT[0] + datetime.timedelta(minutes=rng.randint(0, 59))
        else:
            arrival = start + datetime.timedelta(seconds=rng.randrange(span))
            if SPRING_GAP[0] <= arrival < SPRING_GAP[1]:
                arrival += datetime.timedelta(hours=1)  # no system records a time that never was
        arrival = arrival.replace(second=0)
        opt_out = rng.choices(["Y", "N", "", "y", " N"], weights=[12, 70, 8, 2, 8])[0]
        out["attendance_id"].append(f"ED{26_000_000 + i:08d}")
        out["site_code"].append(rng.choice(["RXX01", "RXX02"]))
        out["nhs_number"].append(nhs[who])
        out["patient_name"].append(
            f"{rng.choice(_SURNAMES).upper()}, {rng.choice(_FEMALE + _MALE)}"
        )
        out["date_of_birth"].append(born[who])
        out["postcode"].append(home[who] if rng.random() > 0.03 else None)
        out["gp_practice_code"].append(f"B{rng.randint(81000, 87999)}")
        out["arrival_datetime"].append(arrival)
        out["arrival_mode"].append(rng.choices(_ED_MODES, weights=[45, 45, 5, 5])[0])
        out["attendances_last_12_months"].append(3 + int(rng.paretovariate(1.5)) % 60)
        out["national_data_opt_out"].append(opt_out or None)
        out["s42_enquiry_open"].append(rng.choices(["Y", "N", None], weights=[15, 80, 5])[0])
        out["triage_notes"].append(rng.choice(_ED_NOTES) if rng.random() < 0.6 else None)
    if duplicate_attendance and rows:
        again = rng.randrange(rows)  # the same attendance exported twice, its time corrected
        for name in ED_COLUMNS:
            out[name].append(out[name][again])
        out["arrival_datetime"][-1] += datetime.timedelta(minutes=5)  # type: ignore[operator]
    return pa.Table.from_pydict(out, schema=ED_SCHEMA)


def write_ed_attenders(
    path: Path,
    rows: int,
    *,
    seed: int = 0,
    fmt: str | None = None,
    duplicate_attendance: bool = False,
    today: datetime.date = ED_TODAY,
) -> Path:
    """Write the ED extract as CSV (as the trust exports it) or Parquet, mode 0600."""
    import csv

    path = Path(path)
    chosen = _format_for(path, fmt)
    table = ed_attenders_table(
        rows, seed=seed, duplicate_attendance=duplicate_attendance, today=today
    )
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if chosen == "csv":
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\r\n")
                writer.writerow(ED_COLUMNS)
                for record in table.to_pylist():
                    writer.writerow(["" if v is None else _ed_text(v) for v in record.values()])
        else:
            os.close(fd)
            pq.write_table(table, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _ed_text(value: object) -> str:
    """A value as the trust's export writes it: local times as `YYYY-MM-DD HH:MM:SS`."""
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write a synthetic attendance file."""
    parser = argparse.ArgumentParser(
        prog="python -m exchange.synth",
        description="Write synthetic school attendance source data (CSV or Parquet).",
    )
    parser.add_argument("out", type=Path, help="output file (.csv or .parquet)")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default=None)
    args = parser.parse_args(argv)
    try:
        write(args.out, args.rows, seed=args.seed, fmt=args.format, batch_rows=args.batch_rows)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
