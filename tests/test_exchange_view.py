"""The Exchanges view (exchange_airflow): a real Airflow 3 api-server on loopback with the
plugin loaded, over a ledger made through the `exchange` command (tests/audit_history.py: two
drops, a refusal while suspended, an acknowledgement and an overdue one, a re-approval).

Each page's figures are checked against the command's own JSON; every endpoint refuses a
request without an Airflow token, and the subject lookup refuses a user who is not an auditor.
The browser test drives Debian's Chromium through Playwright, runs axe-core in each page and
keeps a screenshot of each under build/test-output/exchanges-view."""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_history import History, exchange, make_history
from browser import CHROMIUM
from conftest import Workspace

from exchange.contract import load_contract
from exchange.sandbox import PartnerSftpServer

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
AGREEMENT = "school-attendance-to-early-help"
USERS = {"auditor": "auditor-pass-1", "clerk": "clerk-pass-1"}
ARTEFACTS = ROOT / "build" / "test-output" / "exchanges-view"
AXE = ROOT / "build" / "vendor" / "axe-core" / "axe.min.js"
GOVUK_CSS = ROOT / "exchange_airflow" / "static" / "govuk" / "govuk-frontend.min.css"
PAGES = {  # path -> screenshot name
    "/exchanges/": "register",
    f"/exchanges/agreements/{AGREEMENT}": "agreement",
    "/exchanges/ledger": "ledger",
    "/exchanges/subject": "subject",
}


@pytest.fixture(scope="module")
def vendored() -> None:
    """GOV.UK Frontend and axe-core, fetched and checked against their pins (cached)."""
    if not (GOVUK_CSS.exists() and AXE.exists()):
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "vendor_frontend.py")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    history: History
    log: Path

    @property
    def workspace(self) -> Workspace:
        return self.history.workspace

    def token(self, user: str) -> str:
        body = json.dumps({"username": user, "password": USERS[user]}).encode()
        request = urllib.request.Request(  # noqa: S310 (loopback)
            f"{self.url}/auth/token", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return str(json.load(response)["access_token"])

    def fetch(
        self,
        path: str,
        token: str | None = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.url + path, data, sent)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def history(workspace: Workspace, partner: PartnerSftpServer) -> History:
    return make_history(workspace, partner)


@pytest.fixture
def served(history: History, tmp_path: Path, vendored: None) -> Iterator[Served]:
    """`airflow api-server` on a free loopback port, the plugin in its plugins folder."""
    home = Path(tempfile.mkdtemp(prefix="exchange-view-airflow-", dir=tmp_path))
    (home / "plugins").mkdir()
    (home / "dags").mkdir()
    (home / "plugins" / "exchanges.py").write_text(
        "from exchange_airflow.plugin import ExchangesPlugin  # noqa: F401\n"
    )
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    passwords.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        **history.workspace.env,
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "auditor:viewer,clerk:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "exchange-view-test-jwt-secret-0123456789",
        "AIRFLOW__EXCHANGE_VIEW__AUDITORS": "auditor",
        # Not a number: refused with one logged warning, and every page uses the default 300.
        "AIRFLOW__EXCHANGE_VIEW__FULL_VERIFY_SECONDS": "five minutes",
    }
    migrate = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    # The agreements' DAGs in the metadata database, as the DAG processor would leave them.
    parsed = subprocess.run(
        [AIRFLOW, "dags", "reserialize"], env=env, capture_output=True, text=True, check=False
    )
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    log = home / "api-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5):  # noqa: S310
                    break
            except OSError:
                assert time.monotonic() < deadline, "api-server did not answer in 120 s"
                time.sleep(0.5)
        yield Served(url, history, log)
    finally:
        server.terminate()
        server.wait(timeout=30)


def figures(html: str) -> dict[str, list[str]]:
    """The numbers a page marks with data-figure, by name, in page order."""
    found: dict[str, list[str]] = {}
    for name, value in re.findall(r'data-figure="([a-z_]+)">([^<]*)<', html):
        found.setdefault(name, []).append(value)
    return found


