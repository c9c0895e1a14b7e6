"""The one place a stage ends when it fails: undo its work, audit the failure once, re-raise.

Every stage and operation runs inside `stage(...)`. Expected errors (`ExchangeError`) are
recorded with their safe message; anything else (a bug, a full local disk) with its type only.
A failure already audited by an inner stage (rectify runs check, prepare and deliver) is not
audited again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from exchange.contract import Contract
from exchange.errors import ContractError, ExchangeError
from exchange.pipeline import events
from exchange.pipeline.context import Context
from exchange.transport.retry import Attempt

_AUDITED = "_exchange_audited"  # set on an exception once its failure is in the ledger


@dataclass
class Stage:
    """A stage under way: what to undo and what to record if it fails."""

    name: str
    run_id: str | None
    contract: Contract | None = None
    file: str | None = None  # the contract file's name, until the contract is loaded
    transfer: dict[str, Any] | None = None  # set while the partner's server is being talked to
    attempts: list[Attempt] = field(default_factory=list)
    undo: list[Callable[[BaseException], object]] = field(default_factory=list)

    def failure(self, exc: BaseException) -> tuple[str, dict[str, Any], events.Incidence]:
        """The event, its body and the incident (if any) that record `exc`."""
        if not isinstance(exc, ExchangeError):
            return events.unexpected(self.name, exc)
        if self.transfer is not None:
            return events.transfer_failed(self.transfer, exc, len(self.attempts))
        if isinstance(exc, ContractError):
            return events.invalid_contract(self.file, exc)
        return events.refusal(self.name, exc, self.contract, self.file)


@contextmanager
def stage(
    ctx: Context,
    name: str,
    run_id: str | None,
    *,
    contract: Contract | None = None,
    file: str | None = None,
) -> Iterator[Stage]:
    """Run a stage; on any failure, expected or not, undo its work and audit it, then re-raise."""
    current = Stage(name, run_id, contract, file)
    try:
        yield current
    except Exception as exc:  # the one catch-all: every failure is cleaned up and audited
        for undo in current.undo:
            undo(exc)
        if not getattr(exc, _AUDITED, False):
            _record(ctx, current, exc)
            setattr(exc, _AUDITED, True)
        raise


def _record(ctx: Context, current: Stage, exc: BaseException) -> None:
    event, body, incidence = current.failure(exc)
    contract_id = current.contract.id if current.contract else None
    ctx.ledger.append(event, body, run_id=current.run_id, contract_id=contract_id)
    if incidence is not None:
        ctx.incident(*incidence, contract_id, current.run_id or "")
