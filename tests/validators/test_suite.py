"""Tests for compiling rules into Great Expectations suites and validating batches."""

from __future__ import annotations

import datetime as dt
import gc
import subprocess
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from great_expectations.expectations import ExpectCompoundColumnsToBeUnique

from exchange.pipeline.dryrun import failing_rows
from validators import RULE_KINDS, Failure, Rule
from validators.expectations import ExpectColumnValuesToBeValidNhsNumber, nhs_number_mask
from validators.suite import BatchValidator, build_suite

SENTINEL = "SENTINEL-7f3a"

RULES = (
    Rule("not_null", "ref", origin="schema[0].properties[0].required"),
    Rule("unique", "ref", origin="schema[0].properties[0].unique"),
    Rule("in_set", "sex", (("values", ("F", "M", "U")),), origin="schema[0].properties[1]"),
    Rule("between", "age", (("min", 0), ("max", 120)), origin="schema[0].properties[2]"),
    Rule("between", "score", (("min", 0.5),), origin="schema[0].properties[3]"),
    Rule(
        "between",
        "admitted",
        (("min", dt.datetime(2020, 1, 1)), ("max", pd.Timestamp("2030-01-01"))),
        origin="schema[0].properties[4]",
    ),
    Rule("regex", "postcode", (("pattern", r"^[A-Z]{1,2}[0-9] [0-9][A-Z]{2}$"),)),
    Rule("nhs_number", "nhs", origin="schema[0].properties[6]"),
    Rule("between", "ward", (("max", 40),), origin="schema[0].properties[7]"),
    Rule.compound_unique(("sex", "ward"), origin="schema[0].quality[1]"),
)


def weighted_sum(stem: str) -> int:
    """Return the NHS weighted digit sum of a nine-digit stem."""
    return sum(int(digit) * weight for digit, weight in zip(stem, range(10, 1, -1), strict=True))


def reference_nhs_valid(text: str) -> bool:
    """Check one NHS number the slow, obvious way, as an oracle for the vectorised check."""
    if len(text) != 10 or not text.isascii() or not text.isdigit():
        return False
    check = 11 - weighted_sum(text[:9]) % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(text[9])


def valid_nhs_numbers(count: int, start: int = 943_476_591) -> list[str]:
    """Return count valid NHS numbers built from consecutive nine-digit stems."""
    found: list[str] = []
    stem = start
    while len(found) < count:
        found.extend(c for c in (f"{stem:09d}{d}" for d in range(10)) if reference_nhs_valid(c))
        stem += 1
    return found[:count]


def good_frame() -> pd.DataFrame:
    """Return six rows that satisfy every rule in RULES."""
    return pd.DataFrame(
        {
            "ref": pd.Series([f"P{i:04d}" for i in range(6)], dtype="str"),
            "sex": pd.Series(["F", "M", "U", "F", None, "M"], dtype="str"),
            "age": [0, 17, 45, 120, 88, 3],
            "score": [0.5, 0.9, 1.0, 0.75, np.nan, 12.0],
            "admitted": pd.to_datetime(
                ["2020-01-01", "2021-06-30", "2024-02-29", "2029-12-31", None, "2025-05-05"]
            ),
            "postcode": pd.Series(
                ["LS1 1AA", "M1 1AE", "B3 8TH", None, "W1 0AX", "E1 6AN"],
                dtype="str",
            ),
            "nhs": pd.Series([*valid_nhs_numbers(5), None], dtype="str"),
            "ward": np.array([1, 2, 3, 40, 5, 6], dtype=np.int32),
        }
    )


@pytest.fixture(scope="module")
def validator() -> BatchValidator:
    """Build one validator for the whole module, since context setup is the slow part."""
    return BatchValidator("test-suite", RULES)


def with_column(column: str, values: list[object]) -> pd.DataFrame:
    """Return the good frame with one column replaced, keeping its dtype where possible."""
    frame = good_frame()
    dtype = frame[column].dtype
    try:
        frame[column] = pd.Series(values, dtype=dtype)
    except (TypeError, ValueError):
        frame[column] = pd.Series(values)
    return frame


