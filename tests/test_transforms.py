"""Unit tests for the per-field minimisation transforms (exchange.transforms)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import write_contract

from exchange import transforms
from exchange.contract import load_contract
from exchange.contract.vocabulary import TRANSFORM_OUTPUT_TYPES
from exchange.errors import ContractError, Refused

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def expected_pseudonym(key: bytes, value: str) -> str:
    """The pseudonym computed independently: HMAC-SHA256, hex, first 32 characters."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def test_keep_returns_the_values_unchanged() -> None:
    """keep sends the array as it is."""
    values = pa.array([1.5, None, 3.0])
    assert transforms.keep()(values).equals(values)


def test_pseudonymise_known_answers() -> None:
    """Each pseudonym equals the independently computed keyed hash."""
    inputs = ["P00000001", "P12345678", "", "Zoë Ådams", "\u00e9\u20ac\U0001f600"]
    out = transforms.pseudonymise(KEY)(pa.array(inputs)).to_pylist()
    assert out == [expected_pseudonym(KEY, v) for v in inputs]
    # One answer pinned literally, so a change in both implementations would still show.
    assert out[0] == "fa44fc0c01626a90eb117fd6b24d1aac"
    assert all(len(p) == 32 and set(p) <= set("0123456789abcdef") for p in out)
    assert pa.types.is_string(transforms.pseudonymise(KEY)(pa.array(inputs)).type)


def test_pseudonymise_is_stable_across_calls_and_instances() -> None:
    """The same value gives the same pseudonym every time, within and across transforms."""
    values = pa.array(["P1", "P2", "P1"])
    first = transforms.pseudonymise(KEY)
    a = first(values).to_pylist()
    b = first(values).to_pylist()
    c = transforms.pseudonymise(KEY)(values).to_pylist()
    assert a == b == c
    assert a[0] == a[2] != a[1]


def test_pseudonymise_keeps_nulls_null() -> None:
    """A missing value stays missing; it is not hashed."""
    out = transforms.pseudonymise(KEY)(pa.array(["P1", None, "P2"], type=pa.string()))
    assert out.null_count == 1
    assert out.to_pylist()[1] is None


def test_pseudonymise_differs_by_key() -> None:
    """Another agreement's key gives unrelated pseudonyms."""
    values = pa.array(["P1", "P2", "P3"])
    mine = transforms.pseudonymise(KEY)(values).to_pylist()
    theirs = transforms.pseudonymise(OTHER_KEY)(values).to_pylist()
    assert all(a != b for a, b in zip(mine, theirs, strict=True))
    assert theirs == [expected_pseudonym(OTHER_KEY, v) for v in ["P1", "P2", "P3"]]


def test_pseudonymise_is_not_a_plain_hash() -> None:
    """Without the key the pseudonym cannot be recomputed by hashing the value."""
    out = transforms.pseudonymise(KEY)(pa.array(["P1"])).to_pylist()[0]
    assert out != hashlib.sha256(b"P1").hexdigest()[:32]


def test_pseudonymise_refuses_a_short_key() -> None:
    """Keys under 32 bytes are refused; exactly 32 is accepted."""
    with pytest.raises(ValueError, match="32 bytes"):
        transforms.pseudonymise(KEY[:31])
    with pytest.raises(ValueError):
        transforms.pseudonymise(b"")
    transforms.pseudonymise(KEY)  # no error


def test_build_pseudonymise_needs_a_key() -> None:
    """A contract field that pseudonymises cannot be built without the agreement's key."""
    with pytest.raises(ValueError, match="key"):
        transforms.build("pseudonymise", {}, key=None)
    built = transforms.build("pseudonymise", {}, key=KEY)
    assert built(pa.array(["P1"])).to_pylist() == [expected_pseudonym(KEY, "P1")]


def test_build_refuses_unknown_transform() -> None:
    """An unknown transform name is an error, never a silent keep."""
    with pytest.raises(ValueError, match="unknown transform"):
        transforms.build("encrypt", {}, key=KEY)


