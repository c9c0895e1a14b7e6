"""Destruction receipts: an expired drop is deleted at the partner, its signed receipt travels
back over real SFTP and verifies at the gateway; a drop with no receipt after retention plus
grace raises an incident; a forged receipt is a security event."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FOLDER, Workspace, incidents
from test_bundle import verify
from test_receive_hostile import snapshot
from test_witness import (  # noqa: F401
    ACK_FOLDER,
    ack_key,
    deliver,
    manifest_of,
    outbox,
    resign,
    take,
)

from exchange import cli, destruction, keys
from exchange.audit import Ledger
from exchange.contract import load_contract
from exchange.crypto import signing
from exchange.errors import DropRejected
from exchange.gateway import Gateway
from exchange.manifest import (
    DESTRUCTION_GRACE_DAYS,
    MANIFEST_NAME,
    MAX_RETENTION_DAYS,
    SIGNATURE_NAME,
    SSH_SIGNATURE_NAME,
    ManifestError,
    retention_facts,
)
from exchange.receive import RECORD_NAME, received_drops
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
    assert body["deleted"][-1]["name"] == "manifest.json"  # last: see the test of a stopped run
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


def test_a_retention_with_no_end_date_does_not_stop_other_drops_being_destroyed(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 15 finding 2: `retention.days: 1e10`, recorded from a signed manifest before the
    schema capped it, made every `partner expire` die with OverflowError."""
    out = tmp_path / "received"
    hostile, _ = received_and_due(workspace, partner, out)
    honest, late = received_and_due(workspace, partner, out)
    edit_record(out, hostile.name, retention={**manifest_of(hostile)["retention"], "days": 1e10})

    assert expire_at(out, ack_key.private_path, late) == cli.OK
    said = capsys.readouterr()
    assert f"drop {honest.name} destroyed" in said.out
    assert f"drop {hostile.name} kept: its recorded retention gives no end date" in said.err
    drops = received_drops(out)
    assert drops[honest.name]["destroyed_at"] == late.isoformat(timespec="seconds")
    assert "destroyed_at" not in drops[hostile.name]
    assert (out / drops[hostile.name]["output"]).is_file() and hostile.is_dir()
    assert not (out / drops[honest.name]["output"]).exists() and not honest.exists()


@pytest.mark.parametrize("days", [1e10, 36500.5, -1])
def test_a_manifest_whose_retention_no_date_can_hold_is_refused_at_receive(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path, days: float
) -> None:
    """The gateway key's holder re-signs a manifest with an absurd retention: refused, with
    the place named, before anything is recorded; 100 years (36500 days) is the cap."""
    drop = deliver(workspace, partner)
    body = manifest_of(drop)
    body["retention"]["days"] = days
    resign(workspace, drop, body)
    with pytest.raises(DropRejected, match=r"schema at /retention/days \((maximum|minimum)\)"):
        take(workspace, drop, tmp_path / "received")
    assert received_drops(tmp_path / "received") == {}


def test_the_retention_cap_is_one_number_in_both_schemas_and_the_sender(
    workspace: Workspace,
) -> None:
    """Both schema copies cap `retention.days` at the same number the sender refuses above."""
    root = Path(__file__).resolve().parents[1]
    for path in (
        root / "exchange" / "manifest.schema.json",
        root / "docs" / "manifest.schema.json",
    ):
        days = json.loads(path.read_text())["properties"]["retention"]["properties"]["days"]
        assert days["maximum"] == MAX_RETENTION_DAYS == 36500, path
    contract = load_contract(workspace.contract)
    too_long = dataclasses.replace(contract, retention_days=MAX_RETENTION_DAYS + 1.0)
    with pytest.raises(ManifestError, match="longer than 36500 days"):
        retention_facts(too_long)
    assert retention_facts(dataclasses.replace(contract, retention_days=365.0))["days"] == 365.0


def received_and_due(
    workspace: Workspace, partner: PartnerSftpServer, out: Path
) -> tuple[Path, dt.datetime]:
    """A drop delivered and received into `out`, and a time after its retention ended."""
    drop = deliver(workspace, partner)
    take(workspace, drop, out)
    facts = manifest_of(drop)
    created = dt.datetime.fromisoformat(facts["created_at"])
    return drop, created + dt.timedelta(days=facts["retention"]["days"] + 1)


def edit_record(out: Path, drop_id: str, **changes: Any) -> None:
    """Change one drop's entry in the partner's record, as anyone with their login can."""
    record = json.loads((out / RECORD_NAME).read_text())
    record["drops"][drop_id].update(changes)
    (out / RECORD_NAME).write_text(json.dumps(record))


def receipt_of(out: Path, drop_id: str) -> dict[str, Any]:
    return json.loads((out / destruction.receipt_name(drop_id)).read_text())["body"]


