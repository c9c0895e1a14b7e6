"""What every stage and operation works with: settings, ledger, secrets, transports, clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exchange import transforms
from exchange.approval import Governance
from exchange.audit import Disclosures, Ledger
from exchange.contract import Contract
from exchange.incidents import Incident, Notifier, raise_incident
from exchange.secrets import SecretMissing, SecretStore
from exchange.settings import Settings
from exchange.transport.base import Transport

DISCLOSURE_KEY = "disclosure-key"  # the secret that keys the disclosure ledger's subject hashes


@dataclass(frozen=True)
class Context:
    """The gateway's wiring, handed to each stage (built afresh by the facade on each call)."""

    settings: Settings
    ledger: Ledger
    secrets: SecretStore
    transport_for: Callable[[Contract], Transport]
    clock: Callable[[], dt.datetime]
    notifiers: Sequence[Notifier]
    disclosures: Callable[[], Disclosures]

    def governance(self) -> Governance:
        """The trust anchor and the suspensions; read afresh so a change takes effect at once."""
        return Governance.from_settings(self.settings, self.ledger)

    def incident(self, kind: str, summary: str, contract_id: str | None, run_id: str) -> None:
        """Record an incident and tell the notifiers."""
        raise_incident(self.ledger, Incident(kind, summary, contract_id, run_id), self.notifiers)


def open_disclosures(settings: Settings, secrets: SecretStore) -> Disclosures:
    """The disclosure ledger, keyed by the `disclosure-key` secret (and the one it replaced).

    Raises SecretMissing if the key is missing or shorter than 32 bytes."""
    key = secrets.secret(DISCLOSURE_KEY)
    if len(key) < transforms.MIN_KEY_BYTES:
        raise SecretMissing(f"secret {DISCLOSURE_KEY!r} is shorter than 32 bytes")
    try:  # the key before the last rotation still finds older disclosures
        retired = [secrets.secret(f"{DISCLOSURE_KEY}-old")]
    except SecretMissing:
        retired = []
    return Disclosures(settings.audit_url, key, old_keys=retired)
