"""Tests for the human-readable summary of an agreement (exchange.contract.render)."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE, Workspace

from exchange.contract import load_contract, read_document
from exchange.contract.render import (
    STATES,
    describe_cron,
    filter_words,
    host_key_fingerprint,
    recipient_key_fingerprint,
    summary,
    to_html,
    to_markdown,
    transform_words,
)
from exchange.crypto.signing import load_private_key
from exchange.register import build_register

TODAY = dt.date.today()
SAMPLE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICPziuGclVMHb3eVKIUNmDNnSYz8HiZa9/v240qZm72I"
# What `ssh-keygen -lf` prints for SAMPLE_HOST_KEY.
SAMPLE_HOST_FINGERPRINT = "SHA256:nTUDz3WJ3salHmyCWdbK9kKPVG9jk1qgULgTuwzzNUc"


# Render reads the gateway's trust anchor and ledger from its settings, as the CLI does.
pytestmark = pytest.mark.usefixtures("gateway_env")


def secrets_of(workspace: Workspace) -> list[str]:
    """What must never appear in a rendering: names of secrets and full key material."""
    return [
        "early-help-sftp",  # sftpConnection
        "early-help-pseudonym-key",  # pseudonymisationKey
        workspace.recipient,  # the full age recipient
        SAMPLE_HOST_KEY,  # the full host key line
        SAMPLE_HOST_KEY.split()[1],  # and its base64 blob alone
    ]


def renderings(path: Path) -> dict[str, str]:
    """The summary as JSON, Markdown and HTML."""
    contract = load_contract(path)
    return {
        "json": json.dumps(summary(contract, today=TODAY), ensure_ascii=False),
        "markdown": to_markdown(contract, today=TODAY),
        "html": to_html(contract, today=TODAY),
    }


class Page(HTMLParser):
    """Collects what the accessibility and self-containment checks need from an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_summary_of_an_approved_contract_names_approver_and_review_date(
    workspace: Workspace,
) -> None:
    contract = load_contract(workspace.contract)
    state = workspace.governance().status(contract, TODAY)
    assert state.runnable and state.review_by
    s = summary(contract, today=TODAY)
    assert s["approval"]["runnable"] is True
    assert s["approval"]["label"] == "Approved"
    assert "Ivy Officer (IG)" in s["approval"]["approved_by"]
    assert s["approval"]["review_by"] == state.review_by
    assert s["id"] == contract.id and s["sha256"] == contract.sha256
    json.dumps(s)  # JSON-ready
    for text in (to_markdown(contract, today=TODAY), to_html(contract, today=TODAY)):
        assert "Ivy Officer (IG)" in text
        assert state.review_by in text
        assert state.approved_at and state.approved_at in text


def test_summary_content(workspace: Workspace) -> None:
    s = summary(load_contract(workspace.contract), today=TODAY)
    assert [p["code"] for p in s["purposes"]] == [
        "safeguarding",
        "childrens-services",
        "supporting-people-in-need",
    ]
    assert s["purposes"][0]["label"] == "Safeguarding children and adults at risk"
    statutes = s["legal_basis"]["statutes"]
    assert statutes[0] == {
        "act": "Children Act 2004",
        "section": "s.10",
        "description": "Co-operation to improve the well-being of children",
        "overrides_objection": False,
        "title": None,
        "wording": None,
    }
    assert s["legal_basis"]["article6"] == {"code": "6(1)(e)", "label": "public task"}
    assert s["legal_basis"]["article9"]["label"] == "reasons of substantial public interest"
    assert s["legal_basis"]["dpa2018_schedule1"].startswith("Part 2 para 18")
    person = s["fields"][0]
    assert person["name"] == "person_ref" and person["source"] == "person_id"
    assert person["transform"] == "pseudonymise" and person["identifies_person"] is True
    ethnicity = next(f for f in s["fields"] if f["name"] == "ethnicity")
    assert ethnicity["special_category"] is True and ethnicity["identifies_person"] is False
    assert s["objections"]["overridden"] is False
    assert "left out of every drop" in s["objections"]["words"]
    assert s["retention"]["words"] == "The recipient keeps each drop for 2 years, then deletes it."
    assert s["schedule"] == {"cron": "0 2 * * *", "words": "every day at 02:00 UTC"}
    assert s["endpoint"] == {"folder": "inbox/attendance", "format": "csv"}
    assert s["host_keys"] == [{"type": "ssh-ed25519", "fingerprint": SAMPLE_HOST_FINGERPRINT}]
    assert s["recipient_keys"][0]["shown"] == workspace.recipient[:12] + "…"
    assert s["dpia_reference"] == "DPIA-EDU-2026-014"
    assert s["rights_requests_contact"] == "dpo@anyshire.example"
    assert s["termination"].startswith("Either party may end the agreement")
    assert s["review_date"] == "2028-09-30"
    assert s["filters"] == []


