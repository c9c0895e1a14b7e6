"""A throw-away gateway wired to a real partner sshd, shared by the benchmark scripts."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from exchange import approval, keys, synth
from exchange.contract import load_contract, read_document
from exchange.crypto.signing import load_private_key
from exchange.gateway import Gateway
from exchange.sandbox import PartnerSftpServer
from exchange.settings import Settings
from exchange.trust import trust_entry

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "contracts" / "school-attendance-to-early-help.yaml"
FOLDER = "inbox/attendance"


@dataclass
class Bench:
    """Paths and objects of one benchmark set-up."""

    root: Path
    server: PartnerSftpServer
    contract: Path
    env: dict[str, str]

    def gateway(self) -> Gateway:
        return Gateway(Settings.from_env(self.env))

    def source(self, rows: int, fmt: str = "csv") -> Path:
        """Synthetic source data, generated once per size and kept for the run."""
        path = self.root / "sources" / f"attendance_{rows}.{fmt}"
        if not path.exists():
            synth.write(path, rows, seed=1)
        return path


def roomy_sample(root: Path, rows: int) -> Path:
    """The sample agreement with its rowCount bound (5,000,000) raised above `rows`, so a
    10M-row run is measured to its end instead of refused at the row count."""
    document = yaml.safe_load(SAMPLE.read_text())
    for rule in document["schema"][0].get("quality", []):
        if rule.get("metric") == "rowCount":
            rule["mustBeBetween"] = [1, max(rows * 2, 5_000_000)]
    path = root / "sample-roomy.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def workbench(root: Path | None = None) -> Bench:
    """Start a partner sshd and a gateway configured to deliver to it."""
    root = root or Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    server = PartnerSftpServer(root / "partner").start()
    (server.root / FOLDER).mkdir(parents=True, exist_ok=True)
    home = root / "gateway"
    (home / "keys").mkdir(parents=True, exist_ok=True)
    if not (home / "keys" / "gateway.key").exists():
        keys.generate("signing", home / "keys" / "gateway.key")
        keys.generate("age", root / "partner.age")
    recipient = (root / "partner.age.pub").read_text().strip()
    document = read_document(SAMPLE)
    for prop in document["customProperties"]:
        if prop["property"] == "recipientKeys":
            prop["value"] = [recipient]
    document["servers"][0]["customProperties"] = [
        {"property": "hostKeys", "value": [server.host_public_key]}
    ]
    contracts = root / "contracts"
    (root / "sources").mkdir(exist_ok=True)
    (contracts / "approvers").mkdir(parents=True, exist_ok=True)
    officer = root / "officer.key"
    if not officer.exists():
        keys.generate("signing", officer, comment="Benchmark Officer")
    shutil.copy(root / "officer.key.pub", contracts / "approvers" / "officer.pub")
    # The trusted approvers are operator configuration, outside the contracts folder.
    trust_file = root / "operator" / "approvers.json"
    trust_file.parent.mkdir(parents=True, exist_ok=True)
    entry = trust_entry("Benchmark Officer", (root / "officer.key.pub").read_text())
    trust_file.write_text(json.dumps({"approvers": [entry], "revoked": []}))
    contract = contracts / SAMPLE.name
    contract.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_SECRETS": str(root / "secrets.json"),
        "EXCHANGE_CONTRACTS": str(contracts),
        "EXCHANGE_APPROVERS": str(trust_file),
        "EXCHANGE_SOURCE_DIR": str(root / "sources"),
    }
    approval.Governance.from_settings(Settings.from_env(env)).approve(
        load_contract(contract), load_private_key(officer), now=dt.datetime.now(dt.UTC)
    )
    secrets_file = root / "secrets.json"
    secrets_file.write_text(
        json.dumps(
            {
                "connections": {
                    "early-help-sftp": {
                        "host": server.host,
                        "port": server.port,
                        "username": server.username,
                        "key_file": str(server.client_key_path),
                        "known_hosts": str(server.known_hosts_path),
                    }
                },
                "secrets": {
                    "early-help-pseudonym-key": base64.b64encode(secrets.token_bytes(32)).decode(),
                    "disclosure-key": base64.b64encode(secrets.token_bytes(32)).decode(),
                },
            }
        )
    )
    secrets_file.chmod(0o600)
    return Bench(root, server, contract, env)
