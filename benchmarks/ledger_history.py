"""Does history slow a run? A run's ledger work on an empty ledger beside a large one.

    python benchmarks/ledger_history.py [--entries 1000000] [--repeat 5] [--run ROWS]

Builds a ledger of N valid entries quickly (entries sealed in Python, inserted in bulk through
the database driver, the Merkle tree's right edge kept on the way) with a signed checkpoint of it
handed out, as a gateway that has run for years would have. Then, alternately on that ledger
and on an empty one, times what one run does to the ledger: open it, look its run up by id,
check for suspensions, find the incremental watermark, append its entries, read the head and
sign a checkpoint. Prints the medians and their ratio (target: within 10%).

With `--run ROWS`, two gateways instead (one with each ledger) deliver ROWS rows to a real
sshd with `exchange run`, alternately, and the whole runs' wall and CPU times are compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit.anchor import Anchor, Anchored
from exchange.audit.checkpoint import sign_checkpoint
from exchange.audit.entry import GENESIS, seal
from exchange.audit.events import Event
from exchange.audit.ledger import Ledger
from exchange.audit.merkle import RootBuilder
from exchange.audit.storage import Store
from exchange.contract import Contract, load_contract
from exchange.operations.incremental import watermark
from exchange.sandbox import PartnerSftpServer
from exchange.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "contracts" / "school-attendance-to-early-help.yaml"
SAMPLE_ID = "school-attendance-to-early-help"
ORIGIN = "exchange-gateway/benchmark"
CHUNK = 50_000
INSERT = (
    "INSERT INTO audit_ledger (seq, recorded_at, event, run_id, contract_id, body, prev_hash, "
    "entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# One past run, as the gateway writes it (the bodies are of realistic size, not content).
RUN = (
    (Event.CONTRACT_CHECKED, {"contract_sha256": "ab" * 32, "approved_by": "Officer (IG)"}),
    (
        Event.RUN_PREPARED,
        {"drop_id": "d", "rows": {"read": 1000, "sent": 969}, "sha256": "cd" * 32},
    ),
    (Event.TRANSFER_ATTEMPT, {"drop_id": "d", "attempt": 1, "folder": "inbox/attendance"}),
)


def history(entries: int, contracts: list[str]) -> Iterator[tuple]:
    """Rows of a valid chain of `entries` entries, last the tree's head hash and edge."""
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    prev = GENESIS
    for seq in range(1, entries + 1):
        run = seq // 4
        contract_id = contracts[run % len(contracts)]
        at = (start + dt.timedelta(seconds=seq)).isoformat(timespec="microseconds")
        if seq % 4 == 3:
            event, body = (
                Event.TRANSFER_SENT,
                {
                    "drop_id": f"drop-{run}",
                    "manifest_sha256": "ef" * 32,
                    "watermark": at,
                },
            )
        else:
            event, body = RUN[seq % 4]
        entry = seal(
            seq,
            prev,
            recorded_at=at,
            event=event,
            body=body,
            run_id=f"run-{run}",
            contract_id=contract_id,
        )
        prev = entry.entry_hash
        yield entry


def build(
    url: str,
    anchor: Anchor,
    entries: int,
    key: Ed25519PrivateKey,
    contract: str,
    origin: str = ORIGIN,
) -> float:
    """A ledger of `entries` entries and a checkpoint of it handed out; seconds taken."""
    started = time.perf_counter()
    store = Store(url)  # the tables and their indexes, as the gateway makes them
    builder = RootBuilder()
    head = GENESIS
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        batch: list[tuple] = []
        for entry in history(entries, [contract, "other-agreement-a", "other-agreement-b"]):
            builder.append(entry.leaf)
            head = entry.entry_hash
            batch.append(tuple(entry.columns().values()))
            if len(batch) == CHUNK:
                cursor.executemany(INSERT, batch)
                batch.clear()
        if batch:
            cursor.executemany(INSERT, batch)
        cursor.execute("COMMIT")
    finally:
        raw.close()
    if entries:
        made = sign_checkpoint(origin, builder.size, builder.root(), key)
        now = dt.datetime.now(dt.UTC)
        anchor.record(Anchored(made, head, tuple(builder.edge)), at=now)
        store.add_checkpoint(made, now.isoformat(timespec="microseconds"))
    store.close()
    return time.perf_counter() - started


