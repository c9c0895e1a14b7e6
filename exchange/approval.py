"""May this contract run now? The first check of every run, from the CLI or a DAG.

Checked here: the contract is `active` and not past its review date. The IG officer's signed
approval (DESIGN.md section 4) is checked here too once approvals exist; until then every run
records that no approval was verified.
"""

from __future__ import annotations

import datetime as dt

from exchange.contract import Contract
from exchange.errors import NotRunnable


def check_runnable(contract: Contract, today: dt.date) -> None:
    """Raise NotRunnable with the reason unless the contract may run today."""
    if contract.status != "active":
        raise NotRunnable(f"contract {contract.id} is {contract.status!r}, not 'active'")
    if contract.review_date < today:
        raise NotRunnable(
            f"contract {contract.id} was due for review on {contract.review_date.isoformat()}"
        )
