"""A malformed contract file costs only its own DAG, never the others (DESIGN.md section 7).

The DAG file reads each contract's outline with the contract loader's YAML rules; whatever is in
a file (bad bytes, a list, an alias bomb, duplicate keys, odd term shapes, an invalid cron), the
DagBag still loads every other contract's DAG and records no import error.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, write_contract

pytestmark = pytest.mark.integration

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
SECRET = "AGE-SECRET-KEY-1" + "Q" * 58

MALFORMED: dict[str, bytes] = {
    "not-utf8": b"id: \xff\xfe broken\n",
    "a-list": b"- a\n- b\n",
    "a-scalar": b"just text\n",
    "empty": b"",
    "alias-bomb": b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\n',
    "duplicate-keys": b"id: dup-a\nid: dup-b\n",
    "bad-yaml": b"apiVersion: [unclosed",
    "terms-a-string": b"id: terms-a-string\ncustomProperties: oops\n",
    "terms-odd-items": b"id: odd-items\ncustomProperties: [7, [a], {property: [x]}, {value: 1}]\n",
    "bad-cron": b"id: bad-cron\ncustomProperties: [{property: schedule, value: '61 2 * * *'}]\n",
    "cron-a-list": b"id: cron-list\ncustomProperties: [{property: schedule, value: [a]}]\n",
    "ack-infinite": (
        b"id: ack-infinite\ncustomProperties:\n"
        b"  - {property: acknowledgements, value: {deadlineHours: .inf}}\n"
    ),
    "ack-text": b"id: ack-text\ncustomProperties: [{property: acknowledgements, value: 7}]\n",
    "id-escape": b"id: ../../etc\n",
    "id-a-list": b"id: [a, b]\n",
    "secret": f"id: secret\nkey: {SECRET}\n".encode(),
    "deep": b"id: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "huge": b"id: huge\n" + b"#" * (2 * 1024 * 1024),
}


def _dags_module() -> Any:
    """The DAG file as the scheduler imports it (with an empty contracts folder)."""
    spec = importlib.util.spec_from_file_location(
        "exchange_dags_under_test", REPO / "dags" / "exchange_dags.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "dags"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "dags"))
    return module


@pytest.fixture
def contracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A contracts folder with one good contract and every kind of malformed file."""
    folder = tmp_path / "contracts"
    folder.mkdir()

    def good(d: dict[str, Any]) -> None:
        d["id"] = "good-contract"

    write_contract(folder / "good.yaml", RECIPIENT, good)
    for name, content in MALFORMED.items():
        (folder / f"{name}.yaml").write_bytes(content)
    (folder / "a-folder.yaml").mkdir()  # the glob finds it; reading it fails
    monkeypatch.setenv("EXCHANGE_CONTRACTS", str(folder))
    return folder


def test_every_malformed_file_still_gets_an_outline(contracts: Path) -> None:
    """`_outline` never raises: a broken file is named by its file, without a schedule."""
    dags = _dags_module()
    outlines = {p.name: dags._outline(p) for p in sorted(contracts.glob("*.yaml"))}
    assert outlines["good.yaml"] == ("exchange__good-contract", "0 2 * * *", None)
    assert outlines["not-utf8.yaml"] == ("exchange__not-utf8", None, None)
    assert outlines["alias-bomb.yaml"] == ("exchange__alias-bomb", None, None)
    assert outlines["duplicate-keys.yaml"] == ("exchange__duplicate-keys", None, None)
    assert outlines["bad-cron.yaml"] == ("exchange__bad-cron", None, None)
    assert outlines["ack-infinite.yaml"] == ("exchange__ack-infinite", None, None)
    assert outlines["id-escape.yaml"] == ("exchange__id-escape", None, None)
    assert outlines["a-folder.yaml"] == ("exchange__a-folder", None, None)
    assert outlines["secret.yaml"] == ("exchange__secret", None, None)


def test_a_folder_with_malformed_files_still_yields_every_other_dag(contracts: Path) -> None:
    """The DagBag loads the good contract's DAG and one DAG per broken file, with no error."""
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    elapsed = time.perf_counter() - started
    assert bag.import_errors == {}
    expected = {"exchange__good-contract"} | {
        f"exchange__{name}"
        for name in [*MALFORMED, "a-folder"]
        if name not in ("terms-a-string", "terms-odd-items", "cron-a-list", "ack-text")
    }
    # Files with a safe id take their DAG id from it, the rest from the file name.
    expected |= {"exchange__terms-a-string", "exchange__odd-items", "exchange__cron-list"}
    expected |= {"exchange__ack-text"}
    assert set(bag.dags) == expected
    good = bag.dags["exchange__good-contract"]
    assert getattr(good.timetable, "expression", None) == "0 2 * * *"
    assert next(t.task_id for t in good.topological_sort()) == "check_contract"
    assert elapsed < 30


