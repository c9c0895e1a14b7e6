"""Run ids and drop ids: the names a run gives its staged drop and the partner's folder."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid

from exchange.errors import NotRunnable

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RUN_ID_MAX = 250


def new_run_id(now: dt.datetime) -> str:
    """A run id for a run started by hand."""
    return f"cli-{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def drop_id_for(contract_id: str, run_id: str) -> str:
    """The drop's name: fixed by the run, so re-running a run never makes a second drop.

    Raises NotRunnable for an unsafe contract id or an empty, long or unprintable run id."""
    if not SAFE_ID.fullmatch(contract_id) or ".." in contract_id:
        raise NotRunnable(f"contract id {contract_id!r} is not a safe name", reason="unsafe-id")
    if not run_id or len(run_id) > RUN_ID_MAX or not run_id.isprintable():
        raise NotRunnable("the run id is empty, too long or not printable", reason="unsafe-id")
    digest = hashlib.sha256(f"{contract_id}\n{run_id}".encode()).hexdigest()[:16]
    return f"{contract_id}-{digest}"
