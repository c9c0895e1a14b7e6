"""Incidents: events someone must look at now, recorded in the ledger and sent to people.

Policy refusals, failed deliveries, host-key changes, unacknowledged drops and ledger
verification failures are incidents. Each is appended to the audit ledger as an `incident`
entry, then sent through the configured notifiers (email over SMTP, a JSON webhook). A notifier
that fails is itself recorded, and never hides the incident or the error that caused it.
Incident text carries ids, counts and reasons only, never a value from a row.

Configuration (environment):
    EXCHANGE_INCIDENT_SMTP      host:port of the SMTP relay
    EXCHANGE_INCIDENT_FROM      sender address
    EXCHANGE_INCIDENT_TO        comma-separated recipient addresses
    EXCHANGE_INCIDENT_WEBHOOK   https URL that receives a JSON POST per incident
"""

from __future__ import annotations

import json
import os
import smtplib
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Protocol

from exchange.audit import Ledger

KINDS = (
    "policy-refusal",
    "delivery-failed",
    "host-key-changed",
    "unacknowledged-drop",
    "ledger-broken",
)


@dataclass(frozen=True)
class Incident:
    """Something that went wrong and that a person must act on."""

    kind: str
    summary: str
    contract_id: str | None = None
    run_id: str | None = None
    severity: str = "high"

    def subject(self) -> str:
        """A one-line email subject."""
        where = f" ({self.contract_id})" if self.contract_id else ""
        return f"[exchange gateway] {self.kind}{where}"


class Notifier(Protocol):
    """Sends an incident to people."""

    name: str

    def notify(self, incident: Incident) -> None:
        """Deliver the notice; raise OSError (or a subclass) if it cannot."""
        ...


class SmtpNotifier:
    """Email through an SMTP relay."""

    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, recipients: Sequence[str]) -> None:
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)

    def notify(self, incident: Incident) -> None:
        """Send one email per incident."""
        message = EmailMessage()
        message["Subject"] = incident.subject()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(
            "\n".join(f"{k}: {v}" for k, v in asdict(incident).items() if v is not None)
            + "\n\nThe audit ledger holds the full record of this incident.\n"
        )
        with smtplib.SMTP(self.host, self.port, timeout=30) as smtp:
            smtp.send_message(message)


class WebhookNotifier:
    """A JSON POST to a URL (e.g. a chat or ticketing system's incoming webhook)."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("incident webhooks must use https (plain http only on loopback)")
        self.url, self.timeout = url, timeout

    def notify(self, incident: Incident) -> None:
        """POST the incident as JSON."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            self.url,
            data=json.dumps(asdict(incident)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout):  # noqa: S310
            pass


def notifiers_from_env(env: Mapping[str, str] | None = None) -> list[Notifier]:
    """The notifiers the environment configures (none if unset)."""
    env = os.environ if env is None else env
    found: list[Notifier] = []
    relay = env.get("EXCHANGE_INCIDENT_SMTP")
    if relay:
        host, _, port = relay.rpartition(":")
        recipients = [a.strip() for a in env.get("EXCHANGE_INCIDENT_TO", "").split(",") if a]
        if not recipients:
            raise ValueError("EXCHANGE_INCIDENT_SMTP is set but EXCHANGE_INCIDENT_TO is empty")
        sender = env.get("EXCHANGE_INCIDENT_FROM", "exchange-gateway@localhost")
        found.append(SmtpNotifier(host or relay, int(port or 25), sender, recipients))
    if env.get("EXCHANGE_INCIDENT_WEBHOOK"):
        found.append(WebhookNotifier(env["EXCHANGE_INCIDENT_WEBHOOK"]))
    return found


def raise_incident(ledger: Ledger, incident: Incident, notifiers: Sequence[Notifier]) -> None:
    """Record the incident, then notify; a failed notice is recorded, never raised."""
    ledger.append(
        "incident",
        {
            "kind": incident.kind,
            "summary": incident.summary,
            "severity": incident.severity,
            "notified": [n.name for n in notifiers],
        },
        run_id=incident.run_id,
        contract_id=incident.contract_id,
    )
    for notifier in notifiers:
        try:
            notifier.notify(incident)
        except (OSError, smtplib.SMTPException) as exc:
            ledger.append(
                "incident.notify-failed",
                {"kind": incident.kind, "notifier": notifier.name, "error": type(exc).__name__},
                run_id=incident.run_id,
                contract_id=incident.contract_id,
            )
