"""Collecting the partner's signed acknowledgements, and flagging drops not acknowledged in time.

The protocol (file format, signatures, which files count) is `exchange.acks`; this module keeps
the ledger's side: which drops wait, what arrived, what is overdue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from exchange import destruction, manifest
from exchange.acks import Ack, RejectedAck, canonical, collect_acks
from exchange.audit import Entry, Ledger, witness
from exchange.audit.checkpoint import Checkpoint
from exchange.contract import Contract
from exchange.crypto import signing
from exchange.destruction import Receipt
from exchange.errors import LedgerError, NotRunnable
from exchange.pipeline.boundary import stage
from exchange.pipeline.context import Context
from exchange.transport.base import Remote


@dataclass
class Waiting:
    """This contract's delivered drops, as the ledger knows them."""

    sent: dict[str, Entry] = field(default_factory=dict)  # drop id -> its transfer.sent
    acked: set[str] = field(default_factory=set)
    overdue_noted: set[str] = field(default_factory=set)
    destroyed: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # drops a partner reported refusing
    destruction_overdue_noted: set[str] = field(default_factory=set)

    def expected(self) -> dict[str, str]:
        """Drop id -> manifest SHA-256 of every drop not acknowledged yet."""
        return {
            drop_id: entry.data["manifest_sha256"]
            for drop_id, entry in self.sent.items()
            if drop_id not in self.acked
        }


def waiting(ledger: Ledger, contract_id: str) -> Waiting:
    """What the ledger says was sent, acknowledged and flagged overdue under this contract."""
    state = Waiting()
    for entry in ledger.entries():
        if entry.contract_id != contract_id:
            continue
        if entry.event == "transfer.sent" and "manifest_sha256" in entry.data:
            state.sent[entry.data["drop_id"]] = entry
        elif entry.event == "ack.received":
            state.acked.add(entry.data["drop_id"])
        elif entry.event == "ack.overdue":
            state.overdue_noted.add(entry.data["drop_id"])
        elif entry.event == "destruction.received":
            state.destroyed.add(entry.data["drop_id"])
        elif entry.event == "witness.refused":
            state.refused.add(entry.data["drop_id"])
        elif entry.event == "destruction.overdue":
            state.destruction_overdue_noted.add(entry.data["drop_id"])
    return state


def record_acks(ctx: Context, contract: Contract) -> tuple[int, int]:
    """Record the partner's verified acknowledgements and raise an incident for each drop past
    its deadline. Returns (received, overdue). Raises NotRunnable, TransferError."""
    with stage(ctx, "acks", None, contract=contract):
        terms = contract.acknowledgements
        if not terms:
            raise NotRunnable(f"contract {contract.id} names no acknowledgements folder")
        state = waiting(ctx.ledger, contract.id)
        expected = state.expected()
        keys: list[Any] = [load_ssh_public_key(line.encode()) for line in terms["partnerKeys"]]

        def rejected(ack: RejectedAck) -> None:
            body = {"file": ack.name, "reason": ack.reason, "key_id": ack.key_id}
            ctx.ledger.append(
                "ack.rejected", {**body, "security_event": True}, contract_id=contract.id
            )

        partner = {signing.key_id(key): key for key in _ed25519(keys)}
        with ctx.transport_for(contract).connect() as remote:
            found = collect_acks(
                remote, terms["folder"], _ed25519(keys), expected=expected, on_rejected=rejected
            )
            unreceipted = {
                drop_id: entry.data["manifest_sha256"]
                for drop_id, entry in state.sent.items()
                if drop_id not in state.destroyed
            }
            receipts = destruction.collect(
                remote, terms["folder"], partner, unreceipted, _rejected_receipt(ctx, contract)
            )
            _record_refusals(ctx, contract, remote, terms["folder"], partner, state)
        gateway = signing.load_private_key(ctx.settings.signing_key).public_key()
        for ack in found:
            cosigned = cosignature(ack, partner, gateway)
            _received(ctx, contract, state.sent[ack.drop_id], ack, cosigned)
            expected.pop(ack.drop_id, None)
        overdue = _flag_overdue(ctx, contract, state, expected, float(terms["deadlineHours"]))
        for receipt in receipts:
            _destroyed(ctx, contract, state.sent[receipt.drop_id], receipt)
            unreceipted.pop(receipt.drop_id, None)
        _flag_destruction_overdue(ctx, contract, state, unreceipted)
    return len(found), overdue


