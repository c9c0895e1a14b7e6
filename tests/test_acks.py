"""The partner's receive refuses bad drops and acknowledges good ones; the sender verifies acks.

Drops are made by the real gateway and delivered to a real sshd; acknowledgements travel back
over SFTP into the partner's acknowledgement folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from conftest import FOLDER, Workspace

from exchange import acks, keys
from exchange.crypto import signing, sshsig
from exchange.errors import DropRejected
from exchange.manifest import MANIFEST_NAME, SIGNATURE_NAME, SSH_SIGNATURE_NAME
from exchange.receive import RECORD_NAME, receive, received_drops
from exchange.sandbox import PartnerSftpServer
from exchange.secrets import SftpConnection
from exchange.transport.sftp import SftpTransport

pytestmark = pytest.mark.integration

ACK_FOLDER = "outbox/acks"
WHEN = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)


def deliver(workspace: Workspace, server: PartnerSftpServer, rows: int = 300) -> Path:
    """Run one exchange through the gateway; the drop folder on the partner's server."""
    result = workspace.gateway().run(workspace.contract, workspace.source(rows))
    return server.root / FOLDER / result.drop_id


def sftp_transport(server: PartnerSftpServer, **options) -> SftpTransport:
    conn = SftpConnection(
        server.host, server.port, server.username, server.client_key_path, server.known_hosts_path
    )
    return SftpTransport(conn, [server.host_public_key], **options)


@pytest.fixture
def ack_key(tmp_path: Path) -> keys.KeyPair:
    """The partner's Ed25519 acknowledgement key, made as partners are told to make it."""
    return keys.generate("signing", tmp_path / "partner-ack.key")


@pytest.fixture
def outbox(partner: PartnerSftpServer) -> acks.AckOutbox:
    (partner.root / ACK_FOLDER).mkdir(parents=True)
    return acks.AckOutbox(sftp_transport(partner), ACK_FOLDER)


def take(workspace: Workspace, drop: Path, out: Path, **options):
    return receive(
        drop,
        identity=workspace.identity,
        sender_key=workspace.sender_key,
        out_dir=out,
        clock=lambda: WHEN,
        **options,
    )


def data_files(out: Path) -> list[str]:
    """Everything in the output folder except the lock and the record of received drops."""
    if not out.exists():
        return []
    return sorted(p.name for p in out.iterdir() if p.name not in {RECORD_NAME, ".received.lock"})


def resign(workspace: Workspace, drop: Path, edit) -> None:
    """Change the manifest and sign it again with the sender's key (a sender-side fault)."""
    body = json.loads((drop / MANIFEST_NAME).read_text())
    edit(body)
    document = (json.dumps(body, sort_keys=True, indent=2) + "\n").encode()
    (drop / MANIFEST_NAME).write_bytes(document)
    key = signing.load_private_key(workspace.settings.signing_key)
    (drop / SIGNATURE_NAME).write_bytes(signing.sign(key, document))
    (drop / SSH_SIGNATURE_NAME).write_bytes(sshsig.sign(key, document))


# -- the good path -----------------------------------------------------------------------------


def test_receive_acknowledges_and_the_sender_collects_the_verified_ack(
    workspace: Workspace,
    partner: PartnerSftpServer,
    outbox: acks.AckOutbox,
    ack_key: keys.KeyPair,
    tmp_path: Path,
) -> None:
    drop = deliver(workspace, partner)
    manifest_bytes = (drop / MANIFEST_NAME).read_bytes()
    manifest = json.loads(manifest_bytes)
    out = tmp_path / "received"
    got = take(workspace, drop, out, ack_key=ack_key.private_path, ack_outbox=outbox)

    assert got.output.is_file() and got.rows == manifest["rows"]["sent"]
    assert got.ack_remote == f"{ACK_FOLDER}/{drop.name}.ack.json"
    assert got.ack_path is not None and got.ack_path.stat().st_mode & 0o777 == 0o600
    remote = partner.root / ACK_FOLDER
    assert sorted(p.name for p in remote.iterdir()) == [f"{drop.name}.ack.json"]
    assert (remote / f"{drop.name}.ack.json").read_bytes() == got.ack_path.read_bytes()

    partner_key = signing.load_public_key(ack_key.public_path)
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    rejected: list[acks.RejectedAck] = []
    with sftp_transport(partner).connect() as remote:
        found = acks.collect_acks(remote, ACK_FOLDER, [partner_key], on_rejected=rejected.append)
        only = acks.collect_acks(remote, ACK_FOLDER, [partner_key], expected={drop.name: sha})
        other = acks.collect_acks(remote, ACK_FOLDER, [partner_key], expected={"x-1": sha})
    assert rejected == [] and other == []
    assert len(found) == 1 and found == only
    ack = found[0]
    assert (ack.drop_id, ack.manifest_sha256, ack.rows) == (drop.name, sha, got.rows)
    assert ack.received_at == WHEN.isoformat(timespec="seconds")
    assert ack.key_id == signing.key_id(partner_key) == ack_key.public.split()[-1]
    body = ack.body
    assert body["type"] == "exchange-ack/1" and body["verified"] is True
    assert body["payload_sha256"] == manifest["payload"]["sha256"]
    assert body["ledger"] == manifest["ledger"]  # the partner witnesses the sender's ledger
    assert body["contract"]["id"] == manifest["contract"]["id"]
    assert received_drops(out)[drop.name]["manifest_sha256"] == sha


