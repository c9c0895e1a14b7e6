"""Retention on the partner's server: remove this agreement's drops past their retention.

Only where the agreement lets the sender manage the partner's inbox. A drop's age is its signed
manifest's `created_at`; folders that are not drops of ours are left alone. Works through any
transport's `Remote`; each removal is audited as it happens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from exchange.contract import Contract
from exchange.errors import ConnectionLost, NotRunnable, TransferError
from exchange.manifest import MANIFEST_NAME, ManifestError, strict_json
from exchange.pipeline import events
from exchange.pipeline.boundary import stage
from exchange.pipeline.context import Context
from exchange.transport.base import Remote

MAX_MANIFEST_BYTES = 1 << 20


def expire_drops(ctx: Context, contract: Contract) -> list[str]:
    """Remove this contract's drops older than its retention from the partner's inbox.

    Returns the removed drop ids. Raises NotRunnable where the agreement does not allow it or
    its retention is unknown, TransferError if the server refuses."""
    with stage(ctx, "retention", None, contract=contract):
        if not contract.sender_manages_inbox:
            raise NotRunnable(f"contract {contract.id} does not let the sender manage the inbox")
        if contract.retention_days is None:
            raise NotRunnable(f"contract {contract.id}: retention {contract.retention!r} unknown")
        older_than = ctx.clock() - dt.timedelta(days=contract.retention_days)
        removed = []
        with ctx.transport_for(contract).connect() as remote:
            folder = contract.endpoint.folder
            for drop_id in remove_expired(remote, folder, older_than, contract_id=contract.id):
                body = {
                    "drop_id": drop_id,
                    "retention": contract.retention,
                    "older_than": events.when(older_than),
                }
                ctx.ledger.append("retention.removed", body, contract_id=contract.id)
                removed.append(drop_id)
    return removed


def remove_expired(
    remote: Remote, folder: str, older_than: dt.datetime, *, contract_id: str | None = None
) -> Iterator[str]:
    """Delete the drops in `folder` made before `older_than`, yielding each removed drop id.

    Abandoned `.<drop>.partial` folders older than the limit go too, under their hidden name.
    Each drop is first renamed to a hidden name, so a partner never sees a half-deleted drop.
    Raises ValueError for a time without a zone, TransferError, ConnectionLost."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must carry a time zone")
    limit = older_than.timestamp()
    for entry in remote.list(folder):
        name = entry.name
        if not entry.is_folder:
            continue
        if name.startswith("."):
            if name.endswith(".partial") and entry.modified < limit:
                remote.remove(f"{folder}/{name}")
                yield name
            continue
        made = _drop_created(remote, f"{folder}/{name}", name, contract_id)
        if made is None or made.timestamp() >= limit:
            continue
        doomed = f"{folder}/.{name}.expired"
        remote.remove(doomed)
        remote.rename(f"{folder}/{name}", doomed)
        remote.remove(doomed)
        yield name


def _drop_created(
    remote: Remote, path: str, name: str, contract_id: str | None
) -> dt.datetime | None:
    """When the drop at `path` was made, per its manifest; None if it is not one of ours."""
    try:
        data = remote.read(f"{path}/{MANIFEST_NAME}", MAX_MANIFEST_BYTES)
    except ConnectionLost:
        raise
    except TransferError:
        return None
    try:
        body = strict_json(data, limit=MAX_MANIFEST_BYTES, what="manifest")
        made = dt.datetime.fromisoformat(body["created_at"])
    except (ManifestError, ValueError, KeyError, TypeError):
        return None
    if body.get("drop_id") != name or made.tzinfo is None:
        return None
    facts = body.get("contract")
    if contract_id is not None and (not isinstance(facts, dict) or facts.get("id") != contract_id):
        return None
    return made
