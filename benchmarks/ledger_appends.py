"""Ledger appends per second with several workers writing to one PostgreSQL ledger at once.

    python benchmarks/ledger_appends.py [--writers 1,2,4,8] [--appends 200]

Starts a private PostgreSQL server (tests/pg.py: loopback, fsync off, so an upper bound on
a real server's rate), then for each number of writers starts that many processes, each with
its own connection, which append `--appends` entries as fast as they can, as agreements'
tasks on several Airflow workers would. Prints the wall time, the appends per second in all
and per writer, then verifies the chain (one chain, no fork).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path

from exchange.audit import Ledger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pg import PrivatePostgres


def _writer(url: str, writer: int, count: int, go: Event) -> None:
    ledger = Ledger(url)
    ledger.head()  # connect before the start signal
    go.wait(60)
    for i in range(count):
        ledger.append("run.prepared", {"writer": writer, "i": i}, run_id=f"bench-{writer}-{i}")
    ledger.close()


def measure(url: str, writers: int, appends: int) -> float:
    """Seconds for `writers` processes to append `appends` entries each."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    procs = [context.Process(target=_writer, args=(url, w, appends, go)) for w in range(writers)]
    for proc in procs:
        proc.start()
    time.sleep(2.0)  # let every process import and connect
    started = time.perf_counter()
    go.set()
    for proc in procs:
        proc.join(600)
        if proc.exitcode != 0:
            raise SystemExit(f"a writer failed (exit {proc.exitcode})")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, PrivatePostgres(Path(tmp)) as server:
        for n in [int(w) for w in args.writers.split(",")]:
            database = f"ledger_{n}"
            server.psql(f"CREATE DATABASE {database}")
            url = server.url(database=database)
            Ledger(url).close()  # create the tables first
            seconds = measure(url, n, args.appends)
            total = n * args.appends
            ledger = Ledger(url)
            report = ledger.verify()
            ledger.close()
            state = "verifies" if report.broken_at is None else f"BROKEN at {report.broken_at}"
            print(
                f"{n} writer(s): {total} appends in {seconds:.2f} s = {total / seconds:.0f}/s "
                f"({total / seconds / n:.0f}/s per writer); chain of {report.entries} entries "
                f"{state}"
            )


if __name__ == "__main__":
    main()
