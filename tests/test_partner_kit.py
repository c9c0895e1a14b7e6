"""The partner's kit: a manifest that says full or delta, `exchange ack send`, and the documented
no-Python acknowledgement (jq, `ssh-keygen -Y sign`, `sftp`) accepted by `exchange acks collect`.

Drops are made by the real gateway; the partner side runs as a partner types it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import FOLDER, REPO, Workspace, receive_args
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange import acks, keys, manifest
from exchange.audit import Ledger
from exchange.cli import BAD_INPUT, OK
from exchange.crypto import signing, sshsig
from exchange.gateway import Gateway
from exchange.sandbox import PartnerSftpServer
from exchange.transport.memory import MemoryServer, MemoryTransport

pytestmark = pytest.mark.integration  # runs the exchange command and a real sshd

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
PARTNERS_MD = REPO / "docs" / "partners.md"
ACK_FOLDER = "acks/attendance"
TOOLS = ("jq", "ssh-keygen", "sftp", "sha256sum", "base64")


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **workspace.env}
    return subprocess.run(
        [EXCHANGE, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def events(workspace: Workspace) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, e.data) for e in Ledger(workspace.settings.audit_url).entries()]


def receive(workspace: Workspace, drop: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return exchange(
        workspace,
        *receive_args(drop, workspace.identity, workspace.sender_key, out),
    )


# -- full or delta -------------------------------------------------------------------------------


def incremental(document: dict[str, Any]) -> None:
    document["customProperties"].append(
        {"property": "incremental", "value": {"column": "last_updated"}}
    )
    document["schema"][0]["quality"][0]["mustBeBetween"] = [0, 5000000]


def test_the_manifest_says_full_or_delta_and_receive_prints_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace.write_contract(incremental)
    server = MemoryServer()
    server.makedirs(FOLDER)
    transport = MemoryTransport(server)
    gateway = Gateway(workspace.settings, transports={"sftp": lambda endpoint, secrets: transport})
    source = workspace.source(120)

    def drop(run_id: str, **options: Any) -> tuple[Path, dict[str, Any]]:
        remote = gateway.run(workspace.contract, source, run_id=run_id, **options).remote_path
        local = tmp_path / run_id
        local.mkdir()
        for name in server.names(remote):
            (local / name).write_bytes(server.read(f"{remote}/{name}"))
        return local, json.loads((local / manifest.MANIFEST_NAME).read_text())

    first_drop, first = drop("first")
    assert first["extract"] == {"kind": "full"}  # nothing delivered before: everything
    watermark = [b for e, b in events(workspace) if e == "transfer.sent"][-1]["watermark"]

    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    changed = raw.index[raw["objection"] == "false"][:3]
    raw.loc[changed, "last_updated"] = "2030-01-01 00:00:00.000000Z"
    raw.to_csv(source, index=False)
    delta_drop, delta = drop("second")
    assert delta["extract"] == {"kind": "delta", "since": watermark}
    assert delta["rows"]["sent"] == 3
    assert manifest.from_bytes((delta_drop / manifest.MANIFEST_NAME).read_bytes()) == delta
    for bad in ({"kind": "delta"}, {"kind": "full", "since": watermark}, {"kind": "some"}):
        with pytest.raises(manifest.ManifestError, match="/extract"):
            manifest.from_bytes(manifest.to_bytes({**delta, "extract": bad}))

    _, refreshed = drop("third", full_refresh=True)
    assert refreshed["extract"] == {"kind": "full"}

    took = receive(workspace, delta_drop, tmp_path / "in")
    assert took.returncode == OK, took.stderr
    assert f"it is a delta: rows added or changed after {watermark}" in took.stdout
    assert "the sender's audit log: first checkpoint kept" in took.stdout  # trust on first use
    took = receive(workspace, first_drop, tmp_path / "in")
    assert took.returncode == OK, took.stderr
    assert "it is a full extract" in took.stdout
    # Older than the one held, but proven by the later drop's consistency proofs.
    assert "is one you had verified" in took.stdout


# -- exchange ack send ---------------------------------------------------------------------------


def acknowledged_by(workspace: Workspace, partner_key_line: str, partner: Any) -> None:
    """The contract asks for acknowledgements in ACK_FOLDER, signed by this partner key."""
    (partner.root / ACK_FOLDER).mkdir(parents=True, exist_ok=True)

    def edit(document: dict[str, Any]) -> None:
        document["customProperties"].append(
            {
                "property": "acknowledgements",
                "value": {
                    "folder": ACK_FOLDER,
                    "partnerKeys": [partner_key_line],
                    "deadlineHours": 48,
                },
            }
        )

    workspace.write_contract(edit)


def deliver(workspace: Workspace, partner: PartnerSftpServer, seed: int = 1) -> Path:
    done = exchange(
        workspace,
        "run",
        str(workspace.contract),
        "--source",
        str(workspace.source(80, seed=seed)),
    )
    assert done.returncode == OK, done.stderr
    (drop,) = [p for p in (partner.root / FOLDER).iterdir() if not p.name.startswith(".")]
    return drop


def test_ack_send_signs_and_uploads_and_the_sender_records_it(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    ack_key = keys.generate("signing", tmp_path / "partner" / "early-help-ack.key")
    acknowledged_by(workspace, ack_key.public, partner)
    drop = deliver(workspace, partner)
    out = tmp_path / "received"
    send = [
        "ack",
        "send",
        str(drop),
        "--sender-key",
        str(workspace.sender_key),
        "--out",
        str(out),
        "--key",
        str(ack_key.private_path),
        "--connection",
        "early-help-sftp",
        "--folder",
        ACK_FOLDER,
    ]
    early = exchange(workspace, *send)  # not received yet: nothing is signed or sent
    assert early.returncode == BAD_INPUT
    assert f"drop {drop.name} was not received into {out}: receive it first" in early.stderr
    assert not (partner.root / ACK_FOLDER / f"{drop.name}.ack.json").exists()

    assert receive(workspace, drop, out).returncode == OK
    sent = exchange(workspace, *send)
    assert sent.returncode == OK, sent.stderr
    remote = partner.root / ACK_FOLDER / f"{drop.name}.ack.json"
    assert f"acknowledgement of drop {drop.name} signed" in sent.stdout
    assert f"uploaded to {ACK_FOLDER}/{drop.name}.ack.json" in sent.stdout
    local = out / f"{drop.name}.ack.json"
    assert remote.read_bytes() == local.read_bytes()
    assert local.stat().st_mode & 0o777 == 0o600
    record = json.loads((out / ".received.json").read_text())["drops"][drop.name]
    body = json.loads(local.read_text())["body"]
    assert (body["rows"], body["received_at"]) == (record["rows"], record["received_at"])

    # Sent again (say the first upload was lost): the same signed file, not a new one.
    remote.unlink()
    again = exchange(workspace, *send)
    assert again.returncode == OK and "sent again as signed before" in again.stdout
    assert remote.read_bytes() == local.read_bytes()

    collected = exchange(workspace, "acks", "collect", str(workspace.contract))
    assert collected.returncode == OK, collected.stderr
    assert "1 acknowledgement(s) recorded; 0 drop(s) overdue" in collected.stdout
    (ack,) = [b for e, b in events(workspace) if e == "ack.received"]
    assert ack["drop_id"] == drop.name and ack["rows_match"] is True


# -- the documented recipe without Python ----------------------------------------------------------


def recipe_blocks() -> list[str]:
    """The sh blocks of partners.md's 'Acknowledging with standard tools' section."""
    text = PARTNERS_MD.read_text()
    section = text.split("## Acknowledging with standard tools", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def sftp_login(partner: PartnerSftpServer) -> str:
    """The `SFTP` setting for the test server: how this partner logs in with OpenSSH's sftp."""
    return (
        f"-P {partner.port} -i {partner.client_key_path} -o IdentitiesOnly=yes "
        f"-o BatchMode=yes -o UserKnownHostsFile={partner.known_hosts_path} "
        f"{partner.username}@{partner.host}"
    )


def run_recipe(drop: Path, blocks: list[str], settings: dict[str, str]) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(drop.parent), **settings}
    script = "\n".join(blocks)
    done = subprocess.run(
        ["sh", "-e", "-c", script], cwd=drop, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (done.stdout, done.stderr)


@pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason="needs jq and OpenSSH")
def test_the_documented_no_python_acknowledgement_is_accepted(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    blocks = recipe_blocks()
    assert len(blocks) == 4
    keygen, documented_settings, sign, upload = blocks
    assert documented_settings.startswith("DROP=") and "ssh-keygen -Y sign" in sign
    # The partner's own copy of the drop, with the key made as the docs say.
    delivered_drop = deliver(workspace, partner)
    drop = tmp_path / "partner" / delivered_drop.name
    shutil.copytree(delivered_drop, drop)
    run_recipe(drop, [keygen.replace("ssh-keygen -t", "ssh-keygen -q -N '' -t")], {})
    public = (drop / "early-help-ack.pub").read_text().strip()
    acknowledged_by(workspace, public, partner)
    settings = {
        "DROP": drop.name,
        "ACK_KEY": "early-help-ack",
        "ACK_FOLDER": ACK_FOLDER,
        "SFTP": sftp_login(partner),
    }
    before = {p.name: p.read_bytes() for p in drop.iterdir()}
    run_recipe(drop, [sign, upload], settings)

    remote = partner.root / ACK_FOLDER
    assert sorted(p.name for p in remote.iterdir()) == [
        f"{drop.name}.ack.json",
        f"{drop.name}.ack.json.sig",
    ]
    body = json.loads((remote / f"{drop.name}.ack.json").read_text())
    sent = json.loads(before[manifest.MANIFEST_NAME])
    key = signing.load_public_key(drop / "early-help-ack.pub")
    assert body["key_id"] == signing.key_id(key)  # the documented key-id formula
    assert body["rows"] == sent["rows"]["sent"] and body["ledger"] == sent["ledger"]

    collected = exchange(workspace, "acks", "collect", str(workspace.contract))
    assert collected.returncode == OK, collected.stderr
    assert "1 acknowledgement(s) recorded; 0 drop(s) overdue" in collected.stdout
    (ack,) = [b for e, b in events(workspace) if e == "ack.received"]
    assert ack["drop_id"] == drop.name and ack["rows_match"] is True
    assert ack["key_id"] == signing.key_id(key)
    # Sending it again (a corrected acknowledgement) replaces both files on the server.
    (remote / f"{drop.name}.ack.json").write_bytes(b"stale")
    run_recipe(drop, [sign, upload], settings)
    assert json.loads((remote / f"{drop.name}.ack.json").read_text())["drop_id"] == drop.name


@pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason="needs jq and OpenSSH")
@pytest.mark.parametrize("mistake", ["another namespace", "no signature file", "edited body"])
def test_a_wrong_no_python_acknowledgement_is_rejected_with_the_reason(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path, mistake: str
) -> None:
    _, _, sign, upload = recipe_blocks()
    delivered_drop = deliver(workspace, partner)
    drop = tmp_path / "partner" / delivered_drop.name
    shutil.copytree(delivered_drop, drop)
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(drop / "early-help-ack")],
        check=True,
        capture_output=True,
    )
    acknowledged_by(workspace, (drop / "early-help-ack.pub").read_text().strip(), partner)
    if mistake == "another namespace":
        sign = sign.replace("-n exchange-ack@exchange-gateway", "-n file")
    settings = {
        "DROP": drop.name,
        "ACK_KEY": "early-help-ack",
        "ACK_FOLDER": ACK_FOLDER,
        "SFTP": sftp_login(partner),
    }
    run_recipe(drop, [sign, upload], settings)
    remote = partner.root / ACK_FOLDER / f"{drop.name}.ack.json"
    if mistake == "no signature file":
        remote.with_name(remote.name + ".sig").unlink()
    if mistake == "edited body":
        remote.write_bytes(remote.read_bytes().replace(b'"rows": ', b'"rows": 1', 1))

    collected = exchange(workspace, "acks", "collect", str(workspace.contract))
    assert "0 acknowledgement(s) recorded" in collected.stdout, collected.stderr
    (rejected,) = [b for e, b in events(workspace) if e == "ack.rejected"]
    assert rejected["file"] == remote.name and rejected["security_event"] is True
    expected = {
        "another namespace": "OpenSSH signature (exchange-ack@exchange-gateway) does not verify",
        "no signature file": f"OpenSSH signature {remote.name}.sig beside it",
        "edited body": "OpenSSH signature (exchange-ack@exchange-gateway) does not verify",
    }[mistake]
    assert expected in rejected["reason"]