def test_good_frame_passes(validator: BatchValidator) -> None:
    """A frame meeting every rule yields no failures."""
    assert validator.validate(good_frame()) == []


BAD_CASES: list[tuple[str, str, list[object], int]] = [
    ("not_null", "ref", ["P1", None, "P3", None, None, "P6"], 3),
    ("unique", "ref", ["P1", "P1", "P2", "P3", "P3", "P3"], 5),
    ("in_set", "sex", ["F", "X", "m", None, "U", "Q"], 3),
    ("between", "age", [-1, 0, 120, 121, 500, 30], 3),
    ("between", "score", [0.49, 0.5, np.nan, -3.0, 0.6, 0.7], 2),
    (
        "between",
        "admitted",
        pd.to_datetime(
            ["2019-12-31", "2020-01-01", "2030-01-02", None, "2025-01-01", "2024-01-01"]
        ),
        2,
    ),
    ("regex", "postcode", ["LS1 1AA", "ls1 1aa", "LS11AA", None, "XLS1 1AA", "E1 6AN"], 3),
    ("between", "ward", [41, 1, 2, 3, 4, 40], 1),
]


@pytest.mark.parametrize(("kind", "column", "values", "expected"), BAD_CASES)
def test_each_rule_fails_with_right_count(
    validator: BatchValidator, kind: str, column: str, values: list[object], expected: int
) -> None:
    """Breaking one column fails exactly its rule, counting only the offending rows."""
    failures = validator.validate(with_column(column, list(values)))
    assert [(f.rule.kind, f.rule.column) for f in failures] == [(kind, column)]
    assert failures[0].unexpected_count == expected
    assert failures[0].element_count == 6


def test_unique_counts_every_row_in_a_duplicate_group(validator: BatchValidator) -> None:
    """GX reports all rows sharing a duplicated value, not just the repeats."""
    failures = validator.validate(with_column("ref", ["A", "A", "B", "C", "D", "E"]))
    assert [(f.rule.kind, f.unexpected_count) for f in failures] == [("unique", 2)]


def test_known_nhs_numbers() -> None:
    """The Data Dictionary example is valid and a changed check digit is not."""
    assert reference_nhs_valid("9434765919")
    assert not reference_nhs_valid("9434765918")
    mask = nhs_number_mask(pd.Series(["9434765919", "9434765918"], dtype="str"))
    assert mask.tolist() == [True, False]


def test_nhs_mask_matches_reference_over_many_numbers() -> None:
    """The vectorised check agrees with the per-row oracle for strings, ints and floats."""
    rng = np.random.default_rng(7)
    numbers = rng.integers(0, 10**10, 20_000)
    texts = [f"{n:010d}" for n in numbers]
    expected = np.array([reference_nhs_valid(t) for t in texts])
    assert expected.any()
    assert not expected.all()
    assert (nhs_number_mask(pd.Series(texts, dtype="str")).to_numpy() == expected).all()
    assert (nhs_number_mask(pd.Series(texts, dtype=object)).to_numpy() == expected).all()
    assert (nhs_number_mask(pd.Series(numbers)).to_numpy() == expected).all()
    floats = pd.Series(numbers.astype(np.float64))
    assert (nhs_number_mask(floats).to_numpy() == expected).all()


@pytest.mark.parametrize(
    "value",
    [
        "943476591",
        "94347659190",
        " 9434765919",
        "943 476 5919",
        "".join(chr(0xFF10 + int(c)) for c in "9434765919"),
        "943476591X",
        "",
        "9434765918",
    ],
)
def test_malformed_nhs_strings_are_invalid(value: str) -> None:
    """Wrong length, spacing, non-ASCII digits and bad check digits are all rejected."""
    assert not nhs_number_mask(pd.Series([value], dtype="str")).iloc[0]


def test_nhs_stem_with_check_value_ten_is_never_valid() -> None:
    """A stem whose check works out as 10 has no valid completion."""
    stem = next(
        f"{s:09d}" for s in range(400_000_000, 400_001_000) if weighted_sum(f"{s:09d}") % 11 == 1
    )
    candidates = pd.Series([stem + str(d) for d in range(10)], dtype="str")
    assert not nhs_number_mask(candidates).any()


