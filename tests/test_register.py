"""Tests for the public register of agreements (exchange.register), checked in a real browser."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from browser import browse, needs_chromium
from conftest import Workspace, write_contract

from exchange.contract import load_contract
from exchange.errors import ContractError
from exchange.register import build_register, page_stem, write_agreement

TODAY = dt.date.today()
SAMPLE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICPziuGclVMHb3eVKIUNmDNnSYz8HiZa9/v240qZm72I"
SECOND_NAME = "Youth justice referrals & <early> help"
BROKEN = "id: [not closed\n"


def second(document: dict[str, Any]) -> None:
    """A second, different agreement (never approved)."""
    document["id"] = "youth-justice-to-early-help"
    document["name"] = SECOND_NAME
    document["description"]["purpose"] = "Referrals <script>alert(1)</script> for support"


pytestmark = pytest.mark.usefixtures("gateway_env")  # the trust anchor and ledger


@pytest.fixture
def folder(workspace: Workspace) -> Path:
    """The workspace's contracts folder: the approved sample, a second contract, a broken one."""
    contracts = workspace.contract.parent
    write_contract(contracts / "youth-justice.yaml", workspace.recipient, second)
    (contracts / "broken.yaml").write_text(BROKEN)
    (contracts / "notes.txt").write_text("not a contract")
    return contracts


def test_register_over_two_valid_contracts_and_a_broken_one(
    workspace: Workspace, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "public" / "register"  # created, parents too
    entries = build_register(folder, out, today=TODAY)

    assert [e["file"] for e in entries] == [
        "broken.yaml",
        "school-attendance-to-early-help.yaml",
        "youth-justice.yaml",
    ]
    broken, sample, other = entries
    with pytest.raises(ContractError) as caught:
        load_contract(folder / "broken.yaml")
    assert broken["status"] == "invalid"
    assert broken["problems"] == len(caught.value.problems)
    assert broken["pages"] is None
    assert str(folder) not in json.dumps(broken)  # no problem text, no paths

    assert sample["approval"]["state"] == "ok" and sample["approval"]["runnable"] is True
    assert "Ivy Officer (IG)" in sample["approval"]["approved_by"]
    assert sample["review_date"] == sample["approval"]["review_by"]
    assert sample["purposes"] == ["safeguarding", "childrens-services", "supporting-people-in-need"]
    assert sample["legal_basis"].startswith("Children Act 2004 s.10; Children Act 2004 s.11")
    assert sample["parties"]["provider"] == "Anyshire County Council, Education Service"
    assert sample["sha256"] == load_contract(workspace.contract).sha256
    assert other["approval"]["state"] == "not-approved"
    assert other["review_date"] == "2028-09-30"

    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "index.html",
        "register.json",
        "school-attendance-to-early-help.html",
        "school-attendance-to-early-help.md",
        "youth-justice-to-early-help.html",
        "youth-justice-to-early-help.md",
    ]
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name

    register = json.loads((out / "register.json").read_text())
    assert register["type"] == "exchange-register/1"
    assert register["as_of"] == TODAY.isoformat()
    assert register["counts"] == {"agreements": 3, "runnable": 1, "not_runnable": 1, "invalid": 1}
    assert register["agreements"] == entries
    assert len({e["generated_at"] for e in entries} | {register["generated_at"]}) == 1
    for entry in entries[1:]:
        for page in entry["pages"].values():
            assert (out / page).is_file()

    index = (out / "index.html").read_text()
    assert 'href="school-attendance-to-early-help.html"' in index
    assert "broken.yaml" in index and "1 problem" in index
    assert "Youth justice referrals &amp; &lt;early&gt; help" in index
    assert "<script" not in "".join(p.read_text() for p in out.glob("*.html")).lower()