# -- key ids and key files, as documented ----------------------------------------------------------


def test_the_documented_key_id_command_gives_the_key_id(tmp_path: Path) -> None:
    text = PARTNERS_MD.read_text().split("### Key ids", 1)[1]
    (command,) = re.findall(r"```sh\n(.*?)```", text.split("\n## ", 1)[0], re.S)
    pair = keys.generate("ssh", tmp_path / "early-help-ack")
    done = subprocess.run(
        ["sh", "-e", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == signing.key_id(signing.load_public_key(pair.public_path))


def test_keys_generate_creates_a_missing_folder_as_documented(
    workspace: Workspace, tmp_path: Path
) -> None:
    assert "a missing folder is created (mode 0700)" in PARTNERS_MD.read_text()
    operators = " ".join((REPO / "docs" / "operators.md").read_text().split())
    assert "A missing folder is created (mode 0700)." in operators
    target = tmp_path / "new" / "keys" / "early-help.age"
    done = exchange(workspace, "keys", "generate", "--kind", "age", "--out", str(target))
    assert done.returncode == OK, done.stderr
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert target.stat().st_mode & 0o777 == 0o600


# -- the OpenSSH-signed form, attacked (no server needed) ------------------------------------------


def bare_ack(drop_id: str, key_id: str) -> bytes:
    body = {
        "type": "exchange-ack/1",
        "drop_id": drop_id,
        "manifest_sha256": "a" * 64,
        "received_at": "2026-11-28T09:00:00+00:00",
        "rows": 5,
        "verified": True,
        "key_id": key_id,
    }
    return json.dumps(body, indent=1).encode()


def collect(files: dict[str, bytes], published: list[Any]) -> tuple[list[Any], list[Any]]:
    server = MemoryServer()
    server.makedirs(ACK_FOLDER)
    for name, data in files.items():
        server.put(f"{ACK_FOLDER}/{name}", data)
    rejected: list[Any] = []
    with MemoryTransport(server).connect() as remote:
        found = acks.collect_acks(remote, ACK_FOLDER, published, on_rejected=rejected.append)
    return found, rejected


def test_an_openssh_signed_ack_must_be_signed_by_the_key_it_names() -> None:
    partner = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    kid = signing.key_id(partner.public_key())
    data = bare_ack("d-1", kid)
    good = sshsig.sign(partner, data, acks.SSH_NAMESPACE)
    found, rejected = collect(
        {"d-1.ack.json": data, "d-1.ack.json.sig": good}, [partner.public_key()]
    )
    assert [a.drop_id for a in found] == ["d-1"] and rejected == []

    forged = sshsig.sign(other, data, acks.SSH_NAMESPACE)  # names the partner's key id
    manifest_ns = sshsig.sign(partner, data)  # a manifest signature is no acknowledgement
    huge = good + b"\n" * sshsig.MAX_BYTES
    for signature in (forged, manifest_ns, huge, b"not armor"):
        found, rejected = collect(
            {"d-1.ack.json": data, "d-1.ack.json.sig": signature}, [partner.public_key()]
        )
        assert found == []
        (why,) = rejected
        assert why.name == "d-1.ack.json" and why.key_id == kid
        assert "OpenSSH signature (exchange-ack@exchange-gateway) does not verify" in why.reason
