"""Unit tests for minimisation: objection rows and field transforms (exchange.minimise)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from conftest import PSEUDONYM_KEY, SAMPLE, write_contract

from exchange import synth
from exchange.contract import Contract, load_contract
from exchange.minimise import Minimiser, source_types
from exchange.transforms import UnmappedValues

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
DROPPED = ("nhs_number", "first_name", "last_name", "address_line", "notes", "last_updated")


@pytest.fixture(scope="module")
def contract() -> Contract:
    """The sample contract (objections are honoured)."""
    return load_contract(SAMPLE)


@pytest.fixture
def overriding(tmp_path: Path) -> Contract:
    """The sample contract with a legal basis that overrides objections."""

    def edit(d: dict[str, Any]) -> None:
        for prop in d["customProperties"]:
            if prop["property"] == "objections":
                prop["value"] = {
                    "column": "objection",
                    "legalBasisOverrides": True,
                    "overrideJustification": "Section 47 enquiries; objection noted only.",
                }
            if prop["property"] == "legalBasis":
                prop["value"]["statutes"].append({"act": "Children Act 1989", "section": "s.47"})

    return load_contract(write_contract(tmp_path / "override.yaml", RECIPIENT, edit))


@pytest.fixture(scope="module")
def source() -> pa.Table:
    """Synthetic source rows with every column, including the ones never sent."""
    return pa.Table.from_batches(list(synth.batches(3000, seed=11, batch_rows=1000)))


def pseudonym(value: str) -> str:
    """The expected pseudonym of a source id under the test key."""
    return hmac.new(PSEUDONYM_KEY, value.encode(), hashlib.sha256).hexdigest()[:32]


def small_batch(objection: list[bool | None]) -> pa.RecordBatch:
    """A hand-made batch of source rows, one per objection value."""
    n = len(objection)
    return pa.RecordBatch.from_pydict(
        {
            "person_id": [f"P{i:08d}" for i in range(n)],
            "date_of_birth": [dt.date(2012, 5, 17)] * n,
            "postcode": ["LS6 2AB"] * n,
            "gender": ["F"] * n,
            "ethnicity": ["WBRI"] * n,
            "school_urn": ["123456"] * n,
            "attendance_rate": [95.5] * n,
            "exclusions": [0] * n,
            "free_school_meals": [False] * n,
            "objection": objection,
        },
        schema=pa.schema(
            {name: kind for name, kind in source_types(load_contract(SAMPLE)).items()}
        ),
    )


def run(contract: Contract, table: pa.Table) -> tuple[Minimiser, pa.Table]:
    """Minimise every batch of `table`; return the minimiser and the output."""
    minimise = Minimiser(contract, pseudonym_key=PSEUDONYM_KEY)
    out = [minimise(batch) for batch in table.to_batches()]
    return minimise, pa.Table.from_batches(out)


def test_source_types_are_the_contracts_columns(contract: Contract) -> None:
    """Only the contract's source columns (and the objection flag) are read, with their types."""
    types = source_types(contract)
    assert tuple(types) == contract.source_columns
    assert types["date_of_birth"] == pa.date32()
    assert types["person_id"] == pa.string()
    assert types["attendance_rate"] == pa.float64()
    assert types["exclusions"] == pa.int64()
    assert types["objection"] == pa.bool_()
    assert not set(DROPPED) & set(types)


def test_objecting_rows_are_dropped_and_counted(contract: Contract, source: pa.Table) -> None:
    """Rows whose objection flag is true are excluded and counted as 'objection'."""
    objected = source.filter(pc.fill_null(source["objection"], False))
    assert 0 < objected.num_rows < source.num_rows
    minimise, out = run(contract, source)
    assert minimise.tally.read == source.num_rows
    assert minimise.tally.excluded["objection"] == objected.num_rows
    assert minimise.tally.sent == out.num_rows == source.num_rows - objected.num_rows
    assert minimise.tally.objections_overridden == 0
    sent = set(out["person_ref"].to_pylist())
    assert not {pseudonym(p) for p in objected["person_id"].to_pylist()} & sent


