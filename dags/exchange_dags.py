"""One Airflow DAG per contract file in the contracts folder.

Orchestration only: every task calls the `exchange` library, and passes nothing but the
contract's hash and counts through XCom. XCom and params are editable by Airflow users, so no
task takes a path from them: the staged drop is found from the run id, and every task checks
again that the agreement may run. Parsing this file reads each contract's id, schedule and
the few terms its page shows with the safe YAML loader and nothing else (`contract_outline`):
no connection, no database, no data.

Each DAG is created paused, runs one at a time (`max_active_runs=1`), and skips a first
scheduled run that starts late, as the one Airflow creates at once on unpausing does (the
interval before the DAG was switched on is not a disclosure anyone expected); a run triggered
by hand always runs. A skipped run is recorded in the ledger (`run.skipped`). Two contract
files with one id get no DAG at all (see `exchange_contract_ids.py`, which reports them).
Each task logs one line of what the gateway did: ids and counts only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Param, PokeReturnValue, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

# Airflow puts a DAG bundle's folder on sys.path, a bare DagBag does not: find the siblings.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from contract_outline import (
    Outline,
    contract_yaml,
    contracts_folder,
    outline,
    outlines,
)

if TYPE_CHECKING:
    from exchange.gateway import Gateway

CONTRACTS = contracts_folder()
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# A scheduled run that starts more than this after its time is late (see `_late_first_run`).
LATE_AFTER = dt.timedelta(minutes=10)
NOISY_LIBRARIES = ("great_expectations",)  # hundreds of INFO lines per import ("Skipping ...")

log = logging.getLogger("exchange.dags")


def _quiet_libraries() -> None:
    """Keep library chatter out of task logs; their warnings and errors still show."""
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


_quiet_libraries()


def _gateway() -> Gateway:
    """The gateway for a task. Fails the task at once if EXCHANGE_CONTRACTS is not set."""
    if not os.environ.get("EXCHANGE_CONTRACTS"):
        # Without it the task would read the repository's sample folder and report a
        # confusing "not approved" for a contract that is approved where it really lives.
        raise AirflowFailException(
            "EXCHANGE_CONTRACTS is not set in this task's environment: set it to the folder "
            "of approved contracts for the scheduler, the dag-processor and every worker "
            "(e.g. in the deployment's environment file), then clear the task"
        )
    _quiet_libraries()
    # The library is imported at run time, so parsing the DAG file stays fast.
    from airflow_secrets import AirflowSecrets

    from exchange.gateway import Gateway
    from exchange.settings import Settings

    return Gateway(Settings.from_env(), secrets=AirflowSecrets())


def _late_first_run(context: Any) -> bool:
    """Whether this is the DAG's first run, scheduled, and started well after its time.

    Airflow creates such a run at once when a DAG is unpaused (for the interval that had
    just passed); skipping it means unpausing sends nothing until the next scheduled time."""
    run = context.get("dag_run")
    run_type = getattr(run, "run_type", None)
    if getattr(run_type, "value", run_type) != "scheduled":  # an enum, or its text
        return False
    due = getattr(run, "run_after", None) or getattr(run, "logical_date", None)
    started = getattr(run, "start_date", None) or dt.datetime.now(dt.UTC)
    if due is None or started - due <= LATE_AFTER:
        return False
    return context["ti"].get_previous_dagrun() is None


def _record_late_skip(contract_file: str, context: Any) -> None:
    """Put the skip in the ledger (`run.skipped`), so an auditor sees it was not lost."""
    from exchange.pipeline.skipped import record_late_first_run

    run = context.get("dag_run")
    started = getattr(run, "start_date", None) or dt.datetime.now(dt.UTC)
    due = getattr(run, "run_after", None) or getattr(run, "logical_date", None) or started
    record_late_first_run(
        _gateway().ledger,
        Path(contract_file),
        context["run_id"],
        due=due,
        started=started,
        triggered_by=_triggered_by(context),
    )


def _triggered_by(context: Any) -> str:
    """Who started the run, for the ledger: the Airflow user, or the scheduler."""
    run = context.get("dag_run")
    user = getattr(run, "triggering_user_name", None)
    kind = str(getattr(run, "run_type", "") or "unknown")
    return f"airflow:{user}" if user else f"airflow:{kind}"


def _say(event: str, run_id: str, agreement: str, text: str, **fields: Any) -> None:
    """The task's line of what the gateway did (ids and counts only): text, or a JSON object with
    the run and agreement ids when EXCHANGE_LOG_FORMAT is json."""
    from exchange.settings import Settings
    from exchange.tasklog import task_line

    line = task_line(
        Settings.from_env().log_format,
        event=event,
        run_id=run_id,
        agreement=agreement,
        text=text,
        **fields,
    )
    log.info("%s", line)


def _terminal(exc: Exception) -> AirflowFailException:
    """A refusal or other terminal error: fail the task at once, never retry."""
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


def _contract_yaml() -> Any:
    """The gateway's contract YAML loader, loaded without the `exchange` package."""
    return contract_yaml()