def cli_report(ws: Workspace) -> dict[str, Any]:
    done = exchange(ws, "audit", "report", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def last_entry(ws: Workspace) -> tuple[int, str, dict[str, Any]]:
    with sqlite3.connect(ws.settings.home / "audit.db") as db:
        seq, event, body = db.execute(
            "SELECT seq, event, body FROM audit_ledger ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    return seq, event, json.loads(body)


def table(page: str, table_id: str) -> list[list[str]]:
    """The body rows of a page's table, each cell's text unescaped (["None"] when empty)."""
    body = page.split(f'id="{table_id}"')[1].split("</table>")[0].split("<tbody")[1]
    return [
        [html.unescape(cell) for cell in re.findall(r"<td[^>]*>([^<]*)</td>", row)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def or_none(rows: list[list[str]]) -> list[list[str]]:
    """What rows_table shows: the rows, or one "None" cell when there are none."""
    return rows or [["None"]]


def deleted(receipt: dict[str, Any]) -> str:
    """A destruction receipt's deleted items as the agreement page lists them."""
    return "; ".join(receipt["deleted"])


def test_every_endpoint_needs_an_airflow_user_and_the_lookup_an_auditor(served: Served) -> None:
    for path in [*PAGES, "/exchanges/static/exchanges.css"]:
        status, _, _ = served.fetch(path)
        assert status == 401, path
        status, _, _ = served.fetch(path, token="not-a-jwt")
        assert status in (401, 403), path
    status, _, _ = served.fetch("/exchanges/subject", form={"subject": "x", "reason": "y"})
    assert status == 401

    clerk = served.token("clerk")
    for path in list(PAGES)[:3]:
        status, headers, _ = served.fetch(path, clerk)
        assert status == 200, path
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"]  # none: default-src
    assert served.fetch("/exchanges/static/exchanges.css", clerk)[0] == 200
    for escape in ("..%2fapp.py", "%2e%2e/app.py", "%2e%2e%2fapp.py", "govuk/..%2f..%2fapp.py"):
        assert served.fetch(f"/exchanges/static/{escape}", clerk)[0] == 404, escape
    before = last_entry(served.workspace)[0]
    assert served.fetch("/exchanges/subject", clerk)[0] == 403
    refused = served.fetch("/exchanges/subject", clerk, form={"subject": "1", "reason": "SAR-1"})
    assert refused[0] == 403
    assert last_entry(served.workspace)[0] == before  # nothing looked up, nothing recorded


def test_pages_show_what_the_command_reports(served: Served) -> None:
    ws, history = served.workspace, served.history
    token = served.token("clerk")
    report = cli_report(ws)
    (totals,) = report["agreements"]

    status, _, ledger = served.fetch("/exchanges/ledger", token)
    assert status == 200
    shown = figures(ledger)
    evidence = report["evidence"]
    assert evidence["verification"]["ok"] and "Verified" in ledger
    assert shown["entries_verified"] == [str(evidence["verification"]["entries_verified"])]
    assert shown["head_seq"] == [str(evidence["head"]["seq"])]
    assert shown["checkpoint_size"] == [str(evidence["checkpoint"]["size"])]
    assert evidence["checkpoint"]["root"] in ledger
    row = re.search(
        r"<tr[^>]*>\s*(<td[^>]*>[^<]*</td>\s*){8}</tr>", ledger.split('id="partners"')[1]
    )
    assert row is not None
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(0))
    assert cells == [
        AGREEMENT,
        totals["recipient"],
        str(totals["transfers"]),
        str(totals["rows_sent"]),
        str(totals["refusals"]),
        str(totals["failures"]),
        str(totals["acknowledged"]),
        str(totals["acks_overdue"]),
    ]

    # Partners as witnesses: the report's section, equal to `exchange audit witnesses`.
    done = exchange(ws, "audit", "witnesses", "--json")
    assert done.returncode == 0, done.stderr
    witnesses = json.loads(done.stdout)["witnesses"]
    assert report["witnesses"] == witnesses
    # The history's acknowledgement carries the partner's cosignature; no partner refused.
    assert len(witnesses) == 1 and witnesses[0]["contract_id"] == AGREEMENT
    assert report["witness_refusals"] == [] and "Partners as witnesses" in ledger
    assert table(ledger, "witnesses") == or_none(
        [[w["witness"], w["key_id"], w["contract_id"], str(w["size"]), w["at"]] for w in witnesses]
    )
    refusals = report["witness_refusals"]
    assert shown["witness_refusals"] == [str(len(refusals))]
    assert table(ledger, "witness-refusals") == or_none(
        [
            [
                str(r[k])
                for k in (
                    "at",
                    "agreement",
                    "drop_id",
                    "key_id",
                    "held_size",
                    "offered_size",
                    "seq",
                )
            ]
            for r in refusals
        ]
    )

    bars = re.findall(r"<rect [^>]*><title>([^<]*)</title>", ledger)
    by_day = report["rows_by_day"]
    assert bars == [
        f"{day}, {partner}: {rows} rows"
        for day in sorted(by_day)
        for partner, rows in sorted(by_day[day].items())
    ]
    assert sum(int(b.rsplit(": ", 1)[1].split()[0]) for b in bars) == totals["rows_sent"]
    # The chart's table: rows sent and runs refused per day and partner, as the report says.
    by_day_table = table(ledger, "by-day")
    assert {(d, p): int(r) for d, p, r, _ in by_day_table if int(r)} == {
        (day, partner): rows for day in by_day for partner, rows in by_day[day].items() if rows
    }
    refused_on = sorted((r["at"][:10], totals["recipient"]) for r in totals["refused"])
    assert (
        sorted((d, p) for d, p, _, n in by_day_table for _ in range(int(n))) == refused_on
        and len(refused_on) == totals["refusals"] == 1
    )

    status, _, page = served.fetch(f"/exchanges/agreements/{AGREEMENT}", token)
    assert status == 200
    shown = figures(page)
    for name in ("transfers", "rows_sent", "refusals", "failures", "acknowledged", "acks_overdue"):
        assert shown[name] == [str(totals[name])], name
    assert (totals["transfers"], totals["refusals"], totals["acks_overdue"]) == (2, 1, 1)
    # Destruction receipts and overdue drops: the report's lifecycle figures and drop ids.
    life = totals["lifecycle"]
    assert shown["sent"] == [str(life["sent"]["count"])] == [str(totals["transfers"])]
    assert shown["destroyed"] == [str(life["destroyed"]["count"])]
    assert shown["destruction_overdue"] == [str(life["overdue"]["count"])]
    assert table(page, "destroyed") == or_none(
        [
            [r["drop_id"], str(r["destroyed_at"]), str(r["key_id"]), deleted(r), r["recorded_at"]]
            for r in totals["destroyed"]
        ]
    )
    assert [r[0] for r in table(page, "destroyed") if r != ["None"]] == life["destroyed"]["drops"]
    # The history has no destruction receipt and nothing past retention: the empty state.
    assert (life["destroyed"]["count"], life["overdue"]["count"]) == (0, 0)
    assert table(page, "destroyed") == table(page, "destruction-overdue") == [["None"]]
    assert table(page, "destruction-overdue") == or_none(
        [[o["drop_id"], str(o["due"]), str(o["seq"])] for o in totals["destruction_overdue"]]
    )
    for drop in history.drops:
        assert drop in page
    assert all(d in page.split('id="unacknowledged"')[1] for d in totals["unacknowledged"])
    assert "suspended" in page.split('id="refused"')[1]
    for incident in [i for i in report["incidents"] if i["agreement"] == AGREEMENT]:
        assert str(incident["kind"]) in page.split('id="incidents"')[1]
    contract = load_contract(ws.contract)
    digest = re.search(r'<code id="digest">([0-9a-f]{64})</code>', page)
    assert digest is not None and digest.group(1) == contract.sha256
    assert contract.name in page and contract.legal_basis.summary() in page
    assert f"exchange contract approve {ws.contract.name} --key" in page
    assert "identical" in page.split('id="diff-verdict"')[1][:400]  # approved as it stands

    status, _, register = served.fetch("/exchanges/", token)
    assert status == 200
    row_html = register.split(f'data-agreement="{AGREEMENT}"')[1].split("</tr>")[0]
    assert "Approved" in row_html and "Ivy Officer (IG)" in row_html
    assert history.drops[-1] in row_html  # the last drop
    assert "Anyshire County Council" in row_html
    assert "every day at 02:00 UTC" in row_html
    assert re.search(r"Paused in Airflow \(next run \d{4}-\d\d-\d\d 02:00 UTC\)", row_html)

    # Edited since its approval (not re-approved): the page gives the changes and the verdict
    # `exchange contract diff` gives, and the register the status and the review tag.
    document = yaml.safe_load(ws.contract.read_text("utf-8"))
    review_in(30)(document)
    ws.contract.write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
    done = exchange(ws, "contract", "diff", str(ws.contract))
    lines = done.stdout.splitlines()
    changes = [re.match(r"\[[a-z -]+\] (\S+) at (\S+): (.*)$", line) for line in lines[:-1]]
    verdict = re.search(r": ([a-z-]+) \((\d+) change", lines[-1])
    assert verdict is not None and all(changes) and len(changes) == int(verdict.group(2)) > 0
    page = html.unescape(served.fetch(f"/exchanges/agreements/{AGREEMENT}", token)[2])
    assert f"<strong>{verdict.group(1)}</strong>" in page
    for change in changes:
        assert change is not None and all(part in page for part in change.groups()), change
    register = served.fetch("/exchanges/", token)[2]
    row_html = register.split(f'data-agreement="{AGREEMENT}"')[1].split("</tr>")[0]
    assert "Review due within 60 days" in row_html and "exchanges-review-due" in register
    assert ">Approved<" not in row_html

    # Pages between full reads check only what was appended (and that the ledger still
    # extends what was read): the time of the last full read stays, and the page says so.
    first, again = (figures(served.fetch("/exchanges/ledger", token)[2]) for _ in range(2))
    assert first["full_at"] == again["full_at"] and len(first["full_at"]) == 1
    refused = "[exchange_view] full_verify_seconds = 'five minutes' is not a number of seconds"
    assert served.log.read_text().count(refused) == 1  # once, not on every page
    # A ledger edited behind the gateway's back: the next page says so, as the command does,
    # without waiting for the next full read.
    with sqlite3.connect(ws.settings.home / "audit.db") as db:
        db.execute("DELETE FROM audit_ledger WHERE seq = 2")
    assert exchange(ws, "audit", "report", "--json").returncode != 0
    ledger = html.unescape(served.fetch("/exchanges/ledger", token)[2])
    assert "Not verified" in ledger and "do not rely on these figures" in ledger
    assert "entry 2: entry missing" in ledger and 'id="full-read"' not in ledger


def test_an_auditor_looks_a_person_up_with_a_reason_and_it_is_audited(served: Served) -> None:
    ws, history = served.workspace, served.history
    token = served.token("auditor")
    before = last_entry(ws)[0]
    status, _, page = served.fetch(
        "/exchanges/subject", token, form={"subject": history.objector, "reason": " "}
    )
    assert status == 200 and "Enter why you are looking this person up" in page
    assert last_entry(ws)[0] == before  # no reason, no lookup

    cross_site = {"Origin": "https://elsewhere.example", "Sec-Fetch-Site": "cross-site"}
    form = {"subject": history.objector, "reason": "SAR-2026-042"}
    assert served.fetch("/exchanges/subject", token, form=form, headers=cross_site)[0] == 403

    status, _, page = served.fetch("/exchanges/subject", token, form=form)
    assert status == 200, page
    seq, event, body = last_entry(ws)
    assert event == "subject.looked_up" and figures(page)["seq"] == [str(seq)]
    assert body["reason"] == "SAR-2026-042" and body["outcome"] == "answered"
    assert body["requested_by"].startswith("auditor ")
    assert history.objector not in json.dumps(body)
    assert history.objector not in served.log.read_text()  # nor in the server's log
    done = exchange(
        ws,
        "audit",
        "subject",
        "--id-file",
        "-",
        "--format",
        "json",
        "--reason",
        "cmp",
        stdin=history.objector + "\n",
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert figures(page)["disclosures"] == [str(len(answers))] and len(answers) == 2


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)
def test_pages_in_chromium_are_accessible_and_load_nothing_from_elsewhere(served: Served) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    axe = AXE.read_text("utf-8")
    token = served.token("auditor")
    requested: list[str] = []
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context()
        context.add_cookies([{"name": "_token", "value": token, "url": served.url}])
        page = context.new_page()
        page.on("request", lambda r: requested.append(r.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        for path, name in PAGES.items():
            response = page.goto(served.url + path)
            assert response is not None and response.status == 200, path
            if name == "subject":
                page.fill("#subject", served.history.objector)
                page.fill("#reason", "SAR-2026-043")
                with page.expect_navigation():
                    page.click("button[type=submit]")
                assert page.locator("#answer").count() == 1, page.content()[-3000:]
            # Evaluated over DevTools, not as a page script: the page's CSP stays in force.
            page.evaluate(axe)
            result = page.evaluate(
                "axe.run(document, {runOnly: {type: 'tag', values: "
                "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})"
            )
            violations = [(v["id"], len(v["nodes"])) for v in result["violations"]]
            assert not violations, (path, violations)
            assert result["passes"], path  # axe did check something
            page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)
        browser.close()
    assert requested and all(u.startswith(served.url + "/") for u in requested), requested
    assert any(u.endswith("govuk-frontend.min.css") for u in requested)
    assert not problems, problems
    for name in PAGES.values():
        assert (ARTEFACTS / f"{name}.png").stat().st_size > 1000


def review_in(days: int) -> Any:
    """An edit setting the contract's review date `days` from today."""

    def edit(document: dict[str, Any]) -> None:
        for prop in document["customProperties"]:
            if prop["property"] == "reviewDate":
                prop["value"] = (dt.date.today() + dt.timedelta(days=days)).isoformat()

    return edit


@pytest.mark.parametrize(("days", "shown"), [(30, "due"), (60, "due"), (61, ""), (400, "")])
def test_the_register_highlights_a_review_due_within_60_days(
    workspace: Workspace, days: int, shown: str
) -> None:
    from exchange_airflow import data

    workspace.write_contract(review_in(days))
    today = dt.date.today()
    report = data.report(workspace.settings, today, today)  # an empty ledger
    (row,) = data.register(workspace.settings, today, report)
    assert row["approval"]["runnable"] and row["review"] == shown
    assert row["last_drop"] is None


def test_a_review_date_passed_is_overdue() -> None:
    from exchange_airflow import data

    today = dt.date(2026, 11, 28)
    assert data._review("2026-11-27", today) == "overdue"
    assert data._review("2026-11-28", today) == "due"
    assert data._review(None, today) == ""


def test_a_tarball_that_is_not_the_pinned_one_is_refused_before_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import vendor_frontend
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    version = vendor_frontend.PINS["govuk-frontend"][0]
    forged = tmp_path / f"govuk-frontend-{version}.tgz"
    with tarfile.open(forged, "w:gz") as tar:
        body = b"body { background: url(https://cdn.example/x.png) }"
        member = tarfile.TarInfo("package/dist/govuk/govuk-frontend.min.css")
        member.size = len(body)
        tar.addfile(member, io.BytesIO(body))
    monkeypatch.setattr(vendor_frontend, "CACHE", tmp_path)
    with pytest.raises(vendor_frontend.VendorError, match="is not the pinned"):
        vendor_frontend.tarball("govuk-frontend", offline=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [forged.name]  # nothing unpacked


def test_the_register_names_the_dag_that_dags_makes_for_an_agreement(workspace: Workspace) -> None:
    from exchange_airflow.app import dag_id

    sys.path.insert(0, str(ROOT / "dags"))
    try:
        import contract_outline
    finally:
        sys.path.remove(str(ROOT / "dags"))
    contract = load_contract(workspace.contract)
    assert contract_outline.outline(workspace.contract).dag_id == dag_id(contract.id)
