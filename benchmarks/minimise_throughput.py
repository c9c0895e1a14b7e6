"""Time the minimise stage beside plain pyarrow column selection, and each transform alone.

    python benchmarks/minimise_throughput.py [--rows 1000000] [--repeat 3]

The data is synthetic (exchange.synth), generated once and held in memory, cast to the types the
source would deliver, so only minimisation is timed. The baselines select the same source columns
from the same batches with pyarrow (zero-copy, so nearly free), and select and copy them.
Per-transform timings apply each transform (and each filter) to one 1M-row column;
"pseudonymise, per-row hmac (before)" is the implementation this replaced. Each figure is the
best of --repeat runs.
"""

from __future__ import annotations

import argparse
import hmac
import tempfile
import time
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from exchange import filters, synth, transforms
from exchange.contract import Contract, load_contract, read_document
from exchange.minimise import Minimiser, source_types

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "contracts" / "school-attendance-to-early-help.yaml"
KEY = bytes(range(32))
TODAY = synth.DEFAULT_TODAY


def best(fn: Callable[[], Any], repeat: int) -> float:
    """The shortest of `repeat` timed calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def old_pseudonymise(values: pa.Array) -> pa.Array:
    """The per-row hmac loop pseudonymise used before (for the before/after figure)."""
    keyed = hmac.new(KEY, digestmod=sha256)
    out: list[str | None] = []
    for value in values.to_pylist():
        if value is None:
            out.append(None)
            continue
        mac = keyed.copy()
        mac.update(value.encode("utf-8"))
        out.append(mac.hexdigest()[:32])
    return pa.array(out, type=pa.string())


def filtered_contract(folder: Path) -> Contract:
    """The sample contract plus two purpose filters and an age band."""
    document = read_document(SAMPLE)
    document["customProperties"].append(
        {
            "property": "filters",
            "value": [
                {"column": "date_of_birth", "op": "age_under", "value": 16},
                {"column": "attendance_rate", "op": "<", "value": 95},
            ],
        }
    )
    for prop in document["schema"][0]["properties"]:
        if prop["name"] == "birth_month":
            prop["customProperties"][1]["value"] = {"to": "age-band", "bands": [0, 5, 11]}
            prop.pop("logicalTypeOptions")
    path = folder / "filtered.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_contract(path)


def stage(
    label: str,
    contract: Contract,
    batches: list[pa.RecordBatch],
    rows: int,
    repeat: int,
    objecting: pa.Array | None = None,
) -> None:
    """Minimise every batch; print rows/s beside selecting the same columns."""
    types = source_types(contract)
    typed = [
        pa.RecordBatch.from_arrays(
            [b.column(name).cast(kind) for name, kind in types.items()], names=list(types)
        )
        for b in batches
    ]
    columns = list(types)

    def minimise() -> None:
        m = Minimiser(contract, pseudonym_key=KEY, today=TODAY, objecting_ids=objecting)
        for b in typed:
            m(b)

    def select() -> None:
        for b in typed:
            b.select(columns)

    def copy() -> None:
        pa.Table.from_batches([b.select(columns) for b in typed]).combine_chunks()

    m_s, s_s, c_s = best(minimise, repeat), best(select, repeat), best(copy, repeat)
    print(f"{label}")
    print(f"  {'minimise':44} {m_s:8.3f} s {rows / m_s:15,.0f} rows/s")
    print(f"  {'pyarrow select, same columns':44} {s_s:8.3f} s {rows / s_s:15,.0f} rows/s")
    print(f"  {'pyarrow select + copy, same columns':44} {c_s:8.3f} s {rows / c_s:15,.0f} rows/s")
    print(f"  minimise / select {m_s / s_s:,.0f}x; minimise / select + copy {m_s / c_s:,.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows, repeat = args.rows, args.repeat
    print(f"generating {rows:,} synthetic rows in memory ...", flush=True)
    batches = list(synth.batches(rows, seed=1, batch_rows=100_000))
    table = pa.Table.from_batches(batches).combine_chunks()
    sample = load_contract(SAMPLE)
    ids = table.column("person_id").combine_chunks()
    objecting = pc.take(ids, pa.array(range(0, len(ids), 100)))  # 1% of people on the list

    print(f"\nminimise stage, {rows:,} rows in batches of 100,000")
    stage("sample contract", sample, batches, rows, repeat)
    stage("sample + objection list (1% of ids)", sample, batches, rows, repeat, objecting)
    with tempfile.TemporaryDirectory() as folder:
        extended = filtered_contract(Path(folder))
    stage("sample + 2 filters + age band", extended, batches, rows, repeat)

    text = ids
    dates = table.column("date_of_birth").combine_chunks()
    postcodes = table.column("postcode").combine_chunks()
    codes = table.column("ethnicity").combine_chunks()
    rates = table.column("attendance_rate").combine_chunks()
    counts = pc.cast(table.column("exclusions").combine_chunks(), pa.int64())
    ethnic = {c: f"group-{i % 5}" for i, c in enumerate(pc.unique(codes).drop_null().to_pylist())}
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("keep", lambda: transforms.keep()(text)),
        ("pseudonymise, per-row hmac (before)", lambda: old_pseudonymise(text)),
        ("pseudonymise (now)", lambda: transforms.pseudonymise(KEY)(text)),
        ("hash", lambda: transforms.hash_()(text)),
        ("generalise-date year", lambda: transforms.generalise_date("year")(dates)),
        ("generalise-date year-month", lambda: transforms.generalise_date("year-month")(dates)),
        (
            "generalise-date age-band (5 bands)",
            lambda: transforms.generalise_date("age-band", bands=[0, 5, 11, 16, 18], today=TODAY)(
                dates
            ),
        ),
        ("postcode-district", lambda: transforms.postcode_district(postcodes)),
        ("postcode-sector", lambda: transforms.postcode_sector(postcodes)),
        ("truncate 3", lambda: transforms.truncate(3)(postcodes)),
        ("top-code", lambda: transforms.top_code(90.0)(rates)),
        ("band (3 bands)", lambda: transforms.band([0, 50, 90])(rates)),
        ("map (with default)", lambda: transforms.lookup(ethnic, default="x", strict=False)(codes)),
    ]
    rules = filters.parse(
        [
            {"column": "date_of_birth", "op": "age_under", "value": 16},
            {"column": "ethnicity", "op": "in", "value": list(ethnic)[:3]},
            {"column": "exclusions", "op": ">=", "value": 1},
            {"column": "ethnicity", "op": "not_null"},
        ]
    )
    kinds = {"date_of_birth": "date", "ethnicity": "string", "exclusions": "integer"}
    frame = pa.table({"date_of_birth": dates, "ethnicity": codes, "exclusions": counts})
    for rule in rules:
        expression = filters.expression(rule, kinds[rule.column], TODAY)
        cases.append((f"filter {rule.op}", lambda e=expression: frame.filter(e)))
    cases.append(("objection list match (1% of ids)", lambda: pc.is_in(text, value_set=objecting)))

    print(f"\nper transform / filter, one column of {len(text):,} values")
    for label, fn in cases:
        seconds = best(fn, repeat)
        print(f"{label:46} {seconds:8.3f} s {len(text) / seconds:13,.0f} rows/s")


if __name__ == "__main__":
    main()
