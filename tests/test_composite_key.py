"""Uniqueness over a composite key: ODCS's schema-level duplicateValues with properties.

From the contract (lint, compile) through the quality gate, across windows, to diff and render.
Great Expectations is slow to import, so each gate test builds one gate over a few hundred rows.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import PSEUDONYM_KEY, SAMPLE, write_contract

from exchange import synth
from exchange.cli import main
from exchange.contract import Contract, load_contract, read_document
from exchange.contract.diff import diff_documents
from exchange.contract.render import quality_words, summary, to_html, to_markdown
from exchange.errors import ContractError, QualityFailed
from exchange.minimise import Minimiser
from exchange.quality import QualityGate, compile_rules, key_hashes, new_key_hash_keys, repeats
from validators import Rule

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
KEY = ["person_ref", "school_urn"]
RULE: dict[str, Any] = {
    "description": "One record per pupil per school.",
    "metric": "duplicateValues",
    "arguments": {"properties": KEY},
    "mustBe": 0,
}
ROWS = 200


def with_key(rule: dict[str, Any] | None = None, *, person_unique: bool = False) -> Any:
    """An edit adding a composite-key rule (and by default dropping person_ref's own unique)."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["quality"].append(copy.deepcopy(rule or RULE))
        d["schema"][0]["properties"][0]["unique"] = person_unique

    return edit


def contract_with(tmp_path: Path, edit: Any) -> Path:
    """The sample contract with `edit` applied, written to a file."""
    return write_contract(tmp_path / "keyed.yaml", RECIPIENT, edit)


def problems_of(path: Path) -> list[str]:
    """Every problem loading the file finds, as 'path: message'."""
    with pytest.raises(ContractError) as caught:
        compile_rules(load_contract(path))
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    """The sample contract whose only uniqueness rule is on (person_ref, school_urn)."""
    return load_contract(contract_with(tmp_path_factory.mktemp("keyed"), with_key()))


@pytest.fixture(scope="module")
def clean(keyed: Contract) -> pa.Table:
    """Outgoing rows as the minimiser makes them from synthetic source data."""
    minimise = Minimiser(keyed, pseudonym_key=PSEUDONYM_KEY)
    batches = [minimise(b) for b in synth.batches(ROWS + 20, seed=3, batch_rows=60)]
    return pa.Table.from_batches(batches).slice(0, ROWS).combine_chunks()


def copy_key(table: pa.Table, source: int, target: int, columns: list[str]) -> pa.Table:
    """A copy of `table` whose row `target` takes row `source`'s values in `columns`."""
    for column in columns:
        values = table[column].to_pylist()
        values[target] = values[source]
        index = table.column_names.index(column)
        table = table.set_column(index, column, pa.array(values, table.schema.field(column).type))
    return table


def run(gate: QualityGate, table: pa.Table, rows: int) -> list[pa.RecordBatch]:
    """Feed `table` through the gate in batches of `rows`; return what it released."""
    released: list[pa.RecordBatch] = []
    for batch in table.to_batches(max_chunksize=rows):
        released += gate.add(batch)
    return released + gate.finish()


# --- the contract: lint and compile ----------------------------------------------------------


def test_the_rule_compiles_to_a_compound_unique_rule(keyed: Contract) -> None:
    """The ODCS rule becomes one compound_unique rule over the key, located in the contract."""
    rules, bounds = compile_rules(keyed)
    (rule,) = [r for r in rules if r.kind == "compound_unique"]
    assert rule == Rule.compound_unique(tuple(KEY), "schema[0].quality[1]")
    assert not [r for r in rules if r.kind == "unique"]
    assert bounds == (1, 5_000_000)


def test_lint_refuses_a_key_naming_an_unknown_property(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`contract lint` says which file, where, and which name is not a property."""
    path = contract_with(
        tmp_path, with_key({**RULE, "arguments": {"properties": ["person_ref", "site_code"]}})
    )
    assert main(["contract", "lint", str(path)]) == 2
    err = capsys.readouterr().err
    expected = (
        f"{path}: schema[0].quality[1].arguments.properties[1]: "
        "'site_code' is not a property of the schema"
    )
    assert expected in err.splitlines()


@pytest.mark.parametrize(
    ("arguments", "where", "words"),
    [
        (None, "schema[0].quality[1].arguments.properties", "must list the key's property names"),
        ({"properties": []}, "schema[0].quality[1].arguments.properties", "must list"),
        ({"properties": "person_ref"}, "schema[0].quality[1].arguments.properties", "must list"),
        ({"properties": ["person_ref", 3]}, "schema[0].quality[1].arguments.properties", "must"),
        (
            {"properties": ["person_ref", "person_ref"]},
            "schema[0].quality[1].arguments.properties[1]",
            "listed twice",
        ),
    ],
)
def test_malformed_keys_are_refused(
    tmp_path: Path, arguments: dict[str, Any] | None, where: str, words: str
) -> None:
    """A key that is missing, empty, not a list of names, or repeats a name is refused."""
    rule = {k: v for k, v in RULE.items() if k != "arguments"}
    if arguments is not None:
        rule["arguments"] = arguments
    found = problems_of(contract_with(tmp_path, with_key(rule)))
    assert any(p.startswith(f"{where}: ") and words in p for p in found), found


def test_only_no_duplicates_is_enforced(tmp_path: Path) -> None:
    """A tolerance (mustBeLessThan 10) cannot be enforced per window, so it is refused."""
    rule = {k: v for k, v in RULE.items() if k != "mustBe"} | {"mustBeLessThan": 10}
    found = problems_of(contract_with(tmp_path, with_key(rule)))
    assert found == ["schema[0].quality[1]: duplicateValues is enforced only as mustBe: 0"]


def test_a_key_on_a_property_is_refused(tmp_path: Path) -> None:
    """arguments.properties belongs to the schema-level rule, not to one property's rule."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"][5]["quality"] = [copy.deepcopy(RULE)]

    found = problems_of(contract_with(tmp_path, edit))
    assert found == [
        "schema[0].properties[5].quality[0].arguments.properties: "
        "a key of several properties goes in schema[0].quality"
    ]


# --- the gate: every row, across windows -----------------------------------------------------


def test_clean_rows_pass(keyed: Contract, clean: pa.Table) -> None:
    """Rows with distinct keys pass, window by window, and are all released."""
    gate = QualityGate(keyed, window_rows=80)
    released = run(gate, clean, 40)
    assert pa.Table.from_batches(released).equals(clean)
    assert gate.failures == []


def test_same_person_at_another_school_passes(keyed: Contract, clean: pa.Table) -> None:
    """Only the whole key must be unique: one pupil may appear once per school."""
    table = copy_key(clean, 3, 150, ["person_ref"])
    assert table["school_urn"][3] != table["school_urn"][150]
    gate = QualityGate(keyed, window_rows=100)
    assert sum(b.num_rows for b in run(gate, table, 50)) == ROWS


def test_duplicate_within_a_window_fails_it(keyed: Contract, clean: pa.Table) -> None:
    """Two rows sharing the key in one window stop that window; the message has no value."""
    table = copy_key(clean, 3, 17, KEY)
    secret = table["person_ref"][3].as_py()
    gate = QualityGate(keyed, window_rows=1000)
    with pytest.raises(QualityFailed) as caught:
        run(gate, table, 50)
    assert caught.value.failures == (
        "(person_ref, school_urn): compound_unique failed for 2 of 200 rows (schema[0].quality[1])",
    )
    assert secret not in str(caught.value)
    assert table["school_urn"][3].as_py() not in str(caught.value)


def test_duplicate_split_across_windows_fails_the_run(keyed: Contract, clean: pa.Table) -> None:
    """A key repeated in a later window passes each window's check but fails the run."""
    table = copy_key(clean, 3, 170, KEY)
    secret = table["person_ref"][3].as_py()
    gate = QualityGate(keyed, window_rows=100)
    batches = table.to_batches(max_chunksize=100)
    assert [sum(b.num_rows for b in gate.add(batch)) for batch in batches] == [100, 100]
    with pytest.raises(QualityFailed) as caught:
        gate.finish()
    assert caught.value.failures == (
        "(person_ref, school_urn): compound_unique failed for 1 of 200 rows "
        "(whole run; schema[0].quality[1])",
    )
    assert secret not in str(caught.value)


def test_key_and_column_uniqueness_are_checked_apart(tmp_path: Path, clean: pa.Table) -> None:
    """With person_ref unique too, a repeated pupil at another school fails only that rule."""
    contract = load_contract(contract_with(tmp_path, with_key(person_unique=True)))
    table = copy_key(clean, 3, 170, ["person_ref"])
    gate = QualityGate(contract, window_rows=100)
    with pytest.raises(QualityFailed) as caught:
        run(gate, table, 100)
    assert caught.value.failures == ("person_ref: unique failed for 1 of 200 rows (whole run)",)


# --- hashing keys across windows -------------------------------------------------------------


def run_repeats(columns: dict[str, tuple[pa.Array, pa.Array]]) -> tuple[int, int, int]:
    """(hashed rows in window 1, in window 2, repeats across both) for a key of `columns`."""
    first = pa.table({name: pair[0] for name, pair in columns.items()})
    second = pa.table({name: pair[1] for name, pair in columns.items()})
    one, two = key_hashes(first, tuple(columns), KEYS), key_hashes(second, tuple(columns), KEYS)
    return len(one), len(two), repeats(np.concatenate([one, two]))


LONDON = pa.timestamp("us", tz="Europe/London")
KEYS = new_key_hash_keys()


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # An integer key column with a null in one window (pandas would read it as float).
        (pa.array([1, 2, 3]), pa.array([3, None, 7]), (3, 2, 1)),
        (pa.array([1, 2], pa.int32()), pa.array([2], pa.int32()), (2, 1, 1)),
        # NaN is empty, and -0.0 is 0.0.
        (pa.array([0.0, 1.5, float("nan")]), pa.array([-0.0, None, 2.0]), (2, 2, 1)),
        (pa.array(["a", "b"]), pa.array(["b", None]), (2, 1, 1)),
        (pa.array([True, False]), pa.array([True]), (2, 1, 1)),
        (pa.array([dt.date(2024, 1, 1)]), pa.array([dt.date(2024, 1, 1)]), (1, 1, 1)),
        (
            pa.array([dt.datetime(2024, 10, 27, 1, 30)], LONDON),
            pa.array([dt.datetime(2024, 10, 27, 1, 30), None], LONDON),
            (1, 1, 1),
        ),
        (pa.array([decimal.Decimal("1.10")]), pa.array([decimal.Decimal("1.10")]), (1, 1, 1)),
        (pa.array([b"\xff\x00"]), pa.array([b"\xff\x00"]), (1, 1, 1)),
        # Fixed-width binary by its bytes, whatever else is in the window (not by its text).
        (pa.array([b"ab"], pa.binary(2)), pa.array([b"\xff\xfe", b"ab"], pa.binary(2)), (1, 2, 1)),
        (pa.array(["a", "b"]), pa.array(["b"], pa.string_view()), (2, 1, 1)),
        (pa.array(["x", "y"]).dictionary_encode(), pa.array(["y"]).dictionary_encode(), (2, 1, 1)),
    ],
)
def test_a_key_hashes_alike_in_every_window(
    first: pa.Array, second: pa.Array, expected: tuple[int, int, int]
) -> None:
    """Equal keys in two windows collide whatever the Arrow type; rows with a gap are skipped."""
    site = pa.array(["S"] * len(first)), pa.array(["S"] * len(second))
    assert run_repeats({"id": (first, second), "site": site}) == expected


