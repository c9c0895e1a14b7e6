"""Attacks on the gateway's trust boundaries (docs/security.md), each performed as the attacker
would, through the real command line or the same calls the DAG tasks make, against a real sshd.

Each test asserts the attack is refused with a clear one-line error, that nothing reached the
partner, and that the refusal is in the ledger."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, inbox_entries, last_record, write_contract, write_trust

from exchange import approval, keys
from exchange.audit import Ledger
from exchange.cli import BAD_INPUT, REFUSED
from exchange.contract import load_contract
from exchange.crypto.signing import load_private_key
from exchange.errors import NotRunnable, SourceError
from exchange.gateway import Gateway, drop_id_for
from exchange.sandbox import PartnerSftpServer

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
NOW = dt.datetime.now(dt.UTC)


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command as the attacker would type it, with the gateway's environment."""
    env = {**os.environ, **workspace.env}
    return subprocess.run([EXCHANGE, *args], env=env, capture_output=True, text=True, check=False)


def events(workspace: Workspace) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, e.data) for e in Ledger(workspace.settings.audit_url).entries()]


def attacker_key(workspace: Workspace, comment: str = "Ivy Officer (IG)") -> Path:
    """A signing key the attacker made, named after the real officer in its comment."""
    return keys.generate("signing", workspace.root / "mallory.key", comment=comment).private_path