def test_overriding_basis_keeps_objecting_rows(overriding: Contract, source: pa.Table) -> None:
    """With legalBasisOverrides the rows are sent and counted as overridden."""
    assert overriding.objections.overridden
    objected = pc.sum(pc.fill_null(source["objection"], False)).as_py()
    minimise, out = run(overriding, source)
    assert out.num_rows == source.num_rows
    assert minimise.tally.objections_overridden == objected > 0
    assert minimise.tally.excluded["objection"] == 0


def test_null_objection_means_not_objected(contract: Contract) -> None:
    """A missing objection flag does not drop the row."""
    minimise = Minimiser(contract, pseudonym_key=PSEUDONYM_KEY)
    out = minimise(small_batch([None, True, False, None]))
    assert out.num_rows == 3
    assert out["person_ref"].to_pylist() == [
        pseudonym("P00000000"),
        pseudonym("P00000002"),
        pseudonym("P00000003"),
    ]
    assert minimise.tally.excluded["objection"] == 1


def test_output_columns_are_exactly_the_contracts(contract: Contract, source: pa.Table) -> None:
    """The output has the contract's field names, in order, and nothing else."""
    _, out = run(contract, source)
    assert tuple(out.column_names) == contract.field_names
    assert "objection" not in out.column_names


def test_fields_are_transformed(contract: Contract) -> None:
    """Each field carries its transform's output, not the source value."""
    out = Minimiser(contract, pseudonym_key=PSEUDONYM_KEY)(small_batch([False])).to_pylist()[0]
    assert out == {
        "person_ref": pseudonym("P00000000"),
        "birth_month": "2012-05",
        "postcode_district": "LS6",
        "gender": "F",
        "ethnicity": "WBRI",
        "school_urn": "123456",
        "attendance_rate": 95.5,
        "exclusions": 0,
        "free_school_meals": False,
    }


def test_no_dropped_value_reaches_the_output(contract: Contract, source: pa.Table) -> None:
    """No value from an unsent column, nor a raw id, postcode or birth date, is in the output."""
    _, out = run(contract, source)
    cells = {v for column in out.columns for v in column.to_pylist() if v is not None}
    sink = pa.BufferOutputStream()
    pacsv.write_csv(out, sink)
    text = sink.getvalue().to_pybytes().decode()
    forbidden = {
        str(v)
        for name in (*DROPPED, "person_id", "postcode")
        for v in source[name].to_pylist()
        if v is not None
    }
    assert forbidden, "the synthetic data should have values to look for"
    assert not forbidden & {str(c) for c in cells}
    long_values = {v for v in forbidden if len(v) >= 8}  # ids, NHS numbers, notes, addresses
    assert len(long_values) > 1000
    leaked = [v for v in long_values if v in text]
    assert leaked == []
    birth_dates = {d.isoformat() for d in source["date_of_birth"].to_pylist()}
    assert not any(d in text for d in birth_dates)


# -- objection lists, purpose filters, transforms needing the run date -------------------------

TODAY = dt.date(2026, 11, 24)


def edited(tmp_path: Path, edit: Any, name: str = "edited.yaml") -> Contract:
    """The sample contract, edited."""
    return load_contract(write_contract(tmp_path / name, RECIPIENT, edit))


def add_filters(*specs: dict[str, Any]) -> Any:
    """An edit adding a `filters` term."""

    def edit(d: dict[str, Any]) -> None:
        d["customProperties"].append({"property": "filters", "value": list(specs)})

    return edit


def test_objecting_ids_from_a_list_are_dropped(contract: Contract) -> None:
    """Ids on the operator's list are matched against the SOURCE id and counted as objections."""
    minimise = Minimiser(
        contract, pseudonym_key=PSEUDONYM_KEY, objecting_ids={"P00000001", "P00000003", "P9"}
    )
    out = minimise(small_batch([False, False, True, False]))
    assert out["person_ref"].to_pylist() == [pseudonym("P00000000")]
    assert minimise.tally.excluded == {"objection": 3}  # a flagged and listed row counts once
    assert minimise.tally.sent == 1


