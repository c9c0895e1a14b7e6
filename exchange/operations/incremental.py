"""The incremental watermark: where the next run of an incremental agreement starts."""

from __future__ import annotations

import datetime as dt

from exchange.audit.events import Event
from exchange.audit.ledger import Ledger
from exchange.contract import Contract


def watermark(ledger: Ledger, contract: Contract) -> dt.datetime | None:
    """The newest last-updated time of the last delivered run (None: send everything).

    Read newest first from an index, stopping at the first delivery that set one (correction
    notices do not), so it costs the same with a long history as with none.
    """
    for entry in ledger.newest(Event.TRANSFER_SENT, contract_id=contract.id):
        latest = entry.data.get("watermark")
        if latest:
            return dt.datetime.fromisoformat(latest)
    return None