def test_parsing_the_dag_file_does_not_import_the_gateway(contracts: Path) -> None:
    """Outlines need only PyYAML: the `exchange` package (over a second to import) stays out."""
    code = (
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(REPO / 'dags')!r})\n"
        f"path = {str(REPO / 'dags' / 'exchange_dags.py')!r}\n"
        "spec = importlib.util.spec_from_file_location('d', path)\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert 'exchange__good-contract' in vars(module), sorted(vars(module))\n"
        "assert 'exchange' not in sys.modules, 'the gateway was imported'\n"
    )
    env = {**os.environ, "EXCHANGE_CONTRACTS": str(contracts)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert SECRET not in done.stdout + done.stderr


def test_two_files_with_one_contract_id_get_no_dag_and_an_import_error_naming_both(
    contracts: Path,
) -> None:
    """An approved agreement is never silently replaced by a second file with its id."""
    from airflow.dag_processing.dagbag import DagBag

    def impostor(d: dict[str, Any]) -> None:
        d["id"] = "good-contract"
        d["customProperties"][5]["value"] = "*/5 * * * *"

    write_contract(contracts / "zz-copy.yaml", RECIPIENT, impostor)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert "exchange__good-contract" not in bag.dags
    assert "exchange__bad-cron" in bag.dags  # every other contract still has its DAG
    # The error is on the checking file alone: an import error on exchange_dags.py would
    # make the dag-processor mark every agreement's DAG stale.
    assert set(bag.import_errors) == {str(REPO / "dags" / "exchange_contract_ids.py")}
    error = next(iter(bag.import_errors.values()))
    assert "DuplicateContractId" in error and "'good-contract'" in error
    assert str(contracts / "good.yaml") in error and str(contracts / "zz-copy.yaml") in error
    (contracts / "zz-copy.yaml").unlink()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {} and "exchange__good-contract" in bag.dags


def test_a_dag_documents_its_agreement_and_is_created_paused_one_run_at_a_time(
    contracts: Path,
) -> None:
    from exchange.contract import load_contract

    dag = _dags_module().build_dag(contracts / "good.yaml")
    assert dag.max_active_runs == 1 and dag.is_paused_upon_creation is True
    doc = dag.doc_md
    sha256 = load_contract(contracts / "good.yaml").sha256
    for words in (
        "**Purpose**: To let the Early Help team identify children",
        "**Recipient**: Anyshire County Council, Early Help Service",
        "**Owner**: Anyshire County Council, Education Service",
        "**Legal basis**: Children Act 2004, s.10; Children Act 2004, s.11; UK GDPR Art. 6(1)(e)",
        f"SHA-256 `{sha256}`",
    ):
        assert words in doc
    broken = _dags_module().build_dag(contracts / "secret.yaml").doc_md
    assert SECRET not in broken


def test_a_late_first_scheduled_run_is_skipped_and_no_other_run_is() -> None:
    """The run Airflow creates at once on unpausing (for the interval just passed) is skipped."""
    from types import SimpleNamespace

    late_first_run = _dags_module()._late_first_run
    due = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC)

    def context(run_type: object, started: dt.datetime, previous: object = None) -> dict[str, Any]:
        run = SimpleNamespace(run_type=run_type, run_after=due, start_date=started)
        return {"dag_run": run, "ti": SimpleNamespace(get_previous_dagrun=lambda: previous)}

    unpaused = due + dt.timedelta(hours=9)
    assert late_first_run(context("scheduled", unpaused)) is True
    assert late_first_run(context("scheduled", due + dt.timedelta(minutes=2))) is False
    assert late_first_run(context("scheduled", unpaused, previous=object())) is False
    assert late_first_run(context("manual", unpaused)) is False
    from airflow.utils.types import DagRunType

    assert late_first_run(context(DagRunType.SCHEDULED, unpaused)) is True  # as Airflow passes it
    assert late_first_run(context(DagRunType.MANUAL, unpaused)) is False


def test_great_expectations_registration_noise_stays_out_of_task_logs(contracts: Path) -> None:
    """Importing GE logs hundreds of INFO "Skipping registering" lines; the DAG file quiets it."""
    code = (
        "import importlib.util, logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "if sys.argv[1] == 'dag':\n"
        f"    path = {str(REPO / 'dags' / 'exchange_dags.py')!r}\n"
        "    spec = importlib.util.spec_from_file_location('d', path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "import great_expectations\n"
    )
    env = {**os.environ, "EXCHANGE_CONTRACTS": str(contracts)}
    counts = {}
    for mode in ("bare", "dag"):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        counts[mode] = done.stderr.count("Skipping registering")
    assert counts["bare"] > 10 and counts["dag"] == 0