def one_line_refusal(done: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr


# -- defect 2: the approval trust anchor -----------------------------------------------------


def test_a_self_approved_copy_outside_the_contracts_folder_does_not_run(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    """The old attack: copy the contract elsewhere with an approvers/ folder of one's own."""
    elsewhere = workspace.root / "mine"
    (elsewhere / "approvers").mkdir(parents=True)
    mallory = attacker_key(workspace)
    shutil.copy(mallory.with_name("mallory.key.pub"), elsewhere / "approvers" / "ivy.pub")
    swapped = keys.generate("age", workspace.root / "mallory.age").public
    copy = write_contract(
        elsewhere / workspace.contract.name, swapped, host_keys=[partner.host_public_key]
    )
    done = exchange(workspace, "run", str(copy), "--source", str(workspace.source(30)))
    one_line_refusal(done, REFUSED, "not in the configured contracts folder")
    assert inbox_entries(partner) == []
    event, body = events(workspace)[-2]  # the incident notice follows the refusal
    assert event == "run.refused" and body["reason"] == "outside-contracts-folder"


def test_an_approved_copy_in_a_subfolder_of_the_contracts_does_not_run(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    """`approved/` holds approved copies: a copy there with its approval beside it is not a
    contract to run, nor is one in any other subfolder."""
    nested = workspace.contract.parent / "approved" / "nested"
    nested.mkdir(parents=True)
    copy = nested / workspace.contract.name
    shutil.copy(workspace.contract, copy)
    shutil.copy(approval.approval_path(workspace.contract), approval.approval_path(copy))
    done = exchange(workspace, "run", str(copy), "--source", str(workspace.source(30)))
    one_line_refusal(done, REFUSED, "not in the configured contracts folder")
    assert inbox_entries(partner) == []
    assert ("run.refused", "outside-contracts-folder") in [
        (event, body.get("reason")) for event, body in events(workspace)
    ]


def test_an_approvers_folder_beside_the_contracts_is_not_trusted(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    """Whoever can commit to the contracts repository cannot approve, whatever they add."""
    mallory = attacker_key(workspace)
    (workspace.contract.parent / "approvers").mkdir()
    shutil.copy(mallory.with_name("mallory.key.pub"), workspace.contract.parent / "approvers")
    swapped = keys.generate("age", workspace.root / "mallory.age").public
    write_contract(workspace.contract, swapped, host_keys=[partner.host_public_key])
    unsigned = approval.APPROVAL_TYPE
    body = {
        "type": unsigned,
        "contract_id": load_contract(workspace.contract).id,
        "contract_sha256": load_contract(workspace.contract).sha256,
        "key_id": "ed25519:0000000000000000",
        "approver": "Ivy Officer (IG)",
        "at": NOW.isoformat(timespec="seconds"),
        "review_by": (NOW.date() + dt.timedelta(days=30)).isoformat(),
    }
    approve_as_mallory = exchange(
        workspace, "contract", "approve", str(workspace.contract), "--key", str(mallory)
    )
    one_line_refusal(approve_as_mallory, BAD_INPUT, "not a trusted approver")
    approval.approval_path(workspace.contract).write_text(
        json.dumps({"body": body, "signature": "AAAA"})
    )
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(workspace.source(30))
    )
    one_line_refusal(done, REFUSED, "not a trusted approver")
    assert inbox_entries(partner) == []
    assert events(workspace)[-2][1]["reason"] == "untrusted-key"


def test_names_come_from_the_operators_configuration_not_the_key_comment(
    workspace: Workspace,
) -> None:
    pair = keys.generate("signing", workspace.root / "pat.key", comment="Caldicott Guardian")
    workspace.trust(("Pat Jones (IG)", pair.public_path))
    approval.approval_path(workspace.contract).unlink()
    done = exchange(
        workspace,
        "contract",
        "approve",
        str(workspace.contract),
        "--yes",
        "--key",
        str(pair.private_path),
    )
    assert done.returncode == 0, done.stderr
    assert "Pat Jones (IG)" in done.stdout and "Caldicott" not in done.stdout


@pytest.mark.parametrize("where", ["inside the contracts folder", "writable by others"])
def test_an_unsafe_trust_file_stops_every_run(workspace: Workspace, where: str) -> None:
    officer = workspace.officer_key.with_name("officer.key.pub")
    if where == "inside the contracts folder":
        path = write_trust(workspace.contract.parent / "trust" / "a.json", [("Ivy", officer)])
        workspace.env["EXCHANGE_APPROVERS"] = str(path)
        words = "inside the contracts folder"
    else:
        path = Path(workspace.env["EXCHANGE_APPROVERS"])
        path.chmod(0o666)
        words = "writable by group or others"
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(workspace.source(5)))
    one_line_refusal(done, REFUSED, words)
    assert last_record(workspace).data["reason"] == "trust-config-invalid"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"approvers": [], "approvers": []}', "duplicate key"),
        ('{"approvers": [{"name": "Ivy", "key": "ssh-rsa AAAA"}]}', "approvers[0].key"),
        ('{"approvers": [{"name": "Iv\\u001by", "key": "x"}]}', "printable"),
        ('{"approvers": [], "extra": 1}', "'approvers' and 'revoked' only"),
        ('{"approvers": NaN}', "NaN is not JSON"),
        ("[" * 100_000, "nested too deeply"),
        ("x" * (2 << 20), "larger than"),
    ],
)
def test_a_malformed_trust_file_stops_every_run_with_a_clear_error(
    workspace: Workspace, text: str, words: str
) -> None:
    Path(workspace.env["EXCHANGE_APPROVERS"]).write_text(text)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(workspace.source(5)))
    one_line_refusal(done, REFUSED, words)
    assert last_record(workspace).data["reason"] == "trust-config-invalid"


def test_a_suspension_holds_under_any_file_name(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    key = str(workspace.officer_key)
    suspended = exchange(
        workspace, "contract", "suspend", str(workspace.contract), "--key", key, "--reason", "x"
    )
    assert suspended.returncode == 0, suspended.stderr
    renamed = workspace.contract.with_name("renamed.yaml")
    shutil.copy(workspace.contract, renamed)
    shutil.copy(
        approval.approval_path(workspace.contract), approval.approval_path(renamed)
    )  # the same agreement, approval and all, under a new name
    done = exchange(workspace, "run", str(renamed), "--source", str(workspace.source(20)))
    one_line_refusal(done, REFUSED, "suspended by Ivy Officer (IG)")
    assert inbox_entries(partner) == []
    assert events(workspace)[-2][1]["reason"] == "suspended"


@pytest.mark.parametrize("deleted", ["the ledger entry", "the filed copy"])
def test_deleting_one_copy_of_a_suspension_does_not_lift_it(
    workspace: Workspace, partner: PartnerSftpServer, deleted: str
) -> None:
    key = str(workspace.officer_key)
    done = exchange(
        workspace, "contract", "suspend", str(workspace.contract), "--key", key, "--reason", "x"
    )
    assert done.returncode == 0, done.stderr
    copies = list((workspace.contract.parent / "suspensions").glob("*/*.json"))
    assert len(copies) == 1
    if deleted == "the ledger entry":  # the newest entry: no later hash or checkpoint binds it
        db = workspace.settings.audit_url.removeprefix("sqlite:///")
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM audit_ledger WHERE event = 'contract.suspended'")
    else:
        copies[0].unlink()
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(workspace.source(10))
    )
    one_line_refusal(done, REFUSED, "suspended by Ivy Officer (IG)")
    assert inbox_entries(partner) == []


