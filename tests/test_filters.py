"""Unit tests for purpose filters (exchange.filters) and their lint checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import write_contract

from exchange import filters
from exchange.contract import load_contract
from exchange.contract.vocabulary.terms import FILTER_OPS, TERMS
from exchange.errors import ContractError
from exchange.types import ARROW_TYPES

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
TODAY = dt.date(2026, 11, 24)

BATCH = pa.RecordBatch.from_pydict(
    {
        "n": pa.array([1, 3, 5, None, 3], type=pa.int64()),
        "x": pa.array([1.5, 3.0, float("nan"), None, -2.0]),
        "s": pa.array(["open", "closed", "pending", None, "Open"]),
        "b": pa.array([True, False, None, True, False]),
        "d": pa.array(
            [dt.date(2008, 11, 24), dt.date(2008, 11, 25), None, dt.date(2020, 1, 1), None],
            type=pa.date32(),
        ),
        "t": pa.array(
            [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), None, None, None, None],
            type=pa.timestamp("us", tz="UTC"),
        ),
    }
)
TYPES = {
    "n": "integer",
    "x": "number",
    "s": "string",
    "b": "boolean",
    "d": "date",
    "t": "timestamp",
}


def kept(spec: dict[str, Any], today: dt.date = TODAY, batch: pa.RecordBatch = BATCH) -> list[int]:
    """Indexes of the rows of `batch` a single filter keeps."""
    (rule,) = filters.parse([spec])
    indexed = batch.append_column("row", pa.array(range(batch.num_rows)))
    out = indexed.filter(filters.expression(rule, TYPES[rule.column], today))
    return out.column("row").to_pylist()


@pytest.mark.parametrize(
    ("op", "value", "rows"),
    [
        ("==", 3, [1, 4]),
        ("!=", 3, [0, 2]),
        ("<", 3, [0]),
        ("<=", 3, [0, 1, 4]),
        (">", 3, [2]),
        (">=", 3, [1, 2, 4]),
    ],
)
def test_comparisons_on_integers(op: str, value: float, rows: list[int]) -> None:
    """Each comparison keeps the rows where it is true; a null value never passes."""
    assert kept({"column": "n", "op": op, "value": value}) == rows


def test_comparisons_on_numbers_treat_nan_as_failing() -> None:
    """NaN is neither above nor below a bound; whole and decimal bounds both work."""
    assert kept({"column": "x", "op": ">=", "value": 2.5}) == [1]
    assert kept({"column": "x", "op": ">=", "value": 0}) == [0, 1]
    assert kept({"column": "x", "op": "<", "value": 0}) == [4]


def test_text_comparisons_are_exact() -> None:
    """Text matches exactly, case included."""
    assert kept({"column": "s", "op": "==", "value": "open"}) == [0]
    assert kept({"column": "s", "op": "!=", "value": "open"}) == [1, 2, 4]


def test_in_and_not_in() -> None:
    """in keeps listed values; not_in keeps the others; neither keeps a null."""
    assert kept({"column": "s", "op": "in", "value": ["open", "pending"]}) == [0, 2]
    assert kept({"column": "s", "op": "not_in", "value": ["open", "pending"]}) == [1, 4]
    assert kept({"column": "n", "op": "in", "value": [1, 5]}) == [0, 2]
    assert kept({"column": "n", "op": "not_in", "value": [1, 5]}) == [1, 4]


def test_is_null_and_not_null() -> None:
    """The only filters a null can satisfy is is_null."""
    assert kept({"column": "s", "op": "is_null"}) == [3]
    assert kept({"column": "s", "op": "not_null"}) == [0, 1, 2, 4]
    assert kept({"column": "x", "op": "not_null"}) == [0, 1, 2, 4]  # NaN is a value


def test_booleans() -> None:
    """A boolean column compares with true or false."""
    assert kept({"column": "b", "op": "==", "value": True}) == [0, 3]
    assert kept({"column": "b", "op": "!=", "value": True}) == [1, 4]


def test_dates_and_timestamps_compare_with_iso_text() -> None:
    """Dates and timestamps in the contract are ISO text; a naive timestamp is UTC."""
    assert kept({"column": "d", "op": ">=", "value": "2010-01-01"}) == [3]
    assert kept({"column": "t", "op": "==", "value": "2026-01-01T00:00:00"}) == [0]
    assert kept({"column": "t", "op": "<", "value": "2026-01-01T00:00:01+00:00"}) == [0]


def test_age_under_and_at_least_on_the_birthday() -> None:
    """Someone whose 18th birthday is the run date is 18: not under 18, at least 18."""
    # Row 0 turns 18 on the run date, row 1 the day after, row 3 is 6; null birth dates fail.
    assert kept({"column": "d", "op": "age_under", "value": 18}) == [1, 3]
    assert kept({"column": "d", "op": "age_at_least", "value": 18}) == [0]
    assert kept({"column": "d", "op": "age_under", "value": 18}, today=TODAY.replace(day=25)) == [3]


def test_age_filters_for_leap_day_birthdays() -> None:
    """Born 29 Feb 2008: 18 from 1 March 2026; born 28 Feb 2010: 18 on 29 Feb 2028."""
    batch = pa.RecordBatch.from_pydict(
        {"d": pa.array([dt.date(2008, 2, 29), dt.date(2010, 2, 28), dt.date(2010, 3, 1)])}
    )
    spec = {"column": "d", "op": "age_at_least", "value": 18}
    assert kept(spec, dt.date(2026, 2, 28), batch) == []
    assert kept(spec, dt.date(2026, 3, 1), batch) == [0]
    assert kept(spec, dt.date(2028, 2, 29), batch) == [0, 1]
    assert kept(spec, dt.date(2028, 3, 1), batch) == [0, 1, 2]


def test_age_filters_need_the_run_date() -> None:
    """An age filter without a run date is refused, not run against the clock."""
    (rule,) = filters.parse([{"column": "d", "op": "age_under", "value": 18}])
    assert filters.needs_today([rule])
    with pytest.raises(ValueError, match="run date"):
        filters.expression(rule, "date", None)


def test_reasons_name_the_filter() -> None:
    """Excluded rows are counted under the filter's name, or its index when it has none."""
    rules = filters.parse(
        [
            {"column": "s", "op": "not_null"},
            {"column": "n", "op": ">", "value": 0, "name": "has-exclusions"},
        ]
    )
    assert [r.reason for r in rules] == ["filter:0", "filter:has-exclusions"]


