"""Time a whole exchange and each of its stages, beside plain baselines on the same data.

    python benchmarks/exchange_throughput.py [--rows 1000000]

Stages are timed one after another over the same source (each stage reading the previous one's
output from memory), then the whole exchange is timed end to end through Gateway.run, which
streams all stages together. Baselines: pyarrow reading the same columns (the floor for the
extract), the `age` command encrypting the same plaintext, and OpenSSH's `sftp` uploading the
same ciphertext.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from _workbench import FOLDER, workbench

from exchange import guard, payload
from exchange.contract import load_contract
from exchange.crypto import age
from exchange.minimise import Minimiser, source_types
from exchange.quality import QualityGate
from exchange.secrets import LocalSecrets
from exchange.settings import Settings
from exchange.sources import open_source
from exchange.types import arrow_type


def timed(label: str, fn: Callable[[], Any], rows: int, results: list) -> Any:
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    results.append((label, seconds, rows / seconds if seconds else float("inf")))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    bench = workbench()
    try:
        run(bench, args.rows)
    finally:
        bench.server.stop()
        shutil.rmtree(bench.root, ignore_errors=True)


def run(bench: Any, rows: int) -> None:
    print(f"generating {rows:,} synthetic rows ...", flush=True)
    source_path = bench.source(rows)
    size_mb = source_path.stat().st_size / 1e6
    contract = load_contract(bench.contract)
    settings = Settings.from_env(bench.env)
    key = LocalSecrets(settings.secrets_file).secret(contract.pseudonymisation_key or "")
    types = source_types(contract)
    schema = pa.schema([pa.field(f.name, arrow_type(f.logical_type)) for f in contract.fields])
    results: list[tuple[str, float, float]] = []
    import validators.suite  # noqa: F401 - Great Expectations' one-off import is not a stage

    source = open_source(source_path)
    batches = timed(
        "extract (10 of 16 columns)", lambda: list(source.batches(types)), rows, results
    )
    minimiser = Minimiser(contract, pseudonym_key=key)
    out = timed("minimise", lambda: [minimiser(b).cast(schema) for b in batches], rows, results)
    timed("guard", lambda: [guard.check(b.schema, contract) for b in out], rows, results)

    def validate() -> list[pa.RecordBatch]:
        gate = QualityGate(contract)
        released = [r for b in out for r in gate.add(b)]
        return released + gate.finish()

    validated = timed("validate (Great Expectations)", validate, rows, results)
    plaintext = io.BytesIO()
    timed(
        "encode CSV",
        lambda: [plaintext.write(c) for c in payload.encode(validated, "csv", schema)],
        rows,
        results,
    )
    with tempfile.TemporaryDirectory() as scratch:
        cipher = Path(scratch) / "data.csv.age"
        with cipher.open("wb") as sink:
            timed(
                "encrypt (pyrage)",
                lambda: age.encrypt_chunks([plaintext.getvalue()], sink, contract.recipient_keys),
                rows,
                results,
            )
        plain_file = Path(scratch) / "plain.csv"
        plain_file.write_bytes(plaintext.getvalue())
        baseline: list[tuple[str, float, float]] = []
        timed(
            "pyarrow read_csv, same columns",
            lambda: pacsv.read_csv(
                source_path,
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(include_columns=list(types)),
            ),
            rows,
            baseline,
        )
        timed(
            "age CLI encrypt, same plaintext",
            lambda: subprocess.run(
                [
                    "age",
                    "-r",
                    contract.recipient_keys[0],
                    "-o",
                    str(Path(scratch) / "b.age"),
                    str(plain_file),
                ],
                check=True,
            ),
            rows,
            baseline,
        )
        server = bench.server
        timed(
            "OpenSSH sftp put, same ciphertext",
            lambda: subprocess.run(
                [
                    "sftp",
                    "-q",
                    "-b",
                    "-",
                    "-i",
                    str(server.client_key_path),
                    "-o",
                    f"UserKnownHostsFile={server.known_hosts_path}",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-P",
                    str(server.port),
                    f"{server.username}@{server.host}",
                ],
                input=f"put {cipher} {FOLDER}/baseline.age\n".encode(),
                check=True,
                capture_output=True,
            ),
            rows,
            baseline,
        )
    gateway = bench.gateway()
    whole: list[tuple[str, float, float]] = []
    result = timed(
        "exchange end to end (Gateway.run)",
        lambda: gateway.run(bench.contract, source_path),
        rows,
        whole,
    )
    print(f"\n{rows:,} rows, source CSV {size_mb:,.0f} MB, {result.rows_sent:,} rows sent")
    print(f"\n{'stage':40} {'seconds':>9} {'rows/s':>12}")
    for label, seconds, rate in results:
        print(f"{label:40} {seconds:9.2f} {rate:12,.0f}")
    stage_total = sum(s for _, s, _ in results)
    print(f"{'sum of stages':40} {stage_total:9.2f}")
    print(f"\n{'baseline':40} {'seconds':>9}")
    for label, seconds, _ in baseline:
        print(f"{label:40} {seconds:9.2f}")
    end_to_end = whole[0][1]
    print(f"\n{'exchange end to end, incl. SFTP':40} {end_to_end:9.2f} {rows / end_to_end:12,.0f}")
    extract = results[0][1]
    print("\nratios")
    print(f"  extract / pyarrow read_csv:        {extract / baseline[0][1]:5.2f}x")
    print(f"  encrypt / age CLI:                 {results[5][1] / baseline[1][1]:5.2f}x")
    print(f"  end to end / pyarrow read_csv:     {end_to_end / baseline[0][1]:5.2f}x")


if __name__ == "__main__":
    main()