def test_nhs_number_rule_passes_valid_and_fails_invalid(validator: BatchValidator) -> None:
    """Through GX, valid numbers pass and each invalid or malformed one is counted."""
    valid = valid_nhs_numbers(6, start=600_000_000)
    assert validator.validate(with_column("nhs", list(valid))) == []
    bad = [valid[0], "9434765918", "123", valid[1], "94347659190", None]
    failures = validator.validate(with_column("nhs", bad))
    assert [(f.rule.kind, f.unexpected_count) for f in failures] == [("nhs_number", 3)]


def test_nhs_number_rule_on_integer_column() -> None:
    """Integer-typed NHS numbers are checked as their ten-digit form."""
    checker = BatchValidator("nhs-int", [Rule("nhs_number", "nhs")])
    frame = pd.DataFrame({"nhs": [9434765919, 9434765918, 4010232137]})
    failures = checker.validate(frame)
    assert [(f.rule.kind, f.unexpected_count) for f in failures] == [("nhs_number", 1)]


def test_describe_never_includes_row_values(validator: BatchValidator) -> None:
    """Failure text names the column, rule and counts but never a data value."""
    frame = good_frame()
    for column in ("ref", "sex", "postcode", "nhs"):
        frame[column] = pd.Series([SENTINEL] * len(frame), dtype="str")
    failures = validator.validate(frame)
    assert {f.rule.kind for f in failures} == {"unique", "in_set", "regex", "nhs_number"}
    for failure in failures:
        text = failure.describe()
        assert SENTINEL not in text
        assert SENTINEL not in repr(failure)
        assert "\n" not in text


def test_describe_format() -> None:
    """describe() gives the column, kind, counts and origin on one line."""
    failure = Failure(
        Rule("not_null", "person_ref", origin="schema[0].properties[0].required"), 3, 1000
    )
    assert failure.describe() == (
        "person_ref: not_null failed for 3 of 1000 rows (schema[0].properties[0].required)"
    )
    assert Failure(Rule("unique", "x"), 1, 2).describe() == "x: unique failed for 1 of 2 rows"


def test_successive_frames_are_validated_independently(validator: BatchValidator) -> None:
    """One validator gives fresh results for each frame it is handed."""
    first = validator.validate(with_column("age", [-5, 1, 2, 3, 4, 5]))
    second = validator.validate(good_frame())
    third = validator.validate(with_column("sex", ["Z", "Z", "F", "M", "U", None]))
    assert [(f.rule.column, f.unexpected_count) for f in first] == [("age", 1)]
    assert second == []
    assert [(f.rule.column, f.unexpected_count) for f in third] == [("sex", 2)]


def test_nothing_of_a_validated_frame_is_kept(validator: BatchValidator) -> None:
    """Once a frame has its verdict (passed, or failed and counted), GX holds neither the frame
    nor a metric computed on it: the next window starts from nothing."""
    for make in (good_frame, lambda: with_column("age", [-5, 1, 2, 3, 4, 5])):
        frame = make()
        gone = weakref.ref(frame)
        validator.validate(frame)
        del frame
        gc.collect()
        assert gone() is None
        engine = validator._batch_definition.data_asset.datasource.get_execution_engine()
        assert not engine.batch_manager.batch_data_cache
        assert not engine.batch_manager.batch_cache
        assert not engine._metric_cache


def test_failures_follow_rule_order(validator: BatchValidator) -> None:
    """Several failures come back in the order the rules were given."""
    frame = good_frame()
    frame["ward"] = np.array([99] * 6, dtype=np.int32)
    frame["ref"] = pd.Series([None] * 6, dtype="str")
    frame["age"] = [200] * 6
    failures = validator.validate(frame)
    assert [(f.rule.kind, f.rule.column) for f in failures] == [
        ("not_null", "ref"),
        ("between", "age"),
        ("between", "ward"),
        ("compound_unique", "(sex, ward)"),
    ]


