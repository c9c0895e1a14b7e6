"""Rectification: send every recipient of a person's data a correction notice.

Each notice is a drop like any other (encrypted, signed, audited, acknowledged): the person's
row as the source holds it now, minimised under that agreement, with a `correction` manifest
entry naming the corrected fields, the reason and the earlier drops it corrects. Recipients are
found only from disclosures verified against the audit ledger.
"""

from __future__ import annotations

import secrets as random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange.contract import Contract, load_contract
from exchange.crypto import signing
from exchange.errors import ContractError, ExchangeError
from exchange.pipeline.boundary import stage
from exchange.pipeline.check import check_contract
from exchange.pipeline.context import Context
from exchange.pipeline.deliver import deliver_drop
from exchange.pipeline.prepare import Options, prepare_drop
from exchange.pipeline.results import Prepared
from exchange.pipeline.source import resolve
from exchange.pipeline.staging import discard
from exchange.sources.subset import OnlySubjects


@dataclass(frozen=True)
class Correction:
    """What a notice corrects: the fields that were wrong, and why."""

    fields: Sequence[str]
    reason: str


def rectify(
    ctx: Context,
    subject_id: str,
    correction: Correction,
    contracts_dir: Path | None = None,
    source: str | Path | None = None,
) -> list[tuple[str, str, str]]:
    """Send each recipient of this person a correction; returns (contract, recipient, drop).

    Raises ExchangeError when there is no reason, no verified disclosure, an agreement that is
    gone or does not send the fields, or a notice that would carry no row (then none is sent);
    and what check, prepare and deliver raise."""
    # A random id: one derived from the person's id would let a recipient test guesses.
    run_id = f"rectify-{random.token_hex(8)}"
    with stage(ctx, "rectify", run_id):
        fields, reason = correction.fields, correction.reason.strip()
        if not reason:
            raise ExchangeError("a correction needs a reason")
        earlier = _earlier_drops(ctx, subject_id)
        contracts_dir = contracts_dir or ctx.settings.contracts
        by_id = _contracts_by_id(contracts_dir)
        notices = []
        for contract_id, drops in sorted(earlier.items()):
            if contract_id not in by_id:
                raise ExchangeError(f"contract {contract_id} is not in {contracts_dir}")
            contract = check_contract(ctx, by_id[contract_id], run_id=run_id)
            unknown = [f for f in fields if f not in contract.field_names]
            if unknown:
                raise ExchangeError(f"{contract_id} does not send field(s) {', '.join(unknown)}")
            notices.append(
                (contract, {"fields": list(fields), "reason": reason, "corrects": drops})
            )
        # Every notice is prepared before any is sent: one that would carry no row stops them
        # all, and no recipient is told while another cannot be.
        prepared: list[tuple[Contract, Prepared]] = []
        try:
            for contract, notice in notices:
                prepared.append(
                    (contract, _prepare(ctx, contract, subject_id, notice, run_id, source))
                )
        except BaseException:
            for contract, drop in prepared:
                _abandon(ctx, contract, drop.drop_id)
            raise
        sent = []
        for (contract, drop), (_, notice) in zip(prepared, notices, strict=True):
            delivery = deliver_drop(ctx, contract, run_id)
            ctx.ledger.append(
                "rectification.sent",
                {
                    **notice,
                    "drop_id": drop.drop_id,
                    "recipient": contract.recipient.organisation,
                    "remote_path": delivery.remote_path,
                },
                run_id=run_id,
                contract_id=contract.id,
            )
            sent.append((contract.id, contract.recipient.organisation, drop.drop_id))
    return sent


def _earlier_drops(ctx: Context, subject_id: str) -> dict[str, list[str]]:
    """Contract id -> the drops that carried this person, from verified disclosures only."""
    public_key = signing.load_private_key(ctx.settings.signing_key).public_key()
    found, _ = ctx.disclosures().verified_lookup(
        subject_id,
        ctx.ledger,
        public_key=public_key,
        origin=ctx.settings.checkpoint_origin(signing.key_id(public_key)),
    )
    earlier: dict[str, list[str]] = {}
    for disclosure in found:  # a forged disclosure row cannot direct a correction
        earlier.setdefault(disclosure.contract_id, []).append(disclosure.drop_id)
    if not earlier:
        raise ExchangeError("no recorded disclosure about this subject: nobody to notify")
    return {contract_id: sorted(drops) for contract_id, drops in earlier.items()}


def _contracts_by_id(folder: Path) -> dict[str, Path]:
    by_id = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            by_id[load_contract(path).id] = path
        except ContractError:
            continue  # another agreement's file; its own runs report its problems
    return by_id


def _prepare(
    ctx: Context,
    contract: Contract,
    subject_id: str,
    correction: dict[str, Any],
    run_id: str,
    source: str | Path | None,
) -> Prepared:
    """Stage one correction notice. ExchangeError (the drop abandoned) if it would carry no
    row: the source holds none for the person, or the agreement's objections or filters leave
    it out."""
    subject = OnlySubjects(
        resolve(ctx.settings, ctx.secrets, contract, source, digest=False)[0],
        contract.subject_key.source,
        [subject_id],
    )
    # A notice carries the row whatever its last-updated time, and must not move an
    # incremental agreement's watermark.
    options = Options(extra={"correction": correction}, full_refresh=True, advance_watermark=False)
    prepared = prepare_drop(ctx, contract, subject, run_id, options)
    if prepared.rows_sent == 0:
        _abandon(ctx, contract, prepared.drop_id)
        raise ExchangeError(
            f"a correction to {contract.recipient.organisation} under {contract.id} would "
            "carry no row (the source holds none for this subject, or the agreement's "
            "objections or filters leave it out): no correction sent"
        )
    return prepared


def _abandon(ctx: Context, contract: Contract, drop_id: str) -> None:
    """Remove a staged notice that will not be sent, and its disclosure record."""
    discard(ctx, contract, drop_id)
    ctx.disclosures().discard(drop_id)
