"""Leak tests: after real runs that succeed, fail quality, fail delivery and are refused, no
personal value and no secret is anywhere on the gateway's disk (state folder, ledger, Airflow's
database with its XCom, task logs), in what the commands print, or in the ledger; every file
the gateway keeps is 0600 in a 0700 folder."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import DISCLOSURE_KEY, PSEUDONYM_KEY, Workspace

from exchange.sandbox import PartnerSftpServer

pytestmark = pytest.mark.integration

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
REPO = Path(__file__).resolve().parents[1]
DAG_ID = "exchange__school-attendance-to-early-help"
MARKER = "LEAKCANARY"  # an invalid value planted in the source: it must never be repeated


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **workspace.env}
    return subprocess.run([EXCHANGE, *args], env=env, capture_output=True, text=True, check=False)


def personal_values(source: Path) -> set[str]:
    """Values from the source that identify people, distinctive enough to search for."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    values: set[str] = set()
    for column in ("person_id", "nhs_number", "postcode", "address_line"):
        values.update(v for v in frame[column] if len(v) >= 7)
    values.update(f"{a} {b}" for a, b in zip(frame["first_name"], frame["last_name"], strict=True))
    return values


def secrets_of(workspace: Workspace, partner: PartnerSftpServer) -> set[str]:
    keys = [workspace.settings.signing_key, partner.client_key_path, workspace.identity]
    found = {base64.b64encode(PSEUDONYM_KEY).decode(), base64.b64encode(DISCLOSURE_KEY).decode()}
    for path in keys:
        body = [line for line in path.read_text().splitlines() if line and "----" not in line]
        found.update(line.strip() for line in body if len(line.strip()) >= 20)
    return found


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_no_personal_value_or_secret_is_left_anywhere(
    workspace: Workspace, partner: PartnerSftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = workspace.source(400)
    values = personal_values(source)
    secrets = secrets_of(workspace, partner)
    printed = []

    # 1. a run that succeeds, through the CLI
    done = exchange(workspace, "run", str(workspace.contract), "--source", source.name)
    assert done.returncode == 0, done.stderr
    printed.append(done.stdout + done.stderr)

    # 2. a run refused by quality: an invalid value planted in the source
    bad = workspace.root / "sources" / "bad.csv"
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[frame.index[:5], "gender"] = MARKER
    frame.to_csv(bad, index=False)
    done = exchange(workspace, "run", str(workspace.contract), "--source", bad.name)
    assert done.returncode == 3, done.stderr
    printed.append(done.stdout + done.stderr)

    # 3. a run whose delivery fails (the partner's server is down)
    partner.stop()
    done = exchange(workspace, "run", str(workspace.contract), "--source", source.name)
    assert done.returncode == 4, done.stderr
    printed.append(done.stdout + done.stderr)

    # 4. a source outside the configured folder
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(source.parent.parent)
    )
    assert done.returncode == 2
    printed.append(done.stdout + done.stderr)

    home = workspace.settings.home
    gateway_files = files_under(home)
    assert gateway_files, "the runs left no state at all?"
    for path in gateway_files:
        data = path.read_bytes()
        if path.name.endswith(".age") or path == workspace.settings.signing_key:
            continue  # ciphertext waiting for a retried delivery; the key where it belongs
        text = data.decode("utf-8", errors="replace")
        leaked = [v for v in values | secrets | {MARKER} if v in text]
        assert not leaked, (
            f"{path.relative_to(home)} holds {len(leaked)} personal value(s)/secret(s)"
        )
    for output in printed:
        assert not [v for v in values | secrets | {MARKER} if v in output], output

    # Every file 0600 and every folder 0700 under the gateway's state folder.
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, f"{path.relative_to(home.parent)} is {oct(mode)}"
        elif not path.name.endswith(".pub"):  # public keys may be read by anyone
            assert mode == 0o600, f"{path.relative_to(home.parent)} is {oct(mode)}"


def test_an_airflow_run_leaves_no_personal_value_or_secret_in_xcom_logs_or_its_database(
    airflow_db: None, airflow_env: Workspace, partner: PartnerSftpServer
) -> None:
    workspace = airflow_env
    source = workspace.root / "sources" / "attendance_export.csv"  # the fixture's 1,000 rows
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[DAG_ID]
    run = dag.test()
    assert str(run.state) == "success"
    prepared = next(ti for ti in run.get_task_instances() if ti.task_id == "prepare")
    xcom = prepared.xcom_pull(task_ids="prepare")
    assert xcom == {"rows_read": 1000, "rows_sent": xcom["rows_sent"]}  # counts, never a path
    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    values = personal_values(source)
    secrets = secrets_of(workspace, partner)
    for path in files_under(airflow_home, workspace.settings.home):
        if path.name.endswith(".age") or path == workspace.settings.signing_key:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        leaked = [v for v in values | secrets if v in text]
        assert not leaked, f"{path} holds {len(leaked)} personal value(s)/secret(s)"