def test_objecting_ids_as_an_arrow_array_with_nulls(contract: Contract) -> None:
    """An Arrow array works too; a null in the list matches nothing, not a null id."""
    batch = small_batch([False, False, False])
    ids = batch.column(0).to_pylist()
    ids[2] = None
    batch = batch.set_column(0, "person_id", pa.array(ids, type=pa.string()))
    minimise = Minimiser(
        contract, pseudonym_key=PSEUDONYM_KEY, objecting_ids=pa.array(["P00000000", None])
    )
    out = minimise(batch)
    assert out["person_ref"].to_pylist() == [pseudonym("P00000001"), None]
    assert minimise.tally.excluded == {"objection": 1}


def test_an_id_padded_by_its_source_still_matches_the_list(contract: Contract) -> None:
    """A source that pads its ids (a fixed-width column) cannot hide an objection, and a
    padded id is pseudonymised as the bare id: one person, one pseudonym."""
    batch = small_batch([False, False, False])
    padded = pa.array(["P00000000   ", " P00000001", "P00000002\t"], type=pa.string())
    minimise = Minimiser(
        contract,
        pseudonym_key=PSEUDONYM_KEY,
        objecting_ids=pa.array(["P00000000", "P00000001"]),
    )
    out = minimise(batch.set_column(0, "person_id", padded))
    assert out["person_ref"].to_pylist() == [pseudonym("P00000002")]
    assert minimise.last_subjects.to_pylist() == ["P00000002"]
    assert minimise.tally.excluded == {"objection": 2}


def test_blank_and_dictionary_subject_ids(contract: Contract) -> None:
    """An id of white space only is no id (not one pseudonym shared by every such row); a
    dictionary-encoded id column is read as its text, padding and all."""
    batch = small_batch([False, False, False])
    ids = pa.array(["   ", "P00000001 ", "P00000002"]).dictionary_encode()
    minimise = Minimiser(contract, pseudonym_key=PSEUDONYM_KEY, objecting_ids=["P00000001"])
    out = minimise(batch.set_column(0, "person_id", ids))
    assert out["person_ref"].to_pylist() == [None, pseudonym("P00000002")]
    assert minimise.last_subjects.to_pylist() == [None, "P00000002"]
    assert minimise.tally.excluded == {"objection": 1}


def test_pseudonyms_on_the_list_do_not_match(contract: Contract) -> None:
    """The list holds source ids; a pseudonym on it is not an objection to anyone."""
    minimise = Minimiser(
        contract, pseudonym_key=PSEUDONYM_KEY, objecting_ids=[pseudonym("P00000000")]
    )
    assert minimise(small_batch([False])).num_rows == 1


def test_overriding_basis_keeps_listed_rows(overriding: Contract) -> None:
    """With legalBasisOverrides, listed rows are sent and counted as overridden."""
    minimise = Minimiser(
        overriding, pseudonym_key=PSEUDONYM_KEY, objecting_ids=["P00000000", "P00000001"]
    )
    out = minimise(small_batch([False, True, True]))
    assert out.num_rows == 3
    assert minimise.tally.objections_overridden == 3
    assert not minimise.tally.excluded


def test_filters_exclude_rows_and_count_them_by_reason(tmp_path: Path) -> None:
    """Each filter's excluded rows are counted under its name; a row fails the first one only."""
    filtered = edited(
        tmp_path,
        add_filters(
            {"column": "exclusions", "op": ">", "value": 0, "name": "excluded-pupils"},
            {"column": "attendance_rate", "op": "<", "value": 90},
        ),
    )
    assert source_types(filtered) == source_types(load_contract(SAMPLE))  # same columns
    batch = small_batch([False] * 5)
    batch = batch.set_column(7, "exclusions", pa.array([0, 1, 2, None, 3], type=pa.int64()))
    batch = batch.set_column(6, "attendance_rate", pa.array([50.0, 95.0, 80.0, 80.0, 89.9]))
    minimise = Minimiser(filtered, pseudonym_key=PSEUDONYM_KEY)
    out = minimise(batch)
    assert out["person_ref"].to_pylist() == [pseudonym("P00000002"), pseudonym("P00000004")]
    assert minimise.tally.excluded == {"filter:excluded-pupils": 2, "filter:1": 1}
    assert minimise.tally.read == 5
    assert minimise.tally.sent == 2