def test_parse_refuses_an_unknown_op() -> None:
    """An op outside the list is never guessed at."""
    with pytest.raises(ValueError, match="unknown op"):
        filters.parse([{"column": "s", "op": "__import__", "value": "os"}])


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"column": "c", "op": "age_under", "value": 18}, "date"),
        ({"column": "c", "op": "in", "value": ["a", "b"]}, "string"),
        ({"column": "c", "op": ">=", "value": 3}, "number"),
        ({"column": "c", "op": "in", "value": [1, 2.5]}, "number"),
        ({"column": "c", "op": "==", "value": True}, "boolean"),
        ({"column": "c", "op": "is_null"}, "string"),
        ({"column": "c", "op": ">=", "value": "2024-01-01", "type": "date"}, "date"),
    ],
)
def test_filter_only_columns_are_read_as_the_inferred_type(spec: dict[str, Any], kind: str) -> None:
    """A column only a filter reads takes its type from `type`, else from the op and value."""
    assert filters.column_types(filters.parse([spec]), {}) == {"c": kind}
    assert filters.column_types(filters.parse([spec]), {"c": "string"}) == {}


def lint(specs: Any, known: dict[str, str] | None = None) -> list[tuple[list[str | int], str]]:
    """The filter problems found against the given field reads."""
    return list(filters.problems(specs, known or {}, {"person_ref": "person_id"}))


def test_problems_name_the_place() -> None:
    """Wrong values, types, ops and columns are reported with a path inside the filters list."""
    found = lint(
        [
            {"column": "person_ref", "op": "not_null"},
            {"column": "rate", "op": ">=", "value": "high"},
            {"column": "dob", "op": "age_under", "value": 18},
            {"column": "urn", "op": "in", "value": ["123456", 654321]},
            {"column": "flag", "op": "<", "value": True},
            {"column": "when", "op": ">=", "value": "2024-13-01", "type": "date"},
            {"column": "x", "op": "is_null", "name": "a"},
            {"column": "x", "op": "not_null", "name": "a"},
            {"column": "y", "op": ">", "value": 1},
            {"column": "y", "op": "==", "value": "one"},
        ],
        {"rate": "number", "dob": "string", "urn": "string", "flag": "boolean"},
    )
    paths = [path for path, _ in found]
    assert paths == [
        [0, "column"],
        [1, "value"],
        [2, "op"],
        [3, "value", 1],
        [4, "op"],
        [5, "value"],
        [7, "name"],
        [9, "value"],
    ]
    assert "source column 'person_id'" in found[0][1]
    assert "quote it" in found[3][1]


