"""A run's ledger work does not grow with history: every statement it sends is answered from an
index (or the newest entries), never a walk over the whole ledger; and the watermark reads back
the last delivered run's."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from audit_fixtures import ORIGIN
from conftest import SAMPLE
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import anchor, merkle
from exchange.audit.anchor import Anchor
from exchange.audit.events import Event
from exchange.audit.ledger import Ledger
from exchange.contract import Contract, load_contract
from exchange.errors import LedgerError
from exchange.operations.incremental import watermark

CONTRACT = "school-attendance-to-early-help"
INDEXES = {"ix_audit_ledger_run", "ix_audit_ledger_contract_event"}


def agreement() -> Contract:
    """The sample agreement, whose id the entries below carry."""
    contract = load_contract(SAMPLE)
    assert contract.id == CONTRACT
    return contract


def past_runs(ledger: Ledger, runs: int) -> None:
    for n in range(runs):
        for event in (Event.CONTRACT_CHECKED, Event.RUN_PREPARED, Event.TRANSFER_SENT):
            body = {"drop_id": f"d{n}", "watermark": f"2026-01-01T00:00:{n % 60:02d}+00:00"}
            ledger.append(event, body, run_id=f"run-{n}", contract_id=CONTRACT)


def sqlite_indexes(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {name for (name,) in rows}


def run_steps(tmp_path: Path, key: Ed25519PrivateKey, history: int) -> int:
    """SQLite virtual-machine steps (in hundreds) for one run's ledger work after `history` runs.

    The steps count the rows and index entries every statement visits, exactly and on any
    machine: a walk over the whole ledger shows as steps growing with the history.
    """
    folder = tmp_path / f"history-{history}"
    url = f"sqlite:///{folder / 'audit.db'}"
    ledger = Ledger(url, anchor=Anchor(folder / "checkpoints"))
    past_runs(ledger, history)
    ledger.checkpoint(key, ORIGIN)  # later checkpoints extend this one's right edge
    past_runs(ledger, 2)
    ledger.close()

    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0  # go on

    ledger = Ledger(url, anchor=Anchor(folder / "checkpoints"))
    ledger.engine.dispose()  # count on fresh connections only

    @sa.event.listens_for(ledger.engine, "connect")
    def _count(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_progress_handler(tick, 100)

    # What a run does to the ledger, stage by stage (the gateway's order).
    run = {"run_id": f"new-run-{history}", "contract_id": CONTRACT}
    assert ledger.find(Event.CONTRACT_CHECKED, **run) is None
    assert watermark(ledger, agreement()) is not None
    ledger.append(Event.CONTRACT_CHECKED, {}, **run)
    assert ledger.find(Event.RUN_PREPARED, **run) is None
    ledger.append(Event.RUN_PREPARED, {}, **run)
    ledger.head()
    ledger.checkpoint(key, ORIGIN)
    assert ledger.find(Event.TRANSFER_SENT, **run) is None
    ledger.append(Event.TRANSFER_SENT, {"watermark": "2026-02-01T00:00:00+00:00"}, **run)
    ledger.close()
    return steps[0]


def test_a_runs_ledger_work_does_not_grow_with_history(
    tmp_path: Path, gateway_key: Ed25519PrivateKey
) -> None:
    short = run_steps(tmp_path, gateway_key, 20)
    long = run_steps(tmp_path, gateway_key, 400)  # 20 times the history
    assert short > 0
    assert long <= short * 1.2, f"{short} -> {long} (x100 SQLite steps)"


def test_the_watermark_is_the_newest_delivery_that_set_one(backend_url: str) -> None:
    ledger = Ledger(backend_url)
    assert watermark(ledger, agreement()) is None
    ledger.append(
        Event.TRANSFER_SENT, {"watermark": "2026-01-01T00:00:00+00:00"}, contract_id=CONTRACT
    )
    ledger.append(
        Event.TRANSFER_SENT, {"watermark": "2026-01-02T00:00:00+00:00"}, contract_id=CONTRACT
    )
    ledger.append(Event.TRANSFER_SENT, {"watermark": None}, contract_id=CONTRACT)  # a correction
    ledger.append(
        Event.TRANSFER_SENT, {"watermark": "2030-01-01T00:00:00+00:00"}, contract_id="other"
    )
    ledger.append(
        Event.RUN_PREPARED, {"watermark": "2031-01-01T00:00:00+00:00"}, contract_id=CONTRACT
    )
    assert watermark(ledger, agreement()) == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    ledger.close()


def test_a_ledger_made_before_the_indexes_gets_them_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    ledger = Ledger(f"sqlite:///{db}")
    past_runs(ledger, 3)
    ledger.close()
    with sqlite3.connect(db) as conn:
        for name in INDEXES:
            conn.execute(f"DROP INDEX {name}")
    assert not sqlite_indexes(db) & INDEXES

    reopened = Ledger(f"sqlite:///{db}")
    assert sqlite_indexes(db) >= INDEXES
    assert reopened.verify().ok
    assert reopened.find(Event.TRANSFER_SENT, run_id="run-2", contract_id=CONTRACT) is not None


def test_a_postgres_ledger_has_the_indexes(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    names = {ix["name"] for ix in sa.inspect(ledger.engine).get_indexes("audit_ledger")}
    assert names >= INDEXES
    ledger.close()


def test_consistency_from_a_handed_checkpoint_is_the_whole_trees_proof(
    tmp_path: Path, gateway_key: Ed25519PrivateKey
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'audit.db'}", anchor=Anchor(tmp_path / "checkpoints"))
    handed = []
    for runs in (3, 1, 4, 2):
        past_runs(ledger, runs)
        handed.append(ledger.checkpoint(gateway_key, ORIGIN))
    past_runs(ledger, 2)
    size = ledger.head()[0]
    leaves = ledger.leaves()
    for old_size in [c.size for c in handed] + [5, 0, size]:  # 5, 0: never handed out
        expected = (merkle.root(leaves[:old_size]), merkle.consistency_proof(old_size, leaves))
        assert ledger.consistency(old_size, size) == expected, old_size
        root, proof = expected
        assert merkle.verify_consistency(old_size, size, root, merkle.root(leaves), proof)
    with pytest.raises(LedgerError, match="fewer than"):
        ledger.consistency(handed[0].size, size + 1)


def test_a_consistency_proof_from_a_handed_checkpoint_reads_only_the_entries_since(
    tmp_path: Path, gateway_key: Ed25519PrivateKey
) -> None:
    def steps(history: int) -> int:
        folder = tmp_path / f"history-{history}"
        url = f"sqlite:///{folder / 'audit.db'}"
        ledger = Ledger(url, anchor=Anchor(folder / "checkpoints"))
        past_runs(ledger, history)
        old = ledger.checkpoint(gateway_key, ORIGIN).size
        past_runs(ledger, 2)
        new = ledger.checkpoint(gateway_key, ORIGIN).size
        ledger.close()
        ledger = Ledger(url, anchor=Anchor(folder / "checkpoints"))
        ledger.engine.dispose()
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        @sa.event.listens_for(ledger.engine, "connect")
        def _count(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_progress_handler(tick, 1)

        ledger.consistency(old, new)
        ledger.close()
        return count[0]

    short, long = steps(20), steps(400)
    assert short > 0
    assert long <= short * 1.2, f"{short} -> {long} (SQLite steps)"


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 16])
def test_the_log_is_read_newest_line_first_across_blocks(tmp_path: Path, block: int) -> None:
    lines = [b'{"size": %d, "pad": "%s"}' % (n, b"x" * (n * 3 % 17)) for n in range(40)]
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    with path.open("rb") as handle:
        assert list(anchor.lines_newest_first(handle, block)) == lines[::-1]
