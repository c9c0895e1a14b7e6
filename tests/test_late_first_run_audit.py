"""The DAG's skip of a late first scheduled run is recorded in the ledger (`run.skipped`).

The check task's own code runs against the workspace's real ledger and contracts; only
Airflow's task context is given by hand, shaped as Airflow passes it to the task."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO, Workspace

from exchange.audit import Ledger
from exchange.contract import load_contract

DAG_ID = "exchange__school-attendance-to-early-help"
DUE = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC)


def _check_task(monkeypatch: pytest.MonkeyPatch, started: dt.datetime, run_type: Any) -> Any:
    """The DAG's check_contract callable, its Airflow context a run of `run_type`."""
    spec = importlib.util.spec_from_file_location(
        "exchange_dags_skip_test", REPO / "dags" / "exchange_dags.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(REPO / "dags"))
    spec.loader.exec_module(module)
    run = SimpleNamespace(
        run_type=run_type, run_after=DUE, start_date=started, triggering_user_name=None
    )
    context = {
        "dag_run": run,
        "run_id": f"scheduled__{DUE.isoformat()}",
        "ti": SimpleNamespace(get_previous_dagrun=lambda: None),
        "params": {},
    }
    monkeypatch.setattr(module, "get_current_context", lambda: context)
    dag = getattr(module, DAG_ID)
    return dag.task_dict["check_contract"].python_callable


def test_a_skipped_late_first_run_is_in_the_ledger_and_a_timely_one_is_not_skipped(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowSkipException
    from airflow.utils.types import DagRunType

    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    ledger = Ledger(workspace.settings.audit_url)
    before = len(list(ledger.entries()))
    unpaused = DUE + dt.timedelta(hours=9)
    check = _check_task(monkeypatch, unpaused, DagRunType.SCHEDULED)
    with pytest.raises(AirflowSkipException):
        check()
    new = list(ledger.entries())[before:]
    assert [e.event for e in new] == ["run.skipped"]  # recorded, and nothing else happened
    (skipped,) = new
    assert skipped.contract_id == load_contract(workspace.contract).id
    assert skipped.run_id == f"scheduled__{DUE.isoformat()}"
    assert skipped.data == {
        "stage": "check",
        "reason": "late-first-run",
        "file": Path(workspace.contract).name,
        "due": DUE.isoformat(timespec="seconds"),
        "started_at": unpaused.isoformat(timespec="seconds"),
        "triggered_by": "airflow:scheduled",
    }
    assert ledger.verify().ok

    on_time = _check_task(monkeypatch, DUE + dt.timedelta(minutes=1), DagRunType.SCHEDULED)
    assert on_time() == load_contract(workspace.contract).sha256
    assert "run.skipped" not in [e.event for e in list(ledger.entries())[before + 1 :]]