def test_only_a_trusted_signed_resume_of_that_suspension_lifts_it(workspace: Workspace) -> None:
    governance = workspace.governance()
    contract = load_contract(workspace.contract)
    officer = load_private_key(workspace.officer_key)
    governance.suspend(contract, officer, reason="first", now=NOW)
    governance.resume(contract, officer, now=NOW)
    old_resume = [e for e in governance._statements(contract.id) if e.event == approval.RESUMED]
    assert governance.suspension(contract.id) is None
    governance.suspend(contract, officer, reason="second", now=NOW + dt.timedelta(seconds=1))
    # Replaying the earlier, genuinely signed resume does not lift the new suspension.
    governance.ledger.append(approval.RESUMED, old_resume[0].data, contract_id=contract.id)
    assert governance.suspension(contract.id) is not None
    # Nor does a resume signed by a key the operator does not trust.
    with pytest.raises(approval.ApprovalError, match="not a trusted approver"):
        governance.resume(contract, load_private_key(attacker_key(workspace)), now=NOW)
    with pytest.raises(NotRunnable, match="suspended"):
        governance.check(contract, NOW.date())
    governance.resume(contract, officer, now=NOW)
    assert governance.suspension(contract.id) is None


# -- defect 6: every task checks the agreement again -------------------------------------------


@pytest.mark.parametrize("change", ["suspended", "approver revoked", "review date passed"])
def test_a_change_between_tasks_stops_the_next_task(
    workspace: Workspace, partner: PartnerSftpServer, change: str
) -> None:
    gateway = Gateway(workspace.settings)
    run_id = f"between-{change.replace(' ', '-')}"
    contract = gateway.check(workspace.contract, run_id=run_id)
    gateway.prepare(contract, str(workspace.source(20)), run_id=run_id)
    officer = load_private_key(workspace.officer_key)
    if change == "suspended":
        workspace.governance().suspend(contract, officer, reason="incident", now=NOW)
    elif change == "approver revoked":
        from exchange.crypto.signing import key_id

        workspace.trust(
            ("Ivy Officer (IG)", workspace.officer_key.with_name("officer.key.pub")),
            revoked=(key_id(officer.public_key()),),
        )
    else:
        gateway.clock = lambda: NOW + dt.timedelta(days=800)
    with pytest.raises(NotRunnable):
        gateway.recheck(workspace.contract, run_id=run_id)  # what the deliver task does first
    with pytest.raises(NotRunnable):
        gateway.deliver(contract, run_id)  # and deliver checks again right before upload
    assert inbox_entries(partner) == []
    refusals = [b for e, b in events(workspace) if e == "run.refused"]
    assert {b["stage"] for b in refusals} == {"recheck", "deliver"}


# -- defect 3: delivery never trusts task state --------------------------------------------------


def staged(workspace: Workspace, run_id: str) -> tuple[Gateway, Any, Path]:
    gateway = Gateway(workspace.settings)
    contract = gateway.check(workspace.contract, run_id=run_id)
    prepared = gateway.prepare(contract, str(workspace.source(20)), run_id=run_id)
    assert "staging" not in prepared.to_dict()  # no path travels in XCom
    return gateway, contract, workspace.settings.staging / drop_id_for(contract.id, run_id)


