"""The whole exchange through the `exchange` command, against a real sshd and the real `age`."""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import hmac
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import (
    FOLDER,
    PSEUDONYM_KEY,
    Workspace,
    connect,
    inbox_entries,
    receive_args,
    write_contract,
)

from exchange import cli, keys
from exchange.audit import Ledger
from exchange.minimise import Minimiser
from exchange.sandbox import PartnerSftpServer

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
NOT_SENT = ["nhs_number", "first_name", "last_name", "address_line", "notes", "last_updated"]

pytestmark = pytest.mark.integration


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command as a user types it, with the workspace's environment."""
    env = {**os.environ, **workspace.env}
    return subprocess.run([EXCHANGE, *args], env=env, capture_output=True, text=True, check=False)


def ledger(workspace: Workspace) -> list[tuple[str, dict]]:
    """(event, body) of every ledger entry but incident notices, oldest first."""
    entries = Ledger(workspace.settings.audit_url).entries()
    return [(e.event, e.data) for e in entries if not e.event.startswith("incident")]


def expected_rows(source: Path) -> pd.DataFrame:
    """The minimised rows, computed independently of the gateway from the raw source."""
    raw = pacsv.read_csv(
        source,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    ).to_pandas()
    raw = raw[~raw["objection"].fillna(False).astype(bool)]
    key = hmac.new(PSEUDONYM_KEY, digestmod=hashlib.sha256)

    def pseudonym(value: str) -> str:
        mac = key.copy()
        mac.update(value.encode())
        return mac.hexdigest()[:32]

    def district(postcode: str) -> str:
        return postcode.replace(" ", "").upper()[:-3]

    return pd.DataFrame(
        {
            "person_ref": raw["person_id"].map(pseudonym),
            "birth_month": pd.to_datetime(raw["date_of_birth"]).dt.strftime("%Y-%m"),
            "postcode_district": raw["postcode"].map(district),
            "gender": raw["gender"],
            "ethnicity": raw["ethnicity"],
            "school_urn": raw["school_urn"].astype(str).str.zfill(6),
            "attendance_rate": raw["attendance_rate"].astype(float),
            "exclusions": raw["exclusions"].astype("int64"),
            "free_school_meals": raw["free_school_meals"].astype(bool),
        }
    ).reset_index(drop=True)


def read_drop_csv(data: bytes) -> pd.DataFrame:
    """Parse decrypted CSV the way a partner would."""
    return pd.read_csv(io.BytesIO(data), dtype={"school_urn": str}, keep_default_na=True)


def the_drop(server: PartnerSftpServer) -> Path:
    """The single drop folder in the partner's inbox."""
    entries = inbox_entries(server)
    assert len(entries) == 1, entries
    return server.root / FOLDER / entries[0]