DATES = pa.array(
    [dt.date(2014, 3, 9), None, dt.date(2009, 12, 31), dt.date(2020, 1, 1)], type=pa.date32()
)


def test_generalise_date_to_year() -> None:
    """to: year keeps only the year, as an integer; nulls stay null."""
    out = transforms.generalise_date("year")(DATES)
    assert out.to_pylist() == [2014, None, 2009, 2020]
    assert pa.types.is_integer(out.type)


def test_generalise_date_to_year_month() -> None:
    """to: year-month keeps "YYYY-MM" text; the day is gone; nulls stay null."""
    out = transforms.generalise_date("year-month")(DATES)
    assert out.to_pylist() == ["2014-03", None, "2009-12", "2020-01"]
    assert pa.types.is_string(out.type)


def test_generalise_date_via_build_and_bad_option() -> None:
    """build passes the contract's option; an unknown granularity is refused."""
    built = transforms.build("generalise-date", {"to": "year-month"}, key=None)
    assert built(DATES).to_pylist()[0] == "2014-03"
    with pytest.raises(ValueError, match="day"):
        transforms.generalise_date("day")
    with pytest.raises(ValueError):
        transforms.build("generalise-date", {}, key=None)


@pytest.mark.parametrize(
    ("postcode", "district"),
    [
        ("LS6 2AB", "LS6"),
        ("ls6 2ab", "LS6"),
        ("SW1A1AA", "SW1A"),
        ("SW1A 1AA", "SW1A"),
        ("M1 1AE", "M1"),
        ("B33 8TH", "B33"),
        ("EC1A 1BB", "EC1A"),
    ],
)
def test_postcode_district(postcode: str, district: str) -> None:
    """The outward code, upper-cased, with or without the space."""
    assert transforms.postcode_district(pa.array([postcode])).to_pylist() == [district]


def test_postcode_district_keeps_nulls_and_is_vectorised() -> None:
    """A whole column at once; a missing postcode stays missing."""
    out = transforms.postcode_district(pa.array(["LS6 2AB", None, "M1 1AE"], type=pa.string()))
    assert out.to_pylist() == ["LS6", None, "M1"]
    assert transforms.build("postcode-district", {}, key=None) is transforms.postcode_district


def test_pseudonymise_matches_hmac_for_keys_of_every_length_class() -> None:
    """Keys longer than a SHA-256 block are hashed first, as HMAC requires (RFC 2104)."""
    values = ["P1", "", "x" * 200, "Zoë"]
    for key in (bytes(range(32)), bytes(range(64)), bytes(range(65)), bytes(range(200))):
        out = transforms.pseudonymise(key)(pa.array(values)).to_pylist()
        assert out == [expected_pseudonym(key, v) for v in values]


def test_pseudonymise_handles_empty_sliced_and_large_string_arrays() -> None:
    """No rows gives no rows; a slice and a large_string column hash like a plain column."""
    assert transforms.pseudonymise(KEY)(pa.array([], type=pa.string())).to_pylist() == []
    values = pa.array(["P0", None, "P2", "P3"])
    sliced = transforms.pseudonymise(KEY)(values.slice(1, 3)).to_pylist()
    assert sliced == [None, expected_pseudonym(KEY, "P2"), expected_pseudonym(KEY, "P3")]
    large = transforms.pseudonymise(KEY)(pa.array(["P2"], type=pa.large_string())).to_pylist()
    assert large == [expected_pseudonym(KEY, "P2")]


def test_hash_is_plain_sha256_hex() -> None:
    """hash is unkeyed SHA-256, all 64 hex characters; nulls stay null."""
    out = transforms.build("hash", {}, key=None)(pa.array(["abc", None, ""], type=pa.string()))
    assert out.to_pylist() == [
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        None,
        hashlib.sha256(b"").hexdigest(),
    ]
    assert pa.types.is_string(out.type)


