"""The incremental watermark: where the next run of an incremental agreement starts."""

from __future__ import annotations

import datetime as dt

from exchange.audit import Ledger
from exchange.contract import Contract


def watermark(ledger: Ledger, contract: Contract) -> dt.datetime | None:
    """The newest last-updated time of the last delivered run (None: send everything)."""
    latest = None
    for entry in ledger.entries():
        if entry.event == "transfer.sent" and entry.contract_id == contract.id:
            latest = entry.data.get("watermark") or latest
    return dt.datetime.fromisoformat(latest) if latest else None