def test_missing_column_fails_closed(validator: BatchValidator) -> None:
    """Rules on a column absent from the frame fail for every row rather than pass."""
    failures = validator.validate(good_frame().drop(columns=["postcode"]))
    assert [(f.rule.kind, f.unexpected_count, f.element_count) for f in failures] == [
        ("regex", 6, 6)
    ]


@pytest.mark.parametrize(
    ("pattern", "values", "failing"),
    [
        # Python's re (which pandas falls back to on text with a line break or non-ASCII)
        # lets `$` match before a final line break and `\d` match any Unicode digit.
        (r"^[0-9]{6}$", ["123456", "123456\n", "12345\n6", "\n123456"], 3),
        (r"^\d{6}$", ["123456", "\u0661\u0662\u0663\u0664\u0665\u0666", "12345\u0666"], 2),
        (r"^\w+$", ["abc", "caf\u00e9"], 1),  # \w is ASCII word characters in RE2
        (r"^\pL+ [0-9]$", ["Caf\u00e9 1", "Cafe 12"], 1),  # RE2's Unicode classes work
        (r"[0-9]", [12, 7, None], 0),  # numbers are read as their text; nulls are not matched
        # As the payload writes them: an integer column with a null (floats to pandas) as
        # integers, booleans as true/false.
        (r"^[0-9]{6}$", [123456, None, 12], 1),
        (r"^(true|false)$", [True, False, None], 0),
    ],
)
def test_patterns_are_matched_as_re2_matches_them(
    pattern: str, values: list[Any], failing: int
) -> None:
    """A pattern rule means what RE2 (and JSON Schema) mean: `$` is the end of the value and
    `\\d` is 0-9, whatever else the column holds; the dry run points at the same rows."""
    rule = Rule("regex", "v", (("pattern", pattern),))
    frame = pa.table({"v": values}).to_pandas()
    failures = BatchValidator("patterns", [rule]).validate(frame)
    assert [f.unexpected_count for f in failures] == ([failing] if failing else [])
    mask = failing_rows(rule, frame)
    assert mask is not None and int(mask.sum()) == failing


def test_datetime_between_beyond_nanosecond_range() -> None:
    """Dates too far out for nanosecond storage are still range-checked."""
    checker = BatchValidator(
        "far-dates", [Rule("between", "d", (("max", dt.datetime(2100, 1, 1)),))]
    )
    dates = pd.Series(np.array(["2020-01-01", "2500-01-01", "2099-12-31"], dtype="datetime64[us]"))
    failures = checker.validate(pd.DataFrame({"d": dates}))
    assert [(f.rule.kind, f.unexpected_count) for f in failures] == [("between", 1)]


def test_duplicate_rules_with_different_origins_are_kept() -> None:
    """Identical checks from two places in a contract both report."""
    rules = [
        Rule("not_null", "a", origin="first"),
        Rule("not_null", "a", origin="second"),
    ]
    checker = BatchValidator("dupes", rules)
    failures = checker.validate(pd.DataFrame({"a": pd.Series(["x", None], dtype="str")}))
    assert [f.rule.origin for f in failures] == ["first", "second"]


def test_build_suite_maps_each_kind() -> None:
    """Each rule kind compiles to its expectation class, in rule order."""
    suite = build_suite("mapping", RULES)
    names = [type(e).__name__ for e in suite.expectations]
    assert names == [
        "ExpectColumnValuesToNotBeNull",
        "ExpectColumnValuesToBeUnique",
        "ExpectColumnValuesToBeInSet",
        "ExpectColumnValuesToBeBetween",
        "ExpectColumnValuesToBeBetween",
        "ExpectColumnValuesToBeBetween",
        "ExpectColumnValuesToMatchPattern",
        "ExpectColumnValuesToBeValidNhsNumber",
        "ExpectColumnValuesToBeBetween",
        "ExpectCompoundColumnsToBeUnique",
    ]
    assert isinstance(suite.expectations[7], ExpectColumnValuesToBeValidNhsNumber)
    compound = suite.expectations[9]
    assert isinstance(compound, ExpectCompoundColumnsToBeUnique)
    assert list(compound.column_list) == ["sex", "ward"]
    assert compound.ignore_row_if == "any_value_is_missing"
    assert {r.kind for r in RULES} == set(RULE_KINDS)


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_suite("bad", [Rule("between", "a")]),
        lambda: build_suite("bad", [Rule("between", "a", (("min", 5), ("max", 1)))]),
        lambda: build_suite("bad", [Rule("regex", "a")]),
        lambda: Rule("no_such_kind", "a"),
        lambda: Rule("compound_unique", "a"),
        lambda: Rule("compound_unique", "k", (("columns", ()),)),
        lambda: Rule("compound_unique", "k", (("columns", ["a", "b"]),)),
        lambda: Rule.compound_unique(("a", "a")),
    ],
)
def test_malformed_rules_are_rejected(make: Callable[[], object]) -> None:
    """Rules that cannot be checked are refused when built, not at validation time."""
    with pytest.raises(ValueError):
        make()