@pytest.mark.parametrize(
    ("postcode", "sector"),
    [
        ("LS6 2AB", "LS6 2"),
        ("ls62ab", "LS6 2"),
        ("SW1A 1AA", "SW1A 1"),
        ("M1 1AE", "M1 1"),
        ("EC1A 1BB", "EC1A 1"),
        (" B33  8TH ", "B33 8"),
    ],
)
def test_postcode_sector(postcode: str, sector: str) -> None:
    """The outward code, a space and the first digit of the inward code."""
    assert transforms.build("postcode-sector", {}, key=None)(pa.array([postcode])).to_pylist() == [
        sector
    ]


@pytest.mark.parametrize("junk", ["LS6", "not known", "LS6 2AB X", "12345", "", "LS6 2A"])
def test_postcode_transforms_send_nothing_of_a_value_that_is_not_a_postcode(junk: str) -> None:
    """Free text or a partial postcode becomes null: no fragment of it is passed on."""
    for kind in ("postcode-district", "postcode-sector"):
        out = transforms.build(kind, {}, key=None)(pa.array([junk, None], type=pa.string()))
        assert out.to_pylist() == [None, None]


def test_truncate_counts_characters_not_bytes() -> None:
    """truncate keeps the first N code points; shorter values and nulls are unchanged."""
    out = transforms.build("truncate", {"length": 3}, key=None)(
        pa.array(["Zoë Ådams", "ab", "", None, "€€€€"])
    )
    assert out.to_pylist() == ["Zoë", "ab", "", None, "€€€"]
    with pytest.raises(ValueError, match="length"):
        transforms.truncate(0)


def test_top_code_integers_and_numbers() -> None:
    """Values above max become max; equal, lower, null and NaN values are unchanged."""
    ints = transforms.build("top-code", {"max": 90}, key=None)(
        pa.array([0, 89, 90, 91, 10**12, None, -5], type=pa.int64())
    )
    assert ints.to_pylist() == [0, 89, 90, 90, 90, None, -5]
    assert ints.type == pa.int64()
    floats = transforms.top_code(99.5)(pa.array([99.5, 99.6, float("nan"), None]))
    assert floats.to_pylist()[:2] == [99.5, 99.5]
    assert math.isnan(floats.to_pylist()[2])
    assert floats.to_pylist()[3] is None


def test_band_numbers() -> None:
    """Bands [0, 50, 90]: lower bound inclusive, the last open-ended, below the first null."""
    out = transforms.build("band", {"bands": [0, 50, 90]}, key=None)(
        pa.array([0, 49.99, 50, 89, 90, 1000, -0.1, None, float("nan")])
    )
    assert out.to_pylist() == ["0-49", "0-49", "50-89", "50-89", "90+", "90+", None, None, None]
    assert pa.types.is_string(out.type)


def test_band_labels_for_single_values() -> None:
    """A band one wide is labelled by its value alone."""
    out = transforms.band([16, 17, 18])(pa.array([15, 16, 17, 18, 40], type=pa.int64()))
    assert out.to_pylist() == [None, "16", "17", "18+", "18+"]


@pytest.mark.parametrize("bounds", [[], [5, 5], [10, 5], [1.5, 3], [True, 3], "0,5"])
def test_band_refuses_bad_bounds(bounds: object) -> None:
    """Bands must be whole numbers, increasing, at least one."""
    with pytest.raises(ValueError, match="bands"):
        transforms.band(bounds)  # type: ignore[arg-type]


AGE_BANDS = {"to": "age-band", "bands": [0, 5, 11, 16, 18]}


def age_bands(dates: list[dt.date | None], today: dt.date, bands: list[int]) -> list[str | None]:
    """The age-band transform over `dates` at the run date `today`."""
    options = {"to": "age-band", "bands": bands}
    built = transforms.build("generalise-date", options, key=None, today=today)
    out = built(pa.array(dates, type=pa.date32()))
    assert pa.types.is_string(out.type)
    return out.to_pylist()


