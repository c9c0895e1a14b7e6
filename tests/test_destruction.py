"""Destruction receipts: an expired drop is deleted at the partner, its signed receipt travels
back over real SFTP and verifies at the gateway; a drop with no receipt after retention plus
grace raises an incident; a forged receipt is a security event."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import FOLDER, Workspace, incidents
from test_bundle import verify
from test_witness import ACK_FOLDER, ack_key, deliver, manifest_of, outbox, take  # noqa: F401

from exchange import cli, destruction, keys
from exchange.audit import Ledger
from exchange.crypto import signing
from exchange.gateway import Gateway
from exchange.manifest import DESTRUCTION_GRACE_DAYS
from exchange.receive import received_drops
from exchange.sandbox import PartnerSftpServer

pytestmark = pytest.mark.integration


def expire_at(out: Path, key: Path, at: dt.datetime, *connection: str) -> int:
    return cli.main(["partner", "expire", "--out", str(out), "--key", str(key), "--at",
                     at.isoformat(), *connection])  # fmt: skip


def entries(workspace: Workspace, event: str) -> list[dict]:
    return [e.data for e in Ledger(workspace.settings.audit_url).entries() if e.event == event]


def test_an_expired_drop_is_destroyed_and_its_receipt_verifies_at_the_gateway(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in workspace.env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "received"
    drop = deliver(workspace, partner)
    got = take(workspace, drop, out, ack_key=ack_key.private_path, ack_outbox=outbox(partner))
    retention = manifest_of(drop)["retention"]
    assert (retention["period"], retention["action"]) == ("2 y", "delete")
    created = dt.datetime.fromisoformat(manifest_of(drop)["created_at"])
    ends = created + dt.timedelta(days=retention["days"])
    connection = ("--connection", "early-help-sftp", "--folder", ACK_FOLDER)

    # Before the end of retention nothing is touched.
    assert expire_at(out, ack_key.private_path, ends - dt.timedelta(hours=1), *connection) == 0
    assert "no received drop has reached the end" in capsys.readouterr().out
    assert got.output.is_file() and drop.is_dir()

    assert expire_at(out, ack_key.private_path, ends, *connection) == cli.OK
    said = capsys.readouterr().out
    assert f"drop {drop.name} destroyed" in said and "sent to" in said
    assert not got.output.exists() and not drop.exists()  # plaintext and ciphertext gone
    local = out / destruction.receipt_name(drop.name)
    assert local.stat().st_mode & 0o777 == 0o600
    remote = partner.root / ACK_FOLDER / destruction.receipt_name(drop.name)
    assert remote.read_bytes() == local.read_bytes()
    body = json.loads(local.read_text())["body"]
    assert body["destroyed_at"] == ends.isoformat(timespec="seconds")
    assert {d["what"]: d["status"] for d in body["deleted"]} == {
        "plaintext": "deleted",
        "manifest": "deleted",
        "ciphertext": "deleted",
    }
    assert received_drops(out)[drop.name]["destroyed_at"] == body["destroyed_at"]
    # Running again destroys nothing more and sends nothing again.
    assert expire_at(out, ack_key.private_path, ends, *connection) == cli.OK
    assert "no received drop" in capsys.readouterr().out

    # The gateway, long after: the receipt verifies, so no incident.
    late = ends + dt.timedelta(days=DESTRUCTION_GRACE_DAYS + 1)
    contract = workspace.gateway().check(workspace.contract, run_id="acks")
    gw = Gateway(workspace.settings, clock=lambda: late)
    assert gw.collect_acks(contract) == (1, 0)
    (recorded,) = entries(workspace, "destruction.received")
    assert recorded["drop_id"] == drop.name and recorded["destroyed_at"] == body["destroyed_at"]
    kept = recorded["receipt"]
    public = signing.load_public_key(ack_key.public_path)
    checked = destruction.verify(
        remote.name,
        json.dumps(kept).encode(),
        {signing.key_id(public): public},
    )
    assert isinstance(checked, destruction.Receipt)
    assert entries(workspace, "destruction.overdue") == []
    assert not [i for i in incidents(workspace) if i["kind"] == "destruction-overdue"]

    # The auditor's bundle carries the receipt, and the standalone verifier checks it.
    bundle = tmp_path / "bundle.json"
    assert cli.main(["audit", "bundle", "--agreement", contract.id, "--out", str(bundle)]) == 0
    done = verify(bundle, "--gateway-key", str(workspace.sender_key))
    assert done.returncode == 0, done.stdout
    assert f"1 destruction receipts: {drop.name} destroyed at {body['destroyed_at']}" in done.stdout


def test_a_missing_receipt_raises_the_incident_once(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    drop = deliver(workspace, partner)
    gw = workspace.gateway()
    contract = gw.check(workspace.contract, run_id="acks")
    assert contract.retention_days is not None
    sent = dt.datetime.now(dt.UTC)
    days = contract.retention_days + DESTRUCTION_GRACE_DAYS
    within = Gateway(workspace.settings, clock=lambda: sent + dt.timedelta(days=days - 1))
    within.collect_acks(contract)
    assert entries(workspace, "destruction.overdue") == []
    after = Gateway(workspace.settings, clock=lambda: sent + dt.timedelta(days=days + 1))
    after.collect_acks(contract)
    after.collect_acks(contract)  # noted once
    (overdue,) = entries(workspace, "destruction.overdue")
    assert overdue["drop_id"] == drop.name
    (incident,) = [i for i in incidents(workspace) if i["kind"] == "destruction-overdue"]
    assert drop.name in incident["summary"]


def test_a_forged_receipt_is_rejected_as_a_security_event(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    drop = deliver(workspace, partner)
    out = tmp_path / "received"
    take(workspace, drop, out)
    forger = keys.generate("signing", tmp_path / "forger.key")
    key = signing.load_private_key(forger.private_path)
    facts = received_drops(out)[drop.name]
    body = destruction.build(
        drop.name, facts, [], destroyed_at="2026-11-24T10:00:00+00:00",
        key_id=signing.key_id(signing.load_public_key(ack_key.public_path)),
    )  # fmt: skip
    (partner.root / ACK_FOLDER / destruction.receipt_name(drop.name)).write_bytes(
        destruction.sign(body, key)
    )
    gw = workspace.gateway()
    gw.collect_acks(gw.check(workspace.contract, run_id="acks"))
    assert entries(workspace, "destruction.received") == []
    (rejected,) = entries(workspace, "destruction.rejected")
    assert rejected["security_event"] is True and "does not verify" in rejected["reason"]
    assert (partner.root / FOLDER / drop.name).is_dir()
