"""The generated DAGs, run for real with `dag.test()` on a throw-away Airflow home and database."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FOLDER,
    Workspace,
    inbox_entries,
    last_record,
    write_contract,
)

from exchange.audit import Ledger
from exchange.sandbox import PartnerSftpServer

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "exchange__school-attendance-to-early-help"

pytestmark = pytest.mark.integration


def load_dags(folder: Path) -> dict[str, Any]:
    """Parse the DAG folder as the scheduler would; return the DAGs by id."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return dict(bag.dags)


def task_states(run: Any) -> dict[str, str]:
    """Each task's final state in a DagRun."""
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_one_dag_per_contract_with_the_contracts_schedule(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    contracts = Path(workspace.env["EXCHANGE_CONTRACTS"])

    def second(doc: dict) -> None:
        doc["id"] = "school-attendance-to-youth-service"
        doc["customProperties"][5]["value"] = "30 3 * * 1"

    write_contract(contracts / "second.yaml", workspace.recipient, second)
    (contracts / "broken.yaml").write_text("apiVersion: [unclosed")
    monkeypatch.setenv("EXCHANGE_CONTRACTS", str(contracts))
    dags = load_dags(REPO / "dags")
    assert set(dags) == {
        DAG_ID,
        "exchange__school-attendance-to-youth-service",
        "exchange__broken",
    }
    assert dags["exchange__school-attendance-to-youth-service"].timetable.expression == "30 3 * * 1"
    dag = dags[DAG_ID]
    assert [t.task_id for t in dag.topological_sort()] == ["check_contract", "prepare", "deliver"]
    assert dag.get_task("deliver").retries == 3
    assert dag.get_task("prepare").retries == 0


def test_dag_run_delivers_the_drop_and_audits_it(
    airflow_db: None,
    airflow_env: Workspace,
    partner: PartnerSftpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    dag = load_dags(REPO / "dags")[DAG_ID]
    run = dag.test()
    assert str(run.state) == "success", task_states(run)
    drops = inbox_entries(partner)
    assert len(drops) == 1 and not drops[0].startswith(".")
    events = list(Ledger(airflow_env.settings.audit_url).entries())
    assert [e.event for e in events] == ["contract.checked", "run.prepared", "transfer.sent"]
    assert {e.run_id for e in events} == {run.run_id}
    sent = events[-1].data
    assert sent["remote_path"] == f"{FOLDER}/{drops[0]}"
    # XCom carries counts only: no value from a row, and no path an Airflow user could edit.
    prepared = next(ti for ti in run.get_task_instances() if ti.task_id == "prepare")
    xcom = prepared.xcom_pull(task_ids="prepare")
    assert set(xcom) == {"rows_read", "rows_sent"} and xcom["rows_read"] == 1000
    assert events[1].data["triggered_by"].startswith("airflow:")
    # Each task says in one line what the gateway did: ids and counts, never a row's values.
    lines = [r.getMessage() for r in caplog.records if r.name == "exchange.dags"]
    rows = events[1].data["rows"]
    assert lines == [
        f"exchange: contract {events[0].data['id']} version "
        f"{events[0].data['version']} may run (approved; SHA-256 {events[0].data['sha256']})",
        f"exchange: prepared drop {drops[0]}: rows read 1000, sent {rows['sent']}, "
        f"excluded {json.dumps(rows['excluded'], sort_keys=True)}",
        f"exchange: delivered drop {drops[0]}: 4 files, {sent['bytes']} bytes, sent after "
        "1 attempt(s)",
    ]


def test_task_lines_as_json_carry_the_run_and_the_agreement(
    airflow_db: None,
    airflow_env: Workspace,
    partner: PartnerSftpServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EXCHANGE_LOG_FORMAT=json: one JSON object per task line, for a log platform."""
    monkeypatch.setenv("EXCHANGE_LOG_FORMAT", "json")
    caplog.set_level(logging.INFO)
    run = load_dags(REPO / "dags")[DAG_ID].test()
    assert str(run.state) == "success", task_states(run)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "exchange.dags"]
    assert [line["event"] for line in lines] == ["checked", "prepared", "delivered"]
    assert {line["run_id"] for line in lines} == {run.run_id}
    assert {line["agreement"] for line in lines} == {DAG_ID.removeprefix("exchange__")}
    drop = inbox_entries(partner)[0]
    assert lines[1]["drop_id"] == drop == lines[2]["drop_id"]
    assert lines[1]["rows_read"] == 1000 and lines[2]["outcome"] == "sent"


def test_a_task_without_exchange_contracts_fails_at_once_saying_how_to_set_it(
    airflow_db: None,
    airflow_env: Workspace,
    partner: PartnerSftpServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Without it a task would read the sample folder and call the agreement unapproved."""
    dag = load_dags(REPO / "dags")[DAG_ID]
    monkeypatch.delenv("EXCHANGE_CONTRACTS")  # the scheduler's environment, not the parser's
    run = dag.test()
    assert str(run.state) == "failed"
    check = next(ti for ti in run.get_task_instances() if ti.task_id == "check_contract")
    assert str(check.state) == "failed" and check.max_tries == 0
    out, err = capfd.readouterr()  # the task's failure, as its log shows it
    assert "EXCHANGE_CONTRACTS is not set in this task's environment: set it" in out + err
    assert inbox_entries(partner) == []
    assert list(Ledger(airflow_env.settings.audit_url).entries()) == []  # no "not approved"


def test_dag_run_of_a_refused_contract_fails_at_the_first_task_without_retry(
    airflow_db: None, airflow_env: Workspace, partner: PartnerSftpServer
) -> None:
    def draft(doc: dict) -> None:
        doc["status"] = "draft"

    write_contract(airflow_env.contract, airflow_env.recipient, draft)
    dag = load_dags(REPO / "dags")[DAG_ID]
    run = dag.test()
    assert str(run.state) == "failed"
    states = task_states(run)
    assert states["check_contract"] == "failed"
    assert states["prepare"] in ("upstream_failed", "None")
    check = next(ti for ti in run.get_task_instances() if ti.task_id == "check_contract")
    assert check.try_number == 1 and check.max_tries == 0
    assert inbox_entries(partner) == []
    last = last_record(airflow_env)
    assert last.event == "run.refused" and "draft" in last.data["message"]


@pytest.mark.parametrize(
    "case", ["not approved", "changed since approval", "revoked approver", "past review date"]
)
def test_dag_refuses_a_contract_that_may_not_run(
    airflow_db: None, airflow_env: Workspace, partner: PartnerSftpServer, case: str
) -> None:
    from test_governance import REFUSALS

    break_it, reason, words = REFUSALS[case]
    break_it(airflow_env)
    run = load_dags(REPO / "dags")[DAG_ID].test()
    assert str(run.state) == "failed"
    check = next(ti for ti in run.get_task_instances() if ti.task_id == "check_contract")
    assert str(check.state) == "failed" and check.max_tries == 0
    assert inbox_entries(partner) == []
    last = last_record(airflow_env)
    assert last.event == "run.refused" and last.data["reason"] == reason
    assert words in last.data["message"]


def test_dag_refuses_a_suspended_contract(
    airflow_db: None, airflow_env: Workspace, partner: PartnerSftpServer
) -> None:
    from exchange.contract import load_contract
    from exchange.crypto.signing import load_private_key

    contract = load_contract(airflow_env.contract)
    airflow_env.governance().suspend(
        contract,
        load_private_key(airflow_env.officer_key),
        reason="breach",
        now=dt.datetime.now(dt.UTC),
    )
    run = load_dags(REPO / "dags")[DAG_ID].test()
    assert str(run.state) == "failed"
    assert inbox_entries(partner) == []
    last = last_record(airflow_env)
    assert last.data["reason"] == "suspended"


def test_an_unacknowledged_drop_fails_the_last_task_and_raises_an_incident(
    airflow_db: None, airflow_env: Workspace, partner: PartnerSftpServer
) -> None:
    from conftest import incidents

    from exchange import keys

    signer = keys.generate("signing", airflow_env.root / "partner-sign.key")
    (partner.root / "acks").mkdir()

    def acknowledged(doc: dict) -> None:
        doc["customProperties"].append(
            {
                "property": "acknowledgements",
                "value": {"folder": "acks", "partnerKeys": [signer.public], "deadlineHours": 0},
            }
        )

    airflow_env.write_contract(acknowledged)
    dag = load_dags(REPO / "dags")[DAG_ID]
    assert [t.task_id for t in dag.topological_sort()][-1] == "await_acknowledgement"
    run = dag.test()
    states = task_states(run)
    assert states["deliver"] == "success" and len(inbox_entries(partner)) == 1
    assert states["await_acknowledgement"] == "failed"
    assert str(run.state) == "failed"
    assert incidents(airflow_env)[-1]["kind"] == "unacknowledged-drop"


@pytest.mark.parametrize(
    "source", ["/etc/passwd", "../secrets.json", "postgresql://u:pw@db.example/x"]
)
def test_a_hostile_source_param_is_refused_and_nothing_sent(
    airflow_db: None, airflow_env: Workspace, partner: PartnerSftpServer, source: str
) -> None:
    """DAG params are editable by Airflow users: only the configured sources may be read."""
    run = load_dags(REPO / "dags")[DAG_ID].test(run_conf={"source": source})
    assert str(run.state) == "failed"
    assert task_states(run)["prepare"] == "failed"
    assert inbox_entries(partner) == []
    last = last_record(airflow_env)
    assert last.event == "run.failed" and last.data["error"] == "SourceError"
    assert "pw@" not in json.dumps(last.data)


def test_dag_run_through_a_shared_staging_store_leaves_nothing_staged(
    airflow_db: None,
    airflow_env: Workspace,
    partner: PartnerSftpServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With EXCHANGE_STAGING the drop goes through the store, and is deleted after delivery."""
    shared = tmp_path / "shared-staging"
    monkeypatch.setenv("EXCHANGE_STAGING", f"file://{shared}")
    run = load_dags(REPO / "dags")[DAG_ID].test()
    assert str(run.state) == "success", task_states(run)
    (drop,) = inbox_entries(partner)
    assert [p.name for p in shared.iterdir()] == [drop.rsplit("-", 1)[0]]  # the contract's key
    assert list(shared.joinpath(drop.rsplit("-", 1)[0]).iterdir()) == []
    assert list(airflow_env.settings.staging.iterdir()) == []