def _outline(path: Path) -> tuple[str, str | None, float | None]:
    """The DAG id, cron and acknowledgement deadline (hours) of a contract, read cheaply."""
    found = outline(path)
    return found.dag_id, found.schedule, found.ack_deadline_hours


def _acknowledgement_sensor(contract_file: str, deadline_hours: float) -> Any:
    """A sensor that waits for the partner's signed acknowledgement until the deadline.

    Each poke collects acknowledgements into the ledger; a drop past its deadline is recorded as
    an incident by the gateway, and the sensor then times out, failing the DAG's last task.
    """
    deadline = dt.timedelta(hours=deadline_hours)
    poke = max(1.0, min(300.0, deadline.total_seconds() / 12))

    @task.sensor(poke_interval=poke, timeout=deadline.total_seconds() + poke, mode="reschedule")
    def await_acknowledgement(delivered: dict[str, Any]) -> PokeReturnValue:
        run_id = get_current_context()["run_id"]
        gateway = _gateway()
        contract = gateway.recheck(contract_file, run_id=run_id)
        received, overdue = gateway.collect_acks(contract)
        acked = gateway.ledger.find("ack.received", run_id=run_id, contract_id=contract.id)
        _say(
            "acknowledgements",
            run_id,
            contract.id,
            f"exchange: acknowledgements collected {received}, overdue {overdue}; this run's drop "
            + ("acknowledged" if acked is not None else "not yet acknowledged"),
            collected=received,
            overdue=overdue,
            acknowledged=acked is not None,
        )
        return PokeReturnValue(is_done=acked is not None)

    return await_acknowledgement


