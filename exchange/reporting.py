"""Audit reports: what was shared, refused and went wrong in a period, from the ledger alone.

`build(entries, since, until)` turns ledger entries into a plain report; `to_json`, `to_csv`
and `to_html` render it. Which events are refusals, failures and security events, and how
severe each is, comes from the event registry (`exchange.audit.events`); every event in the
period is counted, including ones the report has no section for. The HTML page is
self-contained (inline CSS and SVG charts, no script, no external resource) so an auditor can
keep it with the evidence.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

from exchange.audit import Entry
from exchange.audit.events import RANK, Event, Outcome, Severity, lookup, with_outcome

REFUSALS = with_outcome(Outcome.REFUSAL)
PROBLEMS = REFUSALS | with_outcome(Outcome.FAILURE)  # the "Refusals and failures" section


@dataclass
class AgreementTotals:
    """One agreement's activity with one partner over the period."""

    agreement: str
    recipient: str
    transfers: int = 0
    rows_sent: int = 0
    rows_read: int = 0
    fields_shared: list[str] = field(default_factory=list)
    refusals: int = 0
    failures: int = 0


@dataclass
class Report:
    """Everything the period's ledger entries say."""

    since: str
    until: str
    agreements: list[AgreementTotals]
    transfers: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    refusals_by_reason: dict[str, int]
    rows_by_day: dict[str, dict[str, int]]  # day -> recipient -> rows sent
    security: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # per event: count, severity


def _security(entry: Entry, body: dict[str, Any]) -> bool:
    """True for an entry that records a security event (its body may say it does not)."""
    known = lookup(entry.event)
    return known is not None and known.security and bool(body.get("security_event", True))


def _counts(seen: Counter[str]) -> list[dict[str, Any]]:
    """Every event seen, most severe first, with what it means."""
    out = []
    for name, count in seen.items():
        known = lookup(name)
        severity = known.severity if known else Severity.NOTICE
        meaning = known.meaning if known else "not an event this gateway version writes"
        out.append({"event": name, "count": count, "severity": severity.value, "meaning": meaning})
    return sorted(out, key=lambda e: (-RANK[Severity(e["severity"])], e["event"]))


def build(
    entries: Iterable[Entry], since: dt.date, until: dt.date, agreement: str | None = None
) -> Report:
    """Summarise the entries recorded between two dates (inclusive)."""
    totals: dict[tuple[str, str], AgreementTotals] = {}
    transfers, problems, incidents, security = [], [], [], []
    reasons: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    by_day: dict[str, Counter[str]] = defaultdict(Counter)
    recipients: dict[str, str] = {}
    for entry in entries:
        day = entry.recorded_at[:10]
        if not since.isoformat() <= day <= until.isoformat():
            continue
        if agreement and entry.contract_id != agreement:
            continue
        body = entry.data
        contract = entry.contract_id or body.get("file", "?")
        seen[entry.event] += 1
        if _security(entry, body):
            security.append(
                {
                    "at": entry.recorded_at,
                    "event": entry.event,
                    "agreement": contract,
                    "run_id": entry.run_id,
                    "detail": body.get("reason") or body.get("error") or entry.event,
                }
            )
        if entry.event == Event.TRANSFER_SENT:
            recipient = body.get("recipient", "?")
            recipients[contract] = recipient
            item = totals.setdefault((contract, recipient), AgreementTotals(contract, recipient))
            item.transfers += 1
            item.rows_sent += body["rows"]["sent"]
            item.rows_read += body["rows"]["read"]
            item.fields_shared = sorted(set(item.fields_shared) | set(body["fields_sent"]))
            by_day[day][recipient] += body["rows"]["sent"]
            transfers.append(
                {
                    "at": entry.recorded_at,
                    "agreement": contract,
                    "recipient": recipient,
                    "run_id": entry.run_id,
                    "drop_id": body["drop_id"],
                    "rows_sent": body["rows"]["sent"],
                    "excluded": body["rows"]["excluded"],
                    "purposes": body.get("purposes", []),
                    "legal_basis": body.get("legal_basis"),
                    "fields": body["fields_sent"],
                    "payload_sha256": body["payload_sha256"],
                }
            )
        elif entry.event in PROBLEMS:
            reason = body.get("reason") or body.get("error") or entry.event
            if entry.event in REFUSALS:
                reasons[reason] += 1
            problems.append(
                {
                    "at": entry.recorded_at,
                    "event": entry.event,
                    "agreement": contract,
                    "run_id": entry.run_id,
                    "reason": reason,
                    "message": body.get("message", ""),
                }
            )
        elif entry.event == Event.INCIDENT:
            incidents.append(
                {
                    "at": entry.recorded_at,
                    "agreement": contract,
                    "kind": body.get("kind"),
                    "summary": body.get("summary"),
                }
            )
    for problem in problems:
        recipient = recipients.get(problem["agreement"], "")
        item = totals.setdefault(
            (problem["agreement"], recipient), AgreementTotals(problem["agreement"], recipient)
        )
        if problem["event"] in REFUSALS:
            item.refusals += 1
        else:
            item.failures += 1
    return Report(
        since.isoformat(),
        until.isoformat(),
        sorted(totals.values(), key=lambda t: (t.agreement, t.recipient)),
        transfers,
        problems,
        incidents,
        dict(reasons.most_common()),
        {day: dict(rows) for day, rows in sorted(by_day.items())},
        security,
        _counts(seen),
    )


def to_json(report: Report) -> str:
    """The report as JSON."""
    return json.dumps(asdict(report), indent=2, sort_keys=True) + "\n"


