"""The production topology on one machine, without containers, driven through Airflow's REST API.

The test starts, on loopback: a private PostgreSQL (Airflow's metadata database and the audit
ledger), Redis as the Celery broker, moto's S3 server as the shared staging store, the partner's
sshd, then `airflow db migrate`, a scheduler, a dag-processor, the api-server and two Celery
workers. Each worker has its own EXCHANGE_HOME (so only the staging store carries a drop from
`prepare` to `deliver`), except the handed-out checkpoints folder, which every worker must share
(docs/operators.md): each worker's `EXCHANGE_HOME/checkpoints` is a link to one shared folder.

It triggers the sample agreement through the API and checks the drop arrived, opens with `age`,
verifies, and that `exchange audit verify` passes; then triggers N copies of the sample at once
(TOPOLOGY_AGREEMENTS, default 20) and checks every drop arrived once, both workers ran tasks,
and the ledger still verifies. Every process is stopped by its process group id in teardown;
each service's log is kept under the test's tmp folder and printed on failure.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    DISCLOSURE_KEY,
    FOLDER,
    PSEUDONYM_KEY,
    Workspace,
    write_contract,
)
from pg import PrivatePostgres

from exchange.audit import Ledger
from exchange.contract import load_contract
from exchange.crypto.signing import load_private_key
from exchange.receive import receive
from exchange.sandbox import PartnerSftpServer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
SAMPLE_ID = "school-attendance-to-early-help"
# Twenty agreements at once, as the issue asks (about 4 minutes on a loaded 2-core machine).
AGREEMENTS = int(os.environ.get("TOPOLOGY_AGREEMENTS", "20"))
# With TOPOLOGY_ONE_WORKER=1 the batch runs again on two workers, then on one, timed.
COMPARE_ONE_WORKER = os.environ.get("TOPOLOGY_ONE_WORKER") == "1"
BUCKET = "exchange-staging"
AWS = {
    "AWS_ACCESS_KEY_ID": "topology-key-id",
    "AWS_SECRET_ACCESS_KEY": "topology-secret-value",
    "AWS_DEFAULT_REGION": "us-east-1",
}
USER, PASSWORD = "operator", "topology-test-password"
WORKERS = ("worker-a", "worker-b")
START_TIMEOUT = 120  # seconds for one service to answer
RUN_TIMEOUT = 120  # seconds for one run, plus RUN_EACH for every other run of a batch
RUN_EACH = 30
# Workers import the gateway and Great Expectations once (docs/operators.md); TOPOLOGY_PRELOAD=0
# leaves Airflow's default Celery settings, for comparison.
PRELOAD = (
    "exchange_airflow.celery_preload.CELERY_CONFIG"
    if os.environ.get("TOPOLOGY_PRELOAD", "1") == "1"
    else "airflow.providers.celery.executors.default_celery.DEFAULT_CELERY_CONFIG"
)


def celery_problem() -> str | None:
    """Why Airflow's Celery provider cannot start here, or None."""
    try:
        from celery.backends.database import retry  # noqa: F401  (the provider imports it)
    except ImportError:
        import celery

        return (
            f"celery {celery.__version__} lacks celery.backends.database.retry, which "
            "apache-airflow-providers-celery imports: install requirements.lock (celery 5.6.3)"
        )
    return None


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing"),
    pytest.mark.skipif(shutil.which("age") is None, reason="age missing (make system)"),
    pytest.mark.skipif(celery_problem() is not None, reason=str(celery_problem())),
    pytest.mark.skipif(
        PrivatePostgres.why_unavailable() is not None, reason="PostgreSQL server missing"
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, ready: Any, timeout: float, services: Services) -> None:
    """Poll `ready()` until it is true; fail naming `what` if a service died or time ran out."""
    deadline = time.monotonic() + timeout
    while not ready():
        services.assert_alive()
        assert time.monotonic() < deadline, f"{what} not ready after {timeout:.0f} s"
        time.sleep(0.5)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Services:
    """The processes the test started, each in its own process group, with its log file."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stopping it stops its children
                cwd=self.logs,
            )
        self.running[name] = process
        return process

    def assert_alive(self) -> None:
        for name, process in self.running.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}"

    def stop(self, name: str) -> None:
        process = self.running.pop(name)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        # A child that outlived its leader (e.g. a task process) is still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)

    def dump(self) -> str:
        """The tail of every service's log and of every task log, for a failure report."""
        parts = []
        for log in sorted(self.logs.rglob("*.log")):
            text = log.read_text("utf-8", "replace").strip().splitlines()
            parts.append(f"----- {log.relative_to(self.logs)} -----\n" + "\n".join(text[-40:]))
        return "\n".join(parts)