def test_exchange_delivers_exactly_the_minimised_rows(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(3000)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert done.returncode == 0, done.stderr
    assert "sent" in done.stdout

    drop = the_drop(partner)
    assert sorted(p.name for p in drop.iterdir()) == [
        "data.csv.age",
        "manifest.json",
        "manifest.json.sig",
        "manifest.json.sshsig",
    ]
    # The partner opens it with the standard age tool.
    plain = subprocess.run(
        ["age", "-d", "-i", str(workspace.identity), str(drop / "data.csv.age")],
        capture_output=True,
        check=True,
    ).stdout
    got = read_drop_csv(plain)
    want = expected_rows(source)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # Nothing of the columns the contract does not permit, by name or by value.
    raw = pd.read_csv(source, dtype=str)
    text = plain.decode()
    for column in NOT_SENT:
        assert column not in got.columns
    for value in raw["nhs_number"].head(50).tolist() + raw["last_name"].head(50).tolist():
        assert f'"{value}"' not in text

    # Staged ciphertext is purged after delivery.
    assert not any(workspace.settings.staging.iterdir())


def test_the_audit_database_file_alone_holds_every_entry_once_the_command_ends(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """The command closes its database connections as it exits, so SQLite folds its
    write-ahead log into `audit.db`: a plain copy of that file (an auditor's evidence copy, a
    backup) has every entry the ledger has."""
    database = Path(workspace.settings.audit_url.removeprefix("sqlite:///"))
    source = workspace.source(50)
    gc.collect()  # the fixtures' dropped engines: this process must not hold the file open
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            held.append(os.readlink(fd))
    assert str(database) not in held  # else the command's close is not the last, and keeps it
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert done.returncode == 0, done.stderr
    assert not database.with_name(database.name + "-wal").exists()
    copy = tmp_path / "evidence.db"
    copy.write_bytes(database.read_bytes())
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        (copied,) = conn.execute("SELECT count(*) FROM audit_ledger").fetchone()
    assert copied == len(list(Ledger(workspace.settings.audit_url).entries())) > 0


def test_partner_receive_verifies_and_writes_the_data(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    source = workspace.source(1500)
    assert (
        exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode == 0
    )
    drop = the_drop(partner)
    out = tmp_path / "received"
    done = exchange(
        workspace,
        *receive_args(drop, workspace.identity, workspace.sender_key, out),
    )
    assert done.returncode == 0, done.stderr
    written = out / f"{drop.name}.csv"
    assert written.stat().st_mode & 0o777 == 0o600
    manifest = json.loads((drop / "manifest.json").read_text())
    assert manifest["rows"]["sent"] == len(read_drop_csv(written.read_bytes()))
    assert manifest["rows"]["read"] == 1500
    assert manifest["contract"]["id"] == "school-attendance-to-early-help"
    assert (
        manifest["payload"]["sha256"]
        == hashlib.sha256((drop / "data.csv.age").read_bytes()).hexdigest()
    )


def test_receive_refuses_a_tampered_drop_and_writes_nothing(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    source = workspace.source(500)
    assert (
        exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode == 0
    )
    drop = the_drop(partner)
    payload = drop / "data.csv.age"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    out = tmp_path / "received"
    done = exchange(
        workspace,
        *receive_args(drop, workspace.identity, workspace.sender_key, out),
    )
    assert done.returncode == cli.NOT_VERIFIED
    assert "checksum" in done.stderr
    assert not out.exists() or not any(out.iterdir())


def test_every_run_is_in_a_verifying_ledger_without_personal_data(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(800)
    assert (
        exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode == 0
    )
    events = ledger(workspace)
    assert [e for e, _ in events] == ["contract.checked", "run.prepared", "transfer.sent"]
    sent = events[-1][1]
    for key in (
        "id",
        "version",
        "sha256",
        "purposes",
        "legal_basis",
        "fields_sent",
        "rows",
        "validation",
        "payload_sha256",
        "recipient",
        "remote_path",
        "outcome",
        "started_at",
        "finished_at",
    ):
        assert key in sent, key
    assert sent["rows"]["excluded"]["objection"] > 0
    assert sent["rows"]["read"] == 800
    assert set(events[1][1]["source_columns_not_read"]) == set(NOT_SENT)

    verified = exchange(workspace, "audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK: 3 entries")

    raw = pd.read_csv(source, dtype=str)
    ledger_text = json.dumps([b for _, b in events])
    manifest_text = (the_drop(partner) / "manifest.json").read_text()
    for column in ("person_id", "nhs_number", "last_name", "postcode"):
        for value in raw[column].head(100):
            assert value not in ledger_text and value not in manifest_text


def test_audit_verify_names_the_broken_entry(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(300)
    assert (
        exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode == 0
    )
    db = workspace.settings.home / "audit.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_ledger SET body = replace(body, '300', '299') WHERE seq = 2")
    done = exchange(workspace, "audit", "verify")
    assert done.returncode == cli.NOT_VERIFIED
    assert "entry 2" in done.stderr


def test_rerunning_a_run_does_not_duplicate_the_drop(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(400)
    args = ["run", str(workspace.contract), "--source", str(source), "--run-id", "nightly-1"]
    assert exchange(workspace, *args).returncode == 0
    again = exchange(workspace, *args)
    assert again.returncode == 0, again.stderr
    assert "already delivered" in again.stdout
    assert len(inbox_entries(partner)) == 1


# -- bad input: a one-line error naming the cause, non-zero exit, nothing sent, an audit entry --


def assert_refused_and_nothing_sent(
    workspace: Workspace,
    server: PartnerSftpServer,
    done: subprocess.CompletedProcess[str],
    code: int,
    event: str,
) -> dict:
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("exchange: ")
    assert inbox_entries(server) == []
    events = ledger(workspace)
    assert events and events[-1][0] == event, events
    return events[-1][1]


def test_contract_failing_the_odcs_schema(workspace: Workspace, partner: PartnerSftpServer) -> None:
    def edit(doc: dict) -> None:
        doc["schema"][0]["properties"][3]["logicalType"] = "text"

    bad = write_contract(workspace.contract.with_name("bad.yaml"), workspace.recipient, edit)
    done = exchange(workspace, "run", str(bad), "--source", str(workspace.source(100)))
    body = assert_refused_and_nothing_sent(workspace, partner, done, cli.BAD_INPUT, "run.refused")
    assert "bad.yaml: schema[0].properties[3].logicalType" in done.stderr
    assert body["reason"] == "contract-invalid"


def in_session(session: int) -> list[int]:
    """The processes whose session is `session` (field 6 of /proc/PID/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        if int(stat.rpartition(")")[2].split()[3]) == session:
            found.append(int(entry.name))
    return found


def test_a_refused_run_leaves_no_validation_worker_behind(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    """`exchange run` starts its validation worker before anything else (its child imports
    Great Expectations for seconds); refused at the contract check, the command stops it
    before it ends: nothing of the run's session is left."""
    bad = write_contract(
        workspace.contract.with_name("bad.yaml"),
        workspace.recipient,
        lambda doc: doc["customProperties"][2]["value"].append("marketing"),
    )
    command = subprocess.Popen(
        [EXCHANGE, "run", str(bad), "--source", str(workspace.source(100))],
        env={**os.environ, **workspace.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session: the worker would be in it
    )
    out, err = command.communicate(timeout=120)
    done = subprocess.CompletedProcess(command.args, command.returncode, out, err)
    assert_refused_and_nothing_sent(workspace, partner, done, cli.BAD_INPUT, "run.refused")
    assert in_session(command.pid) == []


def test_unknown_purpose_code(workspace: Workspace, partner: PartnerSftpServer) -> None:
    def edit(doc: dict) -> None:
        doc["customProperties"][2]["value"].append("marketing")

    bad = write_contract(workspace.contract.with_name("bad.yaml"), workspace.recipient, edit)
    done = exchange(workspace, "run", str(bad), "--source", str(workspace.source(100)))
    assert_refused_and_nothing_sent(workspace, partner, done, cli.BAD_INPUT, "run.refused")
    assert "customProperties[2].value[3]: unknown purpose code 'marketing'" in done.stderr


def test_source_missing_a_permitted_column(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(100)
    table = pacsv.read_csv(source, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    pacsv.write_csv(table.drop_columns(["school_urn"]), source)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    body = assert_refused_and_nothing_sent(workspace, partner, done, cli.BAD_INPUT, "run.failed")
    assert "missing column(s) the contract needs: school_urn" in done.stderr
    assert "school_urn" in body["message"]


def test_source_value_of_the_wrong_type_is_named_without_the_value(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(100)
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[40, "exclusions"] = "SENTINEL-VALUE"
    frame.to_csv(source, index=False)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert_refused_and_nothing_sent(workspace, partner, done, cli.BAD_INPUT, "run.failed")
    assert "'exclusions'" in done.stderr
    assert "SENTINEL-VALUE" not in done.stderr + json.dumps(ledger(workspace))


def test_guard_refuses_a_column_the_contract_does_not_list(
    workspace: Workspace,
    partner: PartnerSftpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = Minimiser.__call__

    def leaky(self: Minimiser, batch: pa.RecordBatch) -> pa.RecordBatch:  # faulty on purpose
        out = original(self, batch)
        return out.append_column("nhs_number", out.column("person_ref"))

    monkeypatch.setattr(Minimiser, "__call__", leaky)
    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["run", str(workspace.contract), "--source", str(workspace.source(200))])
    assert code == cli.REFUSED
    assert "not in the contract: nhs_number" in capsys.readouterr().err
    assert inbox_entries(partner) == []
    event, body = ledger(workspace)[-1]
    assert event == "run.refused" and body["unexpected"] == ["nhs_number"]
    assert not any(workspace.settings.staging.iterdir())  # nothing written, not even ciphertext


def test_quality_failure_sends_nothing_and_records_why(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(300)
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[frame["objection"] == "false", "attendance_rate"] = "150.0"
    frame.to_csv(source, index=False)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    body = assert_refused_and_nothing_sent(workspace, partner, done, cli.REFUSED, "run.refused")
    assert body["reason"] == "quality"
    assert any("attendance_rate: between" in f for f in body["failures"])
    report = next(workspace.settings.quarantine.glob("*.json"))
    assert report.stat().st_mode & 0o777 == 0o600
    assert not any(workspace.settings.staging.iterdir())


def test_unknown_partner_host_key_is_refused(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    partner.known_hosts_path.write_text("")
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(workspace.source(100))
    )
    body = assert_refused_and_nothing_sent(
        workspace, partner, done, cli.DELIVERY_FAILED, "transfer.failed"
    )
    assert "no pinned host key" in done.stderr
    assert body["error"] == "HostKeyRejected" and body["retryable"] is False


def test_changed_partner_host_key_is_refused(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    partner.stop()
    partner.rotate_host_key()
    partner.start()
    # The connection's known_hosts now trusts the new key; the contract's pin still does not.
    connect(workspace, partner)
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(workspace.source(100))
    )
    assert_refused_and_nothing_sent(
        workspace, partner, done, cli.DELIVERY_FAILED, "transfer.failed"
    )
    assert "does not match the contract's pinned key" in done.stderr


def test_partner_server_down(workspace: Workspace, partner: PartnerSftpServer) -> None:
    partner.stop()
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(workspace.source(100))
    )
    body = assert_refused_and_nothing_sent(
        workspace, partner, done, cli.DELIVERY_FAILED, "transfer.failed"
    )
    assert "transient" in done.stderr and "cannot reach" in done.stderr
    assert body["retryable"] is True


def test_parquet_source_to_parquet_payload(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    def parquet(doc: dict) -> None:
        doc["servers"][0]["format"] = "parquet"

    contract = workspace.write_contract(parquet)
    source = workspace.source(1200, name="attendance_export.parquet")
    done = exchange(workspace, "run", str(contract), "--source", str(source))
    assert done.returncode == 0, done.stderr
    drop = the_drop(partner)
    plain = subprocess.run(
        ["age", "-d", "-i", str(workspace.identity), str(drop / "data.parquet.age")],
        capture_output=True,
        check=True,
    ).stdout
    got = pq.read_table(pa.BufferReader(plain))
    assert got.schema.names == [
        "person_ref",
        "birth_month",
        "postcode_district",
        "gender",
        "ethnicity",
        "school_urn",
        "attendance_rate",
        "exclusions",
        "free_school_meals",
    ]
    assert got.schema.field("exclusions").type == pa.int64()
    assert got.schema.field("free_school_meals").type == pa.bool_()
    objecting = pq.read_table(source, columns=["objection"]).column("objection")
    assert got.num_rows == 1200 - pc.sum(objecting).as_py()
    received = exchange(
        workspace,
        *receive_args(drop, workspace.identity, workspace.sender_key, tmp_path / "in"),
    )
    assert received.returncode == 0, received.stderr
    assert pq.read_table(tmp_path / "in" / f"{drop.name}.parquet").equals(got)


def test_who_received_data_about_this_person(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    source = workspace.source(400)
    assert (
        exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode == 0
    )
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    sent = raw[raw["objection"] == "false"]["person_id"].iloc[0]
    withheld = raw[raw["objection"] == "true"]["person_id"].iloc[0]
    found = exchange(
        workspace, "audit", "subject", sent, "--format", "json", "--reason", "SAR-test"
    )
    assert found.returncode == 0, found.stderr
    (disclosure,) = json.loads(found.stdout)
    assert disclosure["contract_id"] == "school-attendance-to-early-help"
    assert disclosure["recipient"] == "Anyshire County Council"
    assert "safeguarding" in disclosure["purposes"] and disclosure["sent_at"]
    assert "person_ref" in disclosure["fields"]
    nothing = exchange(workspace, "audit", "subject", withheld, "--reason", "SAR-test")
    assert "no recorded disclosure" in nothing.stdout
    # The subject id is never stored in clear.
    assert sent.encode() not in (workspace.settings.home / "audit.db").read_bytes()


def test_an_auditor_verifies_an_export_offline(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    source = workspace.source(200)
    assert (
        exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode == 0
    )
    manifest = json.loads((the_drop(partner) / "manifest.json").read_text())
    assert manifest["ledger"]["checkpoint"].splitlines()[1].isdigit()
    # The documented manifest format (docs/manifest.schema.json) is what is sent.
    schema = json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(manifest)
    export = tmp_path / "ledger.jsonl"
    assert exchange(workspace, "audit", "export", str(export)).returncode == 0
    assert export.stat().st_mode & 0o777 == 0o600
    ok = exchange(
        workspace, "audit", "verify-export", str(export), "--public-key", str(workspace.sender_key)
    )
    assert ok.returncode == 0 and ok.stdout.startswith("OK:"), ok.stderr
    lines = export.read_text().splitlines()
    export.write_text("\n".join(lines[:-1]) + "\n")  # the newest entry deleted
    broken = exchange(
        workspace, "audit", "verify-export", str(export), "--public-key", str(workspace.sender_key)
    )
    assert broken.returncode == cli.NOT_VERIFIED


def test_partner_acknowledges_and_the_sender_collects(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    signer = keys.generate("signing", tmp_path / "partner-sign.key", comment="Early Help")
    (partner.root / "acks" / "attendance").mkdir(parents=True)

    def acknowledged(doc: dict) -> None:
        doc["customProperties"].append(
            {
                "property": "acknowledgements",
                "value": {
                    "folder": "acks/attendance",
                    "partnerKeys": [signer.public],
                    "deadlineHours": 0,
                },
            }
        )

    workspace.write_contract(acknowledged)
    for seed in (1, 2):
        done = exchange(
            workspace,
            "run",
            str(workspace.contract),
            "--source",
            str(workspace.source(150, seed=seed)),
        )
        assert done.returncode == 0, done.stderr
    first = sorted((p for p in (partner.root / FOLDER).iterdir()), key=lambda p: p.stat().st_mtime)[
        0
    ]
    received = exchange(
        workspace,
        *receive_args(first, workspace.identity, workspace.sender_key, tmp_path / "in"),
        "--ack-key",
        str(signer.private_path),
        "--ack-connection",
        "early-help-sftp",
        "--ack-folder",
        "acks/attendance",
    )
    assert received.returncode == 0, received.stderr
    assert (partner.root / "acks" / "attendance" / f"{first.name}.ack.json").exists()
    collected = exchange(workspace, "acks", "collect", str(workspace.contract))
    assert collected.returncode == cli.REFUSED  # the second drop is past its (zero) deadline
    assert "1 acknowledgement(s) recorded; 1 drop(s) overdue" in collected.stdout
    events = ledger(workspace)
    (ack,) = [b for e, b in events if e == "ack.received"]
    assert ack["drop_id"] == first.name and ack["rows_match"] is True
    assert [e for e, _ in events].count("ack.overdue") == 1
    from conftest import incidents

    assert incidents(workspace)[-1]["kind"] == "unacknowledged-drop"
    again = exchange(workspace, "acks", "collect", str(workspace.contract))
    assert "0 acknowledgement(s) recorded; 0 drop(s) overdue" in again.stdout


def test_drops_past_retention_are_removed_where_the_sender_manages_the_inbox(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    done = exchange(
        workspace, "run", str(workspace.contract), "--source", str(workspace.source(90))
    )
    assert done.returncode == 0, done.stderr
    refused = exchange(workspace, "drops", "expire", str(workspace.contract))
    assert refused.returncode == cli.REFUSED and "manage the inbox" in refused.stderr
    assert len(inbox_entries(partner)) == 1

    def managed_with_no_retention(doc: dict) -> None:
        doc["customProperties"].append({"property": "senderManagesInbox", "value": True})
        for sla in doc["slaProperties"]:
            if sla["property"] == "retention":
                sla.update(value=0, unit="d")

    workspace.write_contract(managed_with_no_retention)
    expired = exchange(workspace, "drops", "expire", str(workspace.contract))
    assert expired.returncode == 0, expired.stderr
    assert "1 drop(s) past retention removed" in expired.stdout
    assert inbox_entries(partner) == []
    event, body = ledger(workspace)[-1]
    assert event == "retention.removed" and body["drop_id"].startswith("school-attendance")


def test_an_external_objection_list_is_honoured_and_a_missing_one_stops_the_run(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    def listed(doc: dict) -> None:
        terms = next(p for p in doc["customProperties"] if p["property"] == "objections")
        terms["value"]["list"] = "early-help-objections"

    workspace.write_contract(listed)
    source = workspace.source(300)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    flagged = int((raw["objection"] == "true").sum())
    listed_ids = raw[raw["objection"] == "false"]["person_id"].head(3).tolist()
    missing = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert missing.returncode == cli.FAILED and "early-help-objections" in missing.stderr
    assert inbox_entries(partner) == []
    # As Notepad or Excel save it: a byte-order mark before the first id, CRLF line ends.
    saved = "\ufeff" + "\r\n".join(listed_ids) + "\r\n"
    env_list = base64.b64encode(saved.encode()).decode()
    workspace.env["EXCHANGE_SECRET_EARLY_HELP_OBJECTIONS"] = env_list
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert done.returncode == 0, done.stderr
    sent = ledger(workspace)[-1][1]
    assert sent["rows"]["excluded"]["objection"] == flagged + 3
    assert sent["rows"]["sent"] == 300 - flagged - 3
    # A zero-width space would make an id match nobody: the run stops, naming no id.
    hidden = "\n".join([listed_ids[0] + "\u200b", *listed_ids[1:]])
    workspace.env["EXCHANGE_SECRET_EARLY_HELP_OBJECTIONS"] = base64.b64encode(
        hidden.encode()
    ).decode()
    refused = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert refused.returncode == cli.FAILED and "invisible or control character" in refused.stderr
    assert not any(pid in refused.stdout + refused.stderr for pid in listed_ids)


def rectify_rate(
    workspace: Workspace, person: str, source: Path, tmp_path: Path, reason: str
) -> subprocess.CompletedProcess[str]:
    """`exchange rectify` of one person's attendance_rate, the id from a file (never on the
    command line, where ps would show it)."""
    id_file = tmp_path / "subject.txt"
    id_file.write_text(person + "\n")
    return exchange(
        workspace,
        "rectify",
        "--id-file",
        str(id_file),
        "--field",
        "attendance_rate",
        "--reason",
        reason,
        "--source",
        str(source),
    )


def test_rectify_sends_a_correction_notice_to_every_recipient(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    source = workspace.source(120)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert done.returncode == 0, done.stderr
    (first,) = inbox_entries(partner)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    person = raw[raw["objection"] == "false"]["person_id"].iloc[5]
    fixed = rectify_rate(
        workspace, person, source, tmp_path, "school re-submitted the autumn census"
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "correction notice" in fixed.stdout and "Anyshire County Council" in fixed.stdout
    notice = next(d for d in inbox_entries(partner) if d != first)
    manifest = json.loads((partner.root / FOLDER / notice / "manifest.json").read_text())
    assert manifest["correction"] == {
        "fields": ["attendance_rate"],
        "reason": "school re-submitted the autumn census",
        "corrects": [first],
    }
    assert manifest["rows"]["sent"] == 1
    assert person not in fixed.stdout + fixed.stderr + json.dumps(manifest)
    schema = json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(manifest)
    received = exchange(
        workspace,
        *receive_args(
            partner.root / FOLDER / notice,
            workspace.identity,
            workspace.sender_key,
            tmp_path / "in",
        ),
    )
    assert received.returncode == 0, received.stderr
    assert ledger(workspace)[-1][0] == "rectification.sent"
    seen = json.loads(
        exchange(
            workspace, "audit", "subject", person, "--format", "json", "--reason", "SAR-test"
        ).stdout
    )
    assert len(seen) == 2
    nobody = exchange(
        workspace,
        "rectify",
        "P-NOBODY",
        "--field",
        "gender",
        "--reason",
        "x",
        "--source",
        str(source),
    )
    assert nobody.returncode != 0 and "nobody to notify" in nobody.stderr
    assert "visible in ps and shell history" in nobody.stderr  # a warning, not a refusal


def test_a_person_whose_id_the_source_pads_is_found_and_corrected(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """A fixed-width source pads one id; the person is the bare id to the disclosure ledger,
    and a correction by the bare id carries their row. A person the source no longer holds
    gets no empty notice, even where the agreement allows a drop of no rows."""

    def no_lower_bound(doc: dict) -> None:
        doc["schema"][0]["quality"][0]["mustBeBetween"] = [0, 5000000]

    workspace.write_contract(no_lower_bound)
    source = workspace.source(120)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    at = raw.index[raw["objection"] == "false"][5]
    person = raw.at[at, "person_id"]
    raw.at[at, "person_id"] = person + "   "
    raw.to_csv(source, index=False)
    done = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert done.returncode == 0, done.stderr
    (first,) = inbox_entries(partner)
    fixed = rectify_rate(workspace, person, source, tmp_path, "re-submitted census")
    assert fixed.returncode == 0, fixed.stderr
    notice = next(d for d in inbox_entries(partner) if d != first)
    manifest = json.loads((partner.root / FOLDER / notice / "manifest.json").read_text())
    assert manifest["rows"]["sent"] == 1
    for gone in (raw.drop(index=at), raw.assign(objection=lambda r: r["person_id"] != "")):
        gone.to_csv(source, index=False)  # the row removed; then everyone objecting
        empty = rectify_rate(workspace, person, source, tmp_path, "re-submitted census")
        assert empty.returncode != 0 and "would carry no row" in empty.stderr
        assert len(inbox_entries(partner)) == 2
    staging = Path(workspace.env["EXCHANGE_HOME"]) / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []  # the refused notices


def test_incremental_runs_send_only_new_or_changed_records(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    def incremental(doc: dict) -> None:
        doc["customProperties"].append(
            {"property": "incremental", "value": {"column": "last_updated"}}
        )
        doc["schema"][0]["quality"][0]["mustBeBetween"] = [0, 5000000]

    workspace.write_contract(incremental)
    source = workspace.source(200)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    keep = int((raw["objection"] == "false").sum())
    run = ["run", str(workspace.contract), "--source", str(source)]
    assert exchange(workspace, *run).returncode == 0
    first = ledger(workspace)[-1][1]
    assert first["rows"]["sent"] == keep and first["watermark"]

    changed = raw.index[raw["objection"] == "false"][:4]
    raw.loc[changed, "last_updated"] = "2030-01-01 00:00:00.000000Z"
    raw.to_csv(source, index=False)
    assert exchange(workspace, *run).returncode == 0
    second = ledger(workspace)[-1][1]
    assert second["rows"]["sent"] == 4 and second["watermark"].startswith("2030-01-01")

    partner.stop()  # a failed delivery must not advance the watermark
    assert exchange(workspace, *run).returncode == cli.DELIVERY_FAILED
    partner.start()
    connect(workspace, partner)
    again = exchange(workspace, *run)
    assert again.returncode == 0, again.stderr
    assert ledger(workspace)[-1][1]["rows"]["sent"] == 0  # nothing new since the 2030 rows

    full = exchange(workspace, *run, "--full-refresh")
    assert full.returncode == 0, full.stderr
    assert ledger(workspace)[-1][1]["rows"]["sent"] == keep
    prepared = [b for e, b in ledger(workspace) if e == "run.prepared"][-1]
    assert prepared["incremental"]["full_refresh"] is True


def test_rotating_the_pseudonymisation_key_is_audited_and_changes_the_pseudonyms(
    workspace: Workspace, partner: PartnerSftpServer
) -> None:
    source = workspace.source(60)
    run = ["run", str(workspace.contract), "--source", str(source)]
    assert exchange(workspace, *run).returncode == 0
    before = json.loads((the_drop(partner) / "manifest.json").read_text())["pseudonymisation"]
    rotated = exchange(
        workspace, "keys", "rotate", "early-help-pseudonym-key", "--reason", "annual rotation"
    )
    assert rotated.returncode == 0, rotated.stderr
    assert Path(workspace.env["EXCHANGE_SECRETS"]).stat().st_mode & 0o777 == 0o600
    event, body = ledger(workspace)[-1]
    assert event == "key.rotated" and body["old_key_id"] == before["key_id"]
    assert body["new_key_id"] != before["key_id"] and body["reason"] == "annual rotation"
    assert exchange(workspace, *run).returncode == 0
    drops = [partner.root / FOLDER / d for d in inbox_entries(partner)]
    key_ids = {
        json.loads((d / "manifest.json").read_text())["pseudonymisation"]["key_id"] for d in drops
    }
    assert key_ids == {before["key_id"], body["new_key_id"]}


def test_disclosures_stay_answerable_after_the_disclosure_key_rotates(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    source = workspace.source(40)
    assert (
        exchange(workspace, "run", str(workspace.contract), "--source", str(source)).returncode == 0
    )
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    person = raw[raw["objection"] == "false"]["person_id"].iloc[0]
    rotated = exchange(workspace, "keys", "rotate", "disclosure-key", "--reason", "test")
    assert rotated.returncode == 0, rotated.stderr
    asked = ["audit", "subject", person, "--format", "json", "--reason", "SAR-test"]
    answered = exchange(workspace, *asked)
    assert len(json.loads(answered.stdout)) == 1
    assert "not searched" not in answered.stderr
    # Two rotations on, the drop's key is no longer kept: the answer cannot find the person,
    # and says it may leave out recipients rather than pass for complete.
    assert (
        exchange(workspace, "keys", "rotate", "disclosure-key", "--reason", "again").returncode == 0
    )
    unanswered = exchange(workspace, *asked)
    assert unanswered.returncode == 0 and json.loads(unanswered.stdout) == []
    assert "1 delivered drop(s) were recorded under disclosure key(s)" in unanswered.stderr
    assert "this answer may leave out recipients" in unanswered.stderr
    # A correction reaches the drops it can find, and says which it could not search.
    again = exchange(workspace, "run", str(workspace.contract), "--source", str(source))
    assert again.returncode == 0, again.stderr
    fixed = rectify_rate(workspace, person, source, tmp_path, "a corrected census")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.count("correction notice") == 1
    assert "1 delivered drop(s) were recorded under disclosure key(s)" in fixed.stderr
    assert "these notices may leave out recipients" in fixed.stderr
