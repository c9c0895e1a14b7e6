"""The audit ledger at scale: append rate, checkpoint time, proof sizes and times at N entries.

    python benchmarks/ledger_scale.py [--entries 10000000] [--appends 2000] [--repeat 5]

Builds a ledger of N valid entries by bulk insert with a checkpoint of it handed out (as
`ledger_history.py` does), then measures on it: appends one at a time (entries per second,
each a locked append with its hash chained), signing a checkpoint that extends the last one,
an RFC 9162 inclusion proof of an entry in the middle, and consistency proofs from the last
handed-out checkpoint (the anchor's right edge: only the new entries are read) and from an
older size no checkpoint was handed out at (every leaf read). Prints medians and proof sizes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_history import ORIGIN, SAMPLE_ID, build

from exchange.audit.anchor import Anchor
from exchange.audit.events import Event
from exchange.audit.ledger import Ledger
from exchange.audit.proofs import verify_inclusion


def timed(repeat: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """The median seconds of `repeat` calls, and the last call's result."""
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-ledger-scale-"))
    try:
        measure(root, args.entries, args.appends, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, entries: int, appends: int, repeat: int) -> None:
    key = Ed25519PrivateKey.generate()
    url = f"sqlite:///{root / 'ledger.db'}"
    anchor = Anchor(root / "checkpoints")
    built = build(url, anchor, entries, key, SAMPLE_ID)
    size = (root / "ledger.db").stat().st_size
    print(f"{entries:,} entries built by bulk insert in {built:.0f} s ({size / 2**30:.2f} GiB)")
    ledger = Ledger(url, anchor=anchor)

    started = time.perf_counter()
    for i in range(appends):
        ledger.append(Event.TRANSFER_ATTEMPT, {"attempt": 1}, run_id=f"r{i}", contract_id="c")
    rate = appends / (time.perf_counter() - started)
    print(f"appends, one at a time (locked, hash-chained): {rate:,.0f} per second")

    counter = iter(range(10**9))

    def checkpoint() -> Any:
        ledger.append(Event.TRANSFER_ATTEMPT, {"attempt": 1}, run_id=f"c{next(counter)}")
        return ledger.checkpoint(key, ORIGIN)

    seconds, made = timed(repeat, checkpoint)
    print(f"sign a checkpoint extending the last one (after one append): {seconds * 1000:.1f} ms")

    middle = entries // 2
    seconds, inclusion = timed(max(1, repeat // 2), lambda: ledger.prove_inclusion(middle))
    hashes = len(inclusion.path)
    print(
        f"inclusion proof of entry {middle:,} in a tree of {inclusion.tree_size:,}: "
        f"{hashes} hashes ({hashes * 32} bytes), made in {seconds:.2f} s"
    )
    started = time.perf_counter()
    verify_inclusion(inclusion, made.note, key.public_key())
    print(
        f"  checked against the signed checkpoint in {(time.perf_counter() - started) * 1e3:.1f} ms"
    )

    handed = entries
    seconds, (_, proof) = timed(repeat, lambda: ledger.consistency(handed, made.size))
    print(
        f"consistency proof {handed:,} -> {made.size:,} from the handed-out checkpoint's edge: "
        f"{len(proof)} hashes, {seconds * 1000:.1f} ms"
    )
    older = entries // 3
    seconds, (_, proof) = timed(1, lambda: ledger.consistency(older, made.size))
    print(
        f"consistency proof {older:,} -> {made.size:,} with no checkpoint there (every leaf "
        f"read): {len(proof)} hashes, {seconds:.2f} s"
    )
    ledger.close()


if __name__ == "__main__":
    main()