def _record_refusals(
    ctx: Context,
    contract: Contract,
    remote: Remote,
    folder: str,
    partner: dict[str, Ed25519PublicKey],
    state: Waiting,
) -> None:
    """A partner's signed report that it refused a drop because the ledger it was shown does
    not extend the one it witnessed: recorded once per drop, with an incident."""
    for found in remote.list(folder):
        name = found.name
        if found.is_folder or name.startswith(".") or not name.endswith(witness.REFUSAL_SUFFIX):
            continue
        drop_id = name[: -len(witness.REFUSAL_SUFFIX)]
        if drop_id not in state.sent or drop_id in state.refused:
            continue
        if found.size > witness.MAX_REFUSAL_BYTES:
            continue
        try:
            data = remote.read(f"{folder}/{name}", witness.MAX_REFUSAL_BYTES)
            report = witness.open_refusal(data, partner, canonical)
            if report.drop_id != drop_id:
                raise LedgerError("names another drop than its file name says")
        except LedgerError as exc:
            body = {"file": name, "reason": str(exc), "key_id": None, "security_event": True}
            ctx.ledger.append("ack.rejected", body, contract_id=contract.id)
            continue
        sent = state.sent[drop_id]
        ctx.ledger.append(
            "witness.refused",
            {
                "drop_id": drop_id,
                "key_id": report.key_id,
                "held_size": report.held_size,
                "offered_size": report.offered_size,
                "report": {"body": report.body, "signature": report.signature},
                "security_event": True,
            },
            run_id=sent.run_id,
            contract_id=contract.id,
        )
        state.refused.add(drop_id)
        ctx.incident(
            "log-not-extended",
            f"partner key {report.key_id} refused drop {drop_id}: the ledger checkpoint it was "
            f"sent (size {report.offered_size}) does not extend the one it witnessed (size "
            f"{report.held_size})",
            contract.id,
            sent.run_id or "",
        )


def _rejected_receipt(ctx: Context, contract: Contract) -> Callable[[RejectedAck], None]:
    def rejected(receipt: RejectedAck) -> None:
        body = {"file": receipt.name, "reason": receipt.reason, "key_id": receipt.key_id}
        ctx.ledger.append(
            "destruction.rejected", {**body, "security_event": True}, contract_id=contract.id
        )

    return rejected


def _destroyed(ctx: Context, contract: Contract, sent: Entry, receipt: Receipt) -> None:
    """Record a verified destruction receipt, with the partner's signed statement itself."""
    ctx.ledger.append(
        "destruction.received",
        {
            "drop_id": receipt.drop_id,
            "manifest_sha256": receipt.manifest_sha256,
            "destroyed_at": receipt.destroyed_at,
            "key_id": receipt.key_id,
            "deleted": receipt.body.get("deleted"),
            "receipt": {"body": receipt.body, "signature": receipt.signature},
        },
        run_id=sent.run_id,
        contract_id=contract.id,
    )


def destruction_due(contract: Contract, sent: Entry) -> dt.datetime | None:
    """When a drop's destruction receipt is due: sent + retention + grace (None: not due)."""
    if contract.retention_days is None or contract.retention_action != "delete":
        return None
    days = contract.retention_days + manifest.DESTRUCTION_GRACE_DAYS
    return dt.datetime.fromisoformat(sent.recorded_at) + dt.timedelta(days=days)


