"""One Airflow DAG per contract file in the contracts folder.

Orchestration only: every task calls the `exchange` library, and passes nothing but small
metadata (paths, counts, ids) through XCom. Parsing this file reads each contract's id and
schedule with the safe YAML loader and nothing else: no connection, no database, no data.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from airflow.sdk import DAG, Param, get_current_context, task
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


def _terminal(exc: Exception) -> AirflowFailException:
    """A refusal or other terminal error: fail the task at once, never retry."""
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


def _outline(path: Path) -> tuple[str, str | None]:
    """The DAG id and cron of a contract, read cheaply; a broken file still gets a DAG."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
        terms = {c.get("property"): c.get("value") for c in document.get("customProperties") or []}
        dag_id = re.sub(r"[^A-Za-z0-9_.-]", "_", str(document.get("id") or slug))
        schedule = terms.get("schedule")
        return f"exchange__{dag_id}", schedule if isinstance(schedule, str) else None
    except (OSError, yaml.YAMLError, AttributeError):
        return f"exchange__{slug}", None  # the first task will report exactly what is wrong


def build_dag(contract_path: Path) -> DAG:
    """The exchange DAG of one contract: check -> prepare -> deliver."""
    dag_id, schedule = _outline(contract_path)
    contract_file = str(contract_path)

    with DAG(
        dag_id=dag_id,
        description=f"Data exchange under {contract_path.name}",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["exchange"],
        params={"source": Param("", type="string", description="source file (blank: default)")},
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
            """Extract, minimise, guard, validate, encrypt and sign; returns counts and paths."""
            from exchange.errors import ExchangeError

            context = get_current_context()
            source = context["params"].get("source") or None
            try:
                gateway = _gateway()
                contract = gateway.recheck(contract_file, contract_sha256, run_id=context["run_id"])
                prepared = gateway.prepare(contract, source, run_id=context["run_id"])
            except ExchangeError as exc:
                raise _terminal(exc) from exc
            return prepared.to_dict()

        @task(
            show_return_value_in_logs=False,
            multiple_outputs=False,
            retries=3,
            retry_delay=dt.timedelta(seconds=20),
            retry_exponential_backoff=True,
        )
        def deliver(contract_sha256: str, prepared: dict[str, Any]) -> dict[str, Any]:
            """Send the staged drop over SFTP and record the transfer; transient faults retry."""
            from exchange.errors import ExchangeError, Retryable
            from exchange.gateway import Prepared

            run = Prepared.from_dict(prepared)
            try:
                gateway = _gateway()
                contract = gateway.recheck(contract_file, contract_sha256, run_id=run.run_id)
                delivery = gateway.deliver(contract, run)
            except ExchangeError as exc:
                if isinstance(exc, Retryable):
                    raise
                raise _terminal(exc) from exc
            return {"remote_path": delivery.remote_path, "bytes": delivery.bytes}

        checked = check_contract()
        deliver(checked, prepare(checked))
    return dag


for _path in sorted(CONTRACTS.glob("*.yaml")):
    _dag = build_dag(_path)
    globals()[_dag.dag_id] = _dag