def test_rule_param_lookup() -> None:
    """param() returns a named parameter or the default."""
    rule = Rule("between", "a", (("min", 1), ("max", 9)))
    assert rule.param("min") == 1
    assert rule.param("max") == 9
    assert rule.param("missing", "fallback") == "fallback"


def test_package_import_does_not_load_great_expectations() -> None:
    """Importing the rule types stays fast by leaving Great Expectations unloaded."""
    probe = (
        "import sys, validators, validators.rules; "
        "sys.exit(1 if 'great_expectations' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


# --- uniqueness over a composite key ----------------------------------------------------------


def test_compound_unique_counts_rows_sharing_a_combination(validator: BatchValidator) -> None:
    """Two rows sharing (sex, ward) fail the rule; equal values in one column alone do not."""
    assert validator.validate(with_column("sex", ["F", "F", "F", "F", "F", "F"])) == []
    failures = validator.validate(with_column("ward", [1, 1, 3, 40, 5, 1]))
    assert [
        (f.rule.kind, f.rule.column, f.unexpected_count, f.element_count) for f in failures
    ] == [("compound_unique", "(sex, ward)", 2, 6)]
    assert failures[0].describe() == (
        "(sex, ward): compound_unique failed for 2 of 6 rows (schema[0].quality[1])"
    )


def test_compound_unique_skips_rows_with_an_empty_key_column() -> None:
    """As in SQL's UNIQUE, a row missing part of its key is not compared with others."""
    checker = BatchValidator("compound-nulls", [Rule.compound_unique(("a", "b"))])
    frame = pd.DataFrame(
        {
            "a": pd.Series(["x", "x", None, None, "y"], dtype="str"),
            "b": pd.Series([None, None, 1.0, 1.0, 2.0]),
        }
    )
    assert checker.validate(frame) == []
    frame.loc[5] = ["y", 2.0]
    assert [f.unexpected_count for f in checker.validate(frame)] == [2]


def test_compound_unique_message_never_shows_a_key_value() -> None:
    """The failure names the key's columns and the count, not the duplicated values."""
    checker = BatchValidator("compound-secret", [Rule.compound_unique(("a", "b"), "q")])
    frame = pd.DataFrame({"a": pd.Series([SENTINEL] * 3, dtype="str"), "b": [7, 7, 7]})
    (failure,) = checker.validate(frame)
    assert SENTINEL not in failure.describe()
    assert SENTINEL not in repr(failure)
    assert failure.describe() == "(a, b): compound_unique failed for 3 of 3 rows (q)"


def test_compound_unique_on_a_missing_column_fails_closed() -> None:
    """A key column absent from the frame fails every row instead of passing."""
    checker = BatchValidator("compound-missing", [Rule.compound_unique(("a", "b"))])
    (failure,) = checker.validate(pd.DataFrame({"a": ["x", "y"]}))
    assert (failure.unexpected_count, failure.element_count) == (2, 2)


def test_rule_columns() -> None:
    """columns gives the key of a compound rule and the one column of any other."""
    assert Rule.compound_unique(("a", "b")).columns == ("a", "b")
    assert Rule("unique", "a").columns == ("a",)
