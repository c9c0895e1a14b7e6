"""Commands that do not validate data never load Great Expectations or Airflow.

Each command runs as a user types it, in its own process, through a two-line wrapper that
reports, after the command returns, which of the heavy libraries it imported. A regression
(a top-level import moved back into a package `__init__`) fails here by name, not by timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FOLDER, Workspace, inbox_entries, receive_args

from exchange.approval import approval_path
from exchange.sandbox import PartnerSftpServer

pytestmark = pytest.mark.integration

EXCHANGE = str(Path(sys.executable).with_name("exchange"))

# Never: these cost seconds to import and have nothing to do with these commands.
FORBIDDEN = ("great_expectations", "airflow")
# Avoided where the command has no use for them: a data frame library is not needed to read a
# contract, a ledger of a few entries or an encrypted drop, nor an SSH client to do it offline;
# nor, ever, what paramiko would import to run an OpenSSH config's `Match exec`.
AVOIDED = ("pandas", "numpy", "pyarrow", "scipy", "paramiko", "invoke")


def run_reporting(workspace: Workspace, tmp_path: Path, *args: str) -> tuple[int, set[str], str]:
    """Run the command; its exit code, the heavy libraries it imported and its stderr."""
    report = tmp_path / "loaded.json"
    watched = json.dumps([*FORBIDDEN, *AVOIDED])
    code = (
        "import json, sys\n"
        "from exchange.cli import main\n"
        "report, argv = sys.argv[1], sys.argv[2:]\n"
        "try:\n"
        "    status = main(argv)\n"
        "finally:\n"
        f"    watched = set(json.loads({watched!r}))\n"
        "    loaded = {m.split('.')[0] for m in sys.modules} & watched\n"
        "    open(report, 'w').write(json.dumps(sorted(loaded)))\n"
        "sys.exit(status)\n"
    )
    env = {**os.environ, **workspace.env}
    done = subprocess.run(
        [sys.executable, "-c", code, str(report), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    loaded = set(json.loads(report.read_text()))
    return done.returncode, loaded, done.stderr


def assert_light(
    workspace: Workspace, tmp_path: Path, *args: str, expect: int = 0, allow: tuple[str, ...] = ()
) -> None:
    """The command succeeds without importing a forbidden library, or an avoided one not allowed."""
    status, loaded, stderr = run_reporting(workspace, tmp_path, *args)
    assert status == expect, stderr
    command = " ".join(args[:2])
    assert not loaded & set(FORBIDDEN), f"`exchange {command}` imported {sorted(loaded)}"
    assert loaded <= set(allow), f"`exchange {command}` imported {sorted(loaded)}"


def test_contract_commands_load_no_validation_library(workspace: Workspace, tmp_path: Path) -> None:
    contract = workspace.contract
    assert_light(workspace, tmp_path, "contract", "lint", str(contract))

    out = tmp_path / "pages"
    assert_light(workspace, tmp_path, "contract", "render", str(contract), "--out", str(out))
    assert any(out.iterdir())

    changed = tmp_path / "changed.yaml"
    document = yaml.safe_load(contract.read_text())
    document["description"]["purpose"] = f"{document['description']['purpose']} (reworded)"
    changed.write_text(yaml.safe_dump(document, sort_keys=False))
    assert_light(workspace, tmp_path, "contract", "diff", str(contract), str(changed), expect=10)

    approval_path(contract).unlink()
    assert_light(
        workspace,
        tmp_path,
        "contract",
        "approve",
        str(contract),
        "--key",
        str(workspace.officer_key),
        "--yes",
    )
    assert approval_path(contract).exists()


def test_audit_verify_and_receive_load_no_validation_library(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    # `exchange run` validates in its worker process: its own process needs no pandas (nor
    # Great Expectations), even where it hashes columns in DataFusion (2,048 values and more).
    source = workspace.source(3000)
    status, loaded, stderr = run_reporting(
        workspace, tmp_path, "run", str(workspace.contract), "--source", str(source)
    )
    assert status == 0, stderr
    assert loaded == {"numpy", "pyarrow", "paramiko"}, f"`exchange run` imported {sorted(loaded)}"

    assert_light(workspace, tmp_path, "audit", "verify", "--public-key", str(workspace.sender_key))

    (drop_name,) = inbox_entries(partner)
    drop = tmp_path / "drop"
    shutil.copytree(partner.root / FOLDER / drop_name, drop)
    out = tmp_path / "received"
    assert_light(
        workspace,
        tmp_path,
        *receive_args(drop, workspace.identity, workspace.sender_key, out),
        # receive counts the decrypted payload's rows against the manifest with pyarrow
        allow=("numpy", "pyarrow"),
    )
    assert any(out.iterdir())
