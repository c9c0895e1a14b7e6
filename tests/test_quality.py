"""Unit tests for the contract's quality rules and the quality gate (exchange.quality).

Great Expectations is slow to import (once per session) but each gate is cheap, so every test
builds at most one gate and keeps its data to a few hundred rows.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import PSEUDONYM_KEY, SAMPLE, write_contract

from exchange import synth
from exchange.contract import Contract, load_contract
from exchange.errors import ContractError, QualityFailed
from exchange.minimise import Minimiser
from exchange.quality import QualityGate, compile_rules

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
SENTINEL = "SENTINEL-XYZ"
ROWS = 200


@pytest.fixture(scope="module")
def contract() -> Contract:
    """The sample contract."""
    return load_contract(SAMPLE)


@pytest.fixture(scope="module")
def clean(contract: Contract) -> pa.Table:
    """Outgoing rows as the minimiser makes them from synthetic source data."""
    minimise = Minimiser(contract, pseudonym_key=PSEUDONYM_KEY)
    batches = [minimise(b) for b in synth.batches(ROWS + 20, seed=3, batch_rows=60)]
    table = pa.Table.from_batches(batches).slice(0, ROWS)
    assert table.num_rows == ROWS
    return table


def edited(tmp_path: Path, edit: Any) -> Contract:
    """The sample contract with `edit` applied to its document."""
    return load_contract(write_contract(tmp_path / "edited.yaml", RECIPIENT, edit))


def with_cell(table: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    """A copy of `table` with one cell replaced (keeping the column's type where it can)."""
    values = table[column].to_pylist()
    values[row] = value
    kind = table.schema.field(column).type
    array = pa.array(values) if isinstance(value, str) else pa.array(values, type=kind)
    return table.set_column(table.column_names.index(column), column, array)


def one_batch(table: pa.Table) -> pa.RecordBatch:
    """The whole table as a single record batch."""
    (batch,) = table.combine_chunks().to_batches()
    return batch


def run(gate: QualityGate, batches: Iterable[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Feed every batch through the gate, then finish; return what it released."""
    released: list[pa.RecordBatch] = []
    for batch in batches:
        released += gate.add(batch)
    released += gate.finish()
    return released


def shown(exc: BaseException) -> str:
    """Everything a log of the error would show: message, failures and traceback."""
    parts = [str(exc), *getattr(exc, "failures", ()), *traceback.format_exception(exc)]
    return "\n".join(parts)


# --- compiling the contract's rules (no Great Expectations needed) --------------------------


def test_compile_rules_of_the_sample(contract: Contract) -> None:
    """Every constraint in the sample becomes a rule of the right kind on the right column."""
    rules, bounds = compile_rules(contract)
    kinds: dict[str, list[str]] = {}
    for rule in rules:
        kinds.setdefault(rule.column, []).append(rule.kind)
    assert kinds == {
        "person_ref": ["not_null", "unique", "regex"],
        "birth_month": ["not_null", "regex"],
        "postcode_district": ["not_null", "regex"],
        "gender": ["in_set"],
        "school_urn": ["not_null", "regex"],
        "attendance_rate": ["not_null", "between"],
        "exclusions": ["not_null", "between"],
        "free_school_meals": ["not_null"],
    }
    assert bounds == (1, 5_000_000)
    between = {r.column: dict(r.params) for r in rules if r.kind == "between"}
    assert between == {
        "attendance_rate": {"min": 0, "max": 100},
        "exclusions": {"min": 0, "max": 200},
    }
    in_set = next(r for r in rules if r.kind == "in_set")
    assert in_set.param("values") == ("F", "M", "X")
    assert in_set.origin == "schema[0].properties[3].quality[0]"


def _row_count(rule: dict[str, Any]) -> Any:
    """An edit that replaces the dataset's rowCount rule."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["quality"] = [{"metric": "rowCount", **rule}]

    return edit


@pytest.mark.parametrize(
    ("rule", "bounds"),
    [
        ({"mustBeBetween": [10, 20]}, (10, 20)),
        ({"mustBeGreaterThan": 5}, (6, None)),
        ({"mustBeGreaterOrEqualTo": 5}, (5, None)),
        ({"mustBeLessThan": 5}, (None, 4)),
        ({"mustBeLessOrEqualTo": 5}, (None, 5)),
    ],
)
def test_row_count_bounds(tmp_path: Path, rule: dict[str, Any], bounds: tuple[Any, Any]) -> None:
    """Each ODCS rowCount operator becomes inclusive bounds."""
    assert compile_rules(edited(tmp_path, _row_count(rule)))[1] == bounds


def test_unsupported_field_rule_is_a_contract_error(tmp_path: Path) -> None:
    """A rule that cannot be checked row by row is refused, located in the contract."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"][4]["quality"] = [{"metric": "nullValues", "mustBeLessThan": 5}]

    contract = edited(tmp_path, edit)
    with pytest.raises(ContractError) as caught:
        compile_rules(contract)
    assert [p.path for p in caught.value.problems] == ["schema[0].properties[4].quality[0]"]
    with pytest.raises(ContractError):
        QualityGate(contract)


def test_unsupported_dataset_rule_is_a_contract_error(tmp_path: Path) -> None:
    """Only rowCount and a composite key's duplicateValues are understood at dataset level."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["quality"].append({"metric": "nullValues", "mustBe": 0})

    with pytest.raises(ContractError) as caught:
        compile_rules(edited(tmp_path, edit))
    assert [p.path for p in caught.value.problems] == ["schema[0].quality[1]"]


@pytest.mark.parametrize(
    ("index", "options"),
    [
        (3, {"maxLength": 1}),  # gender: string
        (6, {"minimum": 0, "exclusiveMaximum": 100}),  # attendance_rate: number
        (7, {"minimum": 0, "maximum": 200, "multipleOf": 2}),  # exclusions: integer
    ],
)
def test_every_type_option_is_enforced_or_refused(
    tmp_path: Path, contract: Contract, index: int, options: dict[str, Any]
) -> None:
    """A logicalTypeOption the gateway cannot check must not be silently dropped."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"][index]["logicalTypeOptions"] = options

    sample_rules, _ = compile_rules(contract)
    try:
        rules, _ = compile_rules(edited(tmp_path, edit))
    except ContractError:
        return  # refused: acceptable
    name = contract.fields[index].name
    assert len([r for r in rules if r.column == name]) > len(
        [r for r in sample_rules if r.column == name]
    )


# --- the gate -------------------------------------------------------------------------------


def test_gate_passes_clean_minimised_data(contract: Contract, clean: pa.Table) -> None:
    """Valid rows are all released, in windows, and counted."""
    gate = QualityGate(contract, window_rows=80)
    batches = clean.to_batches(max_chunksize=40)
    released: list[pa.RecordBatch] = []
    early = 0
    for batch in batches:
        out = gate.add(batch)
        early += sum(b.num_rows for b in out)
        released += out
    assert early > 0, "full windows are released before finish()"
    released += gate.finish()
    assert pa.Table.from_batches(released).equals(clean)
    assert gate.rows == ROWS
    assert gate.failures == []


def test_gate_windows_close_at_their_byte_bound(contract: Contract, clean: pa.Table) -> None:
    """Wide rows close a window before its row count: memory follows bytes, not rows."""
    batches = clean.to_batches(max_chunksize=40)
    gate = QualityGate(contract, window_rows=10_000, window_bytes=batches[0].nbytes + 1)
    first = gate.add(batches[0])
    assert first == []  # under both bounds
    second = gate.add(batches[1])
    assert sum(b.num_rows for b in second) == batches[0].num_rows + batches[1].num_rows
    released = second
    for batch in batches[2:]:
        released += gate.add(batch)
    released += gate.finish()
    assert pa.Table.from_batches(released).equals(clean)
    assert gate.rows == ROWS


@pytest.mark.parametrize(
    ("column", "value", "kind", "secret"),
    [
        ("attendance_rate", None, "not_null", None),
        ("attendance_rate", 987.25, "between", "987"),
        ("exclusions", -31, "between", "-31"),
        ("birth_month", SENTINEL, "regex", SENTINEL),
        ("postcode_district", "SENTINEL1", "regex", "SENTINEL1"),
        ("gender", SENTINEL, "in_set", SENTINEL),
        # A pattern's `$` is the end of the value: a trailing line break is not let through.
        ("school_urn", "100001\n", "regex", None),
    ],
)
def test_gate_fails_on_a_bad_value_without_showing_it(
    contract: Contract,
    clean: pa.Table,
    column: str,
    value: Any,
    kind: str,
    secret: str | None,
) -> None:
    """One bad cell fails the run; the failure names column and rule but never the value."""
    table = with_cell(clean, column, 123, value)
    gate = QualityGate(contract, window_rows=1000)
    with pytest.raises(QualityFailed) as caught:
        run(gate, table.to_batches(max_chunksize=50))
    failures = caught.value.failures
    assert f"{column}: {kind} failed for 1 of {ROWS} rows" in " ".join(failures)
    assert len(failures) == 1
    assert caught.value.reason == "quality"
    if secret is not None:
        assert secret not in shown(caught.value)


@pytest.mark.parametrize("hashed_by", ["gate", "caller"])
def test_duplicates_split_across_windows_are_caught_at_finish(
    contract: Contract, clean: pa.Table, hashed_by: str
) -> None:
    """A subject key repeated in a later window passes each window but fails the run, whether
    the gate hashes the keys or is handed them (taken on another thread, as a run does)."""
    first = clean.slice(0, 50)
    second = with_cell(clean.slice(50, 50), "person_ref", 7, first["person_ref"][3].as_py())
    gate = QualityGate(contract, window_rows=50)
    for part in (first, second):  # each window two batches of 25 rows
        released = []
        for batch in (one_batch(part.slice(0, 25)), one_batch(part.slice(25, 25))):
            keys = None
            if hashed_by == "caller":
                with ThreadPoolExecutor(1) as pool:
                    keys = pool.submit(gate.key_hashes, batch).result()
                assert [len(h) for h in keys.values()] == [25]
            released += gate.add(batch, keys)
        assert sum(b.num_rows for b in released) == 50
    # Stored one sorted part per window, however the hashes came (the final count reads each).
    assert [len(h._parts) for h in gate._hashes.values()] == [2]
    with pytest.raises(QualityFailed) as caught:
        gate.finish()
    assert caught.value.failures == ("person_ref: unique failed for 1 of 100 rows (whole run)",)
    assert first["person_ref"][3].as_py() not in shown(caught.value)


def test_row_count_below_the_minimum(contract: Contract) -> None:
    """An empty run breaks the sample's rowCount lower bound."""
    gate = QualityGate(contract)
    with pytest.raises(QualityFailed, match=r"row count 0 is outside .*\[1, 5000000\]"):
        gate.finish()


def test_row_count_above_the_maximum(tmp_path: Path, clean: pa.Table) -> None:
    """More rows than the contract allows fails the run, even when every row is valid."""
    contract = edited(tmp_path, _row_count({"mustBeBetween": [1, 99]}))
    gate = QualityGate(contract, window_rows=60)
    with pytest.raises(QualityFailed) as caught:
        run(gate, clean.slice(0, 100).to_batches(max_chunksize=30))
    assert caught.value.failures == ("row count 100 is outside the contract's bounds [1, 99]",)


def test_the_validator_is_built_on_a_thread_once_the_first_row_comes(
    contract: Contract, clean: pa.Table
) -> None:
    gate = QualityGate(contract, worker=False)
    assert gate._loading is None  # nothing to validate yet: nothing imported
    released = gate.add(one_batch(clean))
    loading = gate._loading
    assert loading is not None and loading._thread.name == "exchange-gx-load"
    released += gate.finish()
    assert sum(b.num_rows for b in released) == clean.num_rows
    assert not loading._thread.is_alive() and gate._in_process is not None


def test_a_gate_given_no_rows_builds_no_validator(contract: Contract) -> None:
    gate = QualityGate(contract, worker=False, pipelined=True)
    with pytest.raises(QualityFailed, match="row"):  # the sample asks for at least one row
        gate.finish()
    assert gate._loading is None and gate._in_process is None


def test_what_building_the_validator_raised_is_raised_where_it_is_needed(
    contract: Contract, clean: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    import validators.suite

    def broken(name: str, rules: Any) -> Any:
        raise ValueError("between rule on 'age' has min above max")

    monkeypatch.setattr(validators.suite, "BatchValidator", broken)
    gate = QualityGate(contract, worker=False)
    with pytest.raises(ValueError, match="min above max"):
        run(gate, [one_batch(clean)])
    gate.close()
    assert gate._loading is None and gate._in_process is None


def test_closing_a_gate_waits_for_its_validator_to_be_built(
    contract: Contract, clean: pa.Table
) -> None:
    gate = QualityGate(contract, worker=False)
    gate.add(one_batch(clean.slice(0, 10)))
    loading = gate._loading
    assert loading is not None
    gate.close()  # a run that fails before its first window is validated
    assert loading._built.is_set() and gate._loading is None


def test_a_gate_given_only_empty_batches_builds_no_validator_until_it_validates(
    contract: Contract, clean: pa.Table
) -> None:
    gate = QualityGate(contract, worker=False)
    empty = pa.RecordBatch.from_pylist([], schema=clean.schema)  # every row of a batch excluded
    gate.add(empty)
    assert gate._loading is None
    gate.close()


def test_an_interrupted_first_validation_still_waits_for_the_validator(
    contract: Contract, clean: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the first window waits for the validator: closing the gate (the run's
    clean-up) still waits for the thread building it, so no import runs on behind it."""
    import time

    import validators.suite

    def slow(name: str, rules: Any) -> Any:
        time.sleep(1.0)
        return object()

    def interrupted(self: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(validators.suite, "BatchValidator", slow)
    gate = QualityGate(contract, worker=False)
    gate.add(one_batch(clean))
    loading = gate._loading
    assert loading is not None
    monkeypatch.setattr(type(loading), "result", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gate.finish()
    gate.close()
    assert loading._built.is_set()  # close waited for the build that was under way