def _flag_destruction_overdue(
    ctx: Context, contract: Contract, state: Waiting, unreceipted: dict[str, str]
) -> int:
    """An incident, once per drop, for each drop past retention and grace with no receipt."""
    now, overdue = ctx.clock(), 0
    for drop_id in unreceipted:
        entry = state.sent[drop_id]
        due = destruction_due(contract, entry)
        if drop_id in state.destruction_overdue_noted or due is None or due > now:
            continue
        overdue += 1
        ctx.ledger.append(
            "destruction.overdue",
            {"drop_id": drop_id, "due": due.isoformat(timespec="seconds")},
            run_id=entry.run_id,
            contract_id=contract.id,
        )
        ctx.incident(
            "destruction-overdue",
            f"drop {drop_id}: no destruction receipt from the partner by {due.date()} "
            "(retention plus grace)",
            contract.id,
            entry.run_id or "",
        )
    return overdue


def _ed25519(keys: list[Any]) -> list[Ed25519PublicKey]:
    """The partner's keys (the contract loader accepts only Ed25519 ones)."""
    return [key for key in keys if isinstance(key, Ed25519PublicKey)]


def cosignature(
    ack: Ack, partner: dict[str, Ed25519PublicKey], gateway: Ed25519PublicKey
) -> dict[str, Any] | None:
    """The acknowledgement's tlog-cosignature, checked: over a checkpoint the gateway signed,
    by the partner key that signed the acknowledgement. None when the ack carries none."""
    line = ack.body.get("cosignature")
    if line is None:
        return None
    name = witness.witness_name(ack.key_id)
    ledger = ack.body.get("ledger")
    note = ledger.get("checkpoint") if isinstance(ledger, dict) else None
    try:
        if not isinstance(line, str) or not isinstance(note, str):
            raise LedgerError("the cosignature or its checkpoint is missing")
        checkpoint = Checkpoint.open(note, gateway)
        timestamp = witness.open_cosignature(line, checkpoint.text, name, partner[ack.key_id])
    except LedgerError as exc:
        return {"verified": False, "witness": name, "reason": str(exc)[:200]}
    return {
        "verified": True,
        "witness": name,
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": checkpoint.root_hex,
        "timestamp": timestamp,
        "at": dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds"),
        "note": witness.cosigned_note(checkpoint.note, line),
    }


def _received(
    ctx: Context, contract: Contract, sent: Entry, ack: Ack, cosigned: dict[str, Any] | None
) -> None:
    if cosigned is not None and not cosigned["verified"]:
        ctx.incident(
            "cosignature-rejected",
            f"drop {ack.drop_id}: the partner's cosignature does not verify",
            contract.id,
            sent.run_id or "",
        )
    ctx.ledger.append(
        "ack.received",
        {
            "drop_id": ack.drop_id,
            "manifest_sha256": ack.manifest_sha256,
            "rows": ack.rows,
            "rows_match": ack.rows == sent.data["rows"]["sent"],
            "received_at": ack.received_at,
            "key_id": ack.key_id,
            "ledger": ack.body.get("ledger"),
            **({"cosignature": cosigned} if cosigned is not None else {}),
            # The partner's signed statement itself, so a bundle's reader can check it offline.
            **({"ack": {"body": ack.body, **ack.proof}} if ack.proof else {}),
        },
        run_id=sent.run_id,
        contract_id=contract.id,
    )


def _flag_overdue(
    ctx: Context, contract: Contract, state: Waiting, unacked: dict[str, str], hours: float
) -> int:
    """Note each drop newly past its deadline, once, with an incident; returns how many."""
    deadline = ctx.clock() - dt.timedelta(hours=hours)
    overdue = 0
    for drop_id in unacked:
        entry = state.sent[drop_id]
        if (
            drop_id in state.overdue_noted
            or dt.datetime.fromisoformat(entry.recorded_at) > deadline
        ):
            continue
        overdue += 1
        ctx.ledger.append(
            "ack.overdue", {"drop_id": drop_id}, run_id=entry.run_id, contract_id=contract.id
        )
        ctx.incident(
            "unacknowledged-drop",
            f"drop {drop_id} not acknowledged within {hours:g} hours",
            contract.id,
            entry.run_id or "",
        )
    return overdue