class Api:
    """Airflow's REST API as an operator's script calls it (SimpleAuthManager token)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=60)

    def login(self) -> None:
        answer = self.client.post("/auth/token", json={"username": USER, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        self.client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def get(self, path: str) -> Any:
        answer = self.client.get(f"/api/v2{path}")
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def has_dag(self, dag_id: str) -> bool:
        return self.client.get(f"/api/v2/dags/{dag_id}").status_code == 200

    def unpause(self, dag_id: str) -> None:
        answer = self.client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        assert answer.status_code == 200, answer.text
        assert answer.json()["is_paused"] is False

    def trigger(self, dag_id: str) -> str:
        answer = self.client.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["run_type"] == "manual"
        return str(answer.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(found["task_instances"])


def dag_id(contract_id: str) -> str:
    return f"exchange__{contract_id}"


def copy_id(number: int) -> str:
    return f"{SAMPLE_ID}-{number:02d}"


def scheduled_far_from_now(doc: dict[str, Any]) -> None:
    """Schedule the agreement twelve hours from now. A first scheduled run that starts within
    ten minutes of its time is not late, and is sent: with the sample's 02:00, a test begun
    at 02:04 found that run's drop beside the manual one's."""
    hour = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)).hour
    for term in doc["customProperties"]:
        if term["property"] == "schedule":
            term["value"] = f"0 {hour} * * *"


def approve_copies(workspace: Workspace, count: int) -> list[str]:
    """Write `count` copies of the sample with their own ids, approved by the test officer."""
    contracts = Path(workspace.env["EXCHANGE_CONTRACTS"])
    key = load_private_key(workspace.officer_key)
    ids = []
    for number in range(1, count + 1):
        ident = copy_id(number)

        def rename(doc: dict[str, Any], ident: str = ident) -> None:
            doc["id"] = ident
            scheduled_far_from_now(doc)

        path = write_contract(
            contracts / f"{ident}.yaml", workspace.recipient, rename, host_keys=workspace.host_keys
        )
        workspace.governance().approve(load_contract(path), key, now=dt.datetime.now(dt.UTC))
        ids.append(ident)
    return ids


class Topology:
    """Everything the test started, and the settings each part was given."""

    def __init__(self, workspace: Workspace, partner: PartnerSftpServer, root: Path) -> None:
        self.workspace = workspace
        self.partner = partner
        self.root = root
        self.services = Services(root / "logs")
        self.postgres: PrivatePostgres | None = None
        self.api_port = free_port()
        self.api = Api(f"http://127.0.0.1:{self.api_port}")
        self.worker_env: dict[str, dict[str, str]] = {}
        self.ledger_url = ""

    # -- start-up ---------------------------------------------------------------------------

    def start(self) -> None:
        (self.root / "logs").mkdir()
        pg_base = Path(tempfile.mkdtemp(prefix="exchange-topology-pg-"))  # reachable by postgres
        self.pg_base = pg_base
        self.postgres = PrivatePostgres(pg_base).start()
        self.postgres.psql("CREATE DATABASE airflow")
        self.ledger_url = self.postgres.url()
        airflow_db = self.postgres.url(database="airflow")

        redis_port = free_port()
        self.services.start(
            "redis",
            [
                "redis-server",
                *("--port", str(redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.root / "logs")),
            ],
            dict(os.environ),
        )
        s3_port = free_port()
        self.services.start(
            "moto",
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
            dict(os.environ),
        )
        wait_for("redis", lambda: port_open(redis_port), START_TIMEOUT, self.services)
        wait_for("moto", lambda: port_open(s3_port), START_TIMEOUT, self.services)
        import boto3

        endpoint = f"http://127.0.0.1:{s3_port}"
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        )
        self.s3.create_bucket(Bucket=BUCKET)

        airflow_home = self.root / "airflow"
        airflow_home.mkdir()
        passwords = airflow_home / "passwords.json"
        passwords.write_text(json.dumps({USER: PASSWORD}))
        passwords.chmod(0o600)
        ws = self.workspace
        # What every Airflow service is given (docs/operators.md, "Airflow's own settings").
        common = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXCHANGE"))},
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api.url}/execution/",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(bytes(range(32))).decode(),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.postgres.url(
                "psycopg_async", database="airflow"
            ),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": PRELOAD,
            "AIRFLOW__API_AUTH__JWT_SECRET": "topology-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__API__SECRET_KEY": "topology-test-api-secret",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "EXCHANGE_CONTRACTS": ws.env["EXCHANGE_CONTRACTS"],
        }
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            env=common,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]

        self.services.start(
            "api-server",
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
            common,
        )
        self.services.start("scheduler", [AIRFLOW, "scheduler"], common)
        self.services.start("dag-processor", [AIRFLOW, "dag-processor"], common)

        checkpoints = self.root / "shared-checkpoints"
        checkpoints.mkdir(mode=0o700)
        connection = {
            "conn_type": "sftp",
            "host": self.partner.host,
            "port": self.partner.port,
            "login": self.partner.username,
            "extra": {
                "key_file": str(self.partner.client_key_path),
                "known_hosts": str(self.partner.known_hosts_path),
            },
        }
        for name in WORKERS:
            home = self.root / name / "exchange"
            home.mkdir(parents=True, mode=0o700)
            # Airflow records `hostname_callable`'s answer on each task instance: one machine
            # runs both workers here, so each names itself.
            code = self.root / name / "python"
            code.mkdir()
            (code / "topology_host.py").write_text(
                "import os\n\n\ndef name():\n    return os.environ['TOPOLOGY_WORKER']\n"
            )
            # The one shared part of the state folder: see docs/operators.md.
            (home / "checkpoints").symlink_to(checkpoints, target_is_directory=True)
            env = {
                **common,
                **AWS,
                "AWS_ENDPOINT_URL": endpoint,
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.root / "logs" / name / "tasks"),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "topology_host.name",
                # Kept after the worker's own folder: a checkout run from PYTHONPATH stays in use.
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(code), os.environ.get("PYTHONPATH")])
                ),
                "TOPOLOGY_WORKER": name,
                "EXCHANGE_HOME": str(home),
                "EXCHANGE_AUDIT_URL": self.ledger_url,
                "EXCHANGE_SIGNING_KEY": str(Path(ws.env["EXCHANGE_HOME"]) / "keys/gateway.key"),
                "EXCHANGE_STAGING": f"s3://{BUCKET}/staging",
                "EXCHANGE_SOURCE_DIR": ws.env["EXCHANGE_SOURCE_DIR"],
                "EXCHANGE_APPROVERS": ws.env["EXCHANGE_APPROVERS"],
                "AIRFLOW_CONN_EARLY_HELP_SFTP": json.dumps(connection),
                "AIRFLOW_VAR_EARLY_HELP_PSEUDONYM_KEY": base64.b64encode(PSEUDONYM_KEY).decode(),
                "AIRFLOW_VAR_DISCLOSURE_KEY": base64.b64encode(DISCLOSURE_KEY).decode(),
            }
            self.worker_env[name] = env
            self.start_worker(name)

        wait_for("api-server", lambda: port_open(self.api_port), START_TIMEOUT * 2, self.services)
        self.api.login()

    def start_worker(self, name: str) -> None:
        self.services.start(
            name,
            [
                AIRFLOW,
                *("celery", "worker", "--celery-hostname", f"{name}@%h"),
                *("--concurrency", "2", "--skip-serve-logs"),
            ],
            self.worker_env[name],
        )

    def stop(self) -> None:
        try:
            self.services.stop_all()
        finally:
            if self.postgres is not None:
                self.postgres.stop()
            shutil.rmtree(self.pg_base, ignore_errors=True)

    # -- running ----------------------------------------------------------------------------

    def run_all(self, contract_ids: list[str]) -> tuple[dict[str, str], float]:
        """Unpause and trigger each agreement's DAG at once; wait for every run; the wall time."""
        for ident in contract_ids:
            wait_for(
                f"DAG {dag_id(ident)}",
                lambda ident=ident: self.api.has_dag(dag_id(ident)),
                START_TIMEOUT * 2,
                self.services,
            )
        started = time.monotonic()
        runs = {}
        for ident in contract_ids:
            self.api.unpause(dag_id(ident))
            runs[ident] = self.api.trigger(dag_id(ident))
        states: dict[str, str] = {}

        def finished() -> bool:
            for ident, run_id in runs.items():
                if ident not in states:
                    state = self.api.run_state(dag_id(ident), run_id)
                    if state in ("success", "failed"):
                        states[ident] = state
            return len(states) == len(runs)

        timeout = RUN_TIMEOUT + RUN_EACH * (len(runs) - 1)
        wait_for(f"{len(runs)} runs", finished, timeout, self.services)
        elapsed = time.monotonic() - started
        failed = {i: s for i, s in states.items() if s != "success"}
        assert not failed, f"runs failed: {sorted(failed)}"
        return runs, elapsed

    def hostnames(self, ident: str, run_id: str) -> dict[str, str]:
        """Each task of the run and the worker host that ran it."""
        return {
            ti["task_id"]: str(ti["hostname"])
            for ti in self.api.task_instances(dag_id(ident), run_id)
        }

    def exchange(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in self.worker_env[WORKERS[0]].items() if not k.startswith("AIRFLOW")}
        return subprocess.run(
            [str(BIN / "exchange"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture
def topology(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> Iterator[Topology]:
    workspace.source(1000)  # found by the contract's physicalName in EXCHANGE_SOURCE_DIR
    workspace.write_contract(scheduled_far_from_now)  # every first scheduled run is late
    approve_copies(workspace, AGREEMENTS)
    started = Topology(workspace, partner, tmp_path / "topology")
    started.root.mkdir()
    try:
        try:
            started.start()
        except BaseException:
            print(started.services.dump())
            raise
        yield started
    finally:
        started.stop()


def late_first_runs(topology: Topology) -> dict[str, str]:
    """Each agreement whose late first scheduled run the ledger records as skipped, and its run."""
    return {
        str(e.contract_id): str(e.run_id)
        for e in Ledger(topology.ledger_url).entries()
        if e.event == "run.skipped" and json.loads(e.body).get("reason") == "late-first-run"
    }


def drops_in_inbox(partner: PartnerSftpServer) -> list[str]:
    return sorted(p.name for p in (partner.root / FOLDER).iterdir())


def test_runs_triggered_through_the_api_cross_two_celery_workers_and_the_ledger_verifies(
    topology: Topology, workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    try:
        check_topology(topology, workspace, partner, tmp_path)
    except BaseException:
        print(topology.services.dump())  # every service's log and task log, for the report
        raise


def check_topology(
    topology: Topology, workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    # 1. The sample agreement, triggered through the REST API as an operator would.
    runs, elapsed = topology.run_all([SAMPLE_ID])
    print(f"topology: sample run {elapsed:.1f} s")
    (drop,) = drops_in_inbox(partner)
    assert drop.startswith(f"{SAMPLE_ID}-")
    folder = partner.root / FOLDER / drop
    opened = subprocess.run(
        ["age", "-d", "-i", str(workspace.identity), str(folder / "data.csv.age")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert opened.returncode == 0, opened.stderr.decode()
    got = receive(
        folder,
        identity=workspace.identity,
        sender_key=workspace.sender_key,
        out_dir=tmp_path / "received",
    )
    assert got.rows > 0
    assert len(opened.stdout.strip().splitlines()) == got.rows + 1  # the header line
    hosts = topology.hostnames(SAMPLE_ID, runs[SAMPLE_ID])
    assert set(hosts) == {"check_contract", "prepare", "deliver"}
    assert set(hosts.values()) <= set(WORKERS), hosts
    verified = topology.exchange("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Nothing is left staged once the drop is delivered.
    assert topology.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0

    # 2. N agreements at once, on both workers.
    ids = [copy_id(n) for n in range(1, AGREEMENTS + 1)]
    runs, elapsed = topology.run_all(ids)
    print(f"topology: {len(ids)} runs on {len(WORKERS)} workers {elapsed:.1f} s")
    inbox = drops_in_inbox(partner)
    assert len(inbox) == len(ids) + 1
    for ident in ids:
        # Exactly one drop per agreement (a copy's id is the sample's plus a suffix).
        mine = [d for d in inbox if d.startswith(f"{ident}-") and len(d) == len(ident) + 17]
        assert len(mine) == 1, (ident, inbox)
    used = {host for ident in ids for host in topology.hostnames(ident, runs[ident]).values()}
    assert used == set(WORKERS), used
    if PRELOAD.startswith("exchange_airflow"):  # each worker loaded the gateway once, at start
        for name in WORKERS:
            log = (topology.services.logs / f"{name}.log").read_text("utf-8", "replace")
            assert "exchange: validators.suite preloaded" in log, name
    events = [e for e in Ledger(topology.ledger_url).entries() if e.event == "transfer.sent"]
    assert len(events) == len(ids) + 1
    verified = topology.exchange("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert topology.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0

    # Unpausing made each DAG's late first scheduled run at once: the real scheduler ran it, and
    # the DAG skipped it, on the record, without sending (every drop above is a manual run's).
    agreements = {SAMPLE_ID, *ids}
    wait_for(
        "every late first run skipped",
        lambda: set(late_first_runs(topology)) == agreements,
        RUN_TIMEOUT,
        topology.services,
    )
    for ident, run_id in late_first_runs(topology).items():
        assert run_id.startswith("scheduled__"), (ident, run_id)
        # The skip is in the ledger before the scheduler marks the run done: wait for its end.
        wait_for(
            f"the late first run of {ident} to end",
            lambda ident=ident, run_id=run_id: (
                topology.api.run_state(dag_id(ident), run_id) not in ("queued", "running")
            ),
            RUN_TIMEOUT,
            topology.services,
        )
        assert topology.api.run_state(dag_id(ident), run_id) == "success", ident
    sent = [
        e.run_id or "" for e in Ledger(topology.ledger_url).entries() if e.event == "transfer.sent"
    ]
    assert not [r for r in sent if r.startswith("scheduled__")], "a scheduled run sent a drop"

    # 3. Optionally the batch again on two workers, then on one, for the wall-time comparison
    # (again, as the first batch also ran each DAG's skipped late first scheduled run).
    if COMPARE_ONE_WORKER:
        runs, both = topology.run_all(ids)
        topology.services.stop(WORKERS[1])
        runs, alone = topology.run_all(ids)
        print(f"topology: {len(ids)} runs again: 2 workers {both:.1f} s, 1 worker {alone:.1f} s")
        used = {host for ident in ids for host in topology.hostnames(ident, runs[ident]).values()}
        assert used == {WORKERS[0]}, used
        assert len(drops_in_inbox(partner)) == 3 * len(ids) + 1
        verified = topology.exchange("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
