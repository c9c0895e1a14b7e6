"""The second sample agreement (issue 12): an NHS acute trust's emergency-department frequent
attenders to a council's Adult Social Care, written as the trust writes it, run end to end
through the real command line against a real sshd from the CSV and the Parquet form of the same
extract."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, Workspace

from exchange import approval, synth
from exchange.contract import load_contract, read_document
from exchange.contract.render import summary, to_html, to_markdown
from exchange.crypto.signing import load_private_key
from exchange.receive import receive
from exchange.register import build_register
from exchange.sandbox import PartnerSftpServer

EXCHANGE = str(Path(sys.executable).with_name("exchange"))
CONTRACT = REPO / "contracts" / "acute-trust-ed-frequent-attenders-to-adult-social-care.yaml"
SOURCE = "ed_frequent_attenders"
INBOX = "inbox/ed-attenders"
KEY = bytes(range(64, 96))
LONDON = ZoneInfo("Europe/London")
TODAY = dt.date(2026, 11, 28)
S42_WORDING = "the trust shares this extract to inform those enquiries."
ART9_WORDING = "safeguarding adults at risk."


def exchange(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **workspace.env}
    return subprocess.run([EXCHANGE, *args], env=env, capture_output=True, text=True, check=False)


# -- the agreement as written ---------------------------------------------------------------------


def test_the_agreement_lints_and_its_id_is_its_file_name() -> None:
    done = subprocess.run(
        [EXCHANGE, "contract", "lint", str(CONTRACT)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "OK" in done.stdout + done.stderr, done.stderr
    c = load_contract(CONTRACT)
    assert c.id == CONTRACT.stem and re.fullmatch(r"[a-z0-9-]{1,64}", c.id)
    assert c.pseudonym_scope == "agreement"
    assert str(c.provider.code) == "ODS RXX" and str(c.recipient.code) == "GSS E10000099"
    assert c.objections.override_column == "s42_enquiry_open"
    assert [x.code for x in c.legal_basis.article9_conditions] == ["9(2)(h)", "9(2)(g)"]
    assert len(c.legal_basis.schedule1_conditions) == 2
    review = dt.date.fromisoformat(
        next(
            p["value"]
            for p in read_document(CONTRACT)["customProperties"]
            if p["property"] == "reviewDate"
        )
    )
    assert TODAY < review <= TODAY.replace(year=TODAY.year + 2)


def test_render_and_register_show_codes_and_the_agreements_own_wording(tmp_path: Path) -> None:
    c = load_contract(CONTRACT)
    md, page = to_markdown(c, today=TODAY), to_html(c, today=TODAY)
    for text in (md, page):
        assert "NHS ODS code RXX" in text and "GSS code E10000099" in text
        assert "Enquiry by local authority" in text and "Duty to share information" in text
        assert S42_WORDING in text and ART9_WORDING in text
    words = summary(c, today=TODAY, governance=None)["objections"]["words"]
    assert "only for rows whose source column s42_enquiry_open is Y" in words
    folder = tmp_path / "contracts"
    folder.mkdir()
    shutil.copy(CONTRACT, folder / CONTRACT.name)
    [entry] = build_register(folder, tmp_path / "out", today=TODAY, governance=None)
    assert "(NHS ODS code RXX)" in entry["parties"]["provider"]
    assert entry["parties"]["recipient_code"] == {"scheme": "gss", "value": "E10000099"}
    wording = " ".join(entry["legal_basis_wording"])
    assert S42_WORDING in wording and ART9_WORDING in wording
    assert "Health and Social Care Act 2012 s.251B: Duty to share information" in wording


# -- end to end through the real command line -----------------------------------------------------


@pytest.fixture
def nhs(workspace: Workspace, partner: PartnerSftpServer) -> Path:
    """The agreement installed in the workspace, addressed to the partner, and approved."""
    document = read_document(CONTRACT)
    for prop in document["customProperties"]:
        if prop["property"] == "recipientKeys":
            prop["value"] = [workspace.recipient]
    document["servers"][0]["customProperties"][0]["value"] = [partner.host_public_key]
    path = workspace.contract.parent / CONTRACT.name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    secrets_file = Path(workspace.env["EXCHANGE_SECRETS"])
    data = json.loads(secrets_file.read_text())
    data["secrets"]["ed-attenders-pseudonym-key"] = base64.b64encode(KEY).decode()
    data["connections"]["adult-social-care-sftp"] = data["connections"]["early-help-sftp"]
    secrets_file.write_text(json.dumps(data))
    (partner.root / INBOX).mkdir(parents=True)
    approval.approval_path(path).unlink(missing_ok=True)
    key = load_private_key(workspace.officer_key)
    workspace.governance().approve(load_contract(path), key, now=dt.datetime.now(dt.UTC))
    return path


def run(workspace: Workspace, contract: Path, source: Path) -> tuple[str, int]:
    """`exchange run` from the source; the drop id and objections overridden it reports."""
    done = exchange(workspace, "run", str(contract), "--source", source.name)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    found = re.search(r"drop (\S+) delivered to", said)
    assert found, said
    overridden = re.search(r"\((\d+) objections overridden", said)
    return found.group(1), int(overridden.group(1)) if overridden else 0


def payload(workspace: Workspace, partner: PartnerSftpServer, drop_id: str, out: Path) -> bytes:
    got = receive(
        partner.root / INBOX / drop_id,
        identity=workspace.identity,
        sender_key=workspace.sender_key,
        out_dir=out,
    )
    return Path(got.output).read_bytes()


def expected_rows(rows: int, seed: int) -> dict[str, dict[str, Any]]:
    """The attendances the agreement sends, by (attendance id, site), worked out independently."""
    out = {}
    for r in synth.ed_attenders_table(rows, seed=seed).to_pylist():
        flag = (r["national_data_opt_out"] or "").strip().lower()
        objected = flag in ("y", "")  # Y in any case; empty counts as objected
        if objected and r["s42_enquiry_open"] != "Y":
            continue
        out[f"{r['attendance_id']}/{r['site_code']}"] = r
    return out


def test_csv_and_parquet_forms_send_identical_payloads(
    workspace: Workspace, partner: PartnerSftpServer, nhs: Path, tmp_path: Path
) -> None:
    rows, seed = 400, 12
    sources = Path(workspace.env["EXCHANGE_SOURCE_DIR"])
    csv_source = synth.write_ed_attenders(sources / f"{SOURCE}.csv", rows, seed=seed)
    parquet_source = synth.write_ed_attenders(sources / f"{SOURCE}.parquet", rows, seed=seed)
    csv_drop, csv_overridden = run(workspace, nhs, csv_source)
    parquet_drop, parquet_overridden = run(workspace, nhs, parquet_source)
    from_csv = payload(workspace, partner, csv_drop, tmp_path / "a")
    from_parquet = payload(workspace, partner, parquet_drop, tmp_path / "b")
    assert from_csv == from_parquet

    sent = list(csv.DictReader(io.StringIO(from_csv.decode("utf-8"))))
    expected = expected_rows(rows, seed)
    assert {f"{r['attendance_id']}/{r['site_code']}" for r in sent} == set(expected)
    table = synth.ed_attenders_table(rows, seed=seed).to_pylist()
    objectors = [
        r for r in table if (r["national_data_opt_out"] or "").strip().lower() in ("y", "")
    ]
    open_enquiry = [r for r in objectors if r["s42_enquiry_open"] == "Y"]
    assert objectors and open_enquiry and len(open_enquiry) < len(objectors)
    assert len(sent) == rows - len(objectors) + len(open_enquiry)
    assert csv_overridden == parquet_overridden == len(open_enquiry)
    assert {r["age_band"] for r in sent} <= {"18-24", "25-44", "45-64", "65-74", "75-84", "85+"}
    assert all(re.fullmatch(r"[0-9a-f]{32}", r["patient_ref"]) for r in sent)

    # Only the agreed fields, minimised: no NHS number, name, GP practice or notes.
    assert list(sent[0]) == [
        "patient_ref",
        "attendance_id",
        "site_code",
        "arrival_time",
        "age_band",
        "postcode_district",
        "attendances_12m",
        "arrival_mode",
    ]
    text = from_csv.decode("utf-8")
    assert not any(r["nhs_number"] in text for r in table)
    assert "HYPERLINK" not in text and "frailty" not in text

    # Local clock times came out in UTC; the repeated autumn hour as its earlier (BST) instant.
    autumn = 0
    for r in sent:
        local = expected[f"{r['attendance_id']}/{r['site_code']}"]["arrival_datetime"]
        utc = local.replace(tzinfo=LONDON, fold=0).astimezone(dt.UTC)
        got = dt.datetime.fromisoformat(r["arrival_time"].replace("Z", "+00:00"))
        assert got.utcoffset() == dt.timedelta(0), r["arrival_time"]
        assert got == utc, (local, r["arrival_time"])
        if synth.AUTUMN_REPEAT[0] <= local < synth.AUTUMN_REPEAT[1]:
            autumn += 1
            assert got.hour == 0
    assert autumn > 0


def test_a_duplicate_attendance_fails_quality_and_nothing_is_sent(
    workspace: Workspace, partner: PartnerSftpServer, nhs: Path
) -> None:
    sources = Path(workspace.env["EXCHANGE_SOURCE_DIR"])
    source = synth.write_ed_attenders(
        sources / f"{SOURCE}.csv", 200, seed=3, duplicate_attendance=True
    )
    done = exchange(workspace, "run", str(nhs), "--source", source.name)
    assert done.returncode != 0
    # (seed 3 re-exports an attendance that is sent: an objector's would be left out first)
    assert "attendance_id, site_code" in done.stderr, done.stderr
    assert "compound_unique failed for 2 of" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list((partner.root / INBOX).iterdir()) == []


def integer_times(path: Path) -> None:
    """The arrival column stored as integers (seconds), as a careless export does."""
    table = pq.read_table(path)
    i = table.schema.get_field_index("arrival_datetime")
    seconds = pc.cast(table["arrival_datetime"], pa.int64())
    pq.write_table(table.set_column(i, "arrival_datetime", seconds), path)


def spring_gap(path: Path) -> None:
    """One arrival in the hour that did not exist when the clocks went forward."""
    table = pq.read_table(path)
    i = table.schema.get_field_index("arrival_datetime")
    times = table["arrival_datetime"].to_pylist()
    times[5] = dt.datetime(2026, 3, 29, 1, 30)
    column = pa.array(times, type=pa.timestamp("us"))
    pq.write_table(table.set_column(i, "arrival_datetime", column), path)


def two_postcodes(path: Path) -> None:
    """The GP practice's postcode exported under the same header as the patient's."""
    data = path.read_bytes()
    path.write_bytes(data.replace(b"gp_practice_code", b"postcode", 1))


@pytest.mark.parametrize(
    ("suffix", "fault", "column"),
    [
        (".parquet", integer_times, "arrival_datetime"),
        (".parquet", spring_gap, "arrival_datetime"),
        (".csv", two_postcodes, "postcode"),
    ],
    ids=["times-stored-as-integers", "time-in-the-spring-gap", "two-columns-named-postcode"],
)
def test_an_extract_that_cannot_be_read_as_agreed_is_refused(
    workspace: Workspace,
    partner: PartnerSftpServer,
    nhs: Path,
    suffix: str,
    fault: Any,
    column: str,
) -> None:
    sources = Path(workspace.env["EXCHANGE_SOURCE_DIR"])
    source = synth.write_ed_attenders(sources / f"{SOURCE}{suffix}", 100, seed=8)
    fault(source)
    done = exchange(workspace, "run", str(nhs), "--source", source.name)
    assert done.returncode != 0
    assert column in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "2026-03-29" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list((partner.root / INBOX).iterdir()) == []
