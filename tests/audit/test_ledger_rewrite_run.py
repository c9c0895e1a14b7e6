"""The issue-10 rewrite against a real run: the next `exchange run` must not sign forged history.

Needs the gateway to keep its checkpoints outside the database: gateway.py must build its
ledger with ``anchor=anchor_folder(settings.home)`` (see exchange/audit/anchor.py).
"""

from __future__ import annotations

import json

import pytest
from conftest import FOLDER, Workspace
from test_ledger_rewrite_attacks import checkpoint_rows, rechain, refusal, sql

from exchange import cli
from exchange.audit import Ledger
from exchange.sandbox import PartnerSftpServer

pytestmark = pytest.mark.integration


def test_the_next_run_refuses_to_sign_a_rechained_ledger(
    workspace: Workspace,
    partner: PartnerSftpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    source = workspace.source(120)
    run = ["run", str(workspace.contract), "--source", str(source)]
    assert cli.main([*run, "--run-id", "night-1"]) == cli.OK
    assert cli.main([*run, "--run-id", "night-2", "--full-refresh"]) == cli.OK
    drops = sorted((partner.root / FOLDER).iterdir(), key=lambda p: p.stat().st_mtime)
    handed_out = json.loads((drops[-1] / "manifest.json").read_text())["ledger"]["checkpoint"]
    url = workspace.settings.audit_url
    assert int(handed_out.splitlines()[1]) > 2  # night-1's entries are covered

    sql(url, "DELETE FROM audit_checkpoints")  # the attack, with database access only
    rechain(url, seq=2, body={"forged": True})
    capsys.readouterr()
    assert cli.main([*run, "--run-id", "night-3"]) != cli.OK
    assert "not an extension of the last checkpoint handed out" in refusal(capsys.readouterr().err)
    assert checkpoint_rows(url) == 0  # nothing signed over the forged history
    assert len(list((partner.root / FOLDER).iterdir())) == 2  # and nothing sent
    assert Ledger(url).verify().ok  # the database alone would still have verified
