"""`exchange audit bundle` and the standalone verifier: a genuine bundle verifies offline, with no
import of `exchange`; each kind of tampering is caught and named."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from test_witness import ack_key, deliver, outbox, take  # noqa: F401  (ack_key: a fixture)

from exchange import cli, keys
from exchange.audit import merkle
from exchange.sandbox import PartnerSftpServer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "verify_bundle.py"

pytestmark = pytest.mark.integration


def verify(bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the verifier as a regulator would: a plain interpreter, the script, the file."""
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), str(bundle), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def bundle(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """Two drops received, acknowledged and cosigned, the acks collected, and the bundle."""
    out = tmp_path / "received"
    for _ in range(2):
        take(workspace, deliver(workspace, partner), out, ack_key=ack_key.private_path,
             ack_outbox=outbox(partner))  # fmt: skip
    gw = workspace.gateway()
    assert gw.collect_acks(gw.check(workspace.contract, run_id="acks")) == (2, 0)
    for key, value in workspace.env.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "bundle.json"
    agreement = gw.check(workspace.contract, run_id="id").id
    assert cli.main(["audit", "bundle", "--agreement", agreement, "--out", str(path)]) == cli.OK
    assert path.stat().st_mode & 0o777 == 0o600
    return path


def test_a_genuine_bundle_verifies_offline_and_says_what_it_proves(
    bundle: Path, workspace: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    done = verify(bundle, "--gateway-key", str(workspace.sender_key))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.rstrip().endswith("VERIFIED")
    assert "2 drops sent" in out
    assert "2 acknowledgements signed by the partner" in out
    assert out.count("cosigned the log at") == 2
    assert "approved by: Ivy Officer (IG) on" in out
    assert "text included" in out
    # --since past every entry: nothing to bundle, said plainly.
    later = ["audit", "bundle", "--agreement", "school-attendance-to-early-help"]
    assert cli.main([*later, "--since", "2999-01-01", "--out", str(bundle)]) != cli.OK
    assert cli.main([*later, "--since", "soon", "--out", str(bundle)]) != cli.OK
    err = capsys.readouterr().err
    assert "no entries of agreement" in err and "since 2999-01-01" in err
    assert "is not a date: use YYYY-MM-DD" in err
    # The verifier is standalone: it never imports the gateway's code.
    source = SCRIPT.read_text()
    assert "import exchange" not in source and "from exchange" not in source


def edit_entry(event: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Any], None]:
    def edit(doc: dict[str, Any]) -> None:
        entry = next(e for e in doc["entries"] if e["event"] == event)
        body = json.loads(entry["body"])
        change(body)
        entry["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"))

    return edit


def rehash(event: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Any], None]:
    """Edit an entry and recompute its hash, as a forger with the database would."""
    import hashlib

    def edit(doc: dict[str, Any]) -> None:
        edit_entry(event, change)(doc)
        e = next(e for e in doc["entries"] if e["event"] == event)
        cols = [e["seq"], e["recorded_at"], e["event"], e["run_id"], e["contract_id"], e["body"]]
        material = json.dumps([*cols, e["prev_hash"]], separators=(",", ":"), ensure_ascii=False)
        e["entry_hash"] = hashlib.sha256(material.encode()).hexdigest()

    return edit


def _rows(body: dict[str, Any]) -> None:
    body["rows"]["sent"] += 1


def _ack_rows(body: dict[str, Any]) -> None:
    body["ack"]["body"]["rows"] += 1


def _root(doc: dict[str, Any]) -> None:
    lines = doc["checkpoint"].split("\n")
    lines[2] = base64.b64encode(b"\x00" * 32).decode()
    doc["checkpoint"] = "\n".join(lines)


def _cosig(doc: dict[str, Any]) -> None:
    note = doc["cosigned"][0]["note"]
    doc["cosigned"][0]["note"] = note.replace("exchange-partner/", "exchange-partner/x", 1)


def _contract(doc: dict[str, Any]) -> None:
    text = base64.b64decode(doc["contracts"][0]["canonical"]).replace(b"safeguarding", b"research")
    doc["contracts"][0]["canonical"] = base64.b64encode(text).decode()


def _approval(doc: dict[str, Any]) -> None:
    doc["contracts"][0]["approvals"][0]["body"]["review_by"] = "2099-01-01"


def _partner(doc: dict[str, Any]) -> None:
    doc["partners"] = [keys_line()]


def keys_line() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


TAMPERED = {
    "an entry edited": (edit_entry("transfer.sent", _rows), "does not match its hash"),
    "an entry edited and rehashed": (rehash("transfer.sent", _rows), "inclusion proof fails"),
    "an acknowledgement edited": (rehash("ack.received", _ack_rows), "inclusion proof fails"),
    "the checkpoint's root": (_root, "signature on checkpoint"),
    "a cosignature": (_cosig, "no cosignature by"),
    "the contract text": (_contract, "does not match its hash"),
    "an approval": (_approval, "approval's signature does not verify"),
    "the partner's key": (_partner, "not among the bundle's partner keys"),
}


@pytest.mark.parametrize("what", list(TAMPERED))
def test_a_tampered_bundle_fails_and_names_the_failure(
    bundle: Path, workspace: Workspace, what: str
) -> None:
    change, expected = TAMPERED[what]
    doc = json.loads(bundle.read_text())
    change(doc)
    bundle.write_text(json.dumps(doc))
    done = verify(bundle, "--gateway-key", str(workspace.sender_key))
    assert done.returncode == 1, done.stdout
    assert "NOT VERIFIED" in done.stdout
    assert expected in done.stdout, done.stdout


