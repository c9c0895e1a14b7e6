"""Property-based tests of minimisation over random contracts and random source tables.

Each example draws a source table (with extra columns full of sentinel values), a contract that
sends a random subset of fields with random transforms in a random order, random purpose
filters, random objections, then checks what minimisation must always guarantee.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from conftest import PSEUDONYM_KEY, write_contract
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange import guard
from exchange.contract import Contract, load_contract
from exchange.minimise import Minimiser, source_types
from exchange.transforms import years_before

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
TODAY = dt.date(2026, 11, 24)
EXTRA = ("secret_name", "secret_notes", "secret_code")
CODES = ("WBRI", "WIRI", "APKN", "BCRB", "MWBC")
STATUSES = ("open", "pending", "closed")
SOURCE_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("pid", pa.string()),
        ("born", pa.date32()),
        ("postcode", pa.string()),
        ("code", pa.string()),
        ("rate", pa.float64()),
        ("visits", pa.int64()),
        ("flag", pa.bool_()),
        ("status", pa.string()),
        *[(name, pa.string()) for name in EXTRA],
    ]
)


def prop(name: str, source: str, logical: str, transform: str, **extra: Any) -> dict[str, Any]:
    """An ODCS property with the gateway's field terms."""
    terms = [{"property": "transform", "value": transform}]
    if "options" in extra:
        terms.append({"property": "transformOptions", "value": extra.pop("options")})
    if extra.pop("subject", False):
        terms.append({"property": "subjectKey", "value": True})
    return {
        "name": name,
        "physicalName": source,
        "logicalType": logical,
        "customProperties": terms,
    }


# Optional fields: every transform at least once, some columns read by several fields.
OPTIONAL = [
    prop("pid_hash", "pid", "string", "hash"),
    prop("birth_year", "born", "integer", "generalise-date", options={"to": "year"}),
    prop("birth_month", "born", "string", "generalise-date", options={"to": "year-month"}),
    prop(
        "age_band",
        "born",
        "string",
        "generalise-date",
        options={"to": "age-band", "bands": [0, 5, 11, 16, 18]},
    ),
    prop("district", "postcode", "string", "postcode-district"),
    prop("sector", "postcode", "string", "postcode-sector"),
    prop("code_short", "code", "string", "truncate", options={"length": 2}),
    prop(
        "group",
        "code",
        "string",
        "map",
        options={"map": {"WBRI": "White", "APKN": "Asian"}, "default": "Other"},
    ),
    prop("rate_band", "rate", "string", "band", options={"bands": [0, 50, 90]}),
    prop("rate_capped", "rate", "number", "top-code", options={"max": 95.5}),
    prop("visits_capped", "visits", "integer", "top-code", options={"max": 3}),
    prop("rate", "rate", "number", "keep"),
    prop("visits", "visits", "integer", "keep"),
    prop("status", "status", "string", "keep"),
]
SUBJECT = prop("person_ref", "pid", "string", "pseudonymise", subject=True)
MARKER = prop("row_ref", "row_id", "string", "keep")

FILTERS = [
    {"column": "rate", "op": ">=", "value": 40},
    {"column": "status", "op": "in", "value": ["open", "pending"], "name": "open-cases"},
    {"column": "status", "op": "not_in", "value": ["closed"]},
    {"column": "born", "op": "age_under", "value": 16},
    {"column": "born", "op": "age_at_least", "value": 5},
    {"column": "visits", "op": "not_null"},
    {"column": "visits", "op": "<", "value": 4},
    {"column": "code", "op": "!=", "value": "MWBC"},
    {"column": "flag", "op": "is_null"},
]


