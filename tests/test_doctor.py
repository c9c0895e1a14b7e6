"""`exchange doctor` and the run's preflight: every missing prerequisite at once (issue 17).

A data team's first run used to take ten attempts, one missing piece each. These tests start
from a fresh home folder, drive the real command, and check that one call names every missing
piece with its full path and the command that fixes it; that following the fixes gets to
"ready"; and that `exchange run` reports the same list at once, before any data is read.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
from pathlib import Path

import pytest
from conftest import SAMPLE, Workspace, incidents, write_contract, write_trust

from exchange import cli, keys
from exchange.audit import Ledger
from exchange.sandbox import PartnerSftpServer

RECIPIENT = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def missing(out: str) -> list[str]:
    return [
        line.removeprefix("missing: ") for line in out.splitlines() if line.startswith("missing: ")
    ]


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Only a contracts folder with the sample agreement: nothing else is set up."""
    for name in list(os.environ):
        if name.startswith("EXCHANGE_"):
            monkeypatch.delenv(name)
    (tmp_path / "contracts").mkdir()
    write_contract(tmp_path / "contracts" / SAMPLE.name, RECIPIENT)
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXCHANGE_CONTRACTS", str(tmp_path / "contracts"))
    monkeypatch.setenv("EXCHANGE_APPROVERS", str(tmp_path / "operator" / "approvers.json"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_doctor_lists_every_missing_prerequisite_at_once_with_paths_and_fixes(
    fresh: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = "school-attendance-to-early-help"
    code, out, err = run(capsys, "doctor", contract)
    assert code == cli.FAILED
    found = missing(out)
    key = fresh / "home" / "keys" / "gateway.key"
    approvers = fresh / "operator" / "approvers.json"
    assert found == [
        f"signing key (EXCHANGE_SIGNING_KEY) {key}: does not exist; "
        f"fix: exchange keys generate --kind signing --out {key}",
        f"trusted approvers file (EXCHANGE_APPROVERS) {approvers}: does not exist; fix: have the "
        "operator write it (docs/operators.md, 'Trusted approvers') and run install -m 644 "
        f"approvers.json {approvers}, or export EXCHANGE_APPROVERS=/full/path",
        "pseudonymisation key 'early-help-pseudonym-key': is not configured; fix: export "
        "EXCHANGE_SECRET_EARLY_HELP_PSEUDONYM_KEY=$(openssl rand -base64 32) (or name a 0600 "
        "secrets file with EXCHANGE_SECRETS)",
        "disclosure ledger key 'disclosure-key': is not configured; fix: export "
        "EXCHANGE_SECRET_DISCLOSURE_KEY=$(openssl rand -base64 32) (or name a 0600 secrets file "
        "with EXCHANGE_SECRETS)",
        "SFTP connection 'early-help-sftp': is not configured; fix: export "
        'EXCHANGE_CONN_EARLY_HELP_SFTP=\'{"host": ..., "port": 22, "username": ..., '
        '"key_file": ..., "known_hosts": ...}\' (or name a 0600 secrets file with '
        "EXCHANGE_SECRETS)",
        "source folder EXCHANGE_SOURCE_DIR: is not set: sources are read only from there; "
        "fix: export EXCHANGE_SOURCE_DIR=/full/path/to/the/exports",
    ], out
    assert err.strip() == (f"exchange: not ready: 6 prerequisite(s) of contract {contract} missing")
    assert not (fresh / "home").exists()  # doctor only looks

    # Follow the fixes as printed; then only what an IG officer must do is left.
    assert run(capsys, *shlex.split(found[0].split("fix: ")[1])[1:])[0] == cli.OK
    officer = keys.generate("signing", fresh / "officer.key", comment="Ivy Officer (IG)")
    write_trust(approvers, [("Ivy Officer (IG)", officer.public_path)])
    secrets = fresh / "secrets.json"
    secrets.write_text("{}")
    secrets.chmod(0o644)
    monkeypatch.setenv("EXCHANGE_SECRETS", str(secrets))
    code, out, _ = run(capsys, "doctor", contract)
    assert (
        f"secrets file (EXCHANGE_SECRETS) {secrets}: is readable by others; "
        f"fix: chmod 600 {secrets}"
    ) in out
    secrets.chmod(0o600)
    code, out, _ = run(capsys, "doctor", contract)
    assert (
        f"pseudonymisation key 'early-help-pseudonym-key': is not configured; fix: add "
        f'"early-help-pseudonym-key" to "secrets" in {secrets}, or export '
        "EXCHANGE_SECRET_EARLY_HELP_PSEUDONYM_KEY=$(openssl rand -base64 32)"
    ) in out
    path = fresh / "contracts" / SAMPLE.name
    assert (
        f"contract {path}: contract school-attendance-to-early-help has not been approved; fix: "
        f"ask an IG officer to review it and run: exchange contract approve {path} --key "
        "OFFICER.key"
    ) in out

    short = base64.b64encode(b"x" * 8).decode()
    monkeypatch.setenv("EXCHANGE_SECRET_EARLY_HELP_PSEUDONYM_KEY", short)
    monkeypatch.setenv("EXCHANGE_SECRET_DISCLOSURE_KEY", base64.b64encode(os.urandom(32)).decode())
    code, out, _ = run(capsys, "doctor", contract)
    assert "pseudonymisation key 'early-help-pseudonym-key': is shorter than 32 bytes" in out
    assert "disclosure-key" not in out
    assert short not in out  # a secret's value is never shown


def test_doctor_names_unsafe_key_files_and_a_missing_host_key_pin(
    workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    login = keys.generate("ssh", workspace.root / "login.key").private_path
    login.chmod(0o644)
    known_hosts = workspace.root / "known_hosts"
    known_hosts.write_text("")
    secrets = Path(workspace.env["EXCHANGE_SECRETS"])
    data = json.loads(secrets.read_text())
    data["connections"] = {
        "early-help-sftp": {
            "host": "127.0.0.1",
            "port": 2299,
            "username": "gw",
            "key_file": str(login),
            "known_hosts": str(known_hosts),
        }
    }
    secrets.write_text(json.dumps(data))
    workspace.settings.signing_key.chmod(0o644)
    workspace.source(10)
    code, out, _ = run(capsys, "doctor", str(workspace.contract))
    assert code == cli.FAILED
    key = workspace.settings.signing_key
    assert missing(out) == [
        f"signing key (EXCHANGE_SIGNING_KEY) {key}: is readable by others; fix: chmod 600 {key}",
        f"SFTP login key of 'early-help-sftp' {login}: is readable by others; "
        f"fix: chmod 600 {login}",
        f"known_hosts of 'early-help-sftp' {known_hosts}: has no entry for [127.0.0.1]:2299; "
        f"fix: ssh-keyscan -p 2299 127.0.0.1 >> {known_hosts}, then confirm the fingerprint "
        "with the partner",
    ], out


def test_run_reports_every_missing_prerequisite_at_once_and_reads_nothing(
    workspace: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    Path(workspace.env["EXCHANGE_SECRETS"]).write_text("{}")  # no secrets, no connection
    workspace.settings.signing_key.chmod(0o640)
    code, out, err = run(capsys, "run", str(workspace.contract), "--source", "absent.csv")
    assert code == cli.FAILED and out == ""
    lines = err.strip().splitlines()
    key = workspace.settings.signing_key
    source = Path(workspace.env["EXCHANGE_SOURCE_DIR"]) / "absent.csv"
    assert lines == [
        f"missing: signing key (EXCHANGE_SIGNING_KEY) {key}: is readable by others; "
        f"fix: chmod 600 {key}",
        f"missing: pseudonymisation key 'early-help-pseudonym-key': is not configured; fix: add "
        f'"early-help-pseudonym-key" to "secrets" in {workspace.env["EXCHANGE_SECRETS"]}, or '
        "export EXCHANGE_SECRET_EARLY_HELP_PSEUDONYM_KEY=$(openssl rand -base64 32)",
        f"missing: disclosure ledger key 'disclosure-key': is not configured; fix: add "
        f'"disclosure-key" to "secrets" in {workspace.env["EXCHANGE_SECRETS"]}, or export '
        "EXCHANGE_SECRET_DISCLOSURE_KEY=$(openssl rand -base64 32)",
        f"missing: SFTP connection 'early-help-sftp': is not configured; fix: add "
        f'"early-help-sftp" to "connections" in {workspace.env["EXCHANGE_SECRETS"]}, or export '
        'EXCHANGE_CONN_EARLY_HELP_SFTP=\'{"host": ..., "port": 22, "username": ..., '
        '"key_file": ..., "known_hosts": ...}\'',
        f"missing: source file {source}: does not exist; fix: put the export at {source}, or "
        "fix --source",
        "exchange: not ready: 5 prerequisite(s) missing; nothing was read or sent",
    ], err
    entries = list(Ledger(workspace.settings.audit_url).entries())
    failed = [e.data for e in entries if e.event == "run.failed"]
    assert failed and failed[-1]["stage"] == "preflight" and failed[-1]["error"] == "NotReady"
    assert "run.prepared" not in [e.event for e in entries]
    assert incidents(workspace) == []  # a set-up problem, not a security event


def test_a_ready_gateway_says_so_and_connect_dials_the_partner(
    workspace: Workspace,
    partner: PartnerSftpServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    workspace.source(10)
    code, out, err = run(capsys, "doctor", str(workspace.contract))
    assert code == cli.OK, out + err
    assert out.strip() == (
        f"ready: every prerequisite of contract {workspace.contract} is in place"
    )
    code, out, err = run(capsys, "doctor", str(workspace.contract), "--connect")
    assert code == cli.OK, out + err
    assert out.strip().endswith("and the partner's server answered")
    partner.stop()
    code, out, _ = run(capsys, "doctor", str(workspace.contract), "--connect")
    assert code == cli.FAILED
    assert (
        "missing: partner server (connection 'early-help-sftp', folder inbox/attendance): "
        f"cannot reach {partner.host}:{partner.port}"
    ) in out
    code, out, _ = run(capsys, "doctor")  # the gateway alone: never dials anyone
    assert code == cli.OK and out.startswith("ready: every prerequisite of the gateway")


def test_doctor_refuses_a_home_that_is_a_link_and_an_approvers_file_others_can_change(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = fresh / "real-home"
    real.mkdir()
    (fresh / "home").symlink_to(real)
    officer = keys.generate("signing", fresh / "officer.key", comment="Ivy Officer (IG)")
    approvers = write_trust(
        fresh / "operator" / "approvers.json", [("Ivy Officer (IG)", officer.public_path)]
    )
    approvers.chmod(0o666)
    code, out, _ = run(capsys, "doctor")
    assert code == cli.FAILED
    found = missing(out)
    assert (
        f"home (EXCHANGE_HOME) {fresh / 'home'}: is a symbolic link; "
        f"fix: point EXCHANGE_HOME at the real folder ({real})"
    ) in found
    assert (
        f"trusted approvers file (EXCHANGE_APPROVERS) {approvers}: {approvers} is writable by "
        f"group or others; fix: chmod go-w {approvers}"
    ) in found, found


def test_doctor_checks_the_shared_staging_store_when_one_is_named(
    fresh: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_STAGING", "ftp://store.example/drops")
    code, out, _ = run(capsys, "doctor")
    assert code == cli.FAILED
    (staging,) = [f for f in missing(out) if f.startswith("staging store")]
    assert staging.startswith(
        "staging store (EXCHANGE_STAGING) ftp://store.example/drops: cannot be used; fix: "
    )
    assert "s3://bucket/prefix or file:///shared/path" in staging
    monkeypatch.setenv("EXCHANGE_STAGING", f"file://{fresh / 'shared'}")
    code, out, _ = run(capsys, "doctor")
    assert not [f for f in missing(out) if f.startswith("staging store")]


def test_doctor_reaches_the_ledger_database_without_connect_and_says_so(
    fresh: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented behaviour: the ledger database (and a staging store) are always reached;
    only the partner's server waits for --connect. The docs and help must say the same."""
    import socket

    from exchange import doctor

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("EXCHANGE_AUDIT_URL", f"postgresql+psycopg://exchange@127.0.0.1:{port}/x")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    code, out, _ = run(capsys, "doctor")
    assert code == cli.FAILED
    (found,) = [f for f in missing(out) if f.startswith("audit ledger (EXCHANGE_AUDIT_URL)")]
    assert "cannot be reached (OperationalError)" in found and str(port) not in found.split(":")[0]
    said = " ".join((doctor.__doc__ or "").split())
    assert "Always checked, and so always contacted when configured: the ledger database" in said
    assert "Only with `connect` is the partner's server dialled" in said
    guide = " ".join((Path(__file__).parents[1] / "docs" / "data-teams.md").read_text().split())
    assert "Every call reaches the ledger database (`EXCHANGE_AUDIT_URL`" in guide
    assert "nothing leaves the machine" not in guide
    with pytest.raises(SystemExit):
        run(capsys, "doctor", "--help")
    out = capsys.readouterr().out
    assert "the ledger database and the staging store are reached without it" in " ".join(
        out.split()
    )
