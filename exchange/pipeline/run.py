"""A whole exchange in one go (the CLI's `run`): check, prepare, deliver; never twice per run."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from exchange import doctor
from exchange.contract import Contract
from exchange.pipeline.boundary import stage
from exchange.pipeline.check import check_contract
from exchange.pipeline.context import Context
from exchange.pipeline.deliver import deliver_drop
from exchange.pipeline.naming import new_run_id
from exchange.pipeline.prepare import Options, prepare_drop
from exchange.pipeline.results import RunResult
from exchange.transport.base import Transport


def run_exchange(
    ctx: Context,
    contract_path: str | Path,
    source: str | Path | None,
    *,
    run_id: str | None = None,
    full_refresh: bool = False,
    preflight: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Check, prepare and deliver; a run already delivered is reported, not redone.

    With `preflight` (the CLI), every missing local prerequisite (keys, secrets, the SFTP
    connection, the source) is found before any data is read and reported at once (NotReady).
    `progress` is told each stage as it starts (ids and counts only)."""
    say = progress or (lambda _: None)
    run_id = run_id or new_run_id(ctx.clock())
    say(f"run {run_id}: checking the contract and its approval")
    contract = check_contract(ctx, contract_path, run_id=run_id)
    earlier = ctx.ledger.find("transfer.sent", run_id=run_id, contract_id=contract.id)
    if earlier is not None:
        sent = earlier.data
        record = ctx.ledger.find("run.prepared", run_id=run_id, contract_id=contract.id)
        incremental = (record.data.get("incremental") if record else None) or {}
        return RunResult(
            run_id,
            sent["drop_id"],
            sent["rows"]["read"],
            sent["rows"]["sent"],
            sent["rows"]["excluded"],
            sent["remote_path"],
            already_delivered=True,
            objections_overridden=sent["rows"].get("objections_overridden", 0),
            rows_unchanged=int(incremental.get("rows_unchanged", 0)),
            since=incremental.get("since"),
        )
    if preflight:
        say(f"run {run_id}: checking keys, secrets, the connection and the source")
        _preflight(ctx, contract, source, run_id)
    say(f"run {run_id}: reading, minimising, validating and encrypting")
    transport = _transport(ctx, contract)
    with _warmed(transport):  # the partner's session opened while the drop is prepared
        prepared = prepare_drop(ctx, contract, source, run_id, Options(full_refresh=full_refresh))
        say(
            f"run {run_id}: read {prepared.rows_read:,} rows; delivering {prepared.rows_sent:,} "
            f"to {contract.recipient.organisation}"
        )
        delivery = deliver_drop(ctx, contract, run_id, transport)
    return RunResult(
        run_id,
        prepared.drop_id,
        prepared.rows_read,
        prepared.rows_sent,
        prepared.excluded,
        delivery.remote_path,
        delivery.already_delivered,
        prepared.objections_overridden,
        prepared.rows_unchanged,
        prepared.since,
    )


def _transport(ctx: Context, contract: Contract) -> Transport | None:
    """The contract's transport, or None where it cannot be had yet: the deliver stage asks
    again, and records why in its own place."""
    try:
        return ctx.transport_for(contract)
    except Exception:  # a malformed connection secret, say: audited by the deliver stage
        return None


def _warmed(transport: Transport | None) -> AbstractContextManager[None]:
    """The transport's block for a session opened ahead, if it has one."""
    warmed = getattr(transport, "warmed", None)  # a backend of another project may lack it
    return warmed() if warmed is not None else nullcontext()


def _preflight(ctx: Context, contract: Contract, source: str | Path | None, run_id: str) -> None:
    """Raise NotReady listing every missing prerequisite; audited like any failed stage."""
    with stage(ctx, "preflight", run_id, contract=contract):
        given = None if source is None or not isinstance(source, str | Path) else str(source)
        missing = doctor.preflight(
            ctx.settings,
            contract,
            given,
            store=ctx.secrets,
            check_source=source is None or isinstance(source, str | Path),
        )
        if missing:
            raise doctor.NotReady(missing)
