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


def edit_after_approval(workspace: Workspace) -> None:
    """A refusal that is still an incident: the contract changed after its approval."""
    text = workspace.contract.read_text()
    workspace.contract.write_text(text.replace("Early Help team identify", "Early Help team find"))


def test_a_draft_or_unapproved_contract_is_refused_without_an_incident(
    workspace: Workspace, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    approval.approval_path(workspace.contract).unlink()
    source = str(workspace.source(20))
    notify = {"EXCHANGE_INCIDENT_SMTP": f"127.0.0.1:{port}", "EXCHANGE_INCIDENT_TO": "ig@x.example"}
    done = exchange(workspace, "run", str(workspace.contract), "--source", source, **notify)
    assert done.returncode == REFUSED and "has not been approved" in done.stderr
    workspace.write_contract(lambda d: d.update(status="draft"), approve=False)
    done = exchange(workspace, "run", str(workspace.contract), "--source", source, **notify)
    assert done.returncode == REFUSED and "'draft', not 'active'" in done.stderr
    from exchange.audit import Ledger

    entries = list(Ledger(workspace.settings.audit_url).entries())
    refused = [e.data for e in entries if e.event == "run.refused"]
    assert [r["reason"] for r in refused] == ["not-approved", "not-active"]
    assert all(r["setting_up"] for r in refused)
    assert incidents(workspace) == [] and inbox.messages == []


def test_a_policy_refusal_is_emailed_and_posted(
    workspace: Workspace, smtp: tuple[Inbox, int], webhook: tuple[list[dict[str, Any]], str]
) -> None:
    inbox, port = smtp
    posted, url = webhook
    edit_after_approval(workspace)
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
    assert "needs re-approval" in text
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
    edit_after_approval(workspace)
    done = exchange(
        workspace,
        "run",
        str(workspace.contract),
        "--source",
        str(workspace.source(20)),
        EXCHANGE_INCIDENT_SMTP=f"127.0.0.1:{free_port()}",
        EXCHANGE_INCIDENT_TO="ig@x.example",
    )
    assert done.returncode == REFUSED and "needs re-approval" in done.stderr
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


# -- transport security of notices (issue 10, defect 12) ---------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "relay.crt", tmp_path / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    """A relay that offers STARTTLS with a self-signed certificate; and that certificate."""
    import ssl

    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=server_context)
    controller.start()
    yield inbox, port, cert
    controller.stop()


def an_incident() -> Any:
    from exchange.incidents import Incident

    return Incident("policy-refusal", "contract not approved", "c-1", "run-1")


def test_a_remote_relay_gets_starttls_by_default() -> None:
    """Plain SMTP only to loopback unless told; port 465 means SMTPS."""
    from exchange.incidents import SmtpNotifier, notifiers_from_env

    assert SmtpNotifier("mail.council.example", 25, "a@x", ["b@x"]).tls == "starttls"
    assert SmtpNotifier("mail.council.example", 465, "a@x", ["b@x"]).tls == "smtps"
    assert SmtpNotifier("127.0.0.1", 25, "a@x", ["b@x"]).tls == "none"
    env = {"EXCHANGE_INCIDENT_SMTP": "mail.council.example:587", "EXCHANGE_INCIDENT_TO": "b@x"}
    (notifier,) = notifiers_from_env(env)
    assert isinstance(notifier, SmtpNotifier) and notifier.tls == "starttls"
    with pytest.raises(ValueError, match="starttls, smtps, none"):
        notifiers_from_env({**env, "EXCHANGE_INCIDENT_SMTP_TLS": "maybe"})


