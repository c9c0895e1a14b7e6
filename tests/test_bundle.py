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
