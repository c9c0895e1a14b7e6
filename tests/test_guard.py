"""Unit tests for the outgoing-schema guard (exchange.guard)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import SAMPLE

from exchange import guard
from exchange.contract import Contract, load_contract
from exchange.errors import GuardRefused, Refused
from exchange.types import arrow_type


@pytest.fixture(scope="module")
def contract() -> Contract:
    """The sample contract."""
    return load_contract(SAMPLE)


def exact(contract: Contract) -> list[pa.Field]:
    """The contract's fields as Arrow fields, in contract order."""
    return [pa.field(f.name, arrow_type(f.logical_type)) for f in contract.fields]


def test_exact_schema_passes(contract: Contract) -> None:
    """The contract's own columns and types are allowed through."""
    guard.check(pa.schema(exact(contract)), contract)


def test_narrower_carriers_of_the_same_type_pass(contract: Contract) -> None:
    """int32 carries an integer and large_string a string."""
    fields = [
        pa.field(f.name, pa.int32())
        if f.logical_type == "integer"
        else pa.field(f.name, pa.large_string())
        if f.logical_type == "string"
        else pa.field(f.name, arrow_type(f.logical_type))
        for f in contract.fields
    ]
    guard.check(pa.schema(fields), contract)


def test_extra_column_is_refused_by_name(contract: Contract) -> None:
    """A column the contract does not name is refused, and named."""
    schema = pa.schema([*exact(contract), pa.field("nhs_number", pa.string())])
    with pytest.raises(GuardRefused) as caught:
        guard.check(schema, contract)
    assert caught.value.unexpected == ("nhs_number",)
    assert caught.value.missing == ()
    assert "nhs_number" in str(caught.value)
    assert isinstance(caught.value, Refused) and caught.value.reason == "guard"


def test_missing_column_is_refused_by_name(contract: Contract) -> None:
    """A contract field absent from the output is refused, and named."""
    schema = pa.schema([f for f in exact(contract) if f.name != "ethnicity"])
    with pytest.raises(GuardRefused) as caught:
        guard.check(schema, contract)
    assert caught.value.missing == ("ethnicity",)
    assert caught.value.unexpected == ()
    assert "ethnicity" in str(caught.value)


def test_renamed_column_is_both_unexpected_and_missing(contract: Contract) -> None:
    """A source name in place of the contract's name is refused both ways."""
    fields = exact(contract)
    fields[0] = pa.field("person_id", pa.string())
    with pytest.raises(GuardRefused) as caught:
        guard.check(pa.schema(fields), contract)
    assert caught.value.unexpected == ("person_id",)
    assert caught.value.missing == ("person_ref",)


def test_wrong_order_is_refused(contract: Contract) -> None:
    """The right columns in another order are refused."""
    fields = exact(contract)
    fields[0], fields[1] = fields[1], fields[0]
    with pytest.raises(GuardRefused, match="order"):
        guard.check(pa.schema(fields), contract)


def test_duplicated_column_is_refused(contract: Contract) -> None:
    """A contract column sent twice is refused."""
    fields = exact(contract)
    with pytest.raises(GuardRefused):
        guard.check(pa.schema([*fields, fields[3]]), contract)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("attendance_rate", pa.string()),
        ("exclusions", pa.float64()),
        ("free_school_meals", pa.int8()),
        ("person_ref", pa.binary()),
        ("birth_month", pa.date32()),
    ],
)
def test_wrong_type_is_refused(contract: Contract, name: str, kind: pa.DataType) -> None:
    """A column carrying the wrong type is refused, naming the column and both types."""
    fields = [pa.field(f.name, kind) if f.name == name else f for f in exact(contract)]
    with pytest.raises(GuardRefused) as caught:
        guard.check(pa.schema(fields), contract)
    message = str(caught.value)
    assert name in message
    logical = next(f.logical_type for f in contract.fields if f.name == name)
    assert f"contract says {logical}" in message