def test_a_relay_without_starttls_is_refused_not_downgraded(
    smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay (or someone in the path) that does not offer STARTTLS gets no plaintext notice."""
    import smtplib

    from exchange import incidents as module

    inbox, port = smtp
    monkeypatch.setattr(module, "is_loopback", lambda host: False)  # as if the relay were remote
    env = {"EXCHANGE_INCIDENT_SMTP": f"127.0.0.1:{port}", "EXCHANGE_INCIDENT_TO": "ig@x.example"}
    (notifier,) = module.notifiers_from_env(env)
    with pytest.raises(smtplib.SMTPNotSupportedError):
        notifier.notify(an_incident())
    assert inbox.messages == []


def test_the_explicit_override_sends_plain_smtp_with_a_warning(
    smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """EXCHANGE_INCIDENT_SMTP_TLS=none is the documented way to accept it, and is logged."""
    from exchange import incidents as module

    inbox, port = smtp
    monkeypatch.setattr(module, "is_loopback", lambda host: False)
    env = {
        "EXCHANGE_INCIDENT_SMTP": f"127.0.0.1:{port}",
        "EXCHANGE_INCIDENT_TO": "ig@x.example",
        "EXCHANGE_INCIDENT_SMTP_TLS": "none",
    }
    with caplog.at_level("WARNING"):
        (notifier,) = module.notifiers_from_env(env)
    assert "without TLS" in caplog.text
    notifier.notify(an_incident())
    assert len(inbox.messages) == 1


def test_starttls_delivers_and_verifies_the_relay_certificate(
    tls_smtp: tuple[Inbox, int, Path],
) -> None:
    """With the relay's CA trusted the notice goes over TLS; an unknown certificate is refused."""
    import ssl

    from exchange.incidents import SmtpNotifier

    inbox, port, cert = tls_smtp
    trusting = ssl.create_default_context(cafile=str(cert))
    SmtpNotifier(
        "127.0.0.1", port, "gw@x.example", ["ig@x.example"], tls="starttls", context=trusting
    ).notify(an_incident())
    assert len(inbox.messages) == 1
    untrusting = SmtpNotifier("127.0.0.1", port, "gw@x.example", ["ig@x.example"], tls="starttls")
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.notify(an_incident())
    assert len(inbox.messages) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost@evil.example/hook",  # passed the old prefix check: host is evil.example
        "http://127.0.0.1@evil.example/hook",
        "http://127.0.0.1.evil.example/hook",
        "http://localhost.evil.example/hook",
        "http://localhost:8080@evil.example/hook",
        "http://evil.example/hook",
        "http://user:pw@127.0.0.1/hook",
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "https:///no-host",
        "http://127.0.0.1:notaport/hook",
    ],
)
def test_webhook_urls_that_leave_the_machine_in_plain_http_are_refused(url: str) -> None:
    """The host urllib would connect to is parsed and compared, not a string prefix."""
    from exchange.incidents import WebhookNotifier

    with pytest.raises(ValueError):
        WebhookNotifier(url)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example/x", "http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]:9/x"],
)
def test_https_and_loopback_webhooks_are_accepted(url: str) -> None:
    from exchange.incidents import WebhookNotifier

    assert WebhookNotifier(url).url == url


def test_the_cli_refuses_a_userinfo_webhook_at_start(workspace: Workspace) -> None:
    """Through the real CLI: a clear one-line error and a non-zero exit, nothing runs."""
    done = exchange(
        workspace,
        "run",
        str(workspace.contract),
        "--source",
        str(workspace.source(20)),
        EXCHANGE_INCIDENT_WEBHOOK="http://localhost@evil.example/hook",
    )
    assert done.returncode != 0
    assert "incident notification settings" in done.stderr and "login" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_webhook_redirect_is_not_followed(
    webhook: tuple[list[dict[str, Any]], str],
) -> None:
    """A loopback hook answering 302 to elsewhere does not get the incident re-sent there."""
    from exchange.incidents import WebhookNotifier

    posted, target = webhook

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)  # 307 keeps the method and body
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        notifier = WebhookNotifier(f"http://127.0.0.1:{server.server_port}/hook")
        with pytest.raises(OSError):
            notifier.notify(an_incident())
    finally:
        server.shutdown()
    assert posted == []


def test_notifiers_come_from_the_settings() -> None:
    """The EXCHANGE_INCIDENT_* variables are read by Settings; the notifiers are built from it."""
    from exchange.incidents import SmtpNotifier, WebhookNotifier, notifiers_from_settings
    from exchange.settings import Settings

    settings = Settings.from_env(
        {
            "EXCHANGE_INCIDENT_SMTP": "mail.council.example:465",
            "EXCHANGE_INCIDENT_TO": "ig@x.example, dpo@x.example",
            "EXCHANGE_INCIDENT_WEBHOOK": "https://hooks.council.example/T0KEN",
        }
    )
    assert "T0KEN" not in repr(settings)
    smtp, hook = notifiers_from_settings(settings)
    assert isinstance(smtp, SmtpNotifier) and smtp.tls == "smtps"
    assert smtp.recipients == ["ig@x.example", "dpo@x.example"]
    assert isinstance(hook, WebhookNotifier)
    assert notifiers_from_settings(Settings.from_env({})) == []