def build_dag(contract_path: Path, found: Outline | None = None) -> DAG:
    """The exchange DAG of one contract: check -> prepare -> deliver."""
    found = found or outline(contract_path)
    dag_id, schedule, ack_deadline = found.dag_id, found.schedule, found.ack_deadline_hours
    contract_file = str(contract_path)

    with DAG(
        dag_id=dag_id,
        description=f"Data exchange under {contract_path.name}",
        doc_md=found.doc_md,
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,  # one agreement never runs twice at once
        is_paused_upon_creation=True,
        tags=["exchange"],
        params={
            "source": Param(
                "",
                type="string",
                maxLength=255,
                description="a file in the source folder, or postgres:NAME (blank: default)",
            ),
            "full_refresh": Param(False, type="boolean", description="send every record"),
        },
        default_args={"retries": 0},
    ) as dag:

        @task(show_return_value_in_logs=False, multiple_outputs=False)
        def check_contract() -> str:
            """Load the contract and confirm it may run (approved, active, in review)."""
            from exchange.errors import ExchangeError

            context = get_current_context()
            if _late_first_run(context):
                _record_late_skip(contract_file, context)
                _say(
                    "skipped",
                    context["run_id"],
                    dag_id.removeprefix("exchange__"),
                    "exchange: skipped: the first scheduled run started after its time (as on "
                    "unpausing); nothing read or sent. Trigger a run to send before the next one",
                    reason="late-first-run",
                )
                raise AirflowSkipException("late first scheduled run")
            try:
                contract = _gateway().check(contract_file, run_id=context["run_id"])
            except ExchangeError as exc:
                raise _terminal(exc) from exc
            _say(
                "checked",
                context["run_id"],
                contract.id,
                f"exchange: contract {contract.id} version {contract.version} may run "
                f"(approved; SHA-256 {contract.sha256})",
                version=contract.version,
                sha256=contract.sha256,
            )
            return contract.sha256

        @task(show_return_value_in_logs=False, multiple_outputs=False)
        def prepare(contract_sha256: str) -> dict[str, Any]:
            """Extract, minimise, guard, validate, encrypt and sign; returns counts only."""
            from exchange.errors import ExchangeError

            context = get_current_context()
            source = context["params"].get("source") or None
            try:
                gateway = _gateway()
                contract = gateway.recheck(contract_file, contract_sha256, run_id=context["run_id"])
                prepared = gateway.prepare(
                    contract,
                    source,
                    run_id=context["run_id"],
                    full_refresh=bool(context["params"].get("full_refresh")),
                    triggered_by=_triggered_by(context),
                )
            except ExchangeError as exc:
                raise _terminal(exc) from exc
            _say(
                "prepared",
                context["run_id"],
                contract.id,
                f"exchange: prepared drop {prepared.drop_id}: rows read {prepared.rows_read}, "
                f"sent {prepared.rows_sent}, excluded "
                + json.dumps(prepared.excluded, sort_keys=True),
                drop_id=prepared.drop_id,
                rows_read=prepared.rows_read,
                rows_sent=prepared.rows_sent,
                excluded=prepared.excluded,
            )
            return {"rows_read": prepared.rows_read, "rows_sent": prepared.rows_sent}

        @task(
            show_return_value_in_logs=False,
            multiple_outputs=False,
            retries=3,
            retry_delay=dt.timedelta(seconds=20),
            retry_exponential_backoff=True,
        )
        def deliver(contract_sha256: str, prepared: dict[str, Any]) -> dict[str, Any]:
            """Verify and send this run's staged drop, and record the transfer.

            Transient faults retry. `prepared` only orders the tasks: the drop is found from
            the run id and verified, whatever XCom says."""
            from exchange.errors import ExchangeError, Retryable

            run_id = get_current_context()["run_id"]
            try:
                gateway = _gateway()
                contract = gateway.recheck(contract_file, contract_sha256, run_id=run_id)
                delivery = gateway.deliver(contract, run_id)
            except ExchangeError as exc:
                if isinstance(exc, Retryable):
                    raise
                raise _terminal(exc) from exc
            drop = delivery.remote_path.rsplit("/", 1)[-1]
            outcome = "already there" if delivery.already_delivered else "sent"
            attempts = max(1, len(delivery.attempts))
            _say(
                "delivered",
                run_id,
                contract.id,
                f"exchange: delivered drop {drop}: {len(delivery.files)} files, {delivery.bytes} "
                f"bytes, {outcome} after {attempts} attempt(s)",
                drop_id=drop,
                files=len(delivery.files),
                bytes=delivery.bytes,
                outcome=outcome,
                attempts=attempts,
            )
            return {"bytes": delivery.bytes}

        checked = check_contract()
        delivered = deliver(checked, prepare(checked))
        if ack_deadline is not None:
            _acknowledgement_sensor(contract_file, ack_deadline)(delivered)
    return dag


# Files that share an id get no DAG (exchange_contract_ids.py reports them as an import error).
_unique, _clashes = outlines(CONTRACTS)
for _path, _found in _unique.items():
    _dag = build_dag(_path, _found)
    globals()[_dag.dag_id] = _dag
