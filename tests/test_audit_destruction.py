"""What auditors and subjects are told of deletion at the partner, through the real commands.

Three drops to one partner: the first is received, acknowledged (cosigning the ledger) and, at
the end of its retention, destroyed by `exchange partner expire`, whose signed receipt the
gateway verifies; the second is never received, so it is past retention plus grace with no
receipt when acknowledgements are collected long after; the third is sent after that, so its
deletion is simply due. `exchange audit report` and `exchange audit subject` must say which is
which.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from audit_history import exchange, ok
from conftest import FOLDER, Workspace
from test_witness import ACK_FOLDER, ack_key, manifest_of, outbox, take  # noqa: F401

from exchange import cli, keys
from exchange.audit import Ledger
from exchange.gateway import Gateway
from exchange.manifest import DESTRUCTION_GRACE_DAYS
from exchange.sandbox import PartnerSftpServer

pytestmark = pytest.mark.integration

TODAY = dt.date.today().isoformat()


def send(workspace: Workspace, partner: PartnerSftpServer, seed: int) -> tuple[Path, str]:
    """Deliver a drop of a fresh extract; the drop's folder and a person it carries."""
    source = workspace.source(60, seed=seed, name=f"attendance_{seed}.csv")
    result = workspace.gateway().run(workspace.contract, source)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    person = raw[raw["objection"] == "false"]["person_id"].iloc[0]
    return partner.root / FOLDER / result.drop_id, str(person)


def subject(workspace: Workspace, person: str, *extra: str) -> Any:
    return exchange(
        workspace, "audit", "subject", "--id-file", "-", "--reason", "SAR-2026-090", *extra,
        stdin=person + "\n",
    )  # fmt: skip


def test_destroyed_overdue_and_due_drops_in_the_report_and_the_subject_answer(
    workspace: Workspace,
    partner: PartnerSftpServer,
    ack_key: keys.KeyPair,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in workspace.env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "received"
    destroyed, first_person = send(workspace, partner, seed=1)
    never_received, second_person = send(workspace, partner, seed=2)
    take(workspace, destroyed, out, ack_key=ack_key.private_path, ack_outbox=outbox(partner))
    retention = manifest_of(destroyed)["retention"]
    ends = dt.datetime.fromisoformat(manifest_of(destroyed)["created_at"]) + dt.timedelta(
        days=retention["days"]
    )
    expire = ["partner", "expire", "--out", str(out), "--key", str(ack_key.private_path),
              "--at", ends.isoformat(), "--connection", "early-help-sftp",
              "--folder", ACK_FOLDER]  # fmt: skip
    assert cli.main(expire) == cli.OK
    # Long after: the receipt verifies, and the drop never received is overdue.
    late = ends + dt.timedelta(days=DESTRUCTION_GRACE_DAYS + 1)
    contract = workspace.gateway().check(workspace.contract, run_id="acks")
    Gateway(workspace.settings, clock=lambda: late).collect_acks(contract)
    pending, third_person = send(workspace, partner, seed=3)
    ledger = list(Ledger(workspace.settings.audit_url).entries())
    (receipt,) = [e.data for e in ledger if e.event == "destruction.received"]
    (flag,) = [e.data for e in ledger if e.event == "destruction.overdue"]
    assert (receipt["drop_id"], flag["drop_id"]) == (destroyed.name, never_received.name)

    # The report: per agreement, counts and drop ids of each fate.
    report = json.loads(
        ok(exchange(workspace, "audit", "report", "--since", TODAY, "--json")).stdout
    )
    (agreement,) = report["agreements"]
    names = [destroyed.name, never_received.name, pending.name]
    assert agreement["lifecycle"] == {
        "sent": {"count": 3, "drops": names},
        "acknowledged": {"count": 1, "drops": [destroyed.name]},
        "destroyed": {"count": 1, "drops": [destroyed.name]},
        "overdue": {"count": 1, "drops": [never_received.name]},
    }
    (kept,) = agreement["destroyed"]
    assert kept["destroyed_at"] == receipt["destroyed_at"] == ends.isoformat(timespec="seconds")
    assert kept["key_id"] == receipt["key_id"] and "ciphertext deleted" in kept["deleted"]
    assert agreement["destruction_overdue"][0]["due"] == flag["due"]
    by_drop = {d["drop_id"]: d for d in agreement["drops"]}
    assert by_drop[destroyed.name]["destroyed_at"] == receipt["destroyed_at"]
    assert by_drop[never_received.name]["destruction_overdue"] is True
    assert (
        by_drop[pending.name]["destroyed_at"],
        by_drop[pending.name]["destruction_overdue"],
    ) == (
        None,
        False,
    )
    # The partner's witness state, from the cosignature its acknowledgement carried.
    (witness,) = report["witnesses"]
    assert witness["contract_id"] == contract.id and witness["size"] > 0
    assert report["witness_refusals"] == []
    text = ok(exchange(workspace, "audit", "report", "--since", TODAY)).stdout
    assert "Destroyed at the partner: 1 of 3 drops (a verified destruction receipt); 1 overdue" in (
        text
    )
    assert f"drop {destroyed.name} destroyed at {receipt['destroyed_at']}" in text
    assert f"drop {never_received.name} overdue: no receipt by {flag['due']}" in text
    assert f"{witness['size']} entries, cosigned {witness['at']}" in text
    assert "Drops refused by a partner as witness: 0" in text

    # The subject answer: per disclosure, deletion confirmed (when), overdue, or due (by when).
    answers: dict[str, dict[str, Any]] = {}
    for person in (first_person, second_person, third_person):
        done = ok(subject(workspace, person, "--format", "json"))
        answers |= {a["drop_id"]: a["deletion"] for a in json.loads(done.stdout)}
    assert set(answers) == set(names)
    confirmed, overdue, due = (answers[n] for n in names)
    assert (confirmed["status"], confirmed["confirmed_at"]) == (
        "confirmed",
        receipt["destroyed_at"],
    )
    assert (overdue["status"], overdue["confirmed_at"], overdue["due"]) == (
        "overdue",
        None,
        flag["due"],
    )
    assert due["status"] == "due" and due["confirmed_at"] is None
    assert dt.datetime.fromisoformat(due["due"]) > dt.datetime.now(dt.UTC) + dt.timedelta(
        days=retention["days"]
    )
    letter = " ".join(ok(subject(workspace, first_person)).stdout.split())
    when = dt.datetime.fromisoformat(receipt["destroyed_at"])
    assert (
        f"Deleted: The recipient confirmed deleting it on {when.day} {when:%B %Y} at "
        f"{when:%H:%M} UTC" in letter
    )