def to_csv(report: Report) -> str:
    """One row per transfer, refusal, failure, incident and other security event."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["at", "event", "agreement", "recipient", "run_id", "rows_sent", "detail"])
    for t in report.transfers:
        writer.writerow(
            [
                t["at"],
                "transfer.sent",
                t["agreement"],
                t["recipient"],
                t["run_id"],
                t["rows_sent"],
                ";".join(t["fields"]),
            ]
        )
    for p in report.problems:
        writer.writerow([p["at"], p["event"], p["agreement"], "", p["run_id"], "", p["reason"]])
    for i in report.incidents:
        writer.writerow([i["at"], "incident", i["agreement"], "", "", "", i["kind"]])
    for e in report.security:
        if e["event"] not in PROBLEMS:  # a security failure already has its row
            writer.writerow([e["at"], e["event"], e["agreement"], "", e["run_id"], "", e["detail"]])
    return out.getvalue()


def _bars(title: str, values: dict[str, int], colour: str) -> str:
    """A horizontal bar chart as inline SVG, with text a screen reader can read."""
    if not values:
        return f"<figure><figcaption>{escape(title)}</figcaption><p>None.</p></figure>"
    width, row, gutter = 760, 26, 320  # the gutter holds labels like "2026-11-25 Partner"
    top = max(values.values()) or 1
    parts = []
    for i, (label, value) in enumerate(values.items()):
        length = max(2, int((width - gutter - 80) * value / top))
        y = i * row
        parts.append(
            f'<text x="0" y="{y + 17}" font-size="13">{escape(label)}</text>'
            f'<rect x="{gutter}" y="{y + 4}" width="{length}" height="18" fill="{colour}">'
            f"<title>{escape(label)}: {value:,}</title></rect>"
            f'<text x="{gutter + 5 + length}" y="{y + 17}" font-size="13">{value:,}</text>'
        )
    height = row * len(values)
    return (
        f"<figure><figcaption>{escape(title)}</figcaption>"
        f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}'
        "</svg></figure>"
    )


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: Report) -> str:
    """A self-contained HTML page with tables and charts."""
    per_partner_rows: Counter[str] = Counter()
    per_partner_transfers: Counter[str] = Counter()
    for t in report.transfers:
        per_partner_rows[t["recipient"]] += t["rows_sent"]
        per_partner_transfers[t["recipient"]] += 1
    daily = {
        f"{day} {recipient}": rows
        for day, by in report.rows_by_day.items()
        for recipient, rows in by.items()
    }
    sections = [
        f"<h1>Data sharing audit report</h1><p>Period: {escape(report.since)} to "
        f"{escape(report.until)}. Built from the hash-chained audit ledger.</p>",
        "<h2>Agreements and partners</h2>",
        _table(
            [
                "Agreement",
                "Recipient",
                "Transfers",
                "Rows read",
                "Rows sent",
                "Fields shared",
                "Refusals",
                "Failures",
            ],
            [
                [
                    a.agreement,
                    a.recipient,
                    a.transfers,
                    a.rows_read,
                    a.rows_sent,
                    ", ".join(a.fields_shared),
                    a.refusals,
                    a.failures,
                ]
                for a in report.agreements
            ],
        ),
        "<h2>Charts</h2>",
        _bars("Transfers per partner", dict(per_partner_transfers), "#1d70b8"),
        _bars("Rows sent per partner", dict(per_partner_rows), "#00703c"),
        _bars("Rows sent per day and partner", daily, "#4c2c92"),
        _bars("Refusals by reason", report.refusals_by_reason, "#d4351c"),
        "<h2>Transfers</h2>",
        _table(
            ["When", "Agreement", "Recipient", "Run", "Rows sent", "Purposes", "Legal basis"],
            [
                [
                    t["at"],
                    t["agreement"],
                    t["recipient"],
                    t["run_id"],
                    t["rows_sent"],
                    ", ".join(t["purposes"]),
                    t["legal_basis"],
                ]
                for t in report.transfers
            ],
        ),
        "<h2>Refusals and failures</h2>",
        _table(
            ["When", "Event", "Agreement", "Run", "Reason", "Message"],
            [
                [p["at"], p["event"], p["agreement"], p["run_id"], p["reason"], p["message"]]
                for p in report.problems
            ],
        ),
        "<h2>Incidents</h2>",
        _table(
            ["When", "Agreement", "Kind", "Summary"],
            [[i["at"], i["agreement"], i["kind"], i["summary"]] for i in report.incidents],
        ),
        "<h2>Security events</h2>",
        _table(
            ["When", "Event", "Agreement", "Run", "Detail"],
            [
                [e["at"], e["event"], e["agreement"], e["run_id"], e["detail"]]
                for e in report.security
            ],
        ),
        "<h2>Every event in the period</h2>",
        _table(
            ["Event", "Count", "Severity", "Meaning"],
            [[e["event"], e["count"], e["severity"], e["meaning"]] for e in report.events],
        ),
    ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2rem;max-width:75rem;color:#0b0c0c}"
        "table{border-collapse:collapse;margin:1rem 0;width:100%}"
        "th,td{border:1px solid #b1b4b6;padding:.3rem .5rem;text-align:left;font-size:.9rem}"
        "th{background:#f3f2f1}figure{margin:1rem 0}figcaption{font-weight:bold}"
    )
    return (
        '<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">'
        f"<title>Audit report {escape(report.since)} to {escape(report.until)}</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )
