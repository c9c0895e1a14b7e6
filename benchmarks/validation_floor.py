"""What Great Expectations alone costs an exchange, beside the raw chain on the same file.

    python benchmarks/validation_floor.py                  # 1,000,000 rows, 3 repeats
    python benchmarks/validation_floor.py --rows 10000000 --repeat 1

Two parts of every `exchange run` that no faster code of ours can remove while every rule is
checked on every row by Great Expectations:
  import   `import validators.suite` in a new interpreter (GX and what it loads), median;
  validate the time the gateway spends inside GX's validate over the run's windows (an
           in-process run with the validator's calls timed; the rest of the run is not counted).
Their sum is the floor under the end-to-end ratio; it is printed against the raw chain
(pyarrow -> age -> OpenSSH, exchange_vs_raw.py's baseline) measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from _workbench import workbench
from exchange_vs_raw import raw_run

from exchange.contract import load_contract
from exchange.minimise import source_types


def import_seconds(repeat: int) -> tuple[float, float]:
    """Median wall and CPU of importing the validation engine in a new interpreter."""
    code = (
        "import time, resource; w = time.perf_counter(); import validators.suite; "
        "u = resource.getrusage(resource.RUSAGE_SELF); "
        "print(time.perf_counter() - w, u.ru_utime + u.ru_stime)"
    )
    walls, cpus = [], []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
        )
        wall, cpu = map(float, done.stdout.split())
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def validate_seconds(bench, source) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    """Seconds inside BatchValidator.validate during one in-process run; rows and windows."""
    import validators.suite as suite

    spent = [0.0, 0, 0]
    original = suite.BatchValidator.validate

    def timed(self, frame):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(self, frame)
        finally:
            spent[0] += time.perf_counter() - start
            spent[1] += len(frame)
            spent[2] += 1

    suite.BatchValidator.validate = timed  # type: ignore[method-assign]
    try:
        bench.gateway().run(bench.contract, source)
    finally:
        suite.BatchValidator.validate = original  # type: ignore[method-assign]
    return spent[0], int(spent[1]), int(spent[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bench = workbench()
    bench.env["EXCHANGE_VALIDATION_WORKER"] = "0"  # validate in this process, timed
    try:
        source = bench.source(args.rows)
        contract = load_contract(bench.contract)
        columns = list(source_types(contract))
        imp_wall, imp_cpu = import_seconds(args.repeat)
        runs = [validate_seconds(bench, source) for _ in range(args.repeat)]
        val = statistics.median(r[0] for r in runs)
        rows, windows = runs[0][1], runs[0][2]
        raw = statistics.median(
            raw_run(bench, source, columns, contract.recipient_keys[0]).wall
            for _ in range(args.repeat)
        )
    finally:
        bench.server.stop()
        shutil.rmtree(bench.root, ignore_errors=True)
    floor = imp_wall + val
    print(f"{args.rows:,} rows; medians of {args.repeat}")
    print(f"  import validators.suite (GX)   {imp_wall:7.2f} s wall  {imp_cpu:6.2f} s CPU")
    print(f"  GX validate ({windows} windows)     {val:7.2f} s wall  ({rows:,} rows)")
    print(f"  floor (import + validate)      {floor:7.2f} s")
    print(f"  raw chain                      {raw:7.2f} s wall")
    print(f"  floor / raw chain              {floor / raw:7.2f}x")


if __name__ == "__main__":
    main()