def test_age_band_labels() -> None:
    """Ages at the run date, banded as 0-4, 5-10, 11-15, 16-17 and 18+."""
    today = dt.date(2026, 11, 24)
    born = [dt.date(2026, 1, 1), dt.date(2020, 6, 1), dt.date(2012, 5, 17), dt.date(2010, 1, 1)]
    born += [dt.date(2008, 1, 1), dt.date(1950, 1, 1), None]
    assert age_bands(born, today, AGE_BANDS["bands"]) == [
        "0-4",
        "5-10",
        "11-15",
        "16-17",
        "18+",
        "18+",
        None,
    ]


def test_age_band_on_the_birthday_itself() -> None:
    """Someone whose 18th birthday is the run date is 18; the day before, 17."""
    today = dt.date(2026, 11, 24)
    born = [dt.date(2008, 11, 24), dt.date(2008, 11, 25), dt.date(2021, 11, 24)]
    assert age_bands(born, today, [0, 5, 11, 16, 18]) == ["18+", "16-17", "5-10"]


def test_age_band_leap_day_birthdays() -> None:
    """Born on 29 February: a year older on 1 March in a non-leap year, on 29 Feb in a leap year."""
    leapling = [dt.date(2008, 2, 29)]
    assert age_bands(leapling, dt.date(2026, 2, 28), [17, 18, 19]) == ["17"]
    assert age_bands(leapling, dt.date(2026, 3, 1), [17, 18, 19]) == ["18"]
    assert age_bands(leapling, dt.date(2028, 2, 28), [19, 20]) == ["19"]
    assert age_bands(leapling, dt.date(2028, 2, 29), [19, 20]) == ["20+"]
    # Run on 29 Feb: someone born 28 Feb or 1 Mar of a non-leap year, 18 years before.
    born = [dt.date(2010, 2, 28), dt.date(2010, 3, 1)]
    assert age_bands(born, dt.date(2028, 2, 29), [17, 18]) == ["18+", "17"]


def test_age_band_future_birth_date_and_below_the_first_band_are_null() -> None:
    """A birth date after the run date, or an age under the first band, sends nothing."""
    today = dt.date(2026, 11, 24)
    assert age_bands([dt.date(2027, 1, 1), dt.date(2020, 1, 1)], today, [16, 18]) == [None, None]


def test_age_band_needs_the_run_date() -> None:
    """The run date is a parameter: without it the transform cannot be built."""
    with pytest.raises(ValueError, match="run date"):
        transforms.build("generalise-date", AGE_BANDS, key=None)
    assert transforms.needs_today("generalise-date", AGE_BANDS)
    assert not transforms.needs_today("generalise-date", {"to": "year"})


def test_years_before_on_29_february() -> None:
    """The latest birth date of an N-year-old on 29 Feb is 28 Feb in a non-leap year."""
    assert transforms.years_before(dt.date(2028, 2, 29), 18) == dt.date(2010, 2, 28)
    assert transforms.years_before(dt.date(2028, 2, 29), 4) == dt.date(2024, 2, 29)
    assert transforms.years_before(dt.date(2026, 11, 24), 0) == dt.date(2026, 11, 24)


ETHNICITY = {"WBRI": "White", "WIRI": "White", "APKN": "Asian", "BCRB": "Black"}


def test_map_with_a_default() -> None:
    """Known codes map; unknown codes become the default; nulls stay null."""
    built = transforms.build("map", {"map": ETHNICITY, "default": "Other"}, key=None)
    out = built(pa.array(["WBRI", "APKN", "ZZZZ", None, "wbri"]))
    assert out.to_pylist() == ["White", "Asian", "Other", None, "Other"]


def test_map_with_a_null_default_sends_unknown_codes_empty() -> None:
    """default: null is an explicit choice to send unknown codes as empty."""
    built = transforms.build("map", {"map": ETHNICITY, "default": None}, key=None)
    assert built(pa.array(["BCRB", "ZZZZ"])).to_pylist() == ["Black", None]


