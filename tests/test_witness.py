"""Partners witness the gateway's ledger: every drop's checkpoint must extend the last one seen.

Drops are made by the real gateway and delivered to a real sshd. A dishonest operator holds
the gateway's signing key, so the attacks re-sign manifests with it (or wipe the ledger and
its anchor): the partner's `receive` must still refuse a log that is not an extension of what
it verified before, keep the evidence, and write nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FOLDER, Workspace, incidents, write_contract

from exchange import acks, cli, keys
from exchange.audit import Ledger, witness
from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.contract import load_contract
from exchange.crypto import signing, sshsig
from exchange.errors import DropRejected, LedgerError
from exchange.manifest import MANIFEST_NAME, SIGNATURE_NAME, SSH_SIGNATURE_NAME
from exchange.receive import EVIDENCE_FOLDER, receive, received_drops, witnessed
from exchange.sandbox import PartnerSftpServer
from exchange.secrets import SftpConnection
from exchange.transport.sftp import SftpTransport

pytestmark = pytest.mark.integration

ACK_FOLDER = "outbox/acks"
VERIFIER = Path(__file__).resolve().parents[1] / "scripts" / "verify_bundle.py"
WHEN = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def ack_key(tmp_path: Path, workspace: Workspace, partner: PartnerSftpServer) -> keys.KeyPair:
    """The partner's Ed25519 key, published in the contract's acknowledgement terms."""
    pair = keys.generate("signing", tmp_path / "partner-ack.key", comment="Early Help")

    def acknowledged(doc: dict[str, Any]) -> None:
        terms = {"folder": ACK_FOLDER, "partnerKeys": [pair.public], "deadlineHours": 24}
        doc["customProperties"].append({"property": "acknowledgements", "value": terms})

    workspace.write_contract(acknowledged)
    (partner.root / ACK_FOLDER).mkdir(parents=True)
    return pair


def outbox(server: PartnerSftpServer) -> acks.AckOutbox:
    conn = SftpConnection(
        server.host, server.port, server.username, server.client_key_path, server.known_hosts_path
    )
    return acks.AckOutbox(SftpTransport(conn, [server.host_public_key]), ACK_FOLDER)


def deliver(workspace: Workspace, server: PartnerSftpServer) -> Path:
    result = workspace.gateway().run(workspace.contract, workspace.source(60))
    return server.root / FOLDER / result.drop_id


def take(workspace: Workspace, drop: Path, out: Path, **options: Any):
    return receive(
        drop,
        identity=workspace.identity,
        sender_key=workspace.sender_key,
        out_dir=out,
        clock=lambda: WHEN,
        **options,
    )


def manifest_of(drop: Path) -> dict[str, Any]:
    return json.loads((drop / MANIFEST_NAME).read_text())


def resign(workspace: Workspace, drop: Path, body: dict[str, Any]) -> None:
    """Write a manifest signed with the gateway's own key: what a dishonest operator can do."""
    document = (json.dumps(body, sort_keys=True, indent=2) + "\n").encode()
    (drop / MANIFEST_NAME).write_bytes(document)
    key = signing.load_private_key(workspace.settings.signing_key)
    (drop / SIGNATURE_NAME).write_bytes(signing.sign(key, document))
    (drop / SSH_SIGNATURE_NAME).write_bytes(sshsig.sign(key, document))


def forged_checkpoint(workspace: Workspace, like: Checkpoint, size: int, seed: bytes) -> str:
    key = signing.load_private_key(workspace.settings.signing_key)
    return sign_checkpoint(like.origin, size, hashlib.sha256(seed).digest(), key).note


