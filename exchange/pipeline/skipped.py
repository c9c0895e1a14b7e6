"""Runs the orchestrator skips on purpose, recorded in the ledger like every other decision.

Airflow makes a DAG's first scheduled run at once when the DAG is unpaused, for the interval
that has just passed; the DAG skips it (`dags/exchange_dags.py`), so that switching an
agreement on sends nothing before its next scheduled time. An auditor must be able to tell
that run was skipped, not lost: `run.skipped` records it, with nothing read or sent.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from exchange.audit import Ledger
from exchange.audit.events import Event
from exchange.audit.ledger import Entry
from exchange.contract import safe_yaml
from exchange.errors import ContractError


def _contract_id(path: Path) -> str | None:
    """The contract's id, if its file can be read and names a safe one (else None)."""
    from exchange.contract.load import read_document  # pulls in pyarrow: not at import

    try:
        found = read_document(path).get("id")
    except (ContractError, OSError, ValueError):  # the skip is still recorded, with its file
        return None
    return found if isinstance(found, str) and safe_yaml.is_contract_id(found) else None


def record_late_first_run(
    ledger: Ledger,
    contract_file: Path,
    run_id: str,
    *,
    due: dt.datetime,
    started: dt.datetime,
    triggered_by: str,
) -> Entry:
    """Record that the first scheduled run of an agreement was skipped for starting late."""
    body = {
        "stage": "check",
        "reason": "late-first-run",
        "file": contract_file.name,
        "due": due.isoformat(timespec="seconds"),
        "started_at": started.isoformat(timespec="seconds"),
        "triggered_by": triggered_by,
    }
    return ledger.append(
        Event.RUN_SKIPPED, body, run_id=run_id, contract_id=_contract_id(contract_file)
    )
