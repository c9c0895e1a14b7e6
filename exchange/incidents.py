"""Incidents: events someone must look at now, recorded in the ledger and sent to people.

Policy refusals, failed deliveries, host-key changes, unacknowledged drops and ledger
verification failures are incidents. Each is appended to the audit ledger as an `incident`
entry, then sent through the configured notifiers (email over SMTP, a JSON webhook). A notifier
that fails is itself recorded, and never hides the incident or the error that caused it.
Incident text carries ids, counts and reasons only, never a value from a row.

Configuration (environment, read by `exchange.settings`):
    EXCHANGE_INCIDENT_SMTP      host:port of the SMTP relay
    EXCHANGE_INCIDENT_SMTP_TLS  starttls (default), smtps (default on port 465), or none: plain
                                SMTP, the default only to a loopback relay, elsewhere an
                                explicit override that is logged as a warning
    EXCHANGE_INCIDENT_FROM      sender address
    EXCHANGE_INCIDENT_TO        comma-separated recipient addresses
    EXCHANGE_INCIDENT_WEBHOOK   https URL that receives a JSON POST per incident (plain http
                                only to a loopback host); redirects are not followed

Incident text names contracts and reasons, and crosses the network: TLS certificates are
verified (the system's trust store) for both email and webhook.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Protocol

from exchange.audit import Ledger
from exchange.settings import Settings

log = logging.getLogger(__name__)

SMTP_TLS_MODES = ("starttls", "smtps", "none")
SMTPS_PORT = 465

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
    """Email through an SMTP relay, over verified TLS unless the relay is on loopback."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        tls: str | None = None,
        context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> None:
        if tls is None:
            tls = "smtps" if port == SMTPS_PORT else "none" if is_loopback(host) else "starttls"
        if tls not in SMTP_TLS_MODES:
            raise ValueError(f"SMTP TLS mode must be one of {', '.join(SMTP_TLS_MODES)}")
        if tls == "none" and not is_loopback(host):
            log.warning("incident email to %s:%s goes without TLS (explicit override)", host, port)
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)
        self.tls, self.timeout = tls, timeout
        self.context = context or ssl.create_default_context()

    def notify(self, incident: Incident) -> None:
        """Send one email per incident; refuse a relay that will not do the TLS asked for."""
        message = EmailMessage()
        message["Subject"] = incident.subject()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(
            "\n".join(f"{k}: {v}" for k, v in asdict(incident).items() if v is not None)
            + "\n\nThe audit ledger holds the full record of this incident.\n"
        )
        if self.tls == "smtps":
            with smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self.context
            ) as smtp:
                smtp.send_message(message)
            return
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.tls == "starttls":
                # Raises SMTPNotSupportedError if the relay does not offer it: never downgrade.
                smtp.starttls(context=self.context)
            smtp.send_message(message)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could send the incident to a host (or scheme) the check did not see."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        """Refuse every redirect."""
        raise urllib.error.HTTPError(
            req.full_url, code, "webhook redirects are refused", headers, fp
        )


class WebhookNotifier:
    """A JSON POST to a URL (e.g. a chat or ticketing system's incoming webhook)."""

    name = "webhook"

    def __init__(
        self, url: str, *, timeout: float = 30.0, context: ssl.SSLContext | None = None
    ) -> None:
        check_webhook_url(url)
        self.url, self.timeout = url, timeout
        self._opener = urllib.request.build_opener(
            _NoRedirects(), urllib.request.HTTPSHandler(context=context)
        )

    def notify(self, incident: Incident) -> None:
        """POST the incident as JSON."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url,
            data=json.dumps(asdict(incident)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(request, timeout=self.timeout):
            pass


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface (a name or an address)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str) -> None:
    """Raise ValueError unless `url` is https, or http to a loopback host (parsed, not prefixed).

    `http://localhost@evil.example/` is a login name `localhost` at evil.example: the host is
    what urllib will connect to, so that is what is compared.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("the incident webhook is not a valid URL") from None
    if not host:
        raise ValueError("the incident webhook URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the incident webhook URL may not carry a login (user@host)")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and is_loopback(host):
        return
    raise ValueError(
        f"incident webhooks must use https (plain http only to loopback), not {parts.scheme}://"
        f"{host}"
    )


def notifiers_from_env(env: Mapping[str, str] | None = None) -> list[Notifier]:
    """The notifiers the environment (or `env`) configures; see `notifiers_from_settings`."""
    return notifiers_from_settings(Settings.from_env(env))


def notifiers_from_settings(settings: Settings) -> list[Notifier]:
    """The notifiers the settings configure (none if unset); ValueError names a bad setting."""
    found: list[Notifier] = []
    relay = settings.incident_smtp
    if relay:
        host, _, port = relay.rpartition(":")
        recipients = [a.strip() for a in settings.incident_to.split(",") if a]
        if not recipients:
            raise ValueError("EXCHANGE_INCIDENT_SMTP is set but EXCHANGE_INCIDENT_TO is empty")
        tls = settings.incident_smtp_tls
        try:
            number = int(port or 25)
        except ValueError:
            raise ValueError("EXCHANGE_INCIDENT_SMTP must be host:port") from None
        found.append(
            SmtpNotifier(host or relay, number, settings.incident_from, recipients, tls=tls)
        )
    if settings.incident_webhook:
        found.append(WebhookNotifier(settings.incident_webhook))
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
        except (OSError, smtplib.SMTPException) as exc:  # SSLError and URLError are OSErrors
            ledger.append(
                "incident.notify-failed",
                {"kind": incident.kind, "notifier": notifier.name, "error": type(exc).__name__},
                run_id=incident.run_id,
                contract_id=incident.contract_id,
            )