@dataclass(frozen=True)
class Case:
    """One drawn example: contract parts, source table, objection list, batch sizes."""

    fields: list[dict[str, Any]]
    filters: list[dict[str, Any]]
    overridden: bool
    table: pa.Table
    objecting: frozenset[str]
    batch_rows: int


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The values, or null."""
    return st.one_of(st.none(), values)


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    """A source table; `row_id` is unique, `pid` may repeat, every column may be null."""
    n = draw(st.integers(0, 30))
    postcodes = st.sampled_from(["LS6 2AB", "ls62ab", "SW1A 1AA", "M1 1AE", "not known", "LS6"])
    columns: dict[str, list[Any]] = {
        "row_id": [f"ROW-{i:04d}-MARK" for i in range(n)],
        "pid": draw(
            st.lists(
                # Some ids padded, as a fixed-width source column pads them.
                maybe(st.sampled_from([f"P{k:03d}" for k in range(12)] + [" P001", "P002  "])),
                min_size=n,
                max_size=n,
            )
        ),
        "born": draw(
            st.lists(
                maybe(st.dates(dt.date(2004, 1, 1), dt.date(2027, 1, 1))), min_size=n, max_size=n
            )
        ),
        "postcode": draw(st.lists(maybe(postcodes), min_size=n, max_size=n)),
        "code": draw(st.lists(maybe(st.sampled_from(CODES)), min_size=n, max_size=n)),
        "rate": draw(
            st.lists(
                maybe(st.one_of(st.floats(-10, 120), st.just(float("nan")))), min_size=n, max_size=n
            )
        ),
        "visits": draw(st.lists(maybe(st.integers(-2, 10)), min_size=n, max_size=n)),
        "flag": draw(st.lists(maybe(st.booleans()), min_size=n, max_size=n)),
        "status": draw(st.lists(maybe(st.sampled_from(STATUSES)), min_size=n, max_size=n)),
    }
    for name in EXTRA:
        columns[name] = [f"SENTINEL-{name}-{i:04d}" for i in range(n)]
    return pa.Table.from_pydict(columns, schema=SOURCE_SCHEMA)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A random contract over a random table."""
    chosen = draw(st.lists(st.sampled_from(OPTIONAL), unique_by=lambda p: p["name"], max_size=8))
    fields = draw(st.permutations([SUBJECT, MARKER, *chosen]))
    rules = draw(st.lists(st.sampled_from(FILTERS), unique_by=repr, max_size=3))
    table = draw(tables())
    pids = sorted({p for p in table.column("pid").to_pylist() if p is not None})
    objecting = draw(st.frozensets(st.sampled_from(pids))) if pids else frozenset()
    return Case(
        fields=list(fields),
        filters=list(rules),
        overridden=draw(st.booleans()),
        table=table,
        objecting=objecting,
        batch_rows=draw(st.integers(1, 12)),
    )


_CONTRACTS: dict[str, Contract] = {}


def contract_for(case: Case) -> Contract:
    """The sample contract reshaped as the case says, written and loaded (so lint checks it)."""
    key = repr((case.fields, case.filters, case.overridden))
    if key not in _CONTRACTS:  # loading takes ~50 ms; shrinking asks for the same one often
        with tempfile.TemporaryDirectory() as folder:
            _CONTRACTS[key] = _load(case, Path(folder))
    return _CONTRACTS[key]


def _load(case: Case, folder: Path) -> Contract:
    """Write the case's contract into `folder` and load it."""

    def edit(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"] = case.fields
        d["schema"][0].pop("quality", None)
        for term in d["customProperties"]:
            if term["property"] == "objections":
                term["value"] = {"column": "flag", "legalBasisOverrides": case.overridden}
                if case.overridden:
                    term["value"]["overrideJustification"] = "Section 47 enquiries override."
            if term["property"] == "legalBasis" and case.overridden:
                term["value"]["statutes"].append({"act": "Children Act 1989", "section": "s.47"})
        if case.filters:
            d["customProperties"].append({"property": "filters", "value": case.filters})

    return load_contract(write_contract(folder / "random.yaml", RECIPIENT, edit))


def minimise(contract: Contract, case: Case) -> tuple[Minimiser, pa.Table]:
    """Run the table through a fresh Minimiser in batches, as the source would deliver them."""
    types = source_types(contract)
    table = case.table
    for name, kind in types.items():  # the source converts the columns it is asked for
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(kind))
    minimiser = Minimiser(
        contract, pseudonym_key=PSEUDONYM_KEY, today=TODAY, objecting_ids=case.objecting
    )
    # Every column, not only the requested ones: nothing may leak even if projection failed.
    batches = table.to_batches(max_chunksize=case.batch_rows) or [
        pa.RecordBatch.from_pylist([], schema=table.schema)
    ]
    return minimiser, pa.Table.from_batches([minimiser(b) for b in batches])


def pseudonym(value: str) -> str:
    """The pseudonym computed independently with the hmac module."""
    return hmac.new(PSEUDONYM_KEY, value.encode(), hashlib.sha256).hexdigest()[:32]


def csv_text(table: pa.Table) -> str:
    """The table as the CSV payload would carry it."""
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return str(sink.getvalue().to_pybytes().decode())