def test_text_keys_hash_alike_in_windows_of_one_width_and_of_many() -> None:
    """A window of fixed-width ids, one of mixed widths (padded to the widest) and a value past
    64 bytes (hashed through its SHA-256): the same numbers, so repeats are found."""
    fixed = pa.array([f"P{i:08d}" for i in range(3000)])
    mixed = pa.array(["P00002999", "other", "P00000000", "x" * 65, ""])
    longer = pa.array(["x" * 65, "y" * 300, ""] * 2, pa.large_string())
    site = pa.array(["S"] * 3000), pa.array(["S"] * 5)
    assert run_repeats({"id": (fixed, mixed)}) == (3000, 5, 2)
    assert run_repeats({"id": (fixed, mixed), "site": site}) == (3000, 5, 2)
    assert run_repeats({"id": (fixed, fixed.cast(pa.large_string()))}) == (3000, 3000, 3000)
    assert run_repeats({"id": (mixed, longer)}) == (5, 6, 5)  # 65 x's, "" and their repeats


def test_the_key_is_the_combination_not_each_column() -> None:
    """(a, bc) and (ab, c), or a swapped pair, are different keys."""
    a = pa.array(["a", "ab", "x"]), pa.array(["ab", "a", "y"])
    b = pa.array(["bc", "c", "y"]), pa.array(["c", "bc", "x"])
    assert run_repeats({"a": a, "b": b}) == (3, 3, 2)
    assert run_repeats({"a": a, "b": (b[0], pa.array(["q", "q", "q"]))}) == (3, 3, 0)