BREACH = "Recipient reported a breach; paused pending review"


@pytest.mark.parametrize("when", ["unapproved", "suspended", "changed"])
def test_render_shows_why_a_contract_may_not_run(workspace: Workspace, when: str) -> None:
    if when == "unapproved":
        workspace.write_contract(approve=False)
        reason = "not-approved"
    elif when == "suspended":
        key = load_private_key(workspace.officer_key)
        workspace.governance().suspend(
            load_contract(workspace.contract),
            key,
            reason="Recipient reported a breach; paused pending review",
            now=dt.datetime.now(dt.UTC),
        )
        reason = "suspended"
    else:
        text = workspace.contract.read_text().replace("version: 1.0.0", "version: 1.0.1")
        workspace.contract.write_text(text)
        reason = "changed-since-approval"
    contract = load_contract(workspace.contract)
    s = summary(contract, today=TODAY)
    assert s["approval"]["runnable"] is False
    assert s["approval"]["reason"] == reason
    assert s["approval"]["approved_by"] is None
    label, meaning = STATES[reason]
    plain = s["approval"]["public_status"]
    assert (
        plain
        == {
            "unapproved": "not yet approved",
            "suspended": "suspended",
            "changed": "not running",
        }[when]
    )
    for text in (to_markdown(contract, today=TODAY), to_html(contract, today=TODAY)):
        assert label in text and plain in text
        assert f"`{reason}`" not in text and f"<code>{reason}</code>" not in text  # no codes
    assert html.escape(meaning) in to_html(contract, today=TODAY)


def test_a_suspension_reason_is_never_published(workspace: Workspace, tmp_path: Path) -> None:
    """The reason written when suspending may itself be sensitive: the public sees only who
    (by role) suspended the agreement and when; the officers' own tools keep the reason."""
    contract = load_contract(workspace.contract)
    now = dt.datetime.now(dt.UTC)
    workspace.governance().suspend(
        contract, load_private_key(workspace.officer_key), reason=BREACH, now=now
    )
    status = f"Suspended by the information governance officer on {now.date().isoformat()}."
    assert BREACH in summary(contract, today=TODAY)["approval"]["message"]  # internal only
    out = tmp_path / "register"
    [entry] = build_register(workspace.contract.parent, out, today=TODAY)
    assert entry["approval"]["state"] == "suspended"  # the machine code stays in register.json
    assert entry["public_status"] == "suspended" and entry["approval"]["detail"] == status
    texts = {
        "markdown": to_markdown(contract, today=TODAY),
        "html": to_html(contract, today=TODAY),
        **{p.name: p.read_text("utf-8") for p in out.iterdir()},
    }
    assert set(texts) >= {"register.json", "index.html"}
    for name, text in texts.items():
        assert "Recipient reported a breach" not in text, name
        assert "pending review" not in text, name
        assert status in text.replace("\\", ""), name


def test_every_field_and_its_transform_in_words(workspace: Workspace) -> None:
    contract = load_contract(workspace.contract)
    markdown = to_markdown(contract, today=TODAY)
    page = to_html(contract, today=TODAY)
    assert {f.transform for f in contract.fields} == {
        "keep",
        "pseudonymise",
        "generalise-date",
        "postcode-district",
    }
    for field in contract.fields:
        words = transform_words(field.transform, field.transform_options)
        assert field.name in markdown and words in markdown, field.name
        assert html.escape(field.name) in page and html.escape(words) in page, field.name
    assert "Generalised to the year and month" in markdown


def test_html_escapes_contract_values(workspace: Workspace) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["description"]["purpose"] = 'To help <script>alert("x")</script> & protect'
        document["name"] = "Attendance <b>bold</b> & more"

    workspace.write_contract(edit)
    contract = load_contract(workspace.contract)
    page = to_html(contract, today=TODAY)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; protect" in page
    assert "<b>" not in page
    assert "<title>Attendance &lt;b&gt;bold&lt;/b&gt; &amp; more</title>" in page
    markdown = to_markdown(contract, today=TODAY)
    assert r'To help \<script\>alert("x")\</script\> & protect' in markdown
    assert re.search(r"(?<!\\)<", markdown) is None  # every < is escaped: no raw HTML


def test_no_secret_names_or_key_material_in_any_rendering(workspace: Workspace) -> None:
    for kind, text in renderings(workspace.contract).items():
        for secret in secrets_of(workspace):
            assert secret not in text, (kind, secret)


