"""Shared fixtures: a throw-away gateway workspace and a real partner SFTP server."""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# A private PostgreSQL server per session (PostgreSQL source and audit-ledger tests).
from pg import postgres  # noqa: F401

# Airflow reads its home when first imported: point it at a throw-away one before anything does.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="exchange-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags")

from exchange import approval, keys, synth
from exchange.contract import load_contract, read_document
from exchange.crypto.signing import load_private_key
from exchange.gateway import Gateway
from exchange.sandbox import PartnerSftpServer
from exchange.settings import Settings
from exchange.trust import trust_entry

atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)

# The audit tests' fixtures (signing key, ledgers on both backends).
pytest_plugins = ["audit.audit_fixtures"]

# The two lanes (`make test-fast` runs the first, `make test` both). A test is in the integration
# lane when it is marked so, starts a real server (sshd, PostgreSQL, SMTP, a webhook, Airflow's
# database), opens Chromium, or lives in a module that runs real programs or long property
# searches throughout (the `exchange` command in subprocesses, processes racing, hypothesis).
SERVER_FIXTURES = frozenset(
    {"partner", "server", "postgres", "pg_url", "airflow_db", "smtp", "tls_smtp", "webhook"}
)
SLOW_MODULES = frozenset(
    {
        "test_governance",  # the `exchange` command as an officer types it
        "test_trust_boundaries",  # likewise, for every trust boundary
        "test_ledger_concurrency",  # writers in several processes
        "test_contract_fuzz",  # hypothesis
        "test_minimise_properties",  # hypothesis
        "test_fuzz_parsers",  # hypothesis, over a real drop
    }
)
SLOW_TESTS = frozenset({"test_concurrent_appends_from_processes_keep_one_chain"})


def is_integration(item: pytest.Item) -> bool:
    """Whether the test needs a real server or program, or is slow by design."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return bool(
        item.get_closest_marker("integration")
        or SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        or params.get("backend_url") == "postgresql"
        or any("chromium" in str(m.kwargs.get("reason")) for m in item.iter_markers("skipif"))
        or item.path.stem in SLOW_MODULES
        or getattr(item, "originalname", item.name) in SLOW_TESTS
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every integration test (see `is_integration`) as `integration`."""
    for item in items:
        if is_integration(item) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)


REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "contracts" / "school-attendance-to-early-help.yaml"
FOLDER = "inbox/attendance"
PSEUDONYM_KEY = bytes(range(32))  # a fixed test key: pseudonyms are then known answers
DISCLOSURE_KEY = bytes(range(32, 64))


Edit = Callable[[dict[str, Any]], None]