def test_map_without_a_default_fails_closed() -> None:
    """An unknown code with no default refuses the batch; the message holds a count, no value."""
    built = transforms.build("map", {"map": ETHNICITY}, key=None)
    assert built(pa.array(["WBRI", None])).to_pylist() == ["White", None]
    with pytest.raises(transforms.UnmappedValues) as caught:
        built(pa.array(["WBRI", "SECRET-CODE", "SECRET-CODE"]))
    assert caught.value.count == 2
    assert "SECRET" not in str(caught.value)
    assert isinstance(caught.value, Refused)


def test_reads_as_and_output_types_cover_every_transform() -> None:
    """Every transform has a source type and an output type, and they are what the docs say."""
    assert set(transforms.KINDS) == set(TRANSFORM_OUTPUT_TYPES)
    assert transforms.source_type("band", "string") == pa.float64()
    assert transforms.source_type("generalise-date", "string") == pa.date32()
    assert transforms.source_type("top-code", "integer") == pa.int64()
    assert transforms.source_type("keep", "boolean") == pa.bool_()
    assert transforms.source_type("map", "string") == pa.string()


@pytest.mark.parametrize(
    ("kind", "options", "logical", "problem"),
    [
        ("top-code", {"max": 9.5}, "integer", "whole number"),
        ("top-code", {"max": 9}, "string", "integer or number"),
        ("band", {"bands": [5, 1]}, "string", "increasing"),
        ("generalise-date", {"to": "age-band", "bands": []}, "string", "at least one"),
    ],
)
def test_option_problems(kind: str, options: dict[str, object], logical: str, problem: str) -> None:
    """Option problems the schema cannot see are found before any data is read."""
    found = list(transforms.option_problems(kind, options, logical))
    assert found and problem in found[0][1]
    assert not list(transforms.option_problems("top-code", {"max": 9.5}, "number"))


# -- lint: what the contract loader checks about transforms ------------------------------------

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"


def with_transform(
    tmp_path: Path,
    name: str,
    transform: str,
    options: dict[str, Any] | None = None,
    logical_type: str | None = None,
) -> Path:
    """The sample contract with one field's transform (and optionally its type) replaced."""

    def edit(d: dict[str, Any]) -> None:
        for prop in d["schema"][0]["properties"]:
            if prop["name"] != name:
                continue
            terms = [{"property": "transform", "value": transform}]
            if options is not None:
                terms.append({"property": "transformOptions", "value": options})
            keep = ("transform", "transformOptions")
            terms += [t for t in prop.get("customProperties", []) if t["property"] not in keep]
            prop["customProperties"] = terms
            prop.pop("logicalTypeOptions", None)
            if logical_type:
                prop["logicalType"] = logical_type

    return write_contract(tmp_path / "contract.yaml", RECIPIENT, edit)


def lint_problems(path: Path) -> list[str]:
    """Every problem the loader finds, as 'path: message'; [] if the contract loads."""
    try:
        load_contract(path)
    except ContractError as exc:
        return [f"{p.path}: {p.message}" for p in exc.problems]
    return []


@pytest.mark.parametrize(
    ("name", "transform", "options", "logical_type"),
    [
        ("person_ref", "pseudonymise", None, None),
        ("school_urn", "hash", None, None),
        ("birth_month", "generalise-date", {"to": "age-band", "bands": [0, 5, 11, 16, 18]}, None),
        ("birth_month", "generalise-date", {"to": "year"}, "integer"),
        ("postcode_district", "postcode-sector", None, None),
        ("school_urn", "truncate", {"length": 3}, None),
        ("exclusions", "top-code", {"max": 10}, None),
        ("attendance_rate", "top-code", {"max": 99.5}, None),
        ("attendance_rate", "band", {"bands": [0, 50, 90]}, "string"),
        ("ethnicity", "map", {"map": {"WBRI": "White"}, "default": "Other"}, None),
        ("ethnicity", "map", {"map": {"WBRI": "White"}}, None),
        ("ethnicity", "map", {"map": {"WBRI": "White"}, "default": None}, None),
    ],
)
def test_every_transform_lints_clean_in_a_contract(
    tmp_path: Path,
    name: str,
    transform: str,
    options: dict[str, Any] | None,
    logical_type: str | None,
) -> None:
    """Each transform with good options and its output type is accepted."""
    path = with_transform(tmp_path, name, transform, options, logical_type)
    assert lint_problems(path) == []
    field = next(f for f in load_contract(path).fields if f.name == name)
    assert field.transform == transform