def passes(rule: dict[str, Any], row: dict[str, Any]) -> bool:
    """A plain-Python reference for one filter on one source row."""
    value = row[rule["column"]]
    op = rule["op"]
    if op == "is_null":
        return value is None
    if value is None or (isinstance(value, float) and value != value):
        return op == "not_null" and value is not None
    if op == "not_null":
        return True
    if op == "in":
        return value in rule["value"]
    if op == "not_in":
        return value not in rule["value"]
    if op == "age_under":
        return value > years_before(TODAY, rule["value"])
    if op == "age_at_least":
        return value <= years_before(TODAY, rule["value"])
    target = rule["value"]
    return {
        "==": value == target,
        "!=": value != target,
        "<": value < target,
        "<=": value <= target,
        ">": value > target,
        ">=": value >= target,
    }[op]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_minimisation_properties(case: Case) -> None:
    """Exact columns, no leaked values, stable collision-free pseudonyms, objections honoured."""
    contract = contract_for(case)
    minimiser, out = minimise(contract, case)
    rows = case.table.to_pylist()

    # The output is exactly the contract's columns, in order, with its types.
    assert tuple(out.column_names) == contract.field_names
    guard.check(out.schema, contract)

    # No value of a column that is not sent appears anywhere, in any cell or the CSV text.
    assert "SENTINEL" not in csv_text(out)
    assert not any("SENTINEL" in str(v) for column in out.columns for v in column.to_pylist())

    # Rows sent are exactly those not objected to (unless overridden) that pass every filter.
    def objected(row: dict[str, Any]) -> bool:
        listed = {pid.strip() for pid in case.objecting}  # spaces at either end ignored
        return row["flag"] is True or (row["pid"] or "").strip() in listed

    expected = [
        row["row_id"]
        for row in rows
        if (case.overridden or not objected(row)) and all(passes(f, row) for f in case.filters)
    ]
    sent = out.column("row_ref").to_pylist()
    assert sent == expected
    tally = minimiser.tally
    assert tally.read == len(rows)
    assert tally.sent == len(sent)
    assert tally.read == tally.sent + sum(tally.excluded.values())
    objectors = sum(objected(row) for row in rows)
    if case.overridden:
        assert tally.objections_overridden == objectors
        assert "objection" not in tally.excluded
    else:
        assert tally.excluded.get("objection", 0) == objectors
        sent_ids = set(sent)
        assert not any(objected(r) and r["row_id"] in sent_ids for r in rows)

    # Pseudonyms: the same with a second Minimiser, one per distinct id, never shared.
    _, again = minimise(contract, case)
    assert csv_text(again) == csv_text(out)  # as text, since NaN never equals NaN
    # An id is the person without padding: " P001" and "P001" are one person, one pseudonym.
    by_row = {r["row_id"]: None if r["pid"] is None else r["pid"].strip() for r in rows}
    pairs = {(by_row[r], p) for r, p in zip(sent, out["person_ref"].to_pylist(), strict=True)}
    assert all((pid is None) == (ref is None) for pid, ref in pairs)  # null only for a null id
    assert len({pid for pid, _ in pairs}) == len(pairs)  # one pseudonym per id
    assert len({ref for _, ref in pairs}) == len(pairs)  # no two ids share one
    assert all(ref == pseudonym(pid) for pid, ref in pairs if pid is not None)


@pytest.mark.parametrize("overridden", [False, True])
def test_every_transform_at_once_keeps_the_contract_shape(overridden: bool) -> None:
    """A fixed example with every optional field, as a quick smoke test of the generator."""
    table = pa.Table.from_pydict(
        {
            "row_id": ["ROW-0000-MARK", "ROW-0001-MARK"],
            "pid": ["P001", "P002"],
            "born": [dt.date(2015, 2, 1), None],
            "postcode": ["LS6 2AB", None],
            "code": ["WBRI", "BCRB"],
            "rate": [55.0, 99.0],
            "visits": [1, 7],
            "flag": [False, True],
            "status": ["open", None],
            **{name: [f"SENTINEL-{name}-0", f"SENTINEL-{name}-1"] for name in EXTRA},
        },
        schema=SOURCE_SCHEMA,
    )
    case = Case([SUBJECT, MARKER, *OPTIONAL], [], overridden, table, frozenset(), 1)
    contract = contract_for(case)
    _, out = minimise(contract, case)
    guard.check(out.schema, contract)
    first = out.to_pylist()[0]
    assert first["group"] == "White"
    assert first["rate_band"] == "50-89"
    assert first["age_band"] == "11-15"
    assert first["sector"] == "LS6 2"
    assert out.num_rows == (2 if overridden else 1)