def test_a_key_of_many_columns_is_hashed_whole() -> None:
    """Nine columns (their hashes side by side pass 64 bytes, so they go by their digest):
    the same rows repeat, a row differing in its last column does not."""
    rows = {
        f"c{i}": (pa.array([i, 10 + i]), pa.array([10 + i, i if i < 8 else 99])) for i in range(9)
    }
    assert run_repeats(rows) == (2, 2, 1)


def test_number_keys_are_keyed_too() -> None:
    """Integers hash under the store's own keys, like text: no public function whose
    collisions could be chosen, and nothing the same from one run to the next."""
    table = pa.table({"id": pa.array(range(1000)), "at": pa.array([1.5] * 1000)})
    for columns in (("id",), ("id", "at")):
        one = key_hashes(table, columns, new_key_hash_keys())
        two = key_hashes(table, columns, new_key_hash_keys())
        assert len(set(one.tolist())) == 1000
        assert not set(one.tolist()) & set(two.tolist())


def test_a_missing_key_column_gives_no_hashes() -> None:
    """The window's own check fails a missing column closed; hashing does not raise."""
    assert len(key_hashes(pa.table({"a": [1, 2]}), ("a", "b"), KEYS)) == 0


# --- diff and render -------------------------------------------------------------------------


def change_kinds(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, bool]]:
    """The kind and re-approval flag of each change from old to new."""
    return [(c.kind, c.reapproval) for c in diff_documents(old, new)]