@pytest.mark.parametrize(
    ("name", "transform", "options", "logical_type", "expected"),
    [
        (
            "person_ref",
            "hash",
            None,
            None,
            "schema[0].properties[0].customProperties[0].value: person_ref identifies a person",
        ),
        (
            "attendance_rate",
            "band",
            {"bands": [0, 50, 90]},
            None,
            "schema[0].properties[6].logicalType: transform 'band' produces 'string', not 'number'",
        ),
        (
            "attendance_rate",
            "band",
            {"bands": [90, 50]},
            "string",
            "schema[0].properties[6].customProperties[1].value.bands: bands must be in increasing",
        ),
        (
            "exclusions",
            "top-code",
            {"max": 9.5},
            None,
            "schema[0].properties[7].customProperties[1].value.max: must be a whole number",
        ),
        (
            "gender",
            "top-code",
            {"max": 9},
            None,
            "schema[0].properties[3].customProperties[1].value: top-code needs a field of",
        ),
        (
            "birth_month",
            "generalise-date",
            {"to": "age-band"},
            None,
            "schema[0].properties[1].customProperties[1].value: 'bands' is a required property",
        ),
        (
            "birth_month",
            "generalise-date",
            {"to": "age-band", "bands": [0, 18]},
            "integer",
            "schema[0].properties[1].logicalType: transform 'generalise-date' produces 'string'",
        ),
        (
            "gender",
            "truncate",
            {"length": 0},
            None,
            "schema[0].properties[3].customProperties[1].value.length: 0 is less than",
        ),
        (
            "gender",
            "map",
            {"map": {"F": 1}},
            None,
            "schema[0].properties[3].customProperties[1].value.map.F: 1 is not of type 'string'",
        ),
        (
            "gender",
            "truncate",
            None,
            None,
            "schema[0].properties[3].customProperties: 'transformOptions' is a required property",
        ),
    ],
)
def test_transform_lint_problems(
    tmp_path: Path,
    name: str,
    transform: str,
    options: dict[str, Any] | None,
    logical_type: str | None,
    expected: str,
) -> None:
    """Each mistake is one problem, located inside the field's terms."""
    found = lint_problems(with_transform(tmp_path, name, transform, options, logical_type))
    assert len(found) == 1, found
    assert found[0].startswith(expected)


def test_one_source_column_read_as_two_types_is_a_lint_problem(tmp_path: Path) -> None:
    """Two fields may share a source column only if they read it as the same type."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"].append(
            {
                "name": "birth_date_text",
                "physicalName": "date_of_birth",
                "logicalType": "string",
                "customProperties": [{"property": "transform", "value": "truncate"}],
            }
        )
        d["schema"][0]["properties"][-1]["customProperties"].append(
            {"property": "transformOptions", "value": {"length": 4}}
        )

    found = lint_problems(write_contract(tmp_path / "twice.yaml", RECIPIENT, edit))
    assert found == [
        "schema[0].properties[9].customProperties: source column date_of_birth is read as date "
        "for another field and as string here: one column is read as one type"
    ]


def test_generalise_date_year_month_matches_strftime_everywhere() -> None:
    """The joined "YYYY-MM" equals strftime's, zero-padded years included."""
    days = [dt.date(1, 1, 1), dt.date(999, 12, 31), dt.date(9999, 12, 31), None]
    days += [dt.date(1900, 1, 1) + dt.timedelta(days=d) for d in range(0, 60000, 97)]
    values = pa.array(days, type=pa.date32())
    expected = pc.strftime(pc.cast(values, pa.timestamp("s")), format="%Y-%m")
    assert transforms.generalise_date("year-month")(values).equals(expected)
