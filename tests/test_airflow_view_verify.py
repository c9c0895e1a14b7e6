"""The Exchanges view's verification (`exchange_airflow.data.verify`): every entry read at
most every few minutes, the pages in between checking what was appended and that the ledger
still extends what was read. A real SQLite ledger; no Airflow needed."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from audit.audit_fixtures import counting
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_reporting_fold import history

from exchange import reporting
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


def later(seconds: float) -> float:
    """A `time.monotonic` reading `seconds` from now (the view ages its reads by it)."""
    return time.monotonic() + seconds


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


def test_a_failed_verdict_is_kept_as_long_as_a_pass_would_be(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of a broken ledger do not each queue a full read: the failure found by one is
    shown until it is `full_every` old, then the next page reads every entry again."""
    fill(ledger, 10)
    url = str(ledger.engine.url)
    assert data.verify(url, ledger, None, None, now=later(0))[0].ok
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("DELETE FROM audit_ledger WHERE seq = 5")
    read = counting(ledger, monkeypatch)
    failed, _ = data.verify(url, ledger, None, None, now=later(1))
    assert (failed.ok, failed.broken_at) == (False, 5) and 6 in read  # read whole to say so
    read.clear()
    for age in (2, 150, 300):
        again, _ = data.verify(url, ledger, None, None, now=later(age))
        assert again == failed and read == []
    stale, _ = data.verify(url, ledger, None, None, now=later(302))
    assert stale == failed and read[:5] == [1, 2, 3, 4, 6]  # read from 1 again; still failing


def test_a_wall_clock_set_back_does_not_stop_full_reads(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full read made while the clock was a day ahead: once the clock is set right, the
    next read is still due `full_every` seconds later, not a day later."""
    fill(ledger, 4)
    url, ahead = str(ledger.engine.url), dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    monkeypatch.setattr(ledger, "clock", lambda: ahead)
    _, mark = data.verify(url, ledger, None, None, full_every=0.2)
    monkeypatch.undo()
    time.sleep(0.3)
    read = counting(ledger, monkeypatch)
    result, after = data.verify(url, ledger, None, None, full_every=0.2)
    assert result.ok and read[:4] == [1, 2, 3, 4]  # every entry, not the appended only
    assert mark is not None and after is not None and after.full_at < mark.full_at


@pytest.mark.parametrize("raw", ["five minutes", "-1", "inf", "nan", "-inf", "1e999"])
def test_a_bad_full_verify_seconds_is_refused_once_and_the_default_used(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    data._warned.discard(raw)
    with caplog.at_level(logging.WARNING, logger="exchange_airflow.data"):
        assert data.full_verify_seconds(raw) == data.FULL_VERIFY_SECONDS == 300
        assert data.full_verify_seconds(raw) == 300
    (record,) = caplog.records  # one message, not one per page
    assert record.getMessage().startswith(
        f"[exchange_view] full_verify_seconds = {raw!r} is not a number of seconds >= 0; "
        "using the default 300."
    )


@pytest.mark.parametrize(("raw", "seconds"), [(None, 300), ("", 300), ("0", 0), (" 60 ", 60)])
def test_a_good_full_verify_seconds_is_used(
    raw: str | None, seconds: float, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exchange_airflow.data"):
        assert data.full_verify_seconds(raw) == seconds
    assert caplog.records == []


# -- the period's report, folded from the entries appended since the last page ---------------


def mixed(ledger: Ledger, count: int, seed: int) -> None:
    """Append `count` entries of every kind the report reads (tests/test_reporting_fold.py)."""
    for entry in history(count, seed):
        ledger.append(entry.event, entry.data, run_id=entry.run_id, contract_id=entry.contract_id)


def fresh(ledger: Ledger, since: dt.date, until: dt.date) -> dict[str, Any]:
    return asdict(reporting.build(ledger.entries(), since, until))


def test_pages_fold_only_what_was_appended_and_equal_a_fresh_build(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = dt.date.today()
    since, until = today - dt.timedelta(days=30), today
    url, key = str(ledger.engine.url), data._key(str(ledger.engine.url), ledger)
    mixed(ledger, 60, 1)
    assert data.verify(url, ledger, None, None, now=later(0))[0].ok
    first = data.folded(key, ledger, 60, since, until)
    assert asdict(first) == fresh(ledger, since, until) and first.transfers

    mixed(ledger, 40, 2)
    assert data.verify(url, ledger, None, None, now=later(10))[0].ok  # a cheap page
    read = counting(ledger, monkeypatch)
    second = data.folded(key, ledger, 100, since, until)
    assert read == list(range(61, 101))  # only the entries appended since the last page
    monkeypatch.undo()
    assert asdict(second) == fresh(ledger, since, until) != asdict(first)
    first.transfers.clear()  # a page's own copy: changing it changes no later page
    assert asdict(data.folded(key, ledger, 100, since, until)) == asdict(second)

    # After the next full read, the figures are read from every entry again.
    assert data.verify(url, ledger, None, None, now=later(301))[0].ok
    read = counting(ledger, monkeypatch)
    third = data.folded(key, ledger, 100, since, until)
    assert read == list(range(1, 101)) and asdict(third) == asdict(second)


def test_a_page_reports_exactly_the_entries_it_attests(ledger: Ledger) -> None:
    """A page that read the head before another page folded newer entries reports its own
    head's entries; the newer fold is kept for the next page."""
    today = dt.date.today()
    since, until = today - dt.timedelta(days=30), today
    url, key = str(ledger.engine.url), data._key(str(ledger.engine.url), ledger)
    mixed(ledger, 30, 3)
    assert data.verify(url, ledger, None, None, now=later(0))[0].ok
    newer = data.folded(key, ledger, 30, since, until)
    older = data.folded(key, ledger, 20, since, until)
    assert asdict(older) == asdict(reporting.build(ledger.entries(until=20), since, until))
    assert older.covered["last"]["seq"] == 20 and newer.covered["last"]["seq"] == 30
    assert asdict(data.folded(key, ledger, 30, since, until)) == asdict(newer)


def test_a_fold_whose_next_entry_does_not_follow_it_is_begun_again(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry after the fold's last that does not chain from it (the view folds only
    after a verification passed, so this is a race with a writer): every entry is read."""
    today = dt.date.today()
    since, until = today - dt.timedelta(days=30), today
    key = data._key(str(ledger.engine.url), ledger)
    mixed(ledger, 20, 4)
    data.folded(key, ledger, 10, since, until)
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("UPDATE audit_ledger SET prev_hash = ? WHERE seq = 11", ("ab" * 32,))
    read = counting(ledger, monkeypatch)
    again = data.folded(key, ledger, 20, since, until)
    assert read == [11, *range(1, 21)]  # refused at 11, then every entry from the first
    monkeypatch.undo()
    assert asdict(again) == fresh(ledger, since, until)
