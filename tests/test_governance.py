"""IG governance through the command line: approval, suspension, refusals and protocol lint."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, inbox_entries, incidents, last_record, write_contract

from exchange import approval, keys
from exchange.cli import BAD_INPUT, DIFF_EXIT_CODES, REFUSED, main
from exchange.contract import load_contract
from exchange.crypto.signing import key_id, load_private_key

EXCHANGE = str(Path(sys.executable).with_name("exchange"))


def exchange(workspace: Workspace, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command as an officer or data team types it."""
    full = {**os.environ, **workspace.env, **env}
    return subprocess.run([EXCHANGE, *args], env=full, capture_output=True, text=True, check=False)


def last_event(workspace: Workspace) -> tuple[str, dict[str, Any]]:
    entry = last_record(workspace)
    return entry.event, entry.data


def second_officer(workspace: Workspace, name: str = "olga") -> Path:
    """Another signing key, trusted as an approver beside Ivy."""
    pair = keys.generate("signing", workspace.root / f"{name}.key", comment="Olga Other (IG)")
    workspace.trust(
        ("Ivy Officer (IG)", workspace.officer_key.with_name("officer.key.pub")),
        ("Olga Other (IG)", pair.public_path),
    )
    return pair.private_path


def only_ivy(w: Workspace, revoked: tuple[str, ...] = ()) -> None:
    w.trust(("Ivy Officer (IG)", w.officer_key.with_name("officer.key.pub")), revoked=revoked)


def unapprove(w: Workspace) -> None:
    approval.approval_path(w.contract).unlink()


def edit_after_approval(w: Workspace) -> None:
    text = w.contract.read_text().replace("Early Help team identify", "Early Help team find")
    w.contract.write_text(text)


def approved_by_untrusted_key(w: Workspace) -> None:
    other = second_officer(w)
    w.governance().approve(
        load_contract(w.contract), load_private_key(other), now=dt.datetime.now(dt.UTC)
    )
    only_ivy(w)


def approver_revoked(w: Workspace) -> None:
    officer = load_private_key(w.officer_key).public_key()
    only_ivy(w, revoked=(key_id(officer),))


def draft(w: Workspace) -> None:
    w.write_contract(lambda d: d.update(status="draft"), approve=False)


def review_overdue(w: Workspace) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3 * 365)
    contract = load_contract(w.contract)
    object.__setattr__(contract, "review_date", dt.date.today() + dt.timedelta(days=9999))
    w.governance().approve(contract, load_private_key(w.officer_key), now=long_ago)


REFUSALS: dict[str, tuple[Callable[[Workspace], None], str, str]] = {
    "not approved": (unapprove, "not-approved", "has not been approved"),
    "changed since approval": (
        edit_after_approval,
        "changed-since-approval",
        "needs re-approval",
    ),
    "untrusted approver": (approved_by_untrusted_key, "untrusted-key", "not a trusted approver"),
    "revoked approver": (approver_revoked, "revoked-key", "revoked key"),
    "not active": (draft, "not-active", "'draft', not 'active'"),
    "past review date": (review_overdue, "review-overdue", "due for review"),
}

# Refusals of an agreement still being set up: audited, without a high-severity incident.
SETTING_UP = ("not approved", "not active")


@pytest.mark.parametrize("case", REFUSALS)
def test_run_refuses_a_contract_that_may_not_run(workspace: Workspace, case: str) -> None:
    break_it, reason, words = REFUSALS[case]
    break_it(workspace)
    source = workspace.source(50)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert done.returncode == REFUSED, done.stderr
    assert words in done.stderr and done.stderr.startswith("exchange: refused:")
    event, body = last_event(workspace)
    assert event == "run.refused" and body["reason"] == reason
    if case in SETTING_UP:  # audited as a refusal, but nobody is woken for a draft
        assert incidents(workspace) == [] and body["setting_up"] is True
    else:
        assert incidents(workspace)[-1]["kind"] == "policy-refusal"
        assert "setting_up" not in body
    assert not any(workspace.settings.staging.glob("*/*"))  # nothing was prepared


