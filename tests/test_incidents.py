"""Incidents reach people: a real local SMTP server (aiosmtpd) and a real HTTP webhook."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import Workspace, incidents

from exchange import approval
from exchange.cli import NOT_VERIFIED, REFUSED

EXCHANGE = str(Path(sys.executable).with_name("exchange"))


class Inbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[list[dict[str, Any]], str]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def exchange(workspace: Workspace, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **workspace.env, **env}
    return subprocess.run([EXCHANGE, *args], env=full, capture_output=True, text=True, check=False)


def test_a_policy_refusal_is_emailed_and_posted(
    workspace: Workspace, smtp: tuple[Inbox, int], webhook: tuple[list[dict[str, Any]], str]
) -> None:
    inbox, port = smtp
    posted, url = webhook
    approval.approval_path(workspace.contract).unlink()
    source = workspace.source(60)
    done = exchange(
        workspace,
        "run",
        str(workspace.contract),
        "--source",
        str(source),
        EXCHANGE_INCIDENT_SMTP=f"127.0.0.1:{port}",
        EXCHANGE_INCIDENT_TO="ig@council.example",
        EXCHANGE_INCIDENT_FROM="gateway@council.example",
        EXCHANGE_INCIDENT_WEBHOOK=url,
    )
    assert done.returncode == REFUSED
    assert len(inbox.messages) == 1
    mail = inbox.messages[0]
    assert mail["To"] == "ig@council.example"
    assert (
        "policy-refusal" in mail["Subject"] and "school-attendance-to-early-help" in mail["Subject"]
    )
    text = mail.get_payload()
    assert "has not been approved" in text
    assert posted and posted[0]["kind"] == "policy-refusal"
    recorded = incidents(workspace)
    assert recorded[-1]["notified"] == ["smtp", "webhook"]
    # Nothing from a row goes into a notice.
    import pandas as pd

    raw = pd.read_csv(source, dtype=str)
    for value in raw["person_id"].tolist() + raw["last_name"].tolist():
        assert value not in text and value not in json.dumps(posted)


def test_a_notifier_that_fails_is_recorded_and_the_refusal_still_stands(
    workspace: Workspace,
) -> None:
    approval.approval_path(workspace.contract).unlink()
    done = exchange(
        workspace,
        "run",
        str(workspace.contract),
        "--source",
        str(workspace.source(20)),
        EXCHANGE_INCIDENT_SMTP=f"127.0.0.1:{free_port()}",
        EXCHANGE_INCIDENT_TO="ig@x.example",
    )
    assert done.returncode == REFUSED and "has not been approved" in done.stderr
    from exchange.audit import Ledger

    events = [e.event for e in Ledger(workspace.settings.audit_url).entries()]
    assert events[-2:] == ["incident", "incident.notify-failed"]


def test_a_broken_ledger_is_an_incident(workspace: Workspace, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    approval.approval_path(workspace.contract).unlink()
    exchange(workspace, "run", str(workspace.contract), "--source", str(workspace.source(20)))
    with sqlite3.connect(workspace.settings.home / "audit.db") as conn:
        conn.execute("UPDATE audit_ledger SET body = '{}' WHERE seq = 1")
    done = exchange(
        workspace,
        "audit",
        "verify",
        "--record-incident",
        EXCHANGE_INCIDENT_SMTP=f"127.0.0.1:{port}",
        EXCHANGE_INCIDENT_TO="audit@x.example",
    )
    assert done.returncode == NOT_VERIFIED and "entry 1" in done.stderr
    assert len(inbox.messages) == 1 and "ledger-broken" in inbox.messages[0]["Subject"]
