"""Every event the gateway writes to the audit ledger, declared once.

`Event` names them; its values are the text stored in the `event` column, so
``ledger.append(Event.RUN_REFUSED, ...)`` writes exactly what ``"run.refused"`` did. `REGISTRY`
says what each means, the body fields it carries, whether it records a refusal, a failure or a
security event, and how severe it is for reports. docs/auditors.md documents each one and the
report (`exchange.reporting`) reads its categories from here; tests/audit/test_events.py fails
when the code writes an event that is not here, or one here is undocumented.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Event(StrEnum):
    """The name of a ledger event; the value is what the ledger stores."""

    CONTRACT_CHECKED = "contract.checked"
    RUN_REFUSED = "run.refused"
    RUN_FAILED = "run.failed"
    RUN_PREPARED = "run.prepared"
    TRANSFER_ATTEMPT = "transfer.attempt"
    TRANSFER_FAILED = "transfer.failed"
    TRANSFER_SENT = "transfer.sent"
    ACK_RECEIVED = "ack.received"
    ACK_REJECTED = "ack.rejected"
    ACK_OVERDUE = "ack.overdue"
    RETENTION_REMOVED = "retention.removed"
    SUBJECT_LOOKED_UP = "subject.looked_up"
    CONTRACT_APPROVED = "contract.approved"
    CONTRACT_SUSPENDED = "contract.suspended"
    CONTRACT_RESUMED = "contract.resumed"
    KEY_ROTATED = "key.rotated"
    INCIDENT = "incident"
    INCIDENT_NOTIFY_FAILED = "incident.notify-failed"
    RECTIFICATION_SENT = "rectification.sent"


class Outcome(StrEnum):
    """What an event says about the work it records."""

    DONE = "done"  # a step that happened as intended
    REFUSAL = "refusal"  # policy said no: nothing was sent
    FAILURE = "failure"  # something went wrong: nothing (more) was sent


class Severity(StrEnum):
    """How much an auditor should care, for reports; `RANK` orders them."""

    INFO = "info"
    NOTICE = "notice"
    WARNING = "warning"
    HIGH = "high"


RANK = {severity: rank for rank, severity in enumerate(Severity)}


@dataclass(frozen=True)
class EventType:
    """What one event means and carries."""

    event: Event
    meaning: str  # one line, for people
    fields: tuple[str, ...]  # the body's top-level keys (some only in some entries)
    outcome: Outcome = Outcome.DONE
    security: bool = False  # records (or may record, per its body) a security event
    severity: Severity = Severity.INFO

    @property
    def name(self) -> str:
        """The text stored in the ledger."""
        return self.event.value


_CONTRACT = ("id", "version", "sha256", "purposes", "legal_basis", "provider", "recipient")
_REFUSAL = ("stage", "outcome", "reason", "error", "message", "contract_sha256")
_DELIVERY = ("drop_id", "recipient", "server")

_TYPES = (
    EventType(
        Event.CONTRACT_CHECKED,
        "the contract loaded, is approved and may run",
        (*_CONTRACT, "approval"),
    ),
    EventType(
        Event.RUN_REFUSED,
        "policy said no (invalid contract, not runnable, guard, quality); nothing was sent",
        (*_REFUSAL, "file", "problems", "unexpected", "missing", "failures"),
        Outcome.REFUSAL,
        severity=Severity.WARNING,
    ),
    EventType(
        Event.RUN_FAILED,
        "preparing failed for another reason; nothing was sent",
        _REFUSAL,
        Outcome.FAILURE,
        severity=Severity.WARNING,
    ),
    EventType(
        Event.RUN_PREPARED,
        "the drop is encrypted, signed and staged",
        (
            "drop_id",
            "source",
            "triggered_by",
            "source_columns_not_read",
            "rows",
            "disclosures",
            "incremental",
            "validation",
            "payload",
            "manifest_sha256",
            "started_at",
        ),
    ),
    EventType(
        Event.TRANSFER_ATTEMPT,
        "one delivery attempt failed; another may follow",
        (*_DELIVERY, "attempt", "ok", "error", "message", "retryable", "wait_seconds"),
        severity=Severity.NOTICE,
    ),
    EventType(
        Event.TRANSFER_FAILED,
        "delivery failed after the transport's attempts",
        (*_DELIVERY, "outcome", "error", "message", "retryable", "security_event", "attempts"),
        Outcome.FAILURE,
        security=True,  # a host key not as pinned
        severity=Severity.HIGH,
    ),
    EventType(
        Event.TRANSFER_SENT,
        "the drop is in the partner's folder",
        (
            "drop_id",
            "server",
            *_CONTRACT,  # with the recipient
            "fields_sent",
            "rows",
            "validation",
            "payload_sha256",
            "manifest_sha256",
            "watermark",
            "remote_path",
            "bytes",
            "already_delivered",
            "attempts",
            "rename",
            "outcome",
            "started_at",
            "finished_at",
        ),
    ),
    EventType(
        Event.ACK_RECEIVED,
        "a partner's acknowledgement of a drop verified",
        ("drop_id", "manifest_sha256", "rows", "rows_match", "received_at", "key_id", "ledger"),
    ),
    EventType(
        Event.ACK_REJECTED,
        "a file in the acknowledgement folder did not verify",
        ("file", "reason", "key_id", "security_event"),
        security=True,
        severity=Severity.HIGH,
    ),
    EventType(
        Event.ACK_OVERDUE,
        "a drop was still unacknowledged at the contract's deadline",
        ("drop_id",),
        severity=Severity.WARNING,
    ),
    EventType(
        Event.RETENTION_REMOVED,
        "a drop past its retention was removed from the partner's folder",
        ("drop_id", "retention", "older_than"),
    ),
    EventType(
        Event.SUBJECT_LOOKED_UP,
        "a subject access lookup was answered or refused",
        ("subject_hash", "key_id", "requested_by", "reason", "outcome", "drops", "problem"),
        severity=Severity.NOTICE,
    ),
    EventType(
        Event.CONTRACT_APPROVED,
        "an IG officer approved a contract version",
        ("contract_sha256", "version", "approver", "review_by"),
        severity=Severity.NOTICE,
    ),
    EventType(
        Event.CONTRACT_SUSPENDED,
        "an IG officer suspended a contract (a signed statement)",
        ("statement", "signature", "approver"),
        severity=Severity.WARNING,
    ),
    EventType(
        Event.CONTRACT_RESUMED,
        "an IG officer lifted a contract's suspensions (a signed statement)",
        ("statement", "signature", "approver"),
        severity=Severity.NOTICE,
    ),
    EventType(
        Event.KEY_ROTATED,
        "a pseudonymisation or disclosure key was rotated",
        ("secret", "old_key_id", "new_key_id", "reason"),
        severity=Severity.NOTICE,
    ),
    EventType(
        Event.INCIDENT,
        "an incident was raised and notified",
        ("kind", "summary", "severity", "notified"),
        severity=Severity.HIGH,
    ),
    EventType(
        Event.INCIDENT_NOTIFY_FAILED,
        "an incident's email or webhook could not be sent",
        ("kind", "notifier", "error"),
        Outcome.FAILURE,
        severity=Severity.HIGH,
    ),
    EventType(
        Event.RECTIFICATION_SENT,
        "a correction notice was delivered to a recipient",
        ("fields", "reason", "corrects", "drop_id", "recipient", "remote_path"),
        severity=Severity.NOTICE,
    ),
)

REGISTRY: Mapping[Event, EventType] = {t.event: t for t in _TYPES}


def lookup(name: str) -> EventType | None:
    """The registered type of a stored event name, if it is one."""
    try:
        return REGISTRY[Event(name)]
    except ValueError:
        return None  # an entry from an older or newer gateway


def with_outcome(outcome: Outcome) -> frozenset[str]:
    """The names of every event with that outcome."""
    return frozenset(t.name for t in _TYPES if t.outcome is outcome)
