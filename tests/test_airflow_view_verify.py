"""The Exchanges view's verification (`exchange_airflow.data.verify`): every entry read at
most every few minutes, the pages in between checking what was appended and that the ledger
still extends what was read. A real SQLite ledger; no Airflow needed."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import Ledger
from exchange_airflow import data

ORIGIN = "exchange-gateway/view-test"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'audit.db'}", anchor=tmp_path / "checkpoints")
    yield ledger
    ledger.close()


def fill(ledger: Ledger, count: int) -> None:
    for n in range(count):
        ledger.append("step", {"n": n, "rows": 300}, run_id=f"run-{n}", contract_id="c-1")


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def test_pages_between_full_reads_check_only_what_was_appended(
    ledger: Ledger, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    fill(ledger, 20)
    ledger.checkpoint(key, ORIGIN)
    url, public = str(ledger.engine.url), key.public_key()
    first, mark = data.verify(url, ledger, public, ORIGIN, full_every=300)
    assert first.ok and mark is not None and mark.size == 20
    fill(ledger, 5)
    second, after = data.verify(url, ledger, public, ORIGIN, full_every=300, now=later(60))
    assert second.ok and after is not None and (after.size, after.full_at) == (25, mark.full_at)
    assert second == ledger.verify(public_key=public, origin=ORIGIN)

    # An old entry edited in place: found by the next full read, which the age decides.
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("UPDATE audit_ledger SET body = replace(body, '300', '301') WHERE seq = 2")
    cheap, _ = data.verify(url, ledger, public, ORIGIN, full_every=300, now=later(120))
    assert cheap.ok
    full, kept = data.verify(url, ledger, public, ORIGIN, full_every=300, now=later(301))
    assert (full.ok, full.broken_at, kept) == (False, 2, after)
    assert full == ledger.verify(public_key=public, origin=ORIGIN)


def test_a_deleted_entry_fails_on_the_next_page_and_keeps_failing(
    ledger: Ledger, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    fill(ledger, 10)
    url, public = str(ledger.engine.url), key.public_key()
    assert data.verify(url, ledger, public, ORIGIN)[0].ok
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("DELETE FROM audit_ledger WHERE seq > 7")
    for age in (1, 301):  # a cheap page, then a full read: the verified prefix is gone
        result, _ = data.verify(url, ledger, public, ORIGIN, now=later(age))
        assert (result.ok, result.broken_at) == (False, 8)
        assert "ends at entry 7 but entries 1..10 verified before" in result.reason


def test_zero_seconds_reads_every_entry_on_every_page(ledger: Ledger) -> None:
    fill(ledger, 3)
    url = str(ledger.engine.url)
    _, mark = data.verify(url, ledger, None, None, full_every=0)
    _, again = data.verify(url, ledger, None, None, full_every=0)
    assert mark is not None and again is not None and again.full_at > mark.full_at
