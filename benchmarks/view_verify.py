"""What the Exchanges view's verification costs a page: every entry read, against only those
appended since the last full read (`Ledger.verify_from`).

    python benchmarks/view_verify.py [--entries 100000] [--repeat 5] [--appended 1 100]

Builds a SQLite ledger of N entries with a checkpoint handed out (`ledger_history.build`), then
times, alternately: a full verification (`verify_from(whole=True)`, what a page does every few
minutes), and the cheap one after K new entries (what the pages in between do). Also times
`reporting.build` over every entry, the rest of a page's reading, for scale. Prints medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ledger_history import ORIGIN, build

from exchange import reporting
from exchange.audit.anchor import Anchor
from exchange.audit.ledger import Ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--appended", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="view-verify-"))
    try:
        measure(root, args.entries, args.repeat, args.appended)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, entries: int, repeat: int, appended: list[int]) -> None:
    url, key = f"sqlite:///{root / 'audit.db'}", Ed25519PrivateKey.generate()
    took = build(url, Anchor(root / "anchor"), entries, key, "c-1")
    print(f"building {entries} entries: {took:.1f} s")
    ledger = Ledger(url, anchor=root / "anchor")  # fills the stored Merkle nodes once
    public = key.public_key()
    full, cheap = [], {k: [] for k in appended}
    result, mark = ledger.verify_from(None, public_key=public, origin=ORIGIN)
    assert result.ok and mark is not None
    for _ in range(repeat):
        started = time.perf_counter()
        result, mark = ledger.verify_from(mark, whole=True, public_key=public, origin=ORIGIN)
        full.append(time.perf_counter() - started)
        assert result.ok and mark is not None
        for count in appended:
            for n in range(count):
                ledger.append("step", {"n": n}, run_id="bench", contract_id="c-1")
            started = time.perf_counter()
            result, mark = ledger.verify_from(mark, public_key=public, origin=ORIGIN)
            cheap[count].append(time.perf_counter() - started)
            assert result.ok and mark is not None
    today = dt.date.today()
    started = time.perf_counter()
    reporting.build(ledger.entries(), today - dt.timedelta(days=30), today)
    report = time.perf_counter() - started
    ledger.close()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {repeat} repeats")
    print(f"full verification, every entry: {statistics.median(full) * 1000:9.1f} ms")
    for count, times in cheap.items():
        median = statistics.median(times)
        print(
            f"after {count:>5} new entries:          {median * 1000:9.1f} ms"
            f"  ({statistics.median(full) / median:.0f}x less)"
        )
    print(f"reporting.build over every entry: {report * 1000:7.1f} ms (once; not cached)")


if __name__ == "__main__":
    main()