def test_suspend_stops_at_once_and_resume_restarts(workspace: Workspace, partner: Any) -> None:
    source = str(workspace.source(80))
    key = str(workspace.officer_key)
    done = exchange(
        workspace,
        "contract",
        "suspend",
        str(workspace.contract),
        "--key",
        key,
        "--reason",
        "breach under investigation (ref INC-7)",
    )
    assert done.returncode == 0, done.stderr
    assert workspace.contract.exists() and approval.approval_path(workspace.contract).exists()
    assert last_event(workspace)[0] == "contract.suspended"
    refused = exchange(workspace, "run", str(workspace.contract), "--source", source)
    assert refused.returncode == REFUSED
    assert "suspended by Ivy Officer (IG)" in refused.stderr and "INC-7" in refused.stderr
    assert inbox_entries(partner) == []
    assert (
        exchange(workspace, "contract", "resume", str(workspace.contract), "--key", key).returncode
        == 0
    )
    assert last_event(workspace)[0] == "contract.resumed"
    again = exchange(workspace, "run", str(workspace.contract), "--source", source)
    assert again.returncode == 0, again.stderr
    assert len(inbox_entries(partner)) == 1


def test_a_forged_suspension_still_stops_the_agreement(workspace: Workspace) -> None:
    ledger = workspace.governance().ledger
    ledger.append(
        approval.SUSPENDED,
        {"statement": {"type": approval.SUSPENSION_TYPE}, "signature": "x"},
        contract_id=load_contract(workspace.contract).id,
    )
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(workspace.source(20))
    )
    assert done.returncode == REFUSED and "does not verify" in done.stderr


def test_approve_with_a_passphrase_protected_key(workspace: Workspace) -> None:
    pair = workspace.root / "pp.key"
    made = exchange(
        workspace,
        "keys",
        "generate",
        "--kind",
        "signing",
        "--out",
        str(pair),
        "--comment",
        "Pat Passphrase (IG)",
        "--passphrase-env",
        "PASS",
        PASS="correct horse",
    )
    assert made.returncode == 0, made.stderr
    assert b"ENCRYPTED" in pair.read_bytes() and pair.stat().st_mode & 0o777 == 0o600
    workspace.trust(("Pat Passphrase (IG)", pair.with_name("pp.key.pub")))
    unapprove(workspace)
    wrong = exchange(
        workspace,
        "contract",
        "approve",
        str(workspace.contract),
        "--key",
        str(pair),
        "--passphrase-env",
        "PASS",
        PASS="wrong",
    )
    assert wrong.returncode != 0 and "passphrase" in wrong.stderr
    right = exchange(
        workspace,
        "contract",
        "approve",
        str(workspace.contract),
        "--key",
        str(pair),
        "--passphrase-env",
        "PASS",
        "--yes",
        PASS="correct horse",
    )
    assert right.returncode == 0, right.stderr
    assert "Pat Passphrase (IG)" in right.stdout
    body = json.loads(approval.approval_path(workspace.contract).read_text())["body"]
    assert body["contract_sha256"] == load_contract(workspace.contract).sha256
    assert last_event(workspace)[0] == "contract.approved"


def test_approval_cannot_set_a_review_date_beyond_two_years(workspace: Workspace) -> None:
    too_late = (dt.date.today() + dt.timedelta(days=2 * 365 + 5)).isoformat()
    done = exchange(
        workspace,
        "contract",
        "approve",
        str(workspace.contract),
        "--key",
        str(workspace.officer_key),
        "--review-by",
        too_late,
    )
    assert done.returncode == BAD_INPUT and "more than two years ahead" in done.stderr
    assert done.stderr.startswith("exchange: not done: ")  # the label InvalidRequest carries


def test_an_untrusted_key_cannot_approve(workspace: Workspace) -> None:
    stranger = keys.generate("signing", workspace.root / "stranger.key")
    done = exchange(
        workspace,
        "contract",
        "approve",
        str(workspace.contract),
        "--key",
        str(stranger.private_path),
    )
    assert done.returncode == BAD_INPUT and "not a trusted approver" in done.stderr


