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
    RUN_SKIPPED = "run.skipped"
    RUN_PREPARED = "run.prepared"
    TRANSFER_ATTEMPT = "transfer.attempt"
    TRANSFER_FAILED = "transfer.failed"
    TRANSFER_SENT = "transfer.sent"
    ACK_RECEIVED = "ack.received"
    ACK_REJECTED = "ack.rejected"
    ACK_OVERDUE = "ack.overdue"
    DESTRUCTION_RECEIVED = "destruction.received"
    DESTRUCTION_REJECTED = "destruction.rejected"
    DESTRUCTION_OVERDUE = "destruction.overdue"
    WITNESS_REFUSED = "witness.refused"
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


INFO, NOTICE, WARNING, HIGH = Severity.INFO, Severity.NOTICE, Severity.WARNING, Severity.HIGH
DONE, REFUSAL, FAILURE = Outcome.DONE, Outcome.REFUSAL, Outcome.FAILURE

# One line per event: its severity in reports, its outcome, and what it means.
_KINDS: tuple[tuple[Event, Severity, Outcome, str], ...] = (
    (Event.CONTRACT_CHECKED, INFO, DONE, "the contract loaded, is approved and may run"),
    (Event.RUN_REFUSED, WARNING, REFUSAL, "policy said no (invalid, not runnable, guard, quality)"),
    (Event.RUN_FAILED, WARNING, FAILURE, "preparing failed for another reason; nothing was sent"),
    (Event.RUN_SKIPPED, INFO, DONE, "a late first scheduled run was skipped; nothing read or sent"),
    (Event.RUN_PREPARED, INFO, DONE, "the drop is encrypted, signed and staged"),
    (Event.TRANSFER_ATTEMPT, NOTICE, DONE, "one delivery attempt failed; another may follow"),
    (Event.TRANSFER_FAILED, HIGH, FAILURE, "delivery failed after the transport's attempts"),
    (Event.TRANSFER_SENT, INFO, DONE, "the drop is in the partner's folder"),
    (Event.ACK_RECEIVED, INFO, DONE, "a partner's acknowledgement of a drop verified"),
    (Event.ACK_REJECTED, HIGH, DONE, "a file in the acknowledgement folder did not verify"),
    (Event.ACK_OVERDUE, WARNING, DONE, "a drop was still unacknowledged at its deadline"),
    (Event.DESTRUCTION_RECEIVED, INFO, DONE, "a partner's signed destruction receipt verified"),
    (Event.DESTRUCTION_REJECTED, HIGH, DONE, "a destruction receipt file did not verify"),
    (Event.DESTRUCTION_OVERDUE, HIGH, DONE, "no destruction receipt by retention plus grace"),
    (Event.WITNESS_REFUSED, HIGH, DONE, "a partner refused a drop: the ledger did not extend"),
    (Event.RETENTION_REMOVED, INFO, DONE, "a drop past its retention was removed from the partner"),
    (Event.SUBJECT_LOOKED_UP, NOTICE, DONE, "a subject access lookup was answered or refused"),
    (Event.CONTRACT_APPROVED, NOTICE, DONE, "an IG officer approved a contract version"),
    (Event.CONTRACT_SUSPENDED, WARNING, DONE, "an IG officer suspended a contract (signed)"),
    (Event.CONTRACT_RESUMED, NOTICE, DONE, "an IG officer lifted a contract's suspensions"),
    (Event.KEY_ROTATED, NOTICE, DONE, "a pseudonymisation or disclosure key was rotated"),
    (Event.INCIDENT, HIGH, DONE, "an incident was raised and notified"),
    (Event.INCIDENT_NOTIFY_FAILED, HIGH, FAILURE, "an incident's email or webhook failed"),
    (Event.RECTIFICATION_SENT, NOTICE, DONE, "a correction notice was delivered to a recipient"),
)

# Events that record a security event (transfer.failed: when its body's `security_event` is
# true, a host key not as pinned).
_SECURITY = frozenset(
    {Event.TRANSFER_FAILED, Event.ACK_REJECTED, Event.DESTRUCTION_REJECTED, Event.WITNESS_REFUSED}
)

_CONTRACT = "id version sha256 purposes legal_basis provider recipient"
_REFUSAL = "stage outcome reason error message contract_sha256"
_STATEMENT = "statement signature approver"

# The body's top-level keys, space-separated (some only in some entries).
_FIELDS: Mapping[Event, str] = {
    Event.CONTRACT_CHECKED: f"{_CONTRACT} approval",
    Event.RUN_REFUSED: f"{_REFUSAL} file problems unexpected missing failures",
    Event.RUN_FAILED: _REFUSAL,
    Event.RUN_SKIPPED: "stage reason file due started_at triggered_by",
    Event.RUN_PREPARED: "drop_id source triggered_by source_columns_not_read rows disclosures "
    "incremental validation payload manifest_sha256 started_at",
    Event.TRANSFER_ATTEMPT: "drop_id recipient server attempt ok error message retryable "
    "wait_seconds",
    Event.TRANSFER_FAILED: "drop_id recipient server outcome error message retryable "
    "security_event attempts",
    Event.TRANSFER_SENT: f"drop_id server {_CONTRACT} fields_sent rows validation payload_sha256 "
    "manifest_sha256 watermark remote_path bytes already_delivered attempts rename outcome "
    "started_at finished_at",
    Event.ACK_RECEIVED: "drop_id manifest_sha256 rows rows_match received_at key_id ledger "
    "cosignature ack",
    Event.ACK_REJECTED: "file reason key_id security_event",
    Event.ACK_OVERDUE: "drop_id",
    Event.DESTRUCTION_RECEIVED: "drop_id manifest_sha256 destroyed_at key_id deleted receipt",
    Event.DESTRUCTION_REJECTED: "file reason key_id security_event",
    Event.DESTRUCTION_OVERDUE: "drop_id due",
    Event.WITNESS_REFUSED: "drop_id key_id held_size offered_size report security_event",
    Event.RETENTION_REMOVED: "drop_id retention older_than",
    Event.SUBJECT_LOOKED_UP: "subject_hash key_id requested_by reason outcome drops problem",
    Event.CONTRACT_APPROVED: "contract_sha256 version approver review_by",
    Event.CONTRACT_SUSPENDED: _STATEMENT,
    Event.CONTRACT_RESUMED: _STATEMENT,
    Event.KEY_ROTATED: "secret old_key_id new_key_id reason",
    Event.INCIDENT: "kind summary severity notified",
    Event.INCIDENT_NOTIFY_FAILED: "kind notifier error",
    Event.RECTIFICATION_SENT: "fields reason corrects drop_id recipient remote_path",
}

REGISTRY: Mapping[Event, EventType] = {
    event: EventType(
        event, meaning, tuple(_FIELDS[event].split()), outcome, event in _SECURITY, severity
    )
    for event, severity, outcome, meaning in _KINDS
}


def lookup(name: str) -> EventType | None:
    """The registered type of a stored event name, if it is one."""
    try:
        return REGISTRY[Event(name)]
    except ValueError:
        return None  # an entry from an older or newer gateway


def with_outcome(outcome: Outcome) -> frozenset[str]:
    """The names of every event with that outcome."""
    return frozenset(t.name for t in REGISTRY.values() if t.outcome is outcome)