def keyed_document(key: list[str]) -> dict[str, Any]:
    """The sample document with a composite-key rule over `key`."""
    document = read_document(SAMPLE)
    document["schema"][0]["quality"].append(
        {**copy.deepcopy(RULE), "arguments": {"properties": key}}
    )
    return document


def test_diff_judges_the_rule() -> None:
    """Adding the rule or narrowing its key is stricter (editorial); the reverse needs approval."""
    plain, pair = read_document(SAMPLE), keyed_document(KEY)
    single = keyed_document(["person_ref"])
    assert change_kinds(plain, pair) == [("quality-tightened", False)]
    assert change_kinds(pair, plain) == [("quality-loosened", True)]
    assert change_kinds(pair, single) == [("quality-tightened", False)]
    assert change_kinds(single, pair) == [("quality-loosened", True)]
    other = keyed_document(["person_ref", "gender"])
    assert change_kinds(pair, other) == [("quality-changed", True)]
    (added,) = diff_documents(plain, pair)
    assert "duplicateValues" in added.summary
    assert "school_urn" in added.summary


def test_diff_same_key_in_another_order_is_editorial() -> None:
    """The same properties listed in another order are the same key."""
    reordered = keyed_document(list(reversed(KEY)))
    changes = diff_documents(keyed_document(KEY), reordered)
    assert changes
    assert not any(c.reapproval for c in changes)
    retuned = keyed_document(list(reversed(KEY)))
    retuned["schema"][0]["quality"][1]["mustBe"] = 1
    assert change_kinds(keyed_document(KEY), retuned) == [("quality-loosened", True)]


def test_render_shows_the_rule_in_words(keyed: Contract) -> None:
    """The summary, Markdown and HTML say which combination must be unique."""
    words = "No two rows share the same person_ref and school_urn"
    s = summary(keyed, today=dt.date(2026, 1, 1))
    assert any(q.startswith(words) for q in s["quality"])
    assert "Between 1 and 5,000,000 rows are sent in a run." in s["quality"]
    assert words in to_markdown(keyed, today=dt.date(2026, 1, 1)).replace("\\", "")
    assert words in to_html(keyed, today=dt.date(2026, 1, 1))


def test_render_names_a_rule_it_has_no_words_for() -> None:
    """A rule the renderer does not know is shown as written, not hidden."""
    assert quality_words({"metric": "missingValues", "mustBeLessThan": 5}) == (
        "Quality rule missingValues: mustBeLessThan 5."
    )