def test_a_bundle_under_another_gateway_key_is_refused_when_the_key_is_pinned(
    bundle: Path, tmp_path: Path
) -> None:
    other = keys.generate("signing", tmp_path / "other.key")
    done = verify(bundle, "--gateway-key", str(other.public_path))
    assert done.returncode == 1 and "another gateway key" in done.stdout


def test_the_verifiers_merkle_checks_agree_with_the_gateways() -> None:
    """The script's RFC 9162 code is its own: it must agree with exchange.audit.merkle."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import verify_bundle as script
    finally:
        sys.path.remove(str(SCRIPT.parent))
    for n in range(1, 40):
        leaves = [merkle.leaf_hash(bytes([i])) for i in range(n)]
        root = merkle.root(leaves)
        for i in range(n):
            path = merkle.inclusion_proof(i, leaves)
            assert script.inclusion_ok(leaves[i], i, n, path, root)
            assert not script.inclusion_ok(leaves[i], (i + 1) % n, n, path, root) or n == 1
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, leaves)
            old = merkle.root(leaves[:m])
            assert script.consistency_ok(m, n, old, root, proof)
            if proof:
                bad = list(proof)
                bad[(n + m) % len(bad)] = b"\x00" * 32
                assert not script.consistency_ok(m, n, old, root, bad)


def _forge_with_own_keys(doc: dict[str, Any]) -> tuple[str, str]:
    """What the bundle's maker can do without touching the signed log: list a partner key of
    its own and cosign a genuine checkpoint with it, and list an "Ivy Officer (IG)" of its own
    whose key signs every approval. Returns the two forged key ids."""
    import datetime as dt

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from exchange.audit import witness
    from exchange.crypto import signing

    def line(key: Ed25519PrivateKey) -> str:
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return public.decode()

    partner, officer = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    partner_id, officer_id = (signing.key_id(k.public_key()) for k in (partner, officer))
    doc["partners"].append(line(partner))
    genuine = doc["cosigned"][0]
    kept = [s for s in genuine["note"].rstrip("\n").split("\n") if "exchange-partner/" not in s]
    note = "\n".join(kept) + "\n"
    text = note[: note.rfind("\n\n") + 1]
    name = witness.witness_name(partner_id)
    when = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    doc["cosigned"].append(
        {
            "note": witness.cosigned_note(note, witness.cosign(text, name, partner, when)),
            "witness": name,
            "key_id": partner_id,
            "consistency": genuine["consistency"],
        }
    )
    doc["approvers"] = [{"name": "Ivy Officer (IG)", "key": line(officer)}]
    for version in doc["contracts"]:
        for envelope in version["approvals"]:
            envelope["body"]["key_id"] = officer_id
            material = json.dumps(
                envelope["body"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )
            envelope["signature"] = base64.b64encode(officer.sign(material.encode())).decode()
    return partner_id, officer_id


def test_keys_taken_from_the_bundle_are_said_so_and_pinned_keys_catch_a_forgery(
    bundle: Path,
    workspace: Workspace,
    ack_key: keys.KeyPair,  # noqa: F811
) -> None:
    """Issue 15 finding 3: the partner and approver keys came from the bundle itself, so its
    maker could "prove" a cosignature and approvals with keys of its own."""
    gateway = ("--gateway-key", str(workspace.sender_key))
    pins = ("--partner-key", f"Early Help={ack_key.public_path}")
    approvers = ("--approvers", str(workspace.settings.approvers))
    done = verify(bundle, *gateway, *pins, *approvers)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 acknowledgements signed by the partner (with the partner keys you pinned)" in (
        done.stdout
    )
    assert done.stdout.count("partner Early Help cosigned the log at") == 2
    assert "approvers from your file) approved by: Ivy Officer (IG) on" in done.stdout
    assert "taken from the bundle" not in done.stdout

    doc = json.loads(bundle.read_text())
    partner_id, officer_id = _forge_with_own_keys(doc)
    bundle.write_text(json.dumps(doc))
    # Unpinned, the forgery cannot be told from the truth, and the verifier says so.
    trusting = verify(bundle, *gateway)
    assert trusting.returncode == 0, trusting.stdout
    assert "partner keys were taken from the bundle" in trusting.stdout
    assert "approvers' keys were taken from the bundle" in trusting.stdout
    # Pinned, each forged key is named and the bundle fails.
    pinned = verify(bundle, *gateway, *pins, *approvers)
    assert pinned.returncode == 1, pinned.stdout
    assert f"bundle lists partner key {partner_id}, which you did not pin" in pinned.stdout
    assert "cosigned by a key that is not among the partner keys you pinned" in pinned.stdout
    assert f"approver 'Ivy Officer (IG)' with key {officer_id}, which is not in your" in (
        pinned.stdout
    )
    assert "approved by a key not among the approvers" in pinned.stdout


def test_a_revoked_approver_and_an_unreadable_pin_are_refused(
    bundle: Path, workspace: Workspace, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    from exchange.crypto import signing

    trust = json.loads(workspace.settings.approvers.read_text())
    officer = serialization.load_ssh_public_key(trust["approvers"][0]["key"].encode())
    trust["revoked"] = [signing.key_id(officer)]  # type: ignore[arg-type]
    revoked = tmp_path / "approvers-revoked.json"
    revoked.write_text(json.dumps(trust))
    done = verify(bundle, "--approvers", str(revoked))
    assert done.returncode == 1 and "whose key your approvers file revokes" in done.stdout
    bad = verify(bundle, "--partner-key", f"x={tmp_path / 'missing.pub'}")
    assert bad.returncode == 2 and "is not a readable OpenSSH public key" in bad.stderr
    assert verify(bundle, "--partner-key", "no-equals-sign").returncode == 2
