"""Stage 3, deliver: verify the run's staged drop, re-check the agreement, send, purge, record.

With a shared staging store the drop is first fetched into this worker's run-derived local
folder (and the store's abandoned drops of this agreement expire); it is verified there like
any staged drop, and after delivery both copies are deleted.

The agreement is checked again right before upload. While the partner's server is being
talked to, a failure is recorded as `transfer.failed` (with an incident: a changed host key is
a security event); transient faults were already retried by the transport.
"""

from __future__ import annotations

import hashlib
import shutil

from exchange import manifest
from exchange.contract import Contract
from exchange.pipeline import events
from exchange.pipeline.boundary import stage
from exchange.pipeline.check import runnable
from exchange.pipeline.context import Context
from exchange.pipeline.naming import drop_id_for
from exchange.pipeline.staging import discard, fetch, purge_expired, staged, staging_for
from exchange.transport.base import Delivery, Transport
from exchange.transport.retry import Attempt


def deliver_drop(
    ctx: Context, contract: Contract, run_id: str, transport: Transport | None = None
) -> Delivery:
    """Send the run's staged drop to the partner, once (by `transport`, one warmed while the
    drop was prepared, or the contract's). Raises NotRunnable, TransferError."""
    with stage(ctx, "deliver", run_id, contract=contract) as current:
        drop_id = drop_id_for(contract.id, run_id)
        purge_expired(ctx.settings, ctx.clock(), contract_id=contract.id, keep=drop_id)
        if fetch(ctx, contract, run_id):  # the store keeps its copy until the drop has arrived
            local = staging_for(ctx.settings, drop_id)
            current.undo.append(lambda _: shutil.rmtree(local, ignore_errors=True))
        prepared = staged(ctx, contract, run_id)
        runnable(ctx, contract)  # right before upload
        staging = staging_for(ctx.settings, prepared.drop_id)
        started = ctx.clock()
        base = current.transfer = events.transfer_base(contract, prepared.drop_id)

        def attempted(attempt: Attempt) -> None:
            current.attempts.append(attempt)
            if not attempt.ok:
                body = {**base, **attempt.as_dict()}
                ctx.ledger.append("transfer.attempt", body, run_id=run_id, contract_id=contract.id)

        delivery = (transport or ctx.transport_for(contract)).deliver(
            staging, contract.endpoint.folder, prepared.drop_id, on_attempt=attempted
        )
        current.transfer = None  # it has arrived: a failure from here on is not the transfer's
        document = (staging / manifest.MANIFEST_NAME).read_bytes()
        discard(ctx, contract, prepared.drop_id)  # the ciphertext has arrived: purge it
        finished = ctx.clock()
        ctx.disclosures().mark_sent(prepared.drop_id, finished)
        body = events.transfer_sent(
            contract,
            prepared,
            delivery,
            manifest_sha256=hashlib.sha256(document).hexdigest(),
            attempts=current.attempts,
            started=started,
            finished=finished,
        )
        ctx.ledger.append("transfer.sent", body, run_id=run_id, contract_id=contract.id)
    return delivery
