"""Secrets read from Airflow are masked (issue 10, defect 8), checked with real Airflow.

A plain metastore variable is shown to every Airflow user who can list variables, and Airflow
masks a value in logs only when its name looks sensitive: `early_help_pseudonym_key` does not.
The gateway reads `<name>_secret` (a name Airflow masks) or the environment backend, refuses a
plain metastore variable, and registers every value, and each line of an objection list, with
Airflow's secrets masker.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("airflow")

REPO = Path(__file__).resolve().parents[1]
IDS = ["P-OBJ-0000001", "P-OBJ-0000002", "P-OBJ-0000003"]
KEY = bytes(range(100, 132))


def test_environment_secret_is_registered_with_the_masker_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each objection id, the base64 text and a key's hex are masked wherever they are logged."""
    sys.path.insert(0, str(REPO / "dags"))
    from airflow.sdk._shared.secrets_masker import redact, should_hide_value_for_key
    from airflow_secrets import AirflowSecrets

    listing = base64.b64encode("\n".join(IDS).encode() + b"\n").decode()
    monkeypatch.setenv("AIRFLOW_VAR_PROBE_OBJECTIONS", listing)
    monkeypatch.setenv("AIRFLOW_VAR_PROBE_KEY", base64.b64encode(KEY).decode())
    assert AirflowSecrets().secret("probe-objections").decode().split() == IDS
    assert AirflowSecrets().secret("probe-key") == KEY
    line = f"objecting {IDS[1]}, list {listing}, key {KEY.hex()}"
    assert redact(line) == "objecting ***, list ***, key ***"
    # The name the gateway reads from the metastore is one Airflow itself hides in the UI.
    assert should_hide_value_for_key("early_help_objections_secret")
    assert not should_hide_value_for_key("early_help_objections")


DAG = """
import base64, sys
sys.path.insert(0, {dags!r})
import pendulum
from airflow.sdk import dag, task
from airflow.sdk._shared.secrets_masker import redact
from airflow_secrets import AirflowSecrets
from exchange.secrets import SecretMissing

@dag(dag_id="secret_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1))
def probe():
    @task
    def masked_name():
        ids = AirflowSecrets().secret("probe-objections").decode().split()
        assert ids == {ids!r}, "read"
        assert all(redact("x " + i) == "x ***" for i in ids), "masked"
        print("RESULT masked-name read and masked")

    @task
    def plain_name():
        try:
            AirflowSecrets().secret("probe-plain")
        except SecretMissing as exc:
            assert redact({plain_value!r}) == "***", "even a refused value is masked"
            print("RESULT plain-name refused:", exc)
        else:
            raise AssertionError("a plain metastore variable was read")

    masked_name() >> plain_name()
probe()
"""

RUNNER = """
import os, sys
from airflow.utils.db import resetdb
resetdb(skip_init=False)
from airflow.models import Variable
Variable.set("probe_objections_secret", {listing!r})
Variable.set("probe_plain", {plain_value!r})
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
run = bag.dags["secret_probe"].test()
print("STATE", run.state)
"""


def test_a_dag_run_reads_masked_names_and_refuses_plain_metastore_variables(
    tmp_path: Path,
) -> None:
    """A real `dag.test()` on its own Airflow home: the metastore `_secret` variable is read
    and masked inside the task; a plain metastore variable is refused (and still masked)."""
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    dags.mkdir()
    listing = base64.b64encode("\n".join(IDS).encode()).decode()
    plain_value = base64.b64encode(b"plain metastore value, shown in the UI").decode()
    (dags / "probe.py").write_text(
        textwrap.dedent(DAG).format(dags=str(REPO / "dags"), ids=IDS, plain_value=plain_value)
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_VAR_")}
    runner = textwrap.dedent(RUNNER).format(listing=listing, plain_value=plain_value)
    done = subprocess.run(
        [sys.executable, "-c", runner],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert "RESULT masked-name read and masked" in out, out[-3000:]
    assert "RESULT plain-name refused: Airflow variable 'probe_plain' is not read" in out
    assert "STATE success" in out
    assert plain_value not in out.split("RESULT plain-name refused")[1]
