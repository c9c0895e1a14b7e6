"""Stage 1, check: the contract comes from the configured folder, loads, and may run today.

`recheck` is what every later task and retry does first: the same contract version as at the
start of the run (taken from the ledger, not from task state), still runnable now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exchange.contract import Contract, load_contract
from exchange.errors import ContractError, NotRunnable, Problem
from exchange.pipeline import events
from exchange.pipeline.boundary import stage
from exchange.pipeline.context import Context
from exchange.pipeline.naming import SAFE_ID
from exchange.quality_rules import compile_rules
from exchange.settings import Settings


def contract_file(settings: Settings, contract: str | Path) -> Path:
    """A contract file inside the configured contracts folder, by path or by id.

    Contracts run only from that folder's top level: a copy elsewhere, however approved, does
    not run.
    Raises NotRunnable for a file elsewhere, ContractError for a missing one."""
    folder = settings.contracts.resolve()
    given = Path(contract)
    if given.suffix not in (".yaml", ".yml") and SAFE_ID.fullmatch(str(contract)):
        given = folder / f"{contract}.yaml"
    path = (given if given.is_absolute() else Path.cwd() / given).resolve()
    # Only the folder's top level: `approved/` keeps approved copies and `suspensions/` signed
    # statements, and neither is a contract to run.
    if path.parent != folder:
        raise NotRunnable(
            f"contract {given.name} is not in the configured contracts folder {folder} "
            "(EXCHANGE_CONTRACTS): contracts run only from its top level",
            reason="outside-contracts-folder",
        )
    if not path.is_file():
        raise ContractError([Problem(str(given), "", "no such contract file")])
    return path


def runnable(ctx: Context, contract: Contract) -> Any:
    """The approval under which the contract may run today. Raises NotRunnable."""
    return ctx.governance().check(contract, ctx.clock().date())


def check_contract(ctx: Context, contract_path: str | Path, *, run_id: str) -> Contract:
    """Load the contract and confirm it may run today; every refusal is audited.

    Raises NotRunnable or ContractError (a rule that cannot be enforced refuses the run)."""
    with stage(ctx, "check", run_id, file=Path(contract_path).name) as current:
        contract = load_contract(contract_file(ctx.settings, contract_path))
        compile_rules(contract)
        current.contract = contract
        approval = runnable(ctx, contract)
        ctx.ledger.append(
            "contract.checked",
            events.checked(contract, approval),
            run_id=run_id,
            contract_id=contract.id,
        )
    return contract


def recheck_contract(
    ctx: Context, contract_path: str | Path, sha256: str | None = None, *, run_id: str
) -> Contract:
    """The contract as checked at the start of this run, and still runnable now.

    A suspension, revocation or review date that falls between tasks stops the run before the
    next task does anything. `sha256`, if given, must agree with the ledger. Raises NotRunnable."""
    with stage(ctx, "recheck", run_id, file=Path(contract_path).name) as current:
        contract = load_contract(contract_file(ctx.settings, contract_path))
        current.contract = contract
        checked = ctx.ledger.find("contract.checked", run_id=run_id, contract_id=contract.id)
        expected = checked.data.get("sha256") if checked else None
        if expected is None or contract.sha256 != expected or sha256 not in (None, expected):
            raise NotRunnable(
                f"contract {contract.id} changed during the run, or this run never checked it",
                reason="changed-during-run",
            )
        runnable(ctx, contract)
    return contract
