"""What the verified ledger says about each drop's disclosure record, and where a record differs.

A drop's `run.prepared` entry binds its disclosure rows (subject count, digest, key id) and its
`transfer.sent` entry binds its facts (agreement, recipient, purposes, legal basis, fields), so
the hash chain and checkpoints protect the disclosure tables too.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from exchange.audit.entry import Entry
from exchange.audit.events import Event
from exchange.audit.subjects import EMPTY_DIGEST


class LedgerBindings:
    """What the (verified) ledger says about each drop's disclosure record: fed by `visit`."""

    def __init__(self) -> None:
        self.prepared: dict[str, dict[str, Any]] = {}  # drop -> run.prepared "disclosures"
        self.sent: dict[str, dict[str, Any]] = {}  # drop -> transfer.sent body

    def visit(self, entry: Entry) -> None:
        """Take note of one entry; the newest entry of a drop wins (a retried prepare)."""
        if entry.event not in (Event.RUN_PREPARED, Event.TRANSFER_SENT):
            return
        body = entry.data
        drop_id = body.get("drop_id")
        if not isinstance(drop_id, str):
            return
        if entry.event == Event.RUN_PREPARED and isinstance(body.get("disclosures"), dict):
            self.prepared[drop_id] = body["disclosures"]
        elif entry.event == Event.TRANSFER_SENT:
            self.sent[drop_id] = body


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None  # a malformed column never equals what the ledger says


def mismatch(row: Any, bound: LedgerBindings, count: int, digest: str | None) -> str:
    """Why a delivered drop's record differs from the ledger ("" if it does not)."""
    prepared, sent = bound.prepared.get(row.drop_id), bound.sent.get(row.drop_id)
    if prepared is None:
        return "not in the audit ledger (no run.prepared entry binds it: forged?)"
    if sent is None:
        return "recorded as delivered, but the audit ledger has no transfer.sent entry for it"
    digest = digest or EMPTY_DIGEST
    if not hmac.compare_digest(digest, str(prepared.get("digest"))) or count != prepared.get(
        "subjects"
    ):
        return (
            f"its {count} subject rows differ from the {prepared.get('subjects')} its "
            "run.prepared entry binds (rows added, altered or deleted)"
        )
    if (row.digest, row.subjects, row.key_id) != (
        prepared.get("digest"),
        prepared.get("subjects"),
        prepared.get("key_id"),
    ):
        return "its digest, count or key id differs from its run.prepared entry"
    facts = (
        row.contract_id,
        row.contract_version,
        row.recipient,
        _json_or_none(row.purposes),
        row.legal_basis,
        _json_or_none(row.fields),
    )
    logged = (
        sent.get("id"),
        sent.get("version"),
        sent.get("recipient"),
        sent.get("purposes"),
        sent.get("legal_basis"),
        sent.get("fields_sent"),
    )
    if facts != logged:
        return (
            "its agreement, recipient, purposes, legal basis or fields differ from its "
            "transfer.sent entry"
        )
    return ""