def test_register_output_holds_no_secret_names_or_key_material(
    workspace: Workspace, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "register"
    build_register(folder, out, today=TODAY)
    secrets = [
        "early-help-sftp",
        "early-help-pseudonym-key",
        workspace.recipient,
        SAMPLE_HOST_KEY,
        SAMPLE_HOST_KEY.split()[1],
        str(folder),  # no local paths either
    ]
    for path in out.iterdir():
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, (path.name, secret)


def test_rebuilding_removes_pages_of_agreements_no_longer_listed(
    workspace: Workspace, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "register"
    (tmp_path / "register").mkdir()
    (out / "keep-me.html").write_text("not ours")
    build_register(folder, out, today=TODAY)
    (folder / "youth-justice.yaml").unlink()
    entries = build_register(folder, out, today=TODAY)
    assert len(entries) == 2
    assert not (out / "youth-justice-to-early-help.html").exists()
    assert not (out / "youth-justice-to-early-help.md").exists()
    assert (out / "keep-me.html").read_text() == "not ours"  # not listed by us: left alone


def test_a_file_that_is_not_utf8_is_listed_as_invalid(folder: Path, tmp_path: Path) -> None:
    (folder / "latin1.yaml").write_bytes("id: caf\xe9\n".encode("latin-1"))
    entries = build_register(folder, tmp_path / "register", today=TODAY)
    latin1 = next(e for e in entries if e["file"] == "latin1.yaml")
    assert latin1["status"] == "invalid" and latin1["problems"] == 1


def test_a_missing_contracts_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_register(tmp_path / "nowhere", tmp_path / "register", today=TODAY)
    assert not (tmp_path / "register").exists()


def test_duplicate_ids_are_listed_as_invalid(
    workspace: Workspace, folder: Path, tmp_path: Path
) -> None:
    shutil.copy(workspace.contract, folder / "zz-copy.yaml")
    entries = build_register(folder, tmp_path / "register", today=TODAY)
    copy = entries[-1]
    assert copy["file"] == "zz-copy.yaml" and copy["status"] == "invalid"
    assert "school-attendance-to-early-help.yaml" in copy["why"]


def test_write_agreement_writes_both_pages(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "one" / "agreement"
    html_path, md_path = write_agreement(load_contract(workspace.contract), out, today=TODAY)
    assert (html_path.name, md_path.name) == (
        "school-attendance-to-early-help.html",
        "school-attendance-to-early-help.md",
    )
    for path in (html_path, md_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert "School attendance and exclusions for Early Help" in path.read_text()
    assert "Back to the register" not in html_path.read_text()
    assert sorted(p.name for p in out.iterdir()) == [html_path.name, md_path.name]


def test_drafts_are_not_published_nor_counted(
    workspace: Workspace, folder: Path, tmp_path: Path
) -> None:
    def draft(document: dict[str, Any]) -> None:
        document["id"] = "a-draft-agreement"
        document["name"] = "A draft not yet agreed"
        document["status"] = "draft"

    write_contract(folder / "draft.yaml", workspace.recipient, draft)
    out = tmp_path / "register"
    entries = build_register(folder, out, today=TODAY)
    assert "draft.yaml" not in [e["file"] for e in entries]
    register = json.loads((out / "register.json").read_text())
    assert register["counts"] == {"agreements": 3, "runnable": 1, "not_runnable": 1, "invalid": 1}
    for path in out.iterdir():
        text = path.read_text()
        assert "a-draft-agreement" not in text and "A draft not yet agreed" not in text, path.name


def test_plain_statuses_publisher_and_contact(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "register"
    entries = build_register(folder, out, today=TODAY)
    _, sample, other = entries
    assert (sample["public_status"], other["public_status"]) == ("approved", "not yet approved")
    assert other["approval"]["state"] == "not-approved"  # the machine code, for machines
    assert sample["publisher"] == "Anyshire County Council"
    assert sample["rights_requests_contact"] == "dpo@anyshire.example"
    register = json.loads((out / "register.json").read_text())
    assert "provider" in register["publisher"]
    index = (out / "index.html").read_text()
    assert "Not yet approved" in index and "not-approved" not in index
    assert "dpo@anyshire.example" in index and "Published by" in index
    assert "contract status:" not in index
    build_register(folder, out, today=TODAY, publisher="Anyshire County Council")
    assert "Published by Anyshire County Council." in (out / "index.html").read_text()
    assert json.loads((out / "register.json").read_text())["publisher"] == (
        "Anyshire County Council"
    )


def test_page_names_are_safe() -> None:
    assert page_stem("school-attendance") == "school-attendance"
    assert page_stem("../../etc/passwd") == "_.._etc_passwd"
    assert page_stem("index") == "agreement-index"
    assert page_stem("Register") == "agreement-Register"
    assert page_stem("") == "agreement-"
    assert "/" not in page_stem("a/b") and "\\" not in page_stem("a\\b")


# -- a real browser --------------------------------------------------------------------------


@needs_chromium
def test_register_pages_in_a_real_browser(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "register"
    build_register(folder, out, today=TODAY)
    for page, names in (
        (out / "index.html", ["School attendance and exclusions for Early Help", SECOND_NAME]),
        (
            out / "school-attendance-to-early-help.html",
            ["School attendance and exclusions for Early Help", "person_ref"],
        ),
        (out / "youth-justice-to-early-help.html", [SECOND_NAME]),
    ):
        dom = browse(page, tmp_path / f"profile-{page.stem}", "--dump-dom").stdout
        assert dom.lstrip().startswith("<!DOCTYPE html>") or "<html" in dom
        for name in names:
            # The DOM serialises text with &, < and > escaped.
            assert name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in dom
        assert "<script" not in dom.lower()
    shot = tmp_path / "index.png"
    browse(
        out / "index.html",
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1200,900",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    phone = tmp_path / "index-phone.png"  # the status column comes second, for a phone
    browse(
        out / "index.html",
        tmp_path / "profile-phone",
        f"--screenshot={phone}",
        "--window-size=390,844",
    )
    assert phone.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_chromium
@pytest.mark.parametrize(
    "body",
    [
        "<script>undefinedFunction()</script>",
        '<img src="https://example.invalid/x.png" alt="">',
    ],
)
def test_the_browser_check_catches_page_errors(tmp_path: Path, body: str) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="img-src \'none\'">'
        f"<title>bad</title></head><body>{body}</body></html>"
    )
    with pytest.raises(AssertionError):
        browse(page, tmp_path / "profile", "--dump-dom")


def test_the_register_publishes_the_gateways_public_key(
    workspace: Workspace, folder: Path, tmp_path: Path
) -> None:
    """Anyone can check a drop's or checkpoint's signature against the key the register names."""
    from exchange.crypto.signing import key_id, load_public_key

    out = tmp_path / "register"
    build_register(folder, out, today=TODAY, gateway_key=workspace.sender_key)
    published = out / "gateway.key.pub"
    assert published.read_text().startswith("ssh-ed25519 ")
    expected = key_id(load_public_key(workspace.sender_key))
    assert key_id(load_public_key(published)) == expected
    register = json.loads((out / "register.json").read_text())
    assert register["gateway_key"]["id"] == expected
    index = (out / "index.html").read_text()
    assert expected in index and 'href="gateway.key.pub"' in index
    # Without a key nothing claims one.
    bare = tmp_path / "bare"
    build_register(folder, bare, today=TODAY)
    assert json.loads((bare / "register.json").read_text())["gateway_key"] is None
    assert not (bare / "gateway.key.pub").exists()


@needs_chromium
@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 900)])
def test_the_register_reads_at_phone_and_desktop_widths(
    folder: Path, tmp_path: Path, width: int, height: int
) -> None:
    """Laid out by a real Chromium: the page never scrolls sideways (only the table's own scroll
    box may), and each agreement's name and status are on screen without scrolling sideways."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from browser import CHROMIUM

    out = tmp_path / "register"
    build_register(folder, out, today=TODAY)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto((out / "index.html").as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            rows = page.locator("table:has(#t-register) tbody tr")
            assert rows.count() == 3  # two agreements and the broken file, no draft
            for i in range(rows.count()):
                for cell in (
                    rows.nth(i).locator("th, td").nth(0),
                    rows.nth(i).locator("td").nth(0),
                ):
                    box = cell.bounding_box()
                    assert box is not None and box["x"] >= 0
                    assert box["x"] + box["width"] <= width, (width, cell.inner_text())
            status = rows.nth(0).locator("td").nth(0).inner_text()
            assert status.split()[0] in {"Approved", "Not", "Suspended", "Invalid", "Review"}, (
                status
            )
        finally:
            browser.close()
