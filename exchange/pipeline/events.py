"""The bodies of the audit events the stages write: ids, counts, hashes and safe messages only.

A failure's body names the error's type; an expected error (an `ExchangeError`, whose messages
never carry a value from a row) also gives its message, an unexpected one never does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from exchange.contract import Contract
from exchange.errors import ContractError, ExchangeError, HostKeyRejected, Refused, Retryable
from exchange.manifest import contract_facts
from exchange.transport.base import Delivery
from exchange.transport.retry import Attempt

Incidence = tuple[str, str] | None  # (kind, summary) of the incident a failure raises, if any

# Contract statuses of an agreement still being written: refusing to run one is expected.
SETTING_UP_STATUSES = frozenset({"draft", "proposed"})


def when(moment: dt.datetime) -> str:
    """A time as the ledger writes it."""
    return moment.isoformat(timespec="seconds")


def outcome(exc: BaseException) -> str:
    """'refused' for a policy or host-key refusal, else 'failed'."""
    return "refused" if isinstance(exc, Refused | HostKeyRejected) else "failed"


def checked(contract: Contract, approval: Any) -> dict[str, Any]:
    """contract.checked: the agreement and its approval."""
    return {
        **contract_facts(contract),
        "approval": {
            "approver": approval.approver,
            "approved_at": approval.approved_at,
            "review_by": approval.review_by,
        },
    }


def unexpected(stage: str, exc: BaseException) -> tuple[str, dict[str, Any], Incidence]:
    """run.failed for an error the stage did not expect: its type only, never its message."""
    body = {"stage": stage, "outcome": "failed", "reason": "unexpected-error"}
    name = type(exc).__name__
    return "run.failed", {**body, "error": name}, ("run-failed", f"{stage}: unexpected {name}")


def invalid_contract(file: str | None, exc: ContractError) -> tuple[str, dict[str, Any], Incidence]:
    """run.refused for a contract that does not load."""
    body = {
        "reason": "contract-invalid",
        "file": file,
        "problems": [str(p) for p in exc.problems][:50],
    }
    return "run.refused", body, ("policy-refusal", f"contract {file} is invalid")


def refusal(
    stage: str, exc: ExchangeError, contract: Contract | None, file: str | None
) -> tuple[str, dict[str, Any], Incidence]:
    """run.refused (a policy refusal, with an incident unless `setting_up`) or run.failed."""
    body: dict[str, Any] = {
        "stage": stage,
        "outcome": outcome(exc),
        "reason": getattr(exc, "reason", type(exc).__name__),
        "error": type(exc).__name__,
        "message": str(exc),
    }
    body.update({"contract_sha256": contract.sha256} if contract else {"file": file})
    for attr in ("unexpected", "missing", "failures"):
        if getattr(exc, attr, None):
            body[attr] = list(getattr(exc, attr))
    if isinstance(exc, Refused):
        if setting_up(exc, contract):  # audited, but nobody needs waking for it
            return "run.refused", {**body, "setting_up": True}, None
        return "run.refused", body, ("policy-refusal", f"{stage}: {exc}")
    return "run.failed", body, None


def setting_up(exc: Refused, contract: Contract | None) -> bool:
    """Whether a refusal is the expected one of an agreement still being set up: a draft (or
    proposed) contract, or one never approved. An approval that no longer holds (edited since,
    untrusted or revoked key, suspended, past review) is still an incident."""
    reason = getattr(exc, "reason", None)
    if reason == "not-approved":
        return True
    return (
        reason == "not-active" and contract is not None and contract.status in SETTING_UP_STATUSES
    )


def transfer_base(contract: Contract, drop_id: str) -> dict[str, Any]:
    """What every transfer event names: the drop, the recipient and the server."""
    return {
        "drop_id": drop_id,
        "recipient": contract.recipient.organisation,
        "server": contract.endpoint.server,
    }


def transfer_failed(
    base: Mapping[str, Any], exc: ExchangeError, attempts: int
) -> tuple[str, dict[str, Any], Incidence]:
    """transfer.failed, with a host-key incident or a delivery incident."""
    body = {
        **base,
        "outcome": outcome(exc),
        "error": type(exc).__name__,
        "message": str(exc),
        "retryable": isinstance(exc, Retryable),
        "security_event": isinstance(exc, HostKeyRejected),
        "attempts": attempts,
    }
    kind = "host-key-changed" if isinstance(exc, HostKeyRejected) else "delivery-failed"
    return "transfer.failed", body, (kind, str(exc))


def transfer_sent(
    contract: Contract,
    prepared: Any,
    delivery: Delivery,
    *,
    manifest_sha256: str,
    attempts: Sequence[Attempt],
    started: dt.datetime,
    finished: dt.datetime,
) -> dict[str, Any]:
    """transfer.sent: what went to whom under which agreement, and how it got there."""
    return {
        **transfer_base(contract, prepared.drop_id),
        **contract_facts(contract),
        "fields_sent": list(contract.field_names),
        "rows": {
            "read": prepared.rows_read,
            "excluded": prepared.excluded,
            "objections_overridden": prepared.objections_overridden,
            "sent": prepared.rows_sent,
        },
        "validation": "passed",
        "payload_sha256": prepared.payload_sha256,
        "manifest_sha256": manifest_sha256,
        "watermark": prepared.watermark,
        "remote_path": delivery.remote_path,
        "bytes": delivery.bytes,
        "already_delivered": delivery.already_delivered,
        "attempts": len(delivery.attempts) or len(attempts),
        "rename": delivery.rename,
        "outcome": "sent",
        "started_at": when(started),
        "finished_at": when(finished),
    }
