"""`exchange audit subject`: an answer fit to send to the person, and every lookup audited.

The history (tests/audit_history.py) is made through the real command: a person sent in two
runs who objected between them, under an agreement re-approved in between to let Children Act
1989 s.47 override objections.
"""

from __future__ import annotations

import getpass
import json
import shutil
import sqlite3
from typing import Any

import pytest
import yaml
from audit_history import OVERRIDING_POWER, History, exchange, make_history
from conftest import Workspace

from exchange.reporting import override_powers
from exchange.sandbox import PartnerSftpServer
from exchange.subject_access import _objection

S47 = f"{OVERRIDING_POWER} (Enquiries where a child may be suffering significant harm)"
RECIPIENT = "Anyshire County Council, Early Help Service (contact: earlyhelp.ig@anyshire.example)"
KEPT = "How long they keep it: The recipient keeps each drop for 2 years, then deletes it."


@pytest.fixture
def history(workspace: Workspace, partner: PartnerSftpServer) -> History:
    return make_history(workspace, partner)


def ask(ws: Workspace, person: str, *extra: str) -> Any:
    done = exchange(
        ws,
        "audit",
        "subject",
        "--id-file",
        "-",
        "--reason",
        "SAR-test",
        *extra,
        stdin=person + "\n",
    )
    assert done.returncode == 0, done.stderr
    return done


def flat(text: str) -> str:
    """The letter's words with its line wrapping undone."""
    return " ".join(text.split())