def write_contract(
    path: Path,
    recipient: str,
    edit: Edit | None = None,
    *,
    host_keys: list[str] | None = None,
) -> Path:
    """Write the sample contract to `path`, addressed to `recipient`, optionally edited."""
    document = read_document(SAMPLE)
    for prop in document["customProperties"]:
        if prop["property"] == "recipientKeys":
            prop["value"] = [recipient]
    if host_keys is not None:
        document["servers"][0]["customProperties"][0]["value"] = host_keys
    if edit is not None:
        edit(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def write_trust(path: Path, officers: Any, revoked: Any = ()) -> Path:
    """Write a trusted approvers file (operator configuration) naming each officer's key."""
    entries = [trust_entry(name, Path(pub).read_text()) for name, pub in officers]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_text(json.dumps({"approvers": entries, "revoked": list(revoked)}, indent=2))
    path.chmod(0o644)
    return path


@dataclass
class Workspace:
    """A gateway's state folder, keys, secrets and contract, and the partner's age key."""

    root: Path
    env: dict[str, str]
    contract: Path
    identity: Path
    recipient: str
    sender_key: Path
    officer_key: Path
    host_keys: list[str] | None = None

    def write_contract(self, edit: Edit | None = None, *, approve: bool = True) -> Path:
        """Rewrite the workspace's contract (pinned to the partner, if any) and approve it."""
        write_contract(self.contract, self.recipient, edit, host_keys=self.host_keys)
        approval.approval_path(self.contract).unlink(missing_ok=True)
        if approve:
            contract = load_contract(self.contract)
            key = load_private_key(self.officer_key)
            self.governance().approve(contract, key, now=dt.datetime.now(dt.UTC))
        return self.contract

    def governance(self) -> approval.Governance:
        return approval.Governance.from_settings(self.settings)

    def trust(self, *officers: tuple[str, Path], revoked: tuple[str, ...] = ()) -> None:
        """Rewrite the operator's trusted approvers: (name, public key file) pairs."""
        write_trust(Path(self.env["EXCHANGE_APPROVERS"]), officers, revoked)

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def gateway(self) -> Gateway:
        return Gateway(self.settings)

    def source(
        self, rows: int = 2000, *, seed: int = 7, name: str = "attendance_export.csv"
    ) -> Path:
        return synth.write(self.root / "sources" / name, rows, seed=seed)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A fresh gateway with its own keys; the connection is added by `partner`."""
    home = tmp_path / "gateway"
    (home / "keys").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    (tmp_path / "sources").mkdir()
    signing = keys.generate("signing", home / "keys" / "gateway.key")
    identity = keys.generate("age", tmp_path / "partner.age")
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    officer = keys.generate("signing", tmp_path / "officer.key", comment="Ivy Officer (IG)")
    trust_file = write_trust(
        tmp_path / "operator" / "approvers.json", [("Ivy Officer (IG)", officer.public_path)]
    )
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(
        json.dumps(
            {
                "secrets": {
                    "early-help-pseudonym-key": base64.b64encode(PSEUDONYM_KEY).decode(),
                    "disclosure-key": base64.b64encode(DISCLOSURE_KEY).decode(),
                }
            }
        )
    )
    secrets_file.chmod(0o600)
    env = {
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_SECRETS": str(secrets_file),
        "EXCHANGE_CONTRACTS": str(contracts),
        "EXCHANGE_SOURCE_DIR": str(tmp_path / "sources"),
        "EXCHANGE_APPROVERS": str(trust_file),
    }
    space = Workspace(
        tmp_path,
        env,
        contracts / SAMPLE.name,
        identity.private_path,
        identity.public,
        signing.public_path,
        officer.private_path,
    )
    space.write_contract()
    return space


@pytest.fixture
def gateway_env(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """The workspace's settings in this process's environment, as a command would see them."""
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    return workspace


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """A fresh Airflow metadata database in the test AIRFLOW_HOME (set in conftest)."""
    from airflow.utils.db import resetdb

    resetdb(skip_init=False)


@pytest.fixture
def airflow_env(
    workspace: Workspace, partner: PartnerSftpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    """The workspace's settings, with the SFTP connection and key as Airflow sees them."""
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EXCHANGE_SECRETS")  # in Airflow, secrets come from Airflow
    connection = {
        "conn_type": "sftp",
        "host": partner.host,
        "port": partner.port,
        "login": partner.username,
        "extra": {
            "key_file": str(partner.client_key_path),
            "known_hosts": str(partner.known_hosts_path),
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_EARLY_HELP_SFTP", json.dumps(connection))
    monkeypatch.setenv(
        "AIRFLOW_VAR_EARLY_HELP_PSEUDONYM_KEY", base64.b64encode(PSEUDONYM_KEY).decode()
    )
    monkeypatch.setenv("AIRFLOW_VAR_DISCLOSURE_KEY", base64.b64encode(DISCLOSURE_KEY).decode())
    workspace.source(1000)  # found by the contract's physicalName in EXCHANGE_SOURCE_DIR
    yield workspace


@pytest.fixture
def partner(tmp_path: Path, workspace: Workspace) -> Iterator[PartnerSftpServer]:
    """A real sshd for the partner, wired into the workspace as the contract's connection."""
    server = PartnerSftpServer(tmp_path / "partner").start()
    (server.root / FOLDER).mkdir(parents=True)
    connect(workspace, server)
    workspace.host_keys = [server.host_public_key]
    workspace.write_contract()
    yield server
    server.stop()


def connect(workspace: Workspace, server: PartnerSftpServer) -> None:
    """Point the workspace's `early-help-sftp` connection at the server."""
    secrets_file = Path(workspace.env["EXCHANGE_SECRETS"])
    data = json.loads(secrets_file.read_text())
    data["connections"] = {
        "early-help-sftp": {
            "host": server.host,
            "port": server.port,
            "username": server.username,
            "key_file": str(server.client_key_path),
            "known_hosts": str(server.known_hosts_path),
        }
    }
    secrets_file.write_text(json.dumps(data))


def last_record(workspace: Workspace) -> Any:
    """The newest ledger entry that is not an incident notice (incidents follow refusals)."""
    from exchange.audit import Ledger

    entries = list(Ledger(workspace.settings.audit_url).entries())
    return next(e for e in reversed(entries) if not e.event.startswith("incident"))


def incidents(workspace: Workspace) -> list[dict[str, Any]]:
    """The bodies of every incident entry in the ledger."""
    from exchange.audit import Ledger

    entries = Ledger(workspace.settings.audit_url).entries()
    return [e.data for e in entries if e.event == "incident"]


def inbox_entries(server: PartnerSftpServer) -> list[str]:
    """Everything in the partner's inbox folder, hidden temporary names included."""
    return sorted(p.name for p in (server.root / FOLDER).iterdir())


def receive_args(drop: Path, identity: Path, sender_key: Path, out: Path, *extra: str) -> list[str]:
    """`exchange receive` as a partner types it (the words after `exchange`)."""
    return [
        "receive",
        str(drop),
        "--identity",
        str(identity),
        "--sender-key",
        str(sender_key),
        "--out",
        str(out),
        *extra,
    ]
