"""Unit tests for the per-field minimisation transforms (exchange.transforms)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pyarrow as pa
import pytest

from exchange import transforms

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
