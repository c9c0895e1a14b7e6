"""One Airflow DAG per contract file in the contracts folder.

Orchestration only: every task calls the `exchange` library, and passes nothing but the
contract's hash and counts through XCom. XCom and params are editable by Airflow users, so no
task takes a path from them: the staged drop is found from the run id, and every task checks
again that the agreement may run. Parsing this file reads each contract's id and
schedule with the safe YAML loader and nothing else: no connection, no database, no data.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Param, PokeReturnValue, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from exchange.gateway import Gateway

CONTRACTS = Path(
    os.environ.get("EXCHANGE_CONTRACTS") or Path(__file__).resolve().parents[1] / "contracts"
)
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _gateway() -> Gateway:
    # The library is imported at run time, so parsing the DAG file stays fast.
    from airflow_secrets import AirflowSecrets

    from exchange.gateway import Gateway
    from exchange.settings import Settings

    return Gateway(Settings.from_env(), secrets=AirflowSecrets())


def _triggered_by(context: Any) -> str:
    """Who started the run, for the ledger: the Airflow user, or the scheduler."""
    run = context.get("dag_run")
    user = getattr(run, "triggering_user_name", None)
    kind = str(getattr(run, "run_type", "") or "unknown")
    return f"airflow:{user}" if user else f"airflow:{kind}"


def _terminal(exc: Exception) -> AirflowFailException:
    """A refusal or other terminal error: fail the task at once, never retry."""
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


def _contract_yaml() -> Any:
    """The gateway's contract YAML loader, loaded on its own.

    Importing the `exchange` package costs over a second (it imports the whole library), and the
    scheduler parses this file often; `safe_yaml` needs only PyYAML, so it is loaded by path.
    """
    name = "exchange.contract.safe_yaml"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("exchange")  # locates the package without running it
    assert package is not None and package.submodule_search_locations
    location = Path(package.submodule_search_locations[0]) / "contract" / "safe_yaml.py"
    spec = importlib.util.spec_from_file_location("_exchange_dag_safe_yaml", location)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outline(path: Path) -> tuple[str, str | None, float | None]:
    """The DAG id, cron and acknowledgement deadline (hours) of a contract, read cheaply.

    Never raises: a broken file still gets a DAG (id from the file name, no schedule), whose
    first task reports exactly what is wrong. The contract loader's YAML rules apply here too.
    """
    from croniter import croniter  # already imported by Airflow's cron timetables

    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    safe_yaml = _contract_yaml()
    try:
        document = safe_yaml.load_file(path)
    except safe_yaml.YamlRefused:
        return f"exchange__{slug}", None, None
    items = document.get("customProperties")
    terms = {
        c["property"]: c.get("value")
        for c in (items if isinstance(items, list) else [])
        if isinstance(c, dict) and isinstance(c.get("property"), str)
    }
    contract_id = document.get("id")
    dag_id = contract_id if safe_yaml.is_contract_id(contract_id) else slug
    schedule = terms.get("schedule")
    if not (isinstance(schedule, str) and croniter.is_valid(schedule)):
        schedule = None  # an invalid cron would fail this whole file in the DagBag
    acks = terms.get("acknowledgements")
    deadline = acks.get("deadlineHours") if isinstance(acks, dict) else None
    if not isinstance(deadline, int | float) or isinstance(deadline, bool):
        return f"exchange__{dag_id}", schedule, None
    # NaN, infinity or a huge number would fail building the sensor, and with it every DAG.
    return f"exchange__{dag_id}", schedule, float(deadline) if 0 <= deadline <= 24 * 366 else None


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
        gateway.collect_acks(contract)
        acked = gateway.ledger.find("ack.received", run_id=run_id, contract_id=contract.id)
        return PokeReturnValue(is_done=acked is not None)

    return await_acknowledgement


def build_dag(contract_path: Path) -> DAG:
    """The exchange DAG of one contract: check -> prepare -> deliver."""
    dag_id, schedule, ack_deadline = _outline(contract_path)
    contract_file = str(contract_path)

    with DAG(
        dag_id=dag_id,
        description=f"Data exchange under {contract_path.name}",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
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

            run_id = get_current_context()["run_id"]
            try:
                return _gateway().check(contract_file, run_id=run_id).sha256
            except ExchangeError as exc:
                raise _terminal(exc) from exc

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
            return {"bytes": delivery.bytes}

        checked = check_contract()
        delivered = deliver(checked, prepare(checked))
        if ack_deadline is not None:
            _acknowledgement_sensor(contract_file, ack_deadline)(delivered)
    return dag


for _path in sorted(CONTRACTS.glob("*.yaml")):
    _dag = build_dag(_path)
    globals()[_dag.dag_id] = _dag