def test_diff_verdicts_have_codes_of_their_own(
    workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 identical, 10 editorial, 11 needs re-approval: never a failure's code (1-5)."""

    def diff(edit: Callable[[dict[str, Any]], None] | None) -> tuple[int, str]:
        new = write_contract(tmp_path / "new.yaml", workspace.recipient, edit)
        code = main(["contract", "diff", str(workspace.contract), str(new)])
        return code, capsys.readouterr().out.splitlines()[-1]

    def editorial(document: dict[str, Any]) -> None:
        document["version"] = "9.9.9"

    def wider(document: dict[str, Any]) -> None:
        for prop in document["customProperties"]:
            if prop["property"] == "purposes":
                prop["value"] = [*prop["value"], "research"]

    assert DIFF_EXIT_CODES == {"identical": 0, "editorial": 10, "needs-re-approval": 11}
    code, verdict = diff(None)
    assert code == 0 and verdict.endswith("identical (0 change(s))")
    code, verdict = diff(editorial)
    assert code == 10 and verdict.endswith("editorial (1 change(s))")
    code, verdict = diff(wider)
    assert code == 11 and "needs-re-approval" in verdict
    (tmp_path / "broken.yaml").write_text("a: [\n")  # not YAML: a failure, not a verdict
    assert main(["contract", "diff", str(workspace.contract), str(tmp_path / "broken.yaml")]) == 2


def test_reformatting_the_yaml_keeps_the_approval(workspace: Workspace) -> None:
    import yaml

    document = yaml.safe_load(workspace.contract.read_text())
    document["customProperties"].reverse()  # their order carries no meaning
    workspace.contract.write_text(
        "# reformatted\n" + yaml.safe_dump(document, sort_keys=True, default_flow_style=True)
    )
    workspace.governance().check(load_contract(workspace.contract), dt.date.today())


# -- protocol lint: each refusal names the place and suggests the fix --------------------------


def set_term(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        next(p for p in d["customProperties"] if p["property"] == name)["value"] = value

    return edit


def basis(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        next(p for p in d["customProperties"] if p["property"] == "legalBasis")["value"].update(
            changes
        )

    return edit


def keep_first_field(d: dict[str, Any]) -> None:
    d["schema"][0]["properties"][0]["customProperties"] = [
        {"property": "transform", "value": "keep"},
        {"property": "subjectKey", "value": True},
    ]
    d["schema"][0]["properties"][0]["logicalTypeOptions"] = {}


def no_article_9(d: dict[str, Any]) -> None:
    basis_value = next(p for p in d["customProperties"] if p["property"] == "legalBasis")["value"]
    basis_value.pop("ukGdprArticle9")
    basis_value.pop("dpa2018Schedule1")


def no_host_key(d: dict[str, Any]) -> None:
    d["servers"][0].pop("customProperties")


def no_retention(d: dict[str, Any]) -> None:
    d["slaProperties"] = [s for s in d["slaProperties"] if s["property"] != "retention"]


LINT: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "unknown purpose": (
        set_term("purposes", ["safeguarding", "marketing"]),
        "customProperties[2].value[1]",
        "unknown purpose code 'marketing'",
    ),
    "unknown legal basis": (
        basis(statutes=[{"act": "Made Up Act 2020", "section": "s.1"}]),
        "customProperties[3].value.statutes[0]",
        "unknown legal basis Made Up Act 2020 s.1",
    ),
    "special category without Art 9": (
        no_article_9,
        "schema[0].properties[4].classification",
        "Article 9 condition",
    ),
    "Art 9(2)(g) without Schedule 1": (
        basis(dpa2018Schedule1=None),
        "customProperties[3].value",
        "Schedule 1 condition",
    ),
    "direct identifier in clear": (
        keep_first_field,
        "schema[0].properties[0].customProperties",
        "kept in clear",
    ),
    "override without a power": (
        set_term(
            "objections",
            {
                "column": "objection",
                "legalBasisOverrides": True,
                "overrideJustification": "Because we would like to.",
            },
        ),
        "customProperties[4].value.legalBasisOverrides",
        "no listed legal basis overrides",
    ),
    "missing host key": (no_host_key, "servers[0].customProperties", "pin the recipient"),
    "invalid cron": (
        set_term("schedule", "every night at 2"),
        "customProperties[5].value",
        "not a valid cron",
    ),
    "missing retention": (no_retention, "slaProperties", "retention period is missing"),
    "missing recipient key": (
        set_term("recipientKeys", []),
        "customProperties[7].value",
        "should be non-empty",
    ),
}


@pytest.mark.parametrize("case", LINT)
def test_lint_refuses(workspace: Workspace, case: str) -> None:
    edit, path, words = LINT[case]
    bad = write_contract(workspace.root / "bad.yaml", workspace.recipient, edit)
    done = exchange(workspace, "contract", "lint", str(bad))
    assert done.returncode == BAD_INPUT
    lines = [line for line in done.stderr.splitlines() if f"bad.yaml: {path}:" in line]
    assert lines and any(words in line for line in lines), done.stderr