def test_an_ack_signed_by_the_wrong_key_is_rejected_and_reported(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,
    tmp_path: Path,
) -> None:
    drop = deliver(workspace, partner)
    manifest = json.loads((drop / MANIFEST_NAME).read_bytes())
    partner_key = signing.load_public_key(ack_key.public_path)
    impostor = signing.load_private_key(
        keys.generate("signing", tmp_path / "impostor.key").private_path
    )
    folder = partner.root / ACK_FOLDER
    folder.mkdir(parents=True)

    def ack_of(drop_id: str, key_id: str) -> dict:
        body = acks.build(
            {**manifest, "drop_id": drop_id}, "0" * 64, rows=1, received_at="t", key_id=key_id
        )
        return body

    # Claims to be the partner's key, but the impostor signed it.
    forged = ack_of(drop.name, signing.key_id(partner_key))
    (folder / f"{drop.name}.ack.json").write_bytes(acks.sign(forged, impostor))
    # Signed by a key the partner never published.
    unknown = ack_of("c-2", signing.key_id(impostor.public_key()))
    (folder / "c-2.ack.json").write_bytes(acks.sign(unknown, impostor))
    # A genuine signature, copied under another drop's name.
    genuine = ack_of("c-3", signing.key_id(partner_key))
    signer = signing.load_private_key(ack_key.private_path)
    (folder / "c-4.ack.json").write_bytes(acks.sign(genuine, signer))
    (folder / "c-5.ack.json").write_text("not json")
    (folder / ".c-6.ack.json.partial").write_text("half")

    rejected: list[acks.RejectedAck] = []
    with sftp_transport(partner).connect() as remote:
        found = acks.collect_acks(remote, ACK_FOLDER, [partner_key], on_rejected=rejected.append)
    assert found == []
    reasons = {r.name: r.reason for r in rejected}
    assert set(reasons) == {f"{drop.name}.ack.json", "c-2.ack.json", "c-4.ack.json", "c-5.ack.json"}
    assert "does not verify" in reasons[f"{drop.name}.ack.json"]
    assert "has not published" in reasons["c-2.ack.json"]
    assert "names drop 'c-3'" in reasons["c-4.ack.json"]
    assert "not an acknowledgement" in reasons["c-5.ack.json"]


def test_an_ack_of_another_manifest_is_rejected(
    workspace: Workspace,
    partner: PartnerSftpServer,
    outbox: acks.AckOutbox,
    ack_key: keys.KeyPair,
    tmp_path: Path,
) -> None:
    drop = deliver(workspace, partner)
    take(workspace, drop, tmp_path / "out", ack_key=ack_key.private_path, ack_outbox=outbox)
    rejected: list[acks.RejectedAck] = []
    with sftp_transport(partner).connect() as remote:
        found = acks.collect_acks(
            remote,
            ACK_FOLDER,
            [signing.load_public_key(ack_key.public_path)],
            expected={drop.name: "f" * 64},
            on_rejected=rejected.append,
        )
    assert found == [] and len(rejected) == 1
    assert "not the one sent" in rejected[0].reason


