"""`exchange run`'s messages for a data team's first runs: the retry command, unchanged rows."""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Workspace, connect, inbox_entries

from exchange import cli
from exchange.audit import Ledger
from exchange.cli.data import progress, retry_command, unchanged_note
from exchange.gateway import Gateway
from exchange.pipeline.results import RunResult
from exchange.pipeline.run import run_exchange
from exchange.sandbox import PartnerSftpServer
from exchange.transport.memory import MemoryServer, MemoryTransport

EXCHANGE = str(Path(sys.executable).with_name("exchange"))


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **workspace.env}
    return subprocess.run([EXCHANGE, *args], env=env, capture_output=True, text=True, check=False)


def events(workspace: Workspace, name: str) -> list[dict]:
    return [e.data for e in Ledger(workspace.settings.audit_url).entries() if e.event == name]


def incremental(doc: dict) -> None:
    doc["customProperties"].append({"property": "incremental", "value": {"column": "last_updated"}})
    doc["schema"][0]["quality"][0]["mustBeBetween"] = [0, 5000000]


@pytest.mark.integration
def test_a_failed_delivery_prints_the_command_that_retries_it(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = str(workspace.source(100))
    partner.stop()
    failed = exchange(workspace, "run", str(workspace.contract), "--source", source)
    assert failed.returncode == cli.DELIVERY_FAILED, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert lines[0].startswith("exchange: delivery failed (transient): ")
    assert lines[-1].startswith("exchange: retry with: exchange run ")
    assert "never duplicates a drop" in lines[-1]
    command = shlex.split(lines[-1].removeprefix("exchange: retry with: ").split(" (")[0])
    run_id = command[command.index("--run-id") + 1]
    assert command[2:] == [str(workspace.contract), "--source", source, "--run-id", run_id]

    partner.start()
    connect(workspace, partner)
    retried = exchange(workspace, *command[1:])
    assert retried.returncode == 0, retried.stderr
    assert retried.stderr == ""  # no progress drawn when standard error is not a terminal
    assert retried.stdout.startswith(f"run {run_id}: read 100 rows, ")
    again = exchange(workspace, *command[1:])
    assert again.returncode == 0 and "already delivered" in again.stdout
    assert len(inbox_entries(partner)) == 1


@pytest.mark.integration
def test_a_given_run_id_is_the_one_to_retry_with(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    partner.stop()
    args = ["run", str(workspace.contract), "--source", str(workspace.source(20))]
    failed = exchange(workspace, *args, "--run-id", "nightly-7")
    assert failed.returncode == cli.DELIVERY_FAILED
    assert "--run-id nightly-7 " in failed.stderr.splitlines()[-1]


@pytest.mark.integration
def test_an_empty_incremental_run_says_the_rows_were_unchanged_since_the_watermark(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    workspace.write_contract(incremental)
    run = ["run", str(workspace.contract), "--source", str(workspace.source(200))]
    first = exchange(workspace, *run)
    assert first.returncode == 0, first.stderr
    assert "unchanged" not in first.stdout  # nothing delivered before: everything is read
    mark = events(workspace, "transfer.sent")[-1]["watermark"]

    second = exchange(workspace, *run)
    assert second.returncode == 0, second.stderr
    unchanged = events(workspace, "run.prepared")[-1]["incremental"]["rows_unchanged"]
    assert unchanged > 0
    expected = (
        f"read 0 rows ({unchanged:,} unchanged since {mark}, the last delivered run's watermark)"
    )
    assert expected in second.stdout, second.stdout

    full = exchange(workspace, *run, "--full-refresh")
    assert full.returncode == 0, full.stderr
    assert "unchanged" not in full.stdout


def result(**changes: object) -> RunResult:
    base: dict = {
        "run_id": "r",
        "drop_id": "d",
        "rows_read": 0,
        "rows_sent": 0,
        "excluded": {},
        "remote_path": "/in/d",
        "already_delivered": False,
    }
    return RunResult(**{**base, **changes})


def test_the_unchanged_note() -> None:
    assert unchanged_note(result()) == ""
    note = unchanged_note(result(rows_unchanged=1234, since="2026-11-27T02:00:00+00:00"))
    assert note == (
        " (1,234 unchanged since 2026-11-27T02:00:00+00:00, the last delivered run's watermark)"
    )


def test_the_retry_command_never_prints_a_source_url() -> None:
    args = argparse.Namespace(
        contract=Path("contracts/my agreement.yaml"),
        source="postgresql://u:secret@db/x",
        full_refresh=True,
    )
    command = retry_command(args, "cli-1")
    assert "secret" not in command
    assert re.match(
        r"exchange run 'contracts/my agreement.yaml' --source URL --run-id cli-1 --full-refresh ",
        command,
    )
    args.source = None
    assert retry_command(args, "cli-1").startswith("exchange run 'contracts/my agreement.yaml' ")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only() -> None:
    piped = io.StringIO()
    with progress(piped) as show:
        show("run r: reading, minimising, validating and encrypting")
    assert piped.getvalue() == ""
    terminal = Terminal()
    with progress(terminal) as show:
        show("run r: reading, minimising, validating and encrypting")
    assert "reading, minimising, validating and encrypting" in terminal.getvalue()


def test_a_run_reports_each_stage_with_counts_only(workspace: Workspace) -> None:
    server = MemoryServer()
    server.makedirs("inbox/attendance")
    transport = MemoryTransport(server)
    gateway = Gateway(workspace.settings, transports={"sftp": lambda endpoint, secrets: transport})
    shown: list[str] = []
    result = run_exchange(
        gateway.context,
        workspace.contract,
        str(workspace.source(40)),
        run_id="r-progress",
        preflight=False,
        progress=shown.append,
    )
    assert shown == [
        "run r-progress: checking the contract and its approval",
        "run r-progress: reading, minimising, validating and encrypting",
        f"run r-progress: read 40 rows; delivering {result.rows_sent} to Anyshire County Council",
    ]