def test_objections_come_before_filters(tmp_path: Path) -> None:
    """An objecting row that a filter would also drop is counted as an objection."""
    filtered = edited(tmp_path, add_filters({"column": "gender", "op": "==", "value": "M"}))
    minimise = Minimiser(filtered, pseudonym_key=PSEUDONYM_KEY)
    assert minimise(small_batch([True, False])).num_rows == 0
    assert minimise.tally.excluded == {"objection": 1, "filter:0": 1}


def test_filter_only_columns_are_read_and_never_sent(tmp_path: Path) -> None:
    """A column only a filter needs is read, with its inferred type, and not sent."""
    filtered = edited(
        tmp_path,
        add_filters(
            {"column": "case_status", "op": "in", "value": ["open", "pending"]},
            {"column": "referral_date", "op": ">=", "value": "2026-01-01", "type": "date"},
        ),
    )
    types = source_types(filtered)
    assert types["case_status"] == pa.string()
    assert types["referral_date"] == pa.date32()
    assert tuple(types) == filtered.source_columns
    batch = small_batch([False, False, False])
    batch = batch.append_column("case_status", pa.array(["open", "closed", "pending"]))
    batch = batch.append_column(
        "referral_date",
        pa.array([dt.date(2026, 2, 1), dt.date(2026, 2, 1), dt.date(2025, 12, 31)]),
    )
    minimise = Minimiser(filtered, pseudonym_key=PSEUDONYM_KEY)
    out = minimise(batch)
    assert out["person_ref"].to_pylist() == [pseudonym("P00000000")]
    assert tuple(out.column_names) == filtered.field_names
    assert minimise.tally.excluded == {"filter:0": 1, "filter:1": 1}


def test_age_filter_and_age_band_use_the_given_run_date(tmp_path: Path) -> None:
    """Ages are at `today`, never the clock; without it the contract cannot be minimised."""

    def edit(d: dict[str, Any]) -> None:
        add_filters({"column": "date_of_birth", "op": "age_under", "value": 18})(d)
        for prop in d["schema"][0]["properties"]:
            if prop["name"] == "birth_month":
                prop["customProperties"][1]["value"] = {"to": "age-band", "bands": [0, 5, 11, 16]}
                prop.pop("logicalTypeOptions")

    aged = edited(tmp_path, edit)
    with pytest.raises(ValueError, match="run date"):
        Minimiser(aged, pseudonym_key=PSEUDONYM_KEY)
    batch = small_batch([False, False, False])
    born = [dt.date(2008, 11, 24), dt.date(2008, 11, 25), dt.date(2015, 1, 1)]
    batch = batch.set_column(1, "date_of_birth", pa.array(born, type=pa.date32()))
    minimise = Minimiser(aged, pseudonym_key=PSEUDONYM_KEY, today=TODAY)
    out = minimise(batch)
    assert out["birth_month"].to_pylist() == ["16+", "11-15"]
    assert minimise.tally.excluded == {"filter:0": 1}
    later = Minimiser(aged, pseudonym_key=PSEUDONYM_KEY, today=dt.date(2026, 11, 25))
    assert later(batch)["birth_month"].to_pylist() == ["11-15"]


def test_an_unmapped_code_refuses_the_batch_naming_the_field(tmp_path: Path) -> None:
    """A map without a default fails closed; the error names the field, never the value."""

    def edit(d: dict[str, Any]) -> None:
        for prop in d["schema"][0]["properties"]:
            if prop["name"] == "ethnicity":
                prop["customProperties"].append(
                    {"property": "transformOptions", "value": {"map": {"WBRI": "White"}}}
                )
                prop["customProperties"][0]["value"] = "map"

    mapped = edited(tmp_path, edit)
    minimise = Minimiser(mapped, pseudonym_key=PSEUDONYM_KEY)
    assert minimise(small_batch([False]))["ethnicity"].to_pylist() == ["White"]
    batch = small_batch([False, False])
    batch = batch.set_column(4, "ethnicity", pa.array(["WBRI", "ZSECRET"]))
    with pytest.raises(UnmappedValues, match="field ethnicity: 1 value") as caught:
        minimise(batch)
    assert "ZSECRET" not in str(caught.value)