def last_entry(ws: Workspace) -> tuple[str, dict[str, Any], str]:
    with sqlite3.connect(ws.settings.home / "audit.db") as db:
        event, body = db.execute(
            "SELECT event, body FROM audit_ledger ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    return event, json.loads(body), body


def test_the_answer_says_who_why_what_how_long_and_what_became_of_an_objection(
    history: History,
) -> None:
    ws = history.workspace
    done = ask(ws, history.objector, "--reason", "SAR-2026-042", "--requested-by", "DPO team")
    letter = flat(done.stdout)
    blocks = letter.split(" 2. Sent on ")
    assert len(blocks) == 2 and " 1. Sent on " in blocks[0]
    assert "Information about you was sent to another organisation 2 times." in letter
    for block in blocks:
        assert f"To: {RECIPIENT}" in block and KEPT in block
        assert "By: Anyshire County Council, Education Service" in block
        assert "Why: To let the Early Help team identify children" in block
        assert "Purposes: Safeguarding children and adults at risk; Children's services" in block
        assert "UK GDPR Article 6(1)(e): public task" in block
        assert "- person_ref: Replaced by a pseudonym" in block
        assert "- postcode_district: Reduced to the postcode district" in block
    first, second = blocks
    assert f"reference: drop {history.drops[0]}" in first and S47 not in first
    assert (
        "Your objection: This agreement does not override objections: everyone whose objection "
        "is recorded is left out. So no objection from you was recorded when this was sent."
    ) in first
    assert f"reference: drop {history.drops[1]}" in second and "Legal basis: " in second
    assert (
        "Your objection: If you had objected and your objection was recorded when this was "
        f"sent, it was overridden: this agreement allows that under {S47}, and "
        f"{history.overridden} people's objections were overridden in this delivery."
    ) in second
    assert "The agreement's reason: An enquiry into significant harm needs every child." in second
    assert "use your other rights: dpo@anyshire.example." in letter
    assert "checked against the audit ledger: " in letter
    assert all(len(line) <= 88 or "reference: drop" in line for line in done.stdout.splitlines())
    # The lookup is in the ledger: who ran it and for whom, why, the outcome; never the id.
    event, body, raw = last_entry(ws)
    assert event == "subject.looked_up" and history.objector not in raw
    assert body["requested_by"] == f"DPO team (run by {getpass.getuser()})"
    assert (body["reason"], body["outcome"], body["drops"]) == ("SAR-2026-042", "answered", 2)
    assert "this lookup is ledger entry" in letter

    # JSON: the same facts per disclosure, for someone who never objected.
    done = ask(ws, history.never_objected, "--format", "json", "--reason", "SAR-2026-043")
    first, second = json.loads(done.stdout)
    assert [first["drop_id"], second["drop_id"]] == history.drops
    for d in (first, second):
        assert d["recipient_contact"] == "earlyhelp.ig@anyshire.example"
        assert d["retention"] == "The recipient keeps each drop for 2 years, then deletes it."
        assert [f["name"] for f in d["fields_described"]] == d["fields"]
        assert d["terms_as_sent"] and d["sent_at"]
    assert first["acknowledged_at"] and second["acknowledged_at"] is None  # as the partner did
    assert first["objection"]["agreement_overrides"] is False
    assert first["objection"]["yours"] == "not-overridden"
    assert second["objection"] | {"words": ""} == {
        "agreement_overrides": True,
        "powers": [S47],
        "justification": "An enquiry into significant harm needs every child.",
        "overridden_in_this_delivery": history.overridden,
        "yours": "overridden-if-recorded",
        "words": "",
    }
    assert S47 in second["legal_basis_words"] and S47 not in first["legal_basis_words"]
    assert "this lookup is ledger entry" in done.stderr
    event, body, _ = last_entry(ws)
    assert (body["reason"], body["requested_by"]) == ("SAR-2026-043", getpass.getuser())

    # Nobody: said plainly, and the lookup recorded.
    nobody = ask(ws, "P99999999", "--reason", "SAR-2026-044")
    assert "There is no recorded disclosure about this person" in flat(nobody.stdout)
    event, body, _ = last_entry(ws)
    assert (event, body["reason"], body["drops"]) == ("subject.looked_up", "SAR-2026-044", 0)

    # No reason (or a blank one): refused before the id is read, and nothing looked up.
    for blank in ([], ["--reason", "  "]):
        refused = exchange(ws, "audit", "subject", "--id-file", "-", *blank, stdin="P99999999\n")
        assert refused.returncode == 2, refused.stderr
        assert "--reason is required" in refused.stderr and "SAR-" in refused.stderr
        assert refused.stdout == "" and last_entry(ws)[:2] == (event, body)


def test_words_come_from_the_agreement_as_sent_not_as_edited_since(history: History) -> None:
    ws = history.workspace
    folder = ws.contract.parent
    with sqlite3.connect(ws.settings.home / "audit.db") as db:
        sent = [
            json.loads(b)["sha256"]
            for (b,) in db.execute(
                "SELECT body FROM audit_ledger WHERE event = 'transfer.sent' ORDER BY seq"
            )
        ]
    # Keep only the second version's approved copy (as approve keeps it), then edit the file.
    shutil.rmtree(folder / "approved", ignore_errors=True)
    kept = folder / "approved" / "school-attendance-to-early-help" / f"{sent[1]}.yaml"
    kept.parent.mkdir(parents=True)
    shutil.copy(ws.contract, kept)
    document = yaml.safe_load(ws.contract.read_text())
    document["slaProperties"][0]["value"] = 3  # retention: 3 years from now on
    document["version"] = "1.1.0"
    ws.contract.write_text(yaml.safe_dump(document, sort_keys=False))

    first, second = json.loads(ask(ws, history.objector, "--format", "json").stdout)
    assert second["terms_as_sent"] and second["terms_note"] == ""
    assert second["retention"] == "The recipient keeps each drop for 2 years, then deletes it."
    assert not first["terms_as_sent"]
    assert first["terms_note"] == (
        "worded from version 1.1.0 of the agreement, which differs from the version 1.0.0 "
        "this was sent under"
    )
    letter = flat(ask(ws, history.objector).stdout)
    assert "Note: worded from version 1.1.0 of the agreement" in letter
    # With no contract file at all, the answer still comes, from the ledger's own facts.
    shutil.rmtree(folder / "approved")
    ws.contract.unlink()
    bare = json.loads(ask(ws, history.objector, "--format", "json").stdout)
    assert [d["terms_as_sent"] for d in bare] == [False, False]
    assert bare[1]["objection"]["powers"] == [S47] and bare[1]["retention"] is None
    assert "Safeguarding children and adults at risk" in bare[0]["purpose_labels"]


def test_the_powers_that_override_are_read_from_the_recorded_legal_basis() -> None:
    basis = "Care Act 2014 s.42; Health and Social Care Act 2012 s.251B; UK GDPR Art 6(1)(e)"
    assert override_powers(basis) == ["Care Act 2014 s.42 (Enquiry by local authority "
                                      "(safeguarding adults))"]  # fmt: skip
    assert override_powers("Children Act 2004 s.10; UK GDPR Art 6(1)(e)") == []
    # A drop with no transfer.sent entry to count from says what it cannot know.
    unknown = _objection(True, ["Care Act 2014 s.42"], None, None)
    assert unknown["yours"] == "overridden-if-recorded"
    assert "objections may have been overridden" in unknown["words"]
    one = _objection(True, ["Care Act 2014 s.42"], "Why.", 1)
    assert "1 person's objection was overridden in this delivery" in one["words"]
    assert one["words"].endswith("The agreement's reason: Why.")
