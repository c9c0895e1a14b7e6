"""Proofs from stored Merkle nodes beside the leaf-based baseline, at N entries.

    python benchmarks/ledger_proofs.py [--entries 1000000] [--repeat 3] [--appends 2048]
                                       [--verify]

Builds a ledger of N valid entries by bulk insert as `ledger_history.py` does: entries only,
which is also the layout of a ledger written before the node table. Then measures:

- the one-off fill of the node table when the gateway first opens it (one streaming pass);
- inclusion and consistency proofs at several positions, from the stored nodes (what
  `Ledger.prove_inclusion` / `prove_consistency` do now) and from every leaf (what they did
  before: `Ledger.leaves` then `merkle`), alternately, checking that both give the same bytes;
- appends one at a time with the node writes and without (the code before), alternately in
  batches, so each crosses the same number of block boundaries;
- with --verify, `Ledger.verify` with the node check and without it.

Prints medians and the ratios.
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

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_history import SAMPLE_ID, build

from exchange.audit import merkle
from exchange.audit.anchor import Anchor
from exchange.audit.events import Event
from exchange.audit.ledger import Ledger
from exchange.audit.storage import BLOCK


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def cpu_timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (CPU is steadier on a shared machine), and the result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def leaf_inclusion(ledger: Ledger, seq: int, size: int) -> list[bytes]:
    """The code before: every leaf read, then the proof."""
    leaves = ledger.leaves(size)
    ledger.store.entry(seq)
    return merkle.inclusion_proof(seq - 1, leaves)


def leaf_consistency(ledger: Ledger, old: int, size: int) -> list[bytes]:
    return merkle.consistency_proof(old, ledger.leaves(size))


def compare(
    name: str, repeat: int, baseline: Callable[[], Any], stored: Callable[[], Any]
) -> tuple[float, float]:
    """Median seconds of each, run alternately; both must give the same proof."""
    before, after, cpu = [], [], []
    for _ in range(repeat):
        seconds, expected = timed(baseline)
        before.append(seconds)
        seconds, used, got = cpu_timed(stored)
        after.append(seconds)
        cpu.append(used)
        if list(got) != list(expected):
            raise SystemExit(f"{name}: the proofs differ")
    b, a = statistics.median(before), statistics.median(after)
    print(
        f"  {name}: every leaf {b:.2f} s, stored nodes {a * 1000:.2f} ms "
        f"({statistics.median(cpu) * 1000:.2f} ms CPU): {b / a:,.0f}x faster"
    )
    return b, a


def appends(ledger: Ledger, count: int, *, nodes: bool) -> list[float]:
    ledger.store.has_nodes = nodes  # False: the append of the code before (entries only)
    out = []
    for i in range(count):
        started = time.perf_counter()
        ledger.append(Event.TRANSFER_ATTEMPT, {"attempt": 1}, run_id=f"b{i}", contract_id="c")
        out.append(time.perf_counter() - started)
    ledger.store.has_nodes = True
    return out


def measure(root: Path, entries: int, repeat: int, count: int, check: bool) -> None:
    key = Ed25519PrivateKey.generate()
    url = f"sqlite:///{root / 'ledger.db'}"
    anchor = Anchor(root / "checkpoints")
    built = build(url, anchor, entries, key, SAMPLE_ID)
    print(f"{entries:,} entries built by bulk insert in {built:.0f} s (no node table rows)")

    seconds, ledger = timed(lambda: Ledger(url, anchor=anchor))
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM audit_merkle_nodes")).scalar()
    per = seconds / entries * 1e6
    print(
        f"first open fills the node table: {rows:,} nodes in {seconds:.1f} s ({per:.1f} us per "
        f"entry, once); opening again: {timed(lambda: Ledger(url).close())[0] * 1000:.1f} ms"
    )

    size = ledger.head()[0]
    print(f"proofs in the tree of {size:,} entries (median of {repeat}, alternately):")
    ratios = []
    for seq in (1, size // 2 + 17, size - 3):
        b, a = compare(
            f"inclusion of entry {seq:,}",
            repeat,
            lambda seq=seq: leaf_inclusion(ledger, seq, size),
            lambda seq=seq: ledger.prove_inclusion(seq, size).path,
        )
        ratios.append(b / a)
    for old in (size // 3 + 5, size - BLOCK - 9):
        b, a = compare(
            f"consistency {old:,} -> {size:,}",
            repeat,
            lambda old=old: leaf_consistency(ledger, old, size),
            lambda old=old: ledger.prove_consistency(old, size),
        )
        ratios.append(b / a)
    print(f"  smallest speed-up: {min(ratios):,.0f}x")

    # Appends: batches alternately without and with node writes, each crossing block ends.
    before: list[float] = []
    after: list[float] = []
    batch = max(BLOCK, count // 4)
    for _ in range(max(1, count // batch)):
        before += appends(ledger, batch, nodes=False)
        ledger.store.fill_nodes()  # untimed: the blocks just written, as the next open would
        after += appends(ledger, batch, nodes=True)
    b, a = statistics.mean(before), statistics.mean(after)
    print(
        f"appends, one at a time ({len(before):,} each): before {b * 1000:.2f} ms per entry, "
        f"with node writes {a * 1000:.2f} ms per entry ({a / b:.2f}x); slowest append "
        f"{max(before) * 1000:.1f} ms before, {max(after) * 1000:.1f} ms with nodes"
    )

    if check:
        ledger.store.has_nodes = False
        plain, result = timed(ledger.verify)
        ledger.store.has_nodes = True
        full, checked = timed(ledger.verify)
        assert result.ok and checked.ok, (result.message, checked.message)
        print(
            f"verify: {plain:.1f} s without the node check, {full:.1f} s with it "
            f"({full / plain:.2f}x)"
        )
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--appends", type=int, default=2048)
    parser.add_argument("--verify", action="store_true", help="also time Ledger.verify")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-ledger-proofs-"))
    try:
        measure(root, args.entries, args.repeat, args.appends, args.verify)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