def test_html_is_a_complete_accessible_self_contained_page(workspace: Workspace) -> None:
    contract = load_contract(workspace.contract)
    text = to_html(contract, today=TODAY)
    assert text.startswith("<!DOCTYPE html>\n")
    page = parse(text)
    tags = [tag for tag, _ in page.tags]
    assert page.tags[0] == ("html", {"lang": "en-GB"})
    assert ("meta", {"charset": "utf-8"}) in page.tags
    assert page.title == contract.name
    assert tags.count("h1") == 1 and tags.count("h2") >= 8 and "main" in tags
    assert "script" not in tags and "img" not in tags and "link" not in tags
    assert all(attrs.get("scope") in ("col", "row") for tag, attrs in page.tags if tag == "th")
    assert tags.count("caption") == tags.count("table") > 0
    for _, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs)  # no event handlers
        assert "style" not in attrs  # the page's CSP allows only the hashed <style>
        for key in ("src", "href"):
            assert not (attrs.get(key) or "").startswith(("http:", "https:", "//")), attrs


def test_describe_cron() -> None:
    assert describe_cron("0 2 * * *") == "every day at 02:00 UTC"
    assert describe_cron("30 6,18 * * *") == "every day at 06:30 and 18:30 UTC"
    assert describe_cron("15 1 * * 1-5") == "every Monday to Friday at 01:15 UTC"
    assert describe_cron("0 3 * * 0") == "every Sunday at 03:00 UTC"
    assert describe_cron("0 3 * * mon,thu") == "every Monday and Thursday at 03:00 UTC"
    assert describe_cron("0 4 1 * *") == "on day 1 of every month at 04:00 UTC"
    assert describe_cron("0 5 31 3 *") == "every year on 31 March at 05:00 UTC"
    assert describe_cron("@daily") == "every day at 00:00 UTC"
    assert describe_cron("*/15 * * * *") == "every 15 minutes"
    assert describe_cron("5 * * * *") == "every hour at 5 minutes past"
    assert describe_cron("0 2 1-7 * 1") == "on the cron schedule 0 2 1-7 * 1"


@pytest.mark.parametrize(
    ("transform", "options", "words"),
    [
        ("keep", {}, "Sent as it is in the source."),
        ("generalise-date", {"to": "year"}, "Generalised to the year only"),
        ("generalise-date", {"to": "age-band", "bands": [0, 5, 11]}, "age band on the day of"),
        ("generalise-date", {"to": "age-band", "bands": [0, 5, 11]}, "(0-4, 5-10, 11+)"),
        ("band", {"bands": [0, 50, 90]}, "Sent as a band (0-49, 50-89, 90+), not the value."),
        ("band", {"bands": [0, 1, 2]}, "(0, 1, 2+)"),
        ("truncate", {"length": 3}, "Cut to its first 3 characters."),
        ("top-code", {"max": 100}, "Values above 100 are sent as 100."),
        ("map", {"map": {"A": "x", "B": "y"}}, "table of 2 codes; any other value stops the run"),
        ("map", {"map": {"A": "x"}, "default": None}, "any other value is sent empty"),
        ("map", {"map": {"A": "x"}, "default": "other"}, "any other value is sent as other"),
        ("hash", {}, "Not a pseudonym"),
        ("postcode-sector", {}, "postcode sector (for example LS6 2)"),
        ("something-new", {}, "Transformed by something-new."),
    ],
)
def test_transform_words(transform: str, options: dict[str, Any], words: str) -> None:
    assert words in transform_words(transform, options)


def test_filter_words() -> None:
    assert filter_words({"column": "age", "op": ">=", "value": 11}) == "age is at least 11"
    assert filter_words({"column": "la", "op": "in", "value": ["A", "B"]}) == "la is one of A, B"
    assert filter_words({"column": "died", "op": "is_null"}) == "died is empty"
    assert (
        filter_words({"column": "date_of_birth", "op": "age_under", "value": 18})
        == "date_of_birth gives an age under 18 (on the day of the run)"
    )


def test_key_fingerprints() -> None:
    assert host_key_fingerprint(SAMPLE_HOST_KEY + " partner-host") == {
        "type": "ssh-ed25519",
        "fingerprint": SAMPLE_HOST_FINGERPRINT,
    }
    assert host_key_fingerprint("ssh-ed25519 not*base64")["fingerprint"] == "unreadable"
    recipient = "age1j9cagmxw0vf3zwjsf4598ejz8xwv43qadxunwk22ecycqv06l48s09mk7a"
    shown = recipient_key_fingerprint(recipient)
    # printf %s KEY | sha256sum
    assert shown == {
        "shown": "age1j9cagmxw…",
        "sha256": "990a6586aed07b2e3700dbb5cc630ad78aa6f405c9b4b38c6271639a30e9b515",
    }


def test_sample_contract_renders_without_an_approvers_folder() -> None:
    document = read_document(SAMPLE)
    contract = load_contract(SAMPLE)
    s = summary(contract, today=TODAY)
    assert s["approval"]["reason"] in {"not-approved", "ok", "trust-config-invalid"}
    assert len(s["fields"]) == len(document["schema"][0]["properties"])
