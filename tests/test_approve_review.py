"""`contract approve` shows what is signed and asks first; `contract diff` compares with the last
approved version without git. Driven through the real `exchange` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, write_contract

from exchange import approval
from exchange.cli import BAD_INPUT, DIFF_EXIT_CODES, OK
from exchange.contract import load_contract

pytestmark = pytest.mark.integration  # runs the exchange command

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
DOCS = Path(__file__).parents[1] / "docs"


def exchange(
    workspace: Workspace, *args: str, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """The command as an officer types it; no terminal unless `stdin` is one."""
    env = {**os.environ, **workspace.env}
    return subprocess.run(
        [EXCHANGE, *args], env=env, stdin=stdin, capture_output=True, text=True, timeout=120
    )


def approve(workspace: Workspace, *extra: str, stdin: Any = subprocess.DEVNULL) -> Any:
    return exchange(
        workspace,
        "contract",
        "approve",
        str(workspace.contract),
        "--key",
        str(workspace.officer_key),
        *extra,
        stdin=stdin,
    )


def reword(document: dict[str, Any]) -> None:
    document["description"]["purpose"] += " (reworded)"


def add_purpose(document: dict[str, Any]) -> None:
    for prop in document["customProperties"]:
        if prop["property"] == "purposes":
            prop["value"] = [*prop["value"], "research"]


def edit(workspace: Workspace, change: Any) -> None:
    """Change the contract file in place, as a data team's commit would, keeping the approval."""
    write_contract(workspace.contract, workspace.recipient, change, host_keys=workspace.host_keys)


def approved_sha(workspace: Workspace) -> str:
    body = json.loads(approval.approval_path(workspace.contract).read_text())["body"]
    return str(body["contract_sha256"])


def test_approve_shows_the_digest_and_changes_and_warns_of_a_reused_version(
    workspace: Workspace,
) -> None:
    first = load_contract(workspace.contract)
    edit(workspace, add_purpose)  # a wider sharing, still labelled 1.0.0
    second = load_contract(workspace.contract)
    assert second.version == first.version and second.sha256 != first.sha256

    done = approve(workspace, "--yes")
    assert done.returncode == OK, done.stderr
    out = done.stdout
    assert f"You are about to approve {second.id}" in out
    assert f"version:   {second.version}" in out
    assert f"digest:    sha256:{second.sha256}" in out
    assert f"Last approved: version {first.version}, sha256:{first.sha256[:16]}" in out
    assert "Changes since then: needs-re-approval (1 change(s))" in out
    assert "[needs re-approval] purpose-added at customProperties.purposes[research]" in out
    assert re.search(
        rf"warning: version {second.version} was already approved with other content "
        rf"\({first.sha256[:16]}\): the content changed but `version` did not",
        out,
    )
    assert out.index("You are about to approve") < out.index("approved school-attendance")
    assert approved_sha(workspace) == second.sha256
    # Both approved contents are kept, byte for byte, beside the contract.
    for contract in (first, second):
        copy = approval.approved_copy_path(workspace.contract, contract.id, contract.sha256)
        assert copy.is_file() and copy.stat().st_mode & 0o777 == 0o644
    kept = approval.approved_copy_path(workspace.contract, second.id, second.sha256)
    assert kept.read_bytes() == workspace.contract.read_bytes()

    # A third content with the same version names both earlier ones.
    edit(workspace, lambda d: (add_purpose(d), reword(d)))
    third = approve(workspace, "--yes")
    assert third.returncode == OK, third.stderr
    assert "Changes since then: editorial (1 change(s))" in third.stdout
    shown = ", ".join(sorted(c.sha256[:16] for c in (first, second)))
    assert f"already approved with other content ({shown})" in third.stdout


def test_approve_without_a_terminal_or_yes_signs_nothing(workspace: Workspace) -> None:
    before = approval.approval_path(workspace.contract).read_bytes()
    edit(workspace, reword)
    done = approve(workspace)
    assert done.returncode == BAD_INPUT
    assert "exchange: not done: nothing signed: approve asks for confirmation at a terminal" in (
        done.stderr
    )
    assert "add --yes" in done.stderr
    assert "You are about to approve" in done.stdout  # shown, then refused
    assert approval.approval_path(workspace.contract).read_bytes() == before
    new = load_contract(workspace.contract)
    assert not approval.approved_copy_path(workspace.contract, new.id, new.sha256).exists()


def at_terminal(workspace: Workspace, answer: str) -> subprocess.CompletedProcess[str]:
    """Approve with standard input on a pseudo-terminal, typing `answer`."""
    main, secondary = os.openpty()
    try:
        os.write(main, answer.encode() + b"\n")
        return approve(workspace, stdin=secondary)
    finally:
        os.close(secondary)
        os.close(main)