def test_ack_upload_failure_keeps_the_data_and_the_signed_ack(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,
    tmp_path: Path,
) -> None:
    drop = deliver(workspace, partner)
    (partner.root / ACK_FOLDER).mkdir(parents=True)
    down = acks.AckOutbox(sftp_transport(partner, attempts=1), ACK_FOLDER)
    partner.stop()
    out = tmp_path / "out"
    with pytest.raises(acks.AckNotSent, match="was received and written") as caught:
        take(workspace, drop, out, ack_key=ack_key.private_path, ack_outbox=down)
    assert caught.value.received.output.is_file()
    assert caught.value.ack_path.is_file()
    partner.start()  # a fresh port: send the kept ack through a new connection
    sent = acks.send_ack(
        acks.AckOutbox(sftp_transport(partner), ACK_FOLDER),
        drop.name,
        caught.value.ack_path.read_bytes(),
    )
    assert sent.remote_path == f"{ACK_FOLDER}/{drop.name}.ack.json"


# -- refusals: a clear reason and no output -----------------------------------------------------


def test_one_byte_tampered_payload_is_refused(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    drop = deliver(workspace, partner)
    payload = drop / "data.csv.age"
    data = bytearray(payload.read_bytes())
    data[len(data) // 3] ^= 0x01
    payload.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DropRejected, match="checksum"):
        take(workspace, drop, out)
    assert data_files(out) == []


def test_one_byte_tampered_manifest_is_refused(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    drop = deliver(workspace, partner)
    document = (drop / MANIFEST_NAME).read_bytes()
    (drop / MANIFEST_NAME).write_bytes(document.replace(b'"sent": ', b'"sent":  ', 1))
    out = tmp_path / "out"
    with pytest.raises(DropRejected, match="signature does not verify"):
        take(workspace, drop, out)
    assert data_files(out) == []


def test_truncated_payload_is_refused(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    drop = deliver(workspace, partner, rows=2000)
    payload = drop / "data.csv.age"
    whole = payload.read_bytes()
    payload.write_bytes(whole[: len(whole) - 1000])
    out = tmp_path / "out"
    with pytest.raises(DropRejected, match="truncated"):
        take(workspace, drop, out)
    assert data_files(out) == []


def test_truncated_ciphertext_with_a_matching_manifest_fails_decryption_and_leaves_nothing(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    # The checksum cannot catch a sender that signed a cut stream; age's final-chunk flag does.
    drop = deliver(workspace, partner, rows=20000)
    payload = drop / "data.csv.age"
    cut = payload.read_bytes()[:100_000]
    payload.write_bytes(cut)

    def match(body: dict) -> None:
        body["payload"]["size"] = len(cut)
        body["payload"]["sha256"] = hashlib.sha256(cut).hexdigest()

    resign(workspace, drop, match)
    out = tmp_path / "out"
    with pytest.raises(DropRejected, match="decryption failed"):
        take(workspace, drop, out)
    assert data_files(out) == []
    assert received_drops(out) == {}


def test_misaddressed_drop_is_refused_with_the_reason(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    someone_else = keys.generate("age", tmp_path / "someone-else.age")
    workspace.recipient = someone_else.public
    workspace.write_contract()
    drop = deliver(workspace, partner)
    out = tmp_path / "out"
    with pytest.raises(DropRejected, match="not addressed to you") as caught:
        take(workspace, drop, out)
    assert "1 recipient key(s)" in str(caught.value)
    assert data_files(out) == []


def test_replayed_drop_is_refused_and_the_first_output_kept(
    workspace: Workspace,
    partner: PartnerSftpServer,
    outbox: acks.AckOutbox,
    ack_key: keys.KeyPair,
    tmp_path: Path,
) -> None:
    drop = deliver(workspace, partner)
    out = tmp_path / "out"
    first = take(workspace, drop, out, ack_key=ack_key.private_path, ack_outbox=outbox)
    before = first.output.read_bytes()
    # The same drop again, even from another folder, is a replay.
    copy = tmp_path / "elsewhere" / drop.name
    copy.parent.mkdir()
    copy.mkdir()
    for path in drop.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DropRejected, match="already received") as caught:
        take(workspace, copy, out, ack_key=ack_key.private_path, ack_outbox=outbox)
    assert WHEN.isoformat(timespec="seconds") in str(caught.value)
    assert data_files(out) == sorted([first.output.name, f"{drop.name}.ack.json"])
    assert first.output.read_bytes() == before
    # Asked for explicitly, a drop can be taken again (e.g. after losing the output).
    again = take(workspace, drop, out, again=True)
    assert again.output == first.output