def plant_signing_key(folder: Path, workspace: Workspace) -> None:
    shutil.copy(workspace.settings.signing_key, folder / "gateway.key")


def swap_payload(folder: Path, workspace: Workspace) -> None:
    payload = next(folder.glob("data.*"))
    payload.write_bytes(payload.read_bytes()[:-1] + b"\0")


def link_elsewhere(folder: Path, workspace: Workspace) -> None:
    keys_dir = workspace.settings.signing_key.parent
    shutil.rmtree(folder)
    folder.symlink_to(keys_dir)


def unsigned_manifest(folder: Path, workspace: Workspace) -> None:
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"sent"', '"sent" ', 1))


ATTACKS = {
    "the gateway's signing key planted in staging": (plant_signing_key, "other files"),
    "payload swapped": (swap_payload, "size or SHA-256"),
    "staging linked to the keys folder": (link_elsewhere, "is not a folder"),
    "manifest edited": (unsigned_manifest, "does not verify"),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_deliver_refuses_a_tampered_staged_drop(
    workspace: Workspace, partner: PartnerSftpServer, attack: str
) -> None:
    tamper, words = ATTACKS[attack]
    gateway, contract, folder = staged(workspace, f"tamper-{len(attack)}")
    tamper(folder, workspace)
    with pytest.raises(NotRunnable, match=words):
        gateway.deliver(contract, f"tamper-{len(attack)}")
    assert inbox_entries(partner) == []
    event, body = events(workspace)[-2]
    assert event == "run.refused" and body["reason"] == "staging-invalid"


def test_deliver_for_a_run_that_staged_nothing_is_refused(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    gateway, contract, _ = staged(workspace, "real-run")
    with pytest.raises(NotRunnable, match="does not exist"):
        gateway.deliver(contract, "another-run")  # e.g. a run id typed into XCom
    assert inbox_entries(partner) == []


def test_an_unexpected_failure_is_audited(workspace: Workspace, partner: PartnerSftpServer) -> None:
    gateway, contract, _ = staged(workspace, "boom")

    def broken(*_: Any, **__: Any) -> Any:
        raise ZeroDivisionError("a bug")

    gateway.transports["sftp"] = broken
    with pytest.raises(ZeroDivisionError):
        gateway.deliver(contract, "boom")
    event, body = events(workspace)[-2]
    assert event == "run.failed" and body == {
        "stage": "deliver",
        "outcome": "failed",
        "reason": "unexpected-error",
        "error": "ZeroDivisionError",
    }


# -- defect 7: sources only from what the operator configured -------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "/etc/passwd",
        "../secrets.json",
        "postgresql://reader:pw@db.example/records",
        "sources/../../secrets.json",
    ],
)
def test_a_source_outside_the_configured_ones_is_refused(
    workspace: Workspace, partner: PartnerSftpServer, source: str
) -> None:
    done = exchange(workspace, "run", str(workspace.contract), "--source", source)
    assert done.returncode == BAD_INPUT, done.stderr
    assert "Traceback" not in done.stderr and "pw@" not in done.stderr
    assert "source folder" in done.stderr or "postgres:NAME" in done.stderr
    assert inbox_entries(partner) == []
    event, body = events(workspace)[-1]
    assert event == "run.failed" and body["error"] == "SourceError"


def test_the_ledger_records_what_was_read_and_who_ran_it(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(25)
    done = exchange(workspace, "run", str(workspace.contract), "--source", source.name)
    assert done.returncode == 0, done.stderr
    prepared = next(b for e, b in events(workspace) if e == "run.prepared")
    import hashlib

    assert prepared["source"] == {
        "kind": "file",
        "path": str(source.resolve()),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }
    assert prepared["triggered_by"].startswith("os:")


def test_a_resolved_source_must_stay_in_the_folder(workspace: Workspace) -> None:
    outside = workspace.root / "outside.csv"
    outside.write_text("x\n")
    (workspace.root / "sources" / "link.csv").symlink_to(outside)
    gateway = Gateway(workspace.settings)
    with pytest.raises(SourceError, match="outside the source folder"):
        gateway.resolve_source(load_contract(workspace.contract), "link.csv")