def test_problems_skip_what_the_schema_reports() -> None:
    """Malformed entries are left to the schema's messages, not crashed on."""
    assert lint("not a list") == []
    assert lint([1, {"op": ">"}, {"column": "c", "op": "bogus"}, {"column": 3, "op": "in"}]) == []


def test_a_filter_type_must_agree_with_a_field_reading_the_column() -> None:
    """One column is read as one type."""
    found = lint([{"column": "rate", "op": ">", "value": 1, "type": "integer"}], {"rate": "number"})
    assert found and found[0][0] == [0, "type"]


# -- through the contract loader --------------------------------------------------------------


def with_filters(tmp_path: Path, specs: Any) -> Path:
    """The sample contract with a `filters` term."""

    def edit(d: dict[str, Any]) -> None:
        d["customProperties"].append({"property": "filters", "value": specs})

    return write_contract(tmp_path / "filtered.yaml", RECIPIENT, edit)


def problems_of(path: Path) -> list[str]:
    """Every problem lint finds in the file, as text."""
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_contract_filters_load_and_widen_the_columns_read(tmp_path: Path) -> None:
    """Filters are kept in order, and the columns they need are read from the source."""
    specs = [
        {"column": "date_of_birth", "op": "age_under", "value": 18, "name": "children"},
        {"column": "status", "op": "in", "value": ["open", "pending"]},
    ]
    contract = load_contract(with_filters(tmp_path, specs))
    assert [dict(f) for f in contract.filters] == specs
    assert contract.source_columns[-1] == "status"
    assert "date_of_birth" in contract.source_columns


def test_contract_filter_with_an_unknown_op_is_a_lint_error(tmp_path: Path) -> None:
    """The op is checked against the list, with the path to it."""
    found = problems_of(with_filters(tmp_path, [{"column": "status", "op": "like", "value": "x"}]))
    assert any(p.startswith("customProperties[14].value[0].op:") for p in found), found


def test_contract_filter_on_a_renamed_field_is_a_lint_error(tmp_path: Path) -> None:
    """A filter on an outgoing name is pointed at the source column it must use."""
    found = problems_of(with_filters(tmp_path, [{"column": "person_ref", "op": "not_null"}]))
    assert found == [
        "customProperties[14].value[0].column: filters name source columns (they run before "
        "the transforms): field person_ref is read from source column 'person_id'"
    ]


def test_contract_filter_value_of_the_wrong_type_is_a_lint_error(tmp_path: Path) -> None:
    """A value that cannot be compared with the column as it is read is refused."""
    found = problems_of(
        with_filters(tmp_path, [{"column": "attendance_rate", "op": "<", "value": "90"}])
    )
    assert found == ["customProperties[14].value[0].value: must be a number for a number column"]


def test_contract_filter_missing_a_value_is_a_lint_error(tmp_path: Path) -> None:
    """Every op but is_null and not_null needs a value; those two take none."""
    found = problems_of(
        with_filters(
            tmp_path,
            [{"column": "status", "op": "in"}, {"column": "status", "op": "is_null", "value": 1}],
        )
    )
    assert [p.split(":")[0] for p in found] == [
        "customProperties[14].value[0]",
        "customProperties[14].value[1]",
    ]


def test_null_checks_take_the_type_of_the_other_filters_on_the_column() -> None:
    """is_null and not_null read any type, so they never conflict with a typed filter."""
    specs = [{"column": "v", "op": "not_null"}, {"column": "v", "op": "<", "value": 4}]
    assert lint(specs) == []
    assert filters.column_types(filters.parse(specs), {}) == {"v": "number"}
    assert (
        lint([{"column": "v", "op": "is_null"}, {"column": "v", "op": "in", "value": ["a"]}]) == []
    )


def test_the_terms_schema_allows_the_ops_and_types_filters_implement() -> None:
    """The filter vocabulary the contract schema is generated from is the one filters runs."""
    assert {
        "comparison": tuple(filters.COMPARISONS),
        "set": filters.SET_OPS,
        "null": filters.NULL_OPS,
        "age": filters.AGE_OPS,
    } == FILTER_OPS
    item = TERMS["filters"].schema["items"]["properties"]
    assert tuple(item["op"]["enum"]) == filters.OPS
    assert item["type"]["enum"] == list(ARROW_TYPES)