def test_a_record_pointing_at_a_folder_with_no_manifest_deletes_nothing_there(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review of stop 21: an edited `drop_folder` aimed `expire` at a folder holding no
    manifest, and it deleted the drop's file names there (signatures, a payload name)."""
    out = tmp_path / "received"
    drop, late = received_and_due(workspace, partner, out)
    payload = received_drops(out)[drop.name]["payload"]
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    for name in (SIGNATURE_NAME, SSH_SIGNATURE_NAME, payload, "notes.txt"):
        (victim / name).write_text(f"someone else's {name}")
    edit_record(out, drop.name, drop_folder=str(victim))
    before = snapshot(tmp_path)

    assert expire_at(out, ack_key.private_path, late) == cli.OK
    said = capsys.readouterr()
    assert f"drop {drop.name} destroyed" in said.out
    assert (
        f"drop {drop.name}: its data file is deleted, but the drop folder its record names "
        "holds no manifest, so nothing there was deleted"
    ) in said.err
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k.startswith(str(victim))} == {
        k: v for k, v in before.items() if k.startswith(str(victim))
    }
    assert {k: v for k, v in after.items() if k.startswith(str(drop))} == {
        k: v for k, v in before.items() if k.startswith(str(drop))
    }
    output = received_drops(out)[drop.name]["output"]
    assert not (out / output).exists()  # the plaintext is still destroyed
    assert receipt_of(out, drop.name)["deleted"] == [
        {"what": "plaintext", "name": output, "status": "deleted"},
        {"what": "ciphertext", "name": payload, "status": "refused: no manifest"},
    ]


def test_a_record_pointing_at_another_drops_folder_leaves_it_and_says_so(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "received"
    hostile, late = received_and_due(workspace, partner, out)
    kept, _ = received_and_due(workspace, partner, out)
    edit_record(out, hostile.name, drop_folder=str(kept))
    edit_record(out, kept.name, retention={**manifest_of(kept)["retention"], "days": 36500})
    before = snapshot(kept)

    assert expire_at(out, ack_key.private_path, late) == cli.OK
    assert "holds another drop's manifest, so nothing there was deleted" in capsys.readouterr().err
    assert snapshot(kept) == before
    statuses = [d["status"] for d in receipt_of(out, hostile.name)["deleted"]]
    assert statuses == ["deleted", "refused: another drop"]


def test_a_run_stopped_midway_is_finished_and_a_finished_one_is_harmless_again(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The manifest is deleted last: a run that stopped after the payload and signatures
    leaves it, so the next run still recognises the folder and finishes it; after a run that
    stopped before saving the record, a rerun deletes nothing more and warns of nothing."""
    out = tmp_path / "received"
    drop, late = received_and_due(workspace, partner, out)
    payload = received_drops(out)[drop.name]["payload"]
    for name in (payload, SIGNATURE_NAME, SSH_SIGNATURE_NAME):
        (drop / name).unlink()  # as far as a run that stopped before the manifest got

    assert expire_at(out, ack_key.private_path, late) == cli.OK
    assert capsys.readouterr().err == ""
    deleted = receipt_of(out, drop.name)["deleted"]
    assert [(d["name"], d["status"]) for d in deleted[1:]] == [
        (payload, "absent"),
        (SIGNATURE_NAME, "absent"),
        (SSH_SIGNATURE_NAME, "absent"),
        (MANIFEST_NAME, "deleted"),
    ]
    assert not drop.exists()

    # A run that deleted everything but stopped before saving the record: the folder is left
    # (something else was put in it), the entry is not marked destroyed.
    drop.mkdir()
    (drop / "notes.txt").write_text("not the drop's")
    edit_record(out, drop.name, destroyed_at=None, receipt_sent=None)
    assert expire_at(out, ack_key.private_path, late) == cli.OK
    said = capsys.readouterr()
    assert f"drop {drop.name} destroyed" in said.out and said.err == ""
    statuses = [d["status"] for d in receipt_of(out, drop.name)["deleted"]]
    assert statuses == ["absent", "absent"]
    assert [p.name for p in drop.iterdir()] == ["notes.txt"]


def test_a_drop_received_through_a_link_is_recorded_at_its_own_folder_and_destroyed(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A partner may reach its inbox through a link; `expire` refuses a linked folder, so the
    record must name the folder itself or the ciphertext would never be deleted."""
    out = tmp_path / "received"
    drop = deliver(workspace, partner)
    link = tmp_path / "inbox-link"
    link.symlink_to(drop, target_is_directory=True)
    take(workspace, link, out)
    facts = received_drops(out)[drop.name]
    assert facts["drop_folder"] == str(drop.resolve())
    created = dt.datetime.fromisoformat(manifest_of(drop)["created_at"])
    late = created + dt.timedelta(days=manifest_of(drop)["retention"]["days"] + 1)

    assert expire_at(out, ack_key.private_path, late) == cli.OK
    assert not drop.exists() and link.is_symlink()  # the link itself is the partner's to keep
    assert {e["status"] for e in receipt_of(out, drop.name)["deleted"]} == {"deleted"}