def test_partner_verifies_each_extension_and_cosigns_and_the_gateway_stores_it(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "received"
    first = deliver(workspace, partner)
    assert "consistency" not in manifest_of(first)["ledger"]  # nothing handed to them before
    got = take(workspace, first, out, ack_key=ack_key.private_path, ack_outbox=outbox(partner))
    held = Checkpoint.parse(manifest_of(first)["ledger"]["checkpoint"])
    ((sender, seen),) = witnessed(out).items()
    assert sender == signing.key_id(signing.load_public_key(workspace.sender_key))
    assert (seen.origin, seen.size, seen.root) == (held.origin, held.size, held.root_hex)
    assert (out / ".received.json").stat().st_mode & 0o777 == 0o600
    assert got.ack is not None and "consistency" not in got.ack["ledger"]

    # The cosignature is a C2SP tlog-cosignature/v1 line over the checkpoint's text.
    partner_public = signing.load_public_key(ack_key.public_path)
    name = witness.witness_name(signing.key_id(partner_public))
    line = got.ack["cosignature"]
    assert line.startswith(f"\u2014 {name} ")
    stamp = witness.open_cosignature(line, held.text, name, partner_public)
    assert stamp == int(WHEN.timestamp())
    with pytest.raises(LedgerError, match="does not verify"):
        witness.open_cosignature(line, held.text.replace("\n", "\n\n", 1), name, partner_public)

    second = deliver(workspace, partner)
    body = manifest_of(second)
    newer = Checkpoint.parse(body["ledger"]["checkpoint"])
    assert [p["from_size"] for p in body["ledger"]["consistency"]] == [held.size]
    take(workspace, second, out, ack_key=ack_key.private_path, ack_outbox=outbox(partner))
    assert witnessed(out)[sender].size == newer.size > held.size
    assert received_drops(out)[second.name]["checkpoint_size"] == newer.size

    # The gateway collects both acks, checks each cosignature against its own checkpoint.
    gw = workspace.gateway()
    contract = gw.check(workspace.contract, run_id="acks")
    assert gw.collect_acks(contract) == (2, 0)
    ledger = Ledger(workspace.settings.audit_url)
    cosigned = [e.data["cosignature"] for e in ledger.entries() if e.event == "ack.received"]
    assert [c["verified"] for c in cosigned] == [True, True]
    assert sorted(c["size"] for c in cosigned) == [held.size, newer.size]
    assert all(c["note"].startswith(c["note"].split("\n\n")[0]) for c in cosigned)
    summary = witness.largest_cosigned(ledger.entries())
    assert [(w.witness, w.size, w.contract_id) for w in summary] == [
        (name, newer.size, contract.id)
    ]
    for key, value in workspace.env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    assert cli.main(["audit", "witnesses", "--json"]) == cli.OK
    (listed,) = json.loads(capsys.readouterr().out)["witnesses"]
    assert (listed["witness"], listed["size"]) == (name, newer.size)
    assert listed["at"] == WHEN.isoformat()
    assert cli.main(["audit", "witnesses"]) == cli.OK
    assert f"{name}" in capsys.readouterr().out


@pytest.mark.parametrize("attack", ["forked", "rewritten", "truncated", "unproven"])
def test_a_log_that_does_not_extend_what_the_partner_saw_is_refused(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path, attack: str
) -> None:
    out = tmp_path / "received"
    first = deliver(workspace, partner)
    take(workspace, first, out)
    held = Checkpoint.parse(manifest_of(first)["ledger"]["checkpoint"])
    second = deliver(workspace, partner)
    body = manifest_of(second)
    newer = Checkpoint.parse(body["ledger"]["checkpoint"])
    if attack == "forked":  # the same size with another root: a split view
        body["ledger"]["checkpoint"] = forged_checkpoint(workspace, held, held.size, b"fork")
        expected = f"forked: its checkpoint of size {held.size} has another root"
    elif attack == "rewritten":  # a longer tree whose first entries differ
        body["ledger"]["checkpoint"] = forged_checkpoint(workspace, held, newer.size, b"x")
        expected = f"rewritten: entries 1..{held.size} you verified \\(drop {first.name}\\)"
    elif attack == "truncated":  # fewer entries than the partner saw
        body["ledger"]["checkpoint"] = forged_checkpoint(workspace, held, held.size - 1, b"t")
        expected = f"truncated or rewritten: this checkpoint has {held.size - 1} entries"
    else:  # a longer tree with its proof left out
        del body["ledger"]["consistency"]
        expected = f"no consistency proof from the checkpoint of size {held.size}"
    resign(workspace, second, body)
    before = (out / ".received.json").read_bytes()

    with pytest.raises(DropRejected, match=expected) as refused:
        take(workspace, second, out)
    assert f"drop {second.name} refused" in str(refused.value)
    assert "evidence kept in" in str(refused.value)
    assert not list(out.glob(f"{second.name}*"))  # no data, no ack
    assert (out / ".received.json").read_bytes() == before  # the witness did not move
    (evidence,) = (out / EVIDENCE_FOLDER).iterdir()
    assert evidence.stat().st_mode & 0o777 == 0o600
    kept = json.loads(evidence.read_text())
    assert kept["held"]["size"] == held.size and kept["drop_id"] == second.name
    # The evidence holds the exact manifest and the gateway's signature of it.
    document = base64.b64decode(kept["manifest"])
    public = signing.load_public_key(workspace.sender_key)
    signing.verify(public, document, kept["manifest_signature"].encode())
    assert hashlib.sha256(document).hexdigest() == kept["manifest_sha256"]


def test_a_log_renamed_under_a_new_origin_is_refused_reported_and_not_cosigned(
    workspace: Workspace, partner: PartnerSftpServer, ack_key: keys.KeyPair, tmp_path: Path
) -> None:
    """Issue 15 finding 1: whoever holds the gateway key starts a whole new history (size 1,
    any root, no proof) under `<origin>-v2`. Held by origin, it was a log never seen before."""
    out = tmp_path / "received"
    first = deliver(workspace, partner)
    take(workspace, first, out)
    held = Checkpoint.parse(manifest_of(first)["ledger"]["checkpoint"])
    before = (out / ".received.json").read_bytes()
    second = deliver(workspace, partner)
    body = manifest_of(second)
    key = signing.load_private_key(workspace.settings.signing_key)
    renamed = sign_checkpoint(held.origin + "-v2", 1, hashlib.sha256(b"new history").digest(), key)
    body["ledger"]["checkpoint"] = renamed.note
    body["ledger"].pop("consistency", None)
    resign(workspace, second, body)

    with pytest.raises(DropRejected, match="a renamed log is a new history") as refused:
        take(workspace, second, out, ack_key=ack_key.private_path, ack_outbox=outbox(partner))
    assert f"{held.origin}-v2" in str(refused.value) and f"drop {first.name}" in str(refused.value)
    assert not list(out.glob(f"{second.name}*"))  # no data, no ack, so no cosignature
    assert not (partner.root / ACK_FOLDER / acks.ack_name(second.name)).exists()
    assert (out / ".received.json").read_bytes() == before  # the witness did not move
    (evidence,) = (out / EVIDENCE_FOLDER).iterdir()
    assert json.loads(evidence.read_text())["held"]["origin"] == held.origin
    report = partner.root / ACK_FOLDER / witness.refusal_name(second.name)
    body_sent = json.loads(report.read_text())["body"]
    assert (body_sent["held"]["size"], body_sent["offered"]) == (held.size, renamed.note)


def test_a_record_keyed_by_origin_is_moved_to_the_sender_key_and_still_guards(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """A `.received.json` written before the fix (witness state keyed by log origin) is moved
    under the sender key of the drop it came from, so the rename attack is refused there too."""
    out = tmp_path / "received"
    first = deliver(workspace, partner)
    take(workspace, first, out)
    record = json.loads((out / ".received.json").read_text())
    ((sender, seen),) = record["witness"].items()
    record["witness"] = {seen["origin"]: seen}  # the old layout
    (out / ".received.json").write_text(json.dumps(record))
    second = deliver(workspace, partner)
    body = manifest_of(second)
    key = signing.load_private_key(workspace.settings.signing_key)
    body["ledger"]["checkpoint"] = sign_checkpoint(
        seen["origin"] + "-v2", 1, hashlib.sha256(b"new").digest(), key
    ).note
    body["ledger"].pop("consistency", None)
    resign(workspace, second, body)
    with pytest.raises(DropRejected, match="a renamed log is a new history"):
        take(workspace, second, out)
    assert list(witnessed(out)) == [sender]
    third = deliver(workspace, partner)  # the genuine log goes on, proven from the held size
    take(workspace, third, out)
    assert json.loads((out / ".received.json").read_text())["witness"].keys() == {sender}

    # An old entry whose drop is not on record cannot be tied to a key: a clear refusal.
    record = json.loads((out / ".received.json").read_text())
    record["witness"] = {"some.log": dict(seen, drop_id="unknown-drop")}
    (out / ".received.json").write_text(json.dumps(record))
    with pytest.raises(DropRejected, match="cannot be tied to a sender key"):
        take(workspace, deliver(workspace, partner), out)


def test_a_replaced_ledger_is_refused_at_the_next_receive_and_reported_to_the_sender(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator deletes the ledger and the checkpoints it handed out, and starts again."""
    out = tmp_path / "received"
    first = deliver(workspace, partner)
    take(workspace, first, out)
    held = Checkpoint.parse(manifest_of(first)["ledger"]["checkpoint"])
    home = Path(workspace.env["EXCHANGE_HOME"])
    (home / "audit.db").unlink()
    shutil.rmtree(home / "checkpoints")
    second = deliver(workspace, partner)  # the gateway signs its new, shorter history
    offered = Checkpoint.parse(manifest_of(second)["ledger"]["checkpoint"])
    with pytest.raises(DropRejected, match="is not an extension of the one you witnessed"):
        take(workspace, second, out, ack_key=ack_key.private_path, ack_outbox=outbox(partner))
    assert (out / EVIDENCE_FOLDER).is_dir()
    assert not (partner.root / ACK_FOLDER / acks.ack_name(second.name)).exists()

    # The partner's signed report reaches the sender's IG lead as a security incident.
    gw = workspace.gateway()
    gw.collect_acks(gw.check(workspace.contract, run_id="acks"))
    gw.collect_acks(gw.check(workspace.contract, run_id="acks"))  # recorded once
    ledger = Ledger(workspace.settings.audit_url)
    (refused,) = [e.data for e in ledger.entries() if e.event == "witness.refused"]
    partner_id = signing.key_id(signing.load_public_key(ack_key.public_path))
    assert (refused["drop_id"], refused["key_id"]) == (second.name, partner_id)
    assert (refused["held_size"], refused["offered_size"]) == (held.size, offered.size)
    assert refused["security_event"] is True
    (incident,) = [i for i in incidents(workspace) if i["kind"] == "log-not-extended"]
    assert partner_id in incident["summary"] and f"size {held.size}" in incident["summary"]

    # An auditor's bundle carries the partner's signed report; the verifier checks and shows it.
    for key, value in workspace.env.items():
        monkeypatch.setenv(key, value)
    bundle = tmp_path / "bundle.json"
    agreement = gw.check(workspace.contract, run_id="id").id
    assert cli.main(["audit", "bundle", "--agreement", agreement, "--out", str(bundle)]) == 0
    done = subprocess.run(
        [sys.executable, "-I", str(VERIFIER), str(bundle)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
    assert (
        f"WARNING: partner {partner_id} refused drop {second.name}: the gateway signed a "
        f"checkpoint of {offered.size} entries that does not extend the one of {held.size}"
    ) in done.stdout


def test_an_older_drop_received_late_is_known_from_a_later_proof_and_not_cosigned(
    workspace: Workspace, partner: PartnerSftpServer, ack_key: keys.KeyPair, tmp_path: Path
) -> None:
    out = tmp_path / "received"
    take(workspace, deliver(workspace, partner), out)
    late, newest = deliver(workspace, partner), deliver(workspace, partner)
    take(workspace, newest, out)  # carries proofs from both earlier checkpoints
    got = take(workspace, late, out, ack_key=ack_key.private_path)
    assert got.ack is not None and "cosignature" not in got.ack  # not the largest it saw
    newer = Checkpoint.parse(manifest_of(newest)["ledger"]["checkpoint"])
    assert next(iter(witnessed(out).values())).size == newer.size


def test_two_partners_each_witness_their_own_view_and_both_refuse_a_replaced_ledger(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """A second agreement with another recipient on its own sshd: each recipient's proofs start
    from the checkpoint that recipient last received, and both catch the same rewrite."""
    second_server = PartnerSftpServer(tmp_path / "partner-b").start()
    try:
        (second_server.root / FOLDER).mkdir(parents=True)
        secrets_file = Path(workspace.env["EXCHANGE_SECRETS"])
        secrets = json.loads(secrets_file.read_text())
        secrets["connections"]["youth-sftp"] = {
            "host": second_server.host,
            "port": second_server.port,
            "username": second_server.username,
            "key_file": str(second_server.client_key_path),
            "known_hosts": str(second_server.known_hosts_path),
        }
        secrets_file.write_text(json.dumps(secrets))

        def youth(doc: dict[str, Any]) -> None:
            doc["id"] = "attendance-to-youth-trust"
            doc["servers"][0]["customProperties"][0]["value"] = [second_server.host_public_key]
            for prop in doc["customProperties"]:
                if prop["property"] == "recipient":
                    prop["value"]["organisation"] = "Anyshire Youth Trust"
                if prop["property"] == "sftpConnection":
                    prop["value"] = "youth-sftp"

        other = workspace.contract.with_name("attendance-to-youth-trust.yaml")
        write_contract(other, workspace.recipient, youth)
        officer = signing.load_private_key(workspace.officer_key)
        workspace.governance().approve(load_contract(other), officer, now=dt.datetime.now(dt.UTC))

        def run(contract: Path, server: PartnerSftpServer) -> Path:
            result = workspace.gateway().run(contract, workspace.source(40))
            return server.root / FOLDER / result.drop_id

        out_a, out_b = tmp_path / "a", tmp_path / "b"
        a1 = run(workspace.contract, partner)
        b1 = run(other, second_server)
        a2 = run(workspace.contract, partner)
        b2 = run(other, second_server)
        for drop, out in ((a1, out_a), (b1, out_b), (a2, out_a), (b2, out_b)):
            take(workspace, drop, out)
        size = {d: Checkpoint.parse(manifest_of(d)["ledger"]["checkpoint"]).size for d in (a1, b1)}
        # Each recipient's proofs start where that recipient's last drop left it.
        assert [p["from_size"] for p in manifest_of(a2)["ledger"]["consistency"]] == [size[a1]]
        assert [p["from_size"] for p in manifest_of(b2)["ledger"]["consistency"]] == [size[b1]]
        assert size[a1] < size[b1]

        home = Path(workspace.env["EXCHANGE_HOME"])
        (home / "audit.db").unlink()
        shutil.rmtree(home / "checkpoints")
        a3, b3 = run(workspace.contract, partner), run(other, second_server)
        for drop, out, held in ((a3, out_a, a2), (b3, out_b, b2)):
            with pytest.raises(DropRejected, match=f"not an extension.* drop {held.name}\\)"):
                take(workspace, drop, out)
    finally:
        second_server.stop()


def test_a_drop_whose_delivery_was_retried_after_a_later_one_is_still_known(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """Prepared, not delivered (a failed try), then a later run goes first: the later manifest
    proves the pending checkpoint too, so the partner recognises it when it does arrive."""
    out = tmp_path / "received"
    take(workspace, deliver(workspace, partner), out)
    gw = workspace.gateway()
    contract = gw.check(workspace.contract, run_id="retried")
    pending = gw.prepare(contract, workspace.source(60), run_id="retried")
    later = deliver(workspace, partner)
    sizes = [p["from_size"] for p in manifest_of(later)["ledger"]["consistency"]]
    assert len(sizes) == 2  # the delivered checkpoint and the pending one
    gw.deliver(contract, "retried")
    retried = partner.root / FOLDER / pending.drop_id
    newer = take(workspace, later, out)
    got = take(workspace, retried, out)
    assert got.log_held == newer.log_size > got.log_size