def test_approve_at_a_terminal_signs_only_when_confirmed(workspace: Workspace) -> None:
    before = approval.approval_path(workspace.contract).read_bytes()
    edit(workspace, reword)
    declined = at_terminal(workspace, "n")
    assert declined.returncode == BAD_INPUT
    assert "Sign this approval? [y/N]" in declined.stdout
    assert "nothing signed: you did not confirm" in declined.stderr
    assert approval.approval_path(workspace.contract).read_bytes() == before

    accepted = at_terminal(workspace, "y")
    assert accepted.returncode == OK, accepted.stderr
    assert "Changes since then: editorial (1 change(s))" in accepted.stdout
    assert approved_sha(workspace) == load_contract(workspace.contract).sha256


def test_diff_of_one_file_compares_with_its_last_approved_version(workspace: Workspace) -> None:
    approved = load_contract(workspace.contract)
    same = exchange(workspace, "contract", "diff", str(workspace.contract))
    assert same.returncode == DIFF_EXIT_CODES["identical"], same.stderr
    assert f"approved {approved.version} (" in same.stdout

    edit(workspace, add_purpose)
    changed = exchange(workspace, "contract", "diff", str(workspace.contract))
    assert changed.returncode == DIFF_EXIT_CODES["needs-re-approval"], changed.stderr
    assert "purpose-added at customProperties.purposes[research]" in changed.stdout
    assert "by Ivy Officer (IG) (ed25519:" in changed.stdout  # verified against the trust file

    # A copy edited after approval is no base: the command says so and what to give instead.
    copy = approval.approved_copy_path(workspace.contract, approved.id, approved.sha256)
    copy.write_text(copy.read_text().replace("1.0.0", "9.9.9"))
    tampered = exchange(workspace, "contract", "diff", str(workspace.contract))
    assert tampered.returncode == BAD_INPUT
    assert "was not kept" in tampered.stderr and "exchange contract diff HEAD:" in tampered.stderr

    approval.approval_path(workspace.contract).unlink()
    never = exchange(workspace, "contract", "diff", str(workspace.contract))
    assert never.returncode == BAD_INPUT
    assert "has no approval beside it" in never.stderr and "give the old version" in never.stderr


def test_a_drafts_approval_exits_as_the_docs_say(workspace: Workspace) -> None:
    edit(workspace, lambda d: d.update(status="draft"))
    done = approve(workspace, "--yes")
    text = (DOCS / "ig-officers.md").read_text()
    words = r"A\s+contract\s+that\s+is\s+not\s+`active`\s+is\s+refused\s+with\s+exit\s+code\s+(\d)"
    documented = re.search(words, text)
    assert documented is not None
    assert done.returncode == int(documented.group(1)) == BAD_INPUT
    assert "is 'draft': set status to 'active' to approve it" in done.stderr
    assert "You are about to approve" not in done.stdout  # refused before anything is shown


def test_a_forged_approval_and_a_planted_copy_do_not_make_a_widening_look_like_a_renewal(
    workspace: Workspace,
) -> None:
    """A committer widens the sharing and writes an unsigned approval of the new content, in a
    real officer's name, with a matching "approved copy": neither command may take it as a base."""
    before = approval.approval_path(workspace.contract).read_bytes()
    edit(workspace, add_purpose)
    widened = load_contract(workspace.contract)
    body = {
        "type": json.loads(before)["body"]["type"],
        "contract_id": widened.id,
        "contract_version": widened.version,
        "contract_sha256": widened.sha256,
        "approver": "Ivy Officer (IG)",
        "at": "2026-11-01T09:00:00+00:00",
    }
    forged = json.dumps({"body": body, "signature": "AAAA"})
    approval.approval_path(workspace.contract).write_text(forged)
    copy = approval.approved_copy_path(workspace.contract, widened.id, widened.sha256)
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(workspace.contract.read_bytes())

    shown = approve(workspace)  # no terminal, no --yes: shows what would be signed, signs nothing
    assert "You are about to approve" in shown.stdout
    assert "signing renews" not in shown.stdout and "Last approved" not in shown.stdout
    assert "No verified approved version" in shown.stdout
    assert "Review the whole agreement" in shown.stdout
    assert approval.approval_path(workspace.contract).read_text() == forged

    diff = exchange(workspace, "contract", "diff", str(workspace.contract))
    assert diff.returncode == BAD_INPUT, diff.stdout
    assert "identical" not in diff.stdout
    assert "does not verify against the trusted approvers" in diff.stderr
    assert "exchange contract diff HEAD:" in diff.stderr
