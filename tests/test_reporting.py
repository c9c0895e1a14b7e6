"""`exchange audit report`: the period's transfers, refusals and incidents, from the ledger."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from browser import browse, needs_chromium
from conftest import Workspace

from exchange.sandbox import PartnerSftpServer

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
TODAY = dt.date.today().isoformat()


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **workspace.env}
    return subprocess.run([EXCHANGE, *args], env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def history(workspace: Workspace, partner: PartnerSftpServer) -> Workspace:
    """Two delivered runs and one refusal in the ledger."""
    for seed in (1, 2):
        source = workspace.source(300 * seed, seed=seed)
        assert (
            exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode
            == 0
        )
    text = workspace.contract.read_text()  # edited after approval: a refusal with an incident
    workspace.contract.write_text(text.replace("Early Help team identify", "Early Help team find"))
    assert exchange(workspace, "run", str(workspace.contract)).returncode != 0
    return workspace


def test_json_report_counts_transfers_rows_and_refusals(history: Workspace) -> None:
    done = exchange(history, "audit", "report", "--since", TODAY, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["transfers"]) == 2
    (agreement,) = report["agreements"]
    assert agreement["agreement"] == "school-attendance-to-early-help"
    assert agreement["recipient"] == "Anyshire County Council"
    assert agreement["transfers"] == 2 and agreement["refusals"] == 1
    assert agreement["rows_read"] == 900
    assert agreement["rows_sent"] == sum(t["rows_sent"] for t in report["transfers"])
    assert "person_ref" in agreement["fields_shared"]
    assert report["refusals_by_reason"] == {"changed-since-approval": 1}
    assert report["incidents"] and report["incidents"][0]["kind"] == "policy-refusal"
    counts = {e["event"]: e["count"] for e in report["events"]}
    assert counts["transfer.sent"] == 2 and counts["run.refused"] == 1
    assert report["events"][0] == {
        "event": "incident",
        "count": 1,
        "severity": "high",
        "meaning": "an incident was raised and notified",
    }


def test_a_period_without_activity_is_empty(history: Workspace) -> None:
    done = exchange(
        history,
        "audit",
        "report",
        "--since",
        "2020-01-01",
        "--until",
        "2020-12-31",
        "--format",
        "json",
    )
    assert json.loads(done.stdout)["transfers"] == []


def test_csv_report_has_one_row_per_event(history: Workspace) -> None:
    done = exchange(history, "audit", "report", "--since", TODAY, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["event"] for r in rows].count("transfer.sent") == 2
    assert [r["event"] for r in rows].count("run.refused") == 1


@needs_chromium
def test_html_report_opens_in_a_real_browser(history: Workspace, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    done = exchange(history, "audit", "report", "--since", TODAY, "--out", str(page))
    assert done.returncode == 0 and "2 transfer(s)" in done.stdout
    dom = browse(page, tmp_path / "profile", "--dump-dom").stdout
    assert "Rows sent per partner" in dom and "Refusals by reason" in dom
    assert dom.count("<svg") == 4 and "changed-since-approval" in dom
    shot = tmp_path / "report.png"
    browse(page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,1400")
    assert shot.stat().st_size > 10_000