def run_work(url: str, anchor: Anchor, key: Ed25519PrivateKey, contract: Contract) -> float:
    """Seconds for one run's ledger work, as the gateway's stages do it, in order."""
    run_id = f"bench-{uuid.uuid4().hex}"
    started = time.perf_counter()
    ledger = Ledger(url, anchor=anchor)
    assert ledger.find(Event.CONTRACT_CHECKED, run_id=run_id, contract_id=contract.id) is None
    list(ledger.newest(Event.CONTRACT_SUSPENDED, contract_id=contract.id))  # suspensions
    since = watermark(ledger, contract)
    ledger.append(
        Event.CONTRACT_CHECKED,
        {"contract_sha256": "ab" * 32},
        run_id=run_id,
        contract_id=contract.id,
    )
    assert ledger.find(Event.RUN_PREPARED, run_id=run_id, contract_id=contract.id) is None
    ledger.append(
        Event.RUN_PREPARED,
        {"drop_id": run_id, "since": since.isoformat() if since else None},
        run_id=run_id,
        contract_id=contract.id,
    )
    ledger.head()
    ledger.checkpoint(key, ORIGIN)
    assert ledger.find(Event.TRANSFER_SENT, run_id=run_id, contract_id=contract.id) is None
    ledger.append(
        Event.TRANSFER_ATTEMPT,
        {"drop_id": run_id, "attempt": 1},
        run_id=run_id,
        contract_id=contract.id,
    )
    now = dt.datetime.now(dt.UTC).isoformat()
    ledger.append(
        Event.TRANSFER_SENT,
        {"drop_id": run_id, "manifest_sha256": "ef" * 32, "watermark": now},
        run_id=run_id,
        contract_id=contract.id,
    )
    ledger.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--run",
        type=int,
        metavar="ROWS",
        help="time whole `exchange run`s of ROWS rows instead (a gateway per ledger, real sshd)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-ledger-history-"))
    try:
        if args.run:
            measure_runs(root, args.entries, args.repeat, args.run)
        else:
            measure(root, args.entries, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, entries: int, repeat: int) -> None:
    key = Ed25519PrivateKey.generate()
    contract = load_contract(SAMPLE)
    ledgers = {}
    for name, size in (("empty", 0), ("large", entries)):
        url = f"sqlite:///{root / name / 'ledger.db'}"
        anchor = Anchor(root / name / "checkpoints")
        seconds = build(url, anchor, size, key, contract.id)
        print(
            f"{name} ledger: {size:,} entries built by bulk insert in {seconds:.1f} s", flush=True
        )
        ledgers[name] = (url, anchor)
    times: dict[str, list[float]] = {"empty": [], "large": []}
    for _ in range(repeat):  # alternately, so machine noise hits both
        for name, (url, anchor) in ledgers.items():
            times[name].append(run_work(url, anchor, key, contract))
    empty, large = (statistics.median(times[n]) for n in ("empty", "large"))
    print(f"a run's ledger work, median of {repeat}: open, find by run, suspensions, watermark,")
    print("4 appends, head, checkpoint (signed from the last one's right edge)")
    print(f"  empty ledger            {empty * 1000:8.1f} ms")
    print(f"  {entries:>9,} entries     {large * 1000:8.1f} ms")
    print(f"  ratio                   {large / empty:8.2f}x (target <= 1.10)")


def measure_runs(root: Path, entries: int, repeat: int, rows: int) -> None:
    """Whole runs, as a user types them, by a gateway with an empty and with a long ledger."""
    from startup import EXCHANGE, FOLDER, gateway_home, timed

    from exchange import synth
    from exchange.audit.anchor import anchor_folder
    from exchange.crypto.signing import key_id, load_private_key

    server = PartnerSftpServer(root / "partner").start()
    try:
        (server.root / FOLDER).mkdir(parents=True)
        commands = {}
        for name, size in (("empty", 0), ("large", entries)):

            def history(settings: Settings, size: int = size, name: str = name) -> None:
                key = load_private_key(settings.signing_key)
                origin = settings.checkpoint_origin(key_id(key.public_key()))
                anchor = Anchor(anchor_folder(settings.home))
                seconds = build(settings.audit_url, anchor, size, key, SAMPLE_ID, origin)
                print(f"{name} ledger: {size:,} entries built by bulk insert in {seconds:.1f} s")

            env, contract, _ = gateway_home(root / name, server, history)
            source = synth.write(root / name / "sources" / "attendance_export.csv", rows, seed=1)
            commands[name] = ([EXCHANGE, "run", str(contract), "--source", str(source)], env)

        def clear_inbox() -> None:
            for drop in (server.root / FOLDER).iterdir():
                shutil.rmtree(drop)

        results: dict[str, list[tuple[float, float]]] = {"empty": [], "large": []}
        for _ in range(repeat):  # alternately, so machine noise hits both
            for name, (argv, env) in commands.items():
                results[name].append(timed(argv, {**os.environ, **env}, 1, clear_inbox))
        print(f"`exchange run` of {rows:,} rows, median of {repeat} (wall / CPU seconds)")
        medians = {
            n: tuple(statistics.median(r[i] for r in results[n]) for i in (0, 1)) for n in results
        }
        for name, label in (("empty", "empty ledger"), ("large", f"{entries:,} entries")):
            print(f"  {label:<22}{medians[name][0]:8.2f}{medians[name][1]:8.2f}")
        wall_ratio = medians["large"][0] / medians["empty"][0]
        cpu_ratio = medians["large"][1] / medians["empty"][1]
        print(f"  ratio {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target <= 1.10)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
