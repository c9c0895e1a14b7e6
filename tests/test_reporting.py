"""`exchange audit report`: evidence of a period, from a ledger the command itself verifies.

The history (tests/audit_history.py) is made through the real command: two delivered runs, a
suspension with a refused run, a resume, and a re-approval that overrides objections.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
from pathlib import Path

import pytest
from audit_history import (
    OVERRIDING_POWER,
    SUSPENSION_REASON,
    History,
    exchange,
    make_history,
)
from browser import browse, needs_chromium
from conftest import Workspace

from exchange import keys
from exchange.reporting import FORMAT
from exchange.sandbox import PartnerSftpServer

TODAY = dt.date.today().isoformat()
AGREEMENT = "school-attendance-to-early-help"


@pytest.fixture
def history(workspace: Workspace, partner: PartnerSftpServer) -> History:
    return make_history(workspace, partner)


def entries(workspace: Workspace) -> list[tuple[int, str, str]]:
    with sqlite3.connect(workspace.settings.home / "audit.db") as db:
        return db.execute("SELECT seq, event, entry_hash FROM audit_ledger ORDER BY seq").fetchall()


def test_the_report_is_evidence_of_each_agreement(history: History) -> None:
    ws = history.workspace
    done = exchange(ws, "audit", "report", "--since", TODAY, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["format"] == FORMAT
    ledger = entries(ws)

    # Which ledger, verified how, up to which head and checkpoint; which entries it covers.
    evidence = report["evidence"]
    assert evidence["ledger"] == str(ws.settings.home / "audit.db")
    assert evidence["verification"]["ok"] and evidence["verification"]["signatures_checked"]
    assert evidence["verification"]["message"].startswith(f"{len(ledger)} entries verified")
    assert evidence["head"] == {"seq": ledger[-1][0], "hash": ledger[-1][2]}
    checkpoint = evidence["checkpoint"]
    assert 0 < checkpoint["size"] < len(ledger)  # the last transfer.sent follows it
    assert checkpoint["signature"] == "verified with the gateway's public key"
    assert checkpoint["note"].splitlines()[1] == str(checkpoint["size"])
    assert report["covered"]["entries"] == len(ledger)
    assert (report["covered"]["first"]["seq"], report["covered"]["last"]["seq"]) == (
        1,
        len(ledger),
    )

    (agreement,) = report["agreements"]
    assert (agreement["agreement"], agreement["recipient"]) == (
        AGREEMENT,
        "Anyshire County Council",
    )
    assert [d["drop_id"] for d in agreement["drops"]] == history.drops
    assert agreement["rows_read"] == 600 and agreement["transfers"] == 2
    assert agreement["rows_sent"] == sum(d["rows_sent"] for d in agreement["drops"])
    # The refused run, with its reason; no failure.
    assert agreement["refusals"] == 1 and agreement["failures"] == 0
    (refused,) = agreement["refused"]
    assert refused["reason"] == "suspended" and SUSPENSION_REASON in refused["message"]
    # Objections overridden in the second run only, and the power that allowed it.
    assert [d["objections_overridden"] for d in agreement["drops"]] == [0, history.overridden]
    assert agreement["objections_overridden"] == history.overridden > 0
    assert agreement["override_powers"] == [
        f"{OVERRIDING_POWER} (Enquiries where a child may be suffering significant harm)"
    ]
    # The first drop acknowledged; the second not, and past its deadline.
    assert [d["acknowledged"] for d in agreement["drops"]] == [True, False]
    assert agreement["drops"][0]["ack_rows_match"] is True
    assert agreement["acknowledged"] == 1 and agreement["unacknowledged"] == history.drops[1:]
    assert agreement["acks_overdue"] == 1
    # Governance: the suspension (with its reason), the resume, the re-approval.
    acts = [(g["action"], g["by"].split(" (")[0]) for g in agreement["governance"]]
    assert acts == [
        ("suspended", "Ivy Officer"),
        ("resumed", "Ivy Officer"),
        ("approved", "Ivy Officer"),
    ]
    assert agreement["governance"][0]["reason"] == SUSPENSION_REASON
    assert agreement["governance"][2]["version"] and agreement["governance"][2]["review_by"]
    counts = {e["event"]: e["count"] for e in report["events"]}
    assert counts["transfer.sent"] == 2 and counts["run.refused"] == 1
    assert counts["contract.suspended"] == counts["contract.resumed"] == 1
    assert counts["ack.received"] == counts["ack.overdue"] == 1

    # The text form: plain headings, the same figures, identical when made again.
    text = ok_text(ws)
    for heading in (
        "Does the ledger verify?",
        "Entries this report covers",
        "Ledger head when the report was made",
        "Latest signed checkpoint",
        f"Agreement {AGREEMENT}, to Anyshire County Council",
    ):
        assert f"\n{heading}\n" in text, heading
    assert f"\nOK: {len(ledger)} entries verified" in text
    assert f"Entries 1 to {len(ledger)} ({len(ledger)} entries)" in text
    assert f"Entry {len(ledger)}, hash {ledger[-1][2]}" in text
    assert all(f"drop {d}" in text for d in history.drops)
    assert "Refusals: 1\n" in text and f"suspended: contract {AGREEMENT} was suspended" in text
    assert f"Objections overridden: {history.overridden}\n  under {OVERRIDING_POWER}" in text
    assert (
        "Acknowledgements: 1 of 2 drops acknowledged by the partner; 1 past their deadline\n"
        in text
    )
    assert f"  not acknowledged: {history.drops[1]}\n" in text
    assert "suspended by Ivy Officer (IG)" in text and f"reason: {SUSPENSION_REASON}" in text
    assert strip_made(text) == strip_made(ok_text(ws))


def ok_text(ws: Workspace) -> str:
    done = exchange(ws, "audit", "report", "--since", TODAY)
    assert done.returncode == 0, done.stderr
    return done.stdout


def strip_made(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("Made at "))


def test_a_tampered_ledger_is_reported_as_such_and_exits_5(
    history: History, tmp_path: Path
) -> None:
    ws = history.workspace
    # A key that is not the gateway's is told apart from tampering.
    other = keys.generate("signing", tmp_path / "other.key")
    wrong = exchange(ws, "audit", "report", "--json", "--public-key", str(other.public_path))
    assert wrong.returncode == 5 and "exchange: wrong public key?:" in wrong.stderr
    verification = json.loads(wrong.stdout)["evidence"]["verification"]
    assert not verification["ok"]
    assert verification["message"].startswith("checkpoint signatures do not verify under the key")
    db = ws.settings.home / "audit.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE audit_ledger SET body = replace(body, '\"sent\":', '\"sent\": ') WHERE seq = "
            "(SELECT min(seq) FROM audit_ledger WHERE event = 'transfer.sent')"
        )
    seq = next(s for s, e, _ in entries(ws) if e == "transfer.sent")
    done = exchange(ws, "audit", "report", "--since", TODAY, "--json")
    assert done.returncode == 5
    verification = json.loads(done.stdout)["evidence"]["verification"]
    assert not verification["ok"]
    assert verification["message"] == f"entry {seq}: content altered (hash mismatch)"
    assert "exchange: ledger broken:" in done.stderr and "do not rely on its figures" in done.stderr
    text = exchange(ws, "audit", "report", "--since", TODAY)
    assert f"FAILED: entry {seq}: content altered" in text.stdout and text.returncode == 5
    # Bad dates name the option and the form; an empty period says so.
    bad = exchange(ws, "audit", "report", "--since", "28/11/2026")
    assert bad.returncode == 2 and "--since '28/11/2026' is not a date" in bad.stderr
    swapped = exchange(ws, "audit", "report", "--since", "2026-12-01", "--until", "2026-11-01")
    assert swapped.returncode == 2 and "swap them" in swapped.stderr


def test_a_period_without_activity_and_the_csv_and_html_forms(
    history: History, tmp_path: Path
) -> None:
    ws = history.workspace
    empty = exchange(ws, "audit", "report", "--since", "2020-01-01", "--until", "2020-12-31")
    assert "No entry was recorded in the period." in empty.stdout
    assert "No agreement had activity in the period." in empty.stdout
    done = exchange(ws, "audit", "report", "--since", TODAY, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    events = [r["event"] for r in rows]
    assert events.count("transfer.sent") == 2 and events.count("run.refused") == 1
    assert events.count("contract.suspended") == 1 and events.count("contract.approved") == 1
    page = tmp_path / "report.html"  # the format follows the file's suffix
    done = exchange(ws, "audit", "report", "--since", TODAY, "--out", str(page))
    assert done.returncode == 0 and "2 transfer(s)" in done.stdout
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Does the ledger verify?" in html
    assert f"drop {history.drops[1]}" in html


@needs_chromium
def test_html_report_opens_in_a_real_browser(history: History, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    done = exchange(history.workspace, "audit", "report", "--since", TODAY, "--out", str(page))
    assert done.returncode == 0 and "2 transfer(s)" in done.stdout
    dom = browse(page, tmp_path / "profile", "--dump-dom").stdout
    assert "Rows sent per partner" in dom and "Refusals by reason" in dom
    assert dom.count("<svg") == 4 and "suspended" in dom
    shot = tmp_path / "report.png"
    browse(page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,1400")
    assert shot.stat().st_size > 10_000
