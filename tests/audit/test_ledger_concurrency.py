"""Concurrent writers in separate processes never fork or break the chain, on SQLite and
PostgreSQL, even while another process signs checkpoints."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event

from audit_fixtures import ORIGIN
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import Ledger

WRITERS = 4
PER_WRITER = 50
TIMEOUT = 300


def _append_many(url: str, writer: int, count: int, go: Event) -> None:
    """Worker: wait for the start signal, then append `count` entries."""
    ledger = Ledger(url)
    go.wait(60)
    for i in range(count):
        ledger.append("concurrent", {"writer": writer, "i": i}, run_id=f"w{writer}")
    ledger.close()


def _checkpoint_while_others_write(url: str, raw_key: bytes, rounds: int, go: Event) -> None:
    """Worker: sign checkpoints over and over while the writers run."""
    ledger = Ledger(url)
    key = Ed25519PrivateKey.from_private_bytes(raw_key)
    go.wait(60)
    for _ in range(rounds):
        ledger.checkpoint(key, ORIGIN)
    ledger.close()


def test_concurrent_appends_from_processes_keep_one_chain(
    backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    """4 processes x 50 appends and a checkpointing process: every entry, one chain, no fork,
    and every checkpoint consistent with it."""
    Ledger(backend_url).close()  # create the tables before the writers race
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    raw = gateway_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    workers = [
        context.Process(target=_append_many, args=(backend_url, w, PER_WRITER, go))
        for w in range(WRITERS)
    ]
    workers.append(
        context.Process(target=_checkpoint_while_others_write, args=(backend_url, raw, 5, go))
    )
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(timeout=TIMEOUT)
    assert [w.exitcode for w in workers] == [0] * len(workers)

    ledger = Ledger(backend_url)
    entries = list(ledger.entries())
    total = WRITERS * PER_WRITER
    assert [e.seq for e in entries] == list(range(1, total + 1))
    assert sorted((e.data["writer"], e.data["i"]) for e in entries) == [
        (w, i) for w in range(WRITERS) for i in range(PER_WRITER)
    ]
    assert len({e.prev_hash for e in entries}) == total  # no two entries share a parent
    result = ledger.verify(public_key=gateway_key.public_key())
    assert result.ok, result.message
    assert result.entries == total and result.checkpoints >= 1
    assert ledger.head() == (total, result.head)
    final = ledger.checkpoint(gateway_key, ORIGIN)
    assert final.size == total
    ledger.close()
