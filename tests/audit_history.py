"""A ledger with a history an auditor asks about, made through the `exchange` command.

Two delivered runs of the sample agreement, a suspension (with a refused run while it held) and
its resume, and a re-approval that lets the legal basis (Children Act 1989 s.47) override
objections; the second run's extract has one person who objected since the first. The partner
acknowledges the first drop; the second is past its (zero-hour) deadline when acks are collected.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from conftest import FOLDER, Workspace

from exchange import keys
from exchange.sandbox import PartnerSftpServer

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
SUSPENSION_REASON = "breach review BR-7 pending"
OVERRIDING_POWER = "Children Act 1989 s.47"


def exchange(workspace: Workspace, *args: str, stdin: str | None = None) -> Any:
    """The `exchange` command as a user types it, in the workspace's environment."""
    env = {**os.environ, **workspace.env}
    return subprocess.run(
        [EXCHANGE, *args], env=env, capture_output=True, text=True, check=False, input=stdin
    )


def ok(done: Any) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def acknowledged(partner_key: str) -> Any:
    """Acknowledgements into acks/attendance, signed by the partner's key, due at once."""

    def edit(document: dict[str, Any]) -> None:
        document["customProperties"].append(
            {
                "property": "acknowledgements",
                "value": {
                    "folder": "acks/attendance",
                    "partnerKeys": [partner_key],
                    "deadlineHours": 0,
                },
            }
        )

    return edit


def overriding(document: dict[str, Any]) -> None:
    """Objections overridden under s.47 of the Children Act 1989 (which allows it)."""
    for prop in document["customProperties"]:
        if prop["property"] == "legalBasis":
            prop["value"]["statutes"].append({"act": "Children Act 1989", "section": "s.47"})
        if prop["property"] == "objections":
            prop["value"] = {
                "column": "objection",
                "legalBasisOverrides": True,
                "overrideJustification": "An enquiry into significant harm needs every child.",
            }


@dataclass
class History:
    workspace: Workspace
    drops: list[str]  # delivered, oldest first
    objector: str  # sent in both runs; objected before the second
    never_objected: str  # sent in both runs, never objected
    overridden: int  # objections overridden in the second run (from its output)


def drop_of(run: Any) -> str:
    found = re.search(r"drop (\S+)", run.stdout)
    assert found, run.stdout
    return found.group(1)


def make_history(workspace: Workspace, partner: PartnerSftpServer) -> History:
    contract, key = str(workspace.contract), str(workspace.officer_key)
    signer = keys.generate("signing", workspace.root / "partner-sign.key", comment="Early Help")
    (partner.root / "acks" / "attendance").mkdir(parents=True)
    acks = acknowledged(signer.public)
    workspace.write_contract(acks)
    first = workspace.source(300, seed=1)
    drops = [drop_of(ok(exchange(workspace, "run", contract, "--source", str(first))))]
    ok(
        exchange(
            workspace, "contract", "suspend", contract, "--key", key, "--reason", SUSPENSION_REASON
        )
    )
    refused = exchange(workspace, "run", contract, "--source", str(first))
    assert refused.returncode == 3, refused.stderr
    ok(exchange(workspace, "contract", "resume", contract, "--key", key))
    workspace.write_contract(lambda d: (acks(d), overriding(d)), approve=False)
    confirm = (
        ["--yes"] if "--yes" in exchange(workspace, "contract", "approve", "-h").stdout else []
    )
    ok(exchange(workspace, "contract", "approve", contract, "--key", key, *confirm))

    raw = pd.read_csv(first, dtype=str, keep_default_na=False)
    willing = raw[raw["objection"] == "false"]["person_id"]
    objector, never_objected = willing.iloc[0], willing.iloc[1]
    raw.loc[raw["person_id"] == objector, "objection"] = "true"
    second = first.with_name("attendance_second.csv")
    raw.to_csv(second, index=False)
    second.chmod(0o600)
    run = ok(exchange(workspace, "run", contract, "--source", str(second)))
    drops.append(drop_of(run))
    acking = ["--ack-key", str(signer.private_path), "--ack-connection", "early-help-sftp"]
    receive = [
        "receive",
        str(partner.root / FOLDER / drops[0]),
        "--identity",
        str(workspace.identity),
        "--sender-key",
        str(workspace.sender_key),
        "--out",
        str(workspace.root / "received"),
        *acking,
        "--ack-folder",
        "acks/attendance",
    ]
    ok(exchange(workspace, *receive))
    collected = exchange(workspace, "acks", "collect", contract)
    assert "1 acknowledgement(s) recorded; 1 drop(s) overdue" in collected.stdout, collected.stderr
    overridden = int((raw["objection"] == "true").sum())
    return History(workspace, drops, objector, never_objected, overridden)
