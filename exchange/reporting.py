"""Audit reports: what was shared, refused and went wrong in a period, from the ledger alone.

`build(entries, since, until)` turns ledger entries into a plain report (`Fold` does the same
one entry at a time, for a caller that adds only new entries); `attest` adds what
makes it evidence (the ledger checked, its head, its latest signed checkpoint, the entries
covered); `to_text`, `to_json`, `to_csv` and `to_html` render it. Which events are
refusals, failures and security events, and how severe each is, comes from the event
registry (`exchange.audit.events`); every event in the period is counted, including ones the
report has no section for. The HTML page is self-contained (inline CSS and SVG charts, no
script, no external resource) so an auditor can keep it with the evidence.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from html import escape
from typing import TYPE_CHECKING, Any

from exchange.audit import Entry, witness
from exchange.audit.events import RANK, Event, Outcome, Severity, lookup, with_outcome
from exchange.contract import legal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from exchange.audit import Ledger, Verification

FORMAT = "exchange-audit-report/2"  # the JSON form's `format`: raised when its shape changes

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
    objections_overridden: int = 0
    override_powers: list[str] = field(default_factory=list)  # "Act s.N (what it provides)"
    drops: list[dict[str, Any]] = field(default_factory=list)  # delivered, with their ack
    refused: list[dict[str, Any]] = field(default_factory=list)  # each refusal and its reason
    failed: list[dict[str, Any]] = field(default_factory=list)
    acknowledged: int = 0  # drops of this period acknowledged (verified) by the partner
    unacknowledged: list[str] = field(default_factory=list)  # their drop ids
    acks_overdue: int = 0
    governance: list[dict[str, Any]] = field(default_factory=list)  # approved, suspended, resumed
    destroyed: list[dict[str, Any]] = field(default_factory=list)  # verified receipts, per drop
    destruction_overdue: list[dict[str, Any]] = field(default_factory=list)  # no receipt by due
    # Counts and drop ids: sent, acknowledged, destroyed, overdue (no destruction receipt).
    lifecycle: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    witnesses: list[dict[str, Any]] = field(default_factory=list)  # largest cosigned, per key
    witness_refusals: list[dict[str, Any]] = field(default_factory=list)  # witness.refused
    agreement: str | None = None  # the one agreement asked for, if any
    covered: dict[str, Any] = field(default_factory=dict)  # the entries read: first, last
    evidence: dict[str, Any] = field(default_factory=dict)  # set by `attest`
    format: str = FORMAT


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


GOVERNANCE = {
    Event.CONTRACT_APPROVED.value: "approved",
    Event.CONTRACT_SUSPENDED.value: "suspended",
    Event.CONTRACT_RESUMED.value: "resumed",
}
ACKS = frozenset({Event.ACK_RECEIVED.value, Event.ACK_OVERDUE.value})
# A drop's fate at the partner is read up to the report's head, not only in the period: a drop
# sent in the period may be acknowledged, destroyed or become overdue long after it.
FATE = frozenset(
    {
        Event.ACK_RECEIVED.value,
        Event.ACK_OVERDUE.value,
        Event.DESTRUCTION_RECEIVED.value,
        Event.DESTRUCTION_OVERDUE.value,
    }
)


def override_powers(legal_basis: str) -> list[str]:
    """The powers in a one-line legal basis (as the ledger records it) that can override a
    person's objection, with what each provides: "Care Act 2014 s.42 (Enquiry by ...)"."""
    named = {part.strip() for part in str(legal_basis).split(";")}
    return [
        f"{p.act} {p.section} ({p.description})"
        for p in legal.STATUTES
        if p.overrides_objection and f"{p.act} {p.section}" in named
    ]


def _governance(entry: Entry, body: dict[str, Any]) -> dict[str, Any]:
    """An approval, suspension or resume: who, when, and what it says."""
    given = body.get("statement")
    statement: dict[str, Any] = given if isinstance(given, dict) else {}
    item = {
        "seq": entry.seq,
        "at": entry.recorded_at,
        "action": GOVERNANCE[entry.event],
        "by": body.get("approver") or "",
    }
    if entry.event == Event.CONTRACT_APPROVED:
        item |= {"version": body.get("version"), "review_by": body.get("review_by")}
    elif entry.event == Event.CONTRACT_SUSPENDED:
        item["reason"] = statement.get("reason") or body.get("reason") or ""
    return item


@dataclass
class _Folded:
    """What `Fold` has gathered so far: the period's items, and every drop's fate."""

    totals: dict[tuple[str, str], AgreementTotals] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    security: list[dict[str, Any]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    by_day: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    recipients: dict[str, str] = field(default_factory=dict)
    governance: defaultdict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # Kept for every drop in the ledger's history, so only what a report reads: a drop's
    # newest ack's rows_match, and the largest cosignature per partner key.
    acked: dict[str, bool] = field(default_factory=dict)  # drop -> newest ack's rows_match
    overdue: set[str] = field(default_factory=set)
    destroyed: dict[str, dict[str, Any]] = field(default_factory=dict)  # drop -> receipt
    destruction_due: dict[str, dict[str, Any]] = field(default_factory=dict)  # drop -> overdue
    cosigning: dict[str, witness.Cosigned] = field(default_factory=dict)  # largest, per key
    refusals: list[dict[str, Any]] = field(default_factory=list)
    first: Entry | None = None
    last: Entry | None = None

    def owned(self) -> _Folded:
        """A copy whose lists, the dicts and totals in them and the lists and dicts in those,
        a report may change: what finishing a report changes, and what its reader holds."""
        return replace(
            self,
            totals={key: _owned(item) for key, item in self.totals.items()},
            transfers=[_own(item) for item in self.transfers],
            problems=[_own(item) for item in self.problems],
            incidents=[_own(item) for item in self.incidents],
            security=[_own(item) for item in self.security],
            refusals=[_own(item) for item in self.refusals],
        )


def _owned(item: AgreementTotals) -> AgreementTotals:
    """A copy of one agreement's totals, its lists and their dicts its own."""
    own: dict[str, Any] = {
        f.name: [_own(x) if isinstance(x, dict) else x for x in value]
        for f in fields(item)
        if isinstance(value := getattr(item, f.name), list)
    }
    return replace(item, **own)


def _own(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of a report's row, with its own lists and dicts (a transfer's fields, purposes
    and exclusions); what they hold is text and numbers."""
    return {
        k: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
        for k, v in item.items()
    }


class Fold:
    """`build`, one entry at a time: `add` the entries in ledger order, `report` at any point.

    `report` leaves the fold as it was, so a caller that keeps it (the Exchanges view) adds
    only the entries appended since and gets what `build` over all of them would give.
    """

    def __init__(self, since: dt.date, until: dt.date, agreement: str | None = None) -> None:
        self.since, self.until, self.agreement = since, until, agreement
        self._first_day, self._last_day = since.isoformat(), until.isoformat()
        self._got = _Folded()
        self.size, self.head = 0, ""  # the number and hash of the last entry added

    def add(self, entry: Entry) -> None:
        """Take one more entry, the one after the last added."""
        got, agreement = self._got, self.agreement
        self.size, self.head = entry.seq, entry.entry_hash
        day = entry.recorded_at[:10]
        if entry.event in FATE and not (agreement and entry.contract_id != agreement):
            _fate(entry, got.acked, got.overdue, got.destroyed, got.destruction_due, got.cosigning)
        if not self._first_day <= day <= self._last_day:
            return
        got.first = got.first or entry
        got.last = entry
        if agreement and entry.contract_id != agreement:
            return
        body = entry.data
        contract = entry.contract_id or body.get("file", "?")
        got.seen[entry.event] += 1
        if _security(entry, body):
            got.security.append(
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
            got.recipients[contract] = recipient
            key = (contract, recipient)
            item = got.totals.setdefault(key, AgreementTotals(contract, recipient))
            rows = body["rows"]
            overridden = int(rows.get("objections_overridden") or 0)
            item.transfers += 1
            item.rows_sent += rows["sent"]
            item.rows_read += rows["read"]
            item.objections_overridden += overridden
            if overridden:
                powers = override_powers(body.get("legal_basis", ""))
                item.override_powers = sorted(set(item.override_powers) | set(powers))
            item.fields_shared = sorted(set(item.fields_shared) | set(body["fields_sent"]))
            item.drops.append(
                {
                    "seq": entry.seq,
                    "at": entry.recorded_at,
                    "drop_id": body["drop_id"],
                    "run_id": entry.run_id,
                    "version": body.get("version"),
                    "contract_sha256": body.get("sha256"),
                    "rows_read": rows["read"],
                    "rows_sent": rows["sent"],
                    "objections_overridden": overridden,
                    "acknowledged": False,
                }
            )
            got.by_day[day][recipient] += rows["sent"]
            got.transfers.append(
                {
                    "at": entry.recorded_at,
                    "agreement": contract,
                    "recipient": recipient,
                    "run_id": entry.run_id,
                    "drop_id": body["drop_id"],
                    "rows_sent": rows["sent"],
                    "excluded": rows["excluded"],
                    "objections_overridden": overridden,
                    "purposes": body.get("purposes", []),
                    "legal_basis": body.get("legal_basis"),
                    "fields": body["fields_sent"],
                    "payload_sha256": body["payload_sha256"],
                }
            )
        elif entry.event in PROBLEMS:
            reason = body.get("reason") or body.get("error") or entry.event
            if entry.event in REFUSALS:
                got.reasons[reason] += 1
            got.problems.append(
                {
                    "seq": entry.seq,
                    "at": entry.recorded_at,
                    "event": entry.event,
                    "agreement": contract,
                    "run_id": entry.run_id,
                    "reason": reason,
                    "message": body.get("message", ""),
                }
            )
        elif entry.event == Event.INCIDENT:
            got.incidents.append(
                {
                    "at": entry.recorded_at,
                    "agreement": contract,
                    "kind": body.get("kind"),
                    "summary": body.get("summary"),
                }
            )
        elif entry.event in GOVERNANCE:
            got.governance[contract].append(_governance(entry, body))
        elif entry.event == Event.WITNESS_REFUSED:
            got.refusals.append(
                {
                    "seq": entry.seq,
                    "at": entry.recorded_at,
                    "agreement": contract,
                    "drop_id": body.get("drop_id"),
                    "key_id": body.get("key_id"),
                    "held_size": body.get("held_size"),
                    "offered_size": body.get("offered_size"),
                }
            )

    def report(self, *, keep: bool = True) -> Report:
        """The report of the entries added so far; with `keep` (the default) the fold can
        take more entries afterwards, and the report shares nothing with it."""
        got = self._got.owned() if keep else self._got
        totals = got.totals

        def row(contract: str) -> AgreementTotals:
            recipient = got.recipients.get(contract, "")
            return totals.setdefault((contract, recipient), AgreementTotals(contract, recipient))

        for problem in got.problems:
            item = row(problem["agreement"])
            shown = {k: problem[k] for k in ("seq", "at", "run_id", "reason", "message")}
            if problem["event"] in REFUSALS:
                item.refusals += 1
                item.refused.append(shown)
            else:
                item.failures += 1
                item.failed.append({**shown, "event": problem["event"]})
        for contract, acts in got.governance.items():
            row(contract).governance = [dict(act) for act in acts]
        for item in totals.values():
            for drop in item.drops:
                rows_match = got.acked.get(drop["drop_id"])
                if rows_match is not None:
                    drop["acknowledged"] = True
                    drop["ack_rows_match"] = rows_match
                    item.acknowledged += 1
                else:
                    item.unacknowledged.append(drop["drop_id"])
                item.acks_overdue += drop["drop_id"] in got.overdue
                _destruction(item, drop, got.destroyed, got.destruction_due)
            item.lifecycle = _lifecycle(item)
        covered: dict[str, Any] = {"entries": 0}
        first, last = got.first, got.last
        if first is not None and last is not None:
            covered = {
                "entries": last.seq - first.seq + 1,
                "first": {"seq": first.seq, "at": first.recorded_at},
                "last": {"seq": last.seq, "at": last.recorded_at},
            }
        return Report(
            self.since.isoformat(),
            self.until.isoformat(),
            sorted(totals.values(), key=lambda t: (t.agreement, t.recipient)),
            got.transfers,
            got.problems,
            got.incidents,
            dict(got.reasons.most_common()),
            {day: dict(rows) for day, rows in sorted(got.by_day.items())},
            got.security,
            _counts(got.seen),
            witnesses=[asdict(c) for c in witness.ranked(got.cosigning)],
            witness_refusals=got.refusals,
            agreement=self.agreement,
            covered=covered,
        )


def build(
    entries: Iterable[Entry], since: dt.date, until: dt.date, agreement: str | None = None
) -> Report:
    """Summarise the entries recorded between two dates (inclusive)."""
    fold = Fold(since, until, agreement)
    for entry in entries:
        fold.add(entry)
    return fold.report(keep=False)


def _fate(
    entry: Entry,
    acked: dict[str, bool],
    overdue: set[str],
    destroyed: dict[str, dict[str, Any]],
    due: dict[str, dict[str, Any]],
    cosigning: dict[str, witness.Cosigned],
) -> None:
    """Note an acknowledgement (and its cosignature), a destruction receipt or an overdue
    flag."""
    body = entry.data
    drop_id = str(body.get("drop_id"))
    if entry.event == Event.ACK_RECEIVED:
        acked[drop_id] = bool(body.get("rows_match"))
        witness.keep_largest(cosigning, entry)
    elif entry.event == Event.ACK_OVERDUE:
        overdue.add(drop_id)
    elif entry.event == Event.DESTRUCTION_RECEIVED:  # recorded only once its signature verified
        destroyed[drop_id] = {
            "drop_id": drop_id,
            "destroyed_at": body.get("destroyed_at"),
            "key_id": body.get("key_id"),
            "deleted": [
                f"{d.get('what')} {d.get('status')}"
                for d in body.get("deleted") or []
                if isinstance(d, dict)
            ],
            "recorded_at": entry.recorded_at,
            "seq": entry.seq,
        }
    elif entry.event == Event.DESTRUCTION_OVERDUE:
        due[drop_id] = {"drop_id": drop_id, "due": body.get("due"), "seq": entry.seq}


def _destruction(
    item: AgreementTotals,
    drop: dict[str, Any],
    destroyed: dict[str, dict[str, Any]],
    due: dict[str, dict[str, Any]],
) -> None:
    """Mark a drop destroyed (its receipt verified) or overdue (flagged, and still no receipt:
    a receipt that arrives late settles it)."""
    receipt = destroyed.get(drop["drop_id"])
    drop["destroyed_at"] = receipt["destroyed_at"] if receipt else None
    drop["destruction_overdue"] = receipt is None and drop["drop_id"] in due
    if receipt is not None:
        item.destroyed.append(dict(receipt))
    elif drop["drop_id"] in due:
        item.destruction_overdue.append(dict(due[drop["drop_id"]]))


def _lifecycle(item: AgreementTotals) -> dict[str, dict[str, Any]]:
    """Counts and drop ids of the drops sent, acknowledged, destroyed and overdue."""
    ids = {
        "sent": [d["drop_id"] for d in item.drops],
        "acknowledged": [d["drop_id"] for d in item.drops if d["acknowledged"]],
        "destroyed": [d["drop_id"] for d in item.destroyed],
        "overdue": [d["drop_id"] for d in item.destruction_overdue],
    }
    return {name: {"count": len(drops), "drops": drops} for name, drops in ids.items()}


def attest(
    report: Report,
    ledger: Ledger,
    verified: Verification,
    *,
    where: str,
    head: tuple[int, str],
    public_key: Ed25519PublicKey | None = None,
    made_by: str = "",
    made_at: dt.datetime | None = None,
    problem: str = "",
) -> None:
    """Add what makes the report evidence: which ledger, whether it verified (`verified`, the
    result of `Ledger.verify` run for this report; `problem`, a diagnosis that replaces its
    message), its head when the report was made and its newest signed checkpoint."""
    if public_key is not None:
        newest = ledger.latest_checkpoint(public_key)
        signature = "verified with the gateway's public key" if newest else ""
    else:
        stored = ledger.checkpoints()
        newest = max(stored, key=lambda c: c.size) if stored else None
        signature = "NOT checked (no public key given)"
    report.evidence = {
        "ledger": where,
        "made_at": (made_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "made_by": made_by,
        "head": {"seq": head[0], "hash": head[1]},
        "verification": {
            "ok": verified.ok and not problem,
            "message": problem or verified.message,
            "entries_verified": verified.entries,
            "signed_size": verified.signed_size,
            "signatures_checked": verified.signatures_checked,
        },
        "checkpoint": (
            {
                "size": newest.size,
                "root": newest.root_hex,
                "origin": newest.origin,
                "signed_at": newest.created_at,
                "signature": signature,
                "note": newest.note,
            }
            if newest
            else None
        ),
    }


def _heading(text: str, underline: str = "-") -> list[str]:
    return ["", text, underline * len(text)]


def _evidence_lines(report: Report) -> list[str]:
    e = report.evidence
    out = [f"Ledger: {e.get('ledger', 'not named')}"]
    if e:
        out.append(f"Made at {e['made_at']} by {e['made_by'] or 'unknown'}")
    out += _heading("Does the ledger verify?")
    if not e:
        out.append("Not checked: this report was built from entries alone.")
    else:
        v = e["verification"]
        out.append(("OK: " if v["ok"] else "FAILED: ") + v["message"])
        if not v["signatures_checked"]:
            out.append("Checkpoint signatures were NOT checked: give --public-key.")
    out += _heading("Entries this report covers")
    c = report.covered
    if c.get("entries"):
        out.append(
            f"Entries {c['first']['seq']} to {c['last']['seq']} ({c['entries']} entries), "
            f"recorded from {c['first']['at']} to {c['last']['at']}"
        )
    else:
        out.append("No entry was recorded in the period.")
    if e:
        out += _heading("Ledger head when the report was made")
        out.append(f"Entry {e['head']['seq']}, hash {e['head']['hash']}")
        out += _heading("Latest signed checkpoint")
        cp = e["checkpoint"]
        if cp is None:
            out.append("None found (none stored, or none whose signature verifies).")
        else:
            out.append(
                f"Entries 1 to {cp['size']}, root {cp['root']}, log {cp['origin']}, "
                f"signed {cp['signed_at'] or 'at an unrecorded time'}; signature {cp['signature']}"
            )
            out += ["", *("    " + line for line in cp["note"].rstrip("\n").splitlines())]
    return out


def _agreement_lines(a: AgreementTotals) -> list[str]:
    to = f", to {a.recipient}" if a.recipient else ""
    out = _heading(f"Agreement {a.agreement}{to}")
    out.append(
        f"Drops delivered: {a.transfers} ({a.rows_sent:,} rows sent of {a.rows_read:,} read)"
    )
    for d in a.drops:
        ack = "acknowledged" if d["acknowledged"] else "not acknowledged"
        if d.get("destroyed_at"):
            ack += ", destroyed"
        elif d.get("destruction_overdue"):
            ack += ", destruction overdue"
        out.append(
            f"  {d['at']}  drop {d['drop_id']}  run {d['run_id']}  version {d['version']} "
            f"(contract {str(d['contract_sha256'])[:12]})  "
            f"{d['rows_sent']:,} rows sent  {d['objections_overridden']:,} objections "
            f"overridden  {ack}  (entry {d['seq']})"
        )
    out.append(f"Refusals: {a.refusals}")
    out += [
        f"  {r['at']}  run {r['run_id']}  {r['reason']}: {r['message'] or '-'}  (entry {r['seq']})"
        for r in a.refused
    ]
    out.append(f"Failures: {a.failures}")
    out += [
        f"  {f['at']}  run {f['run_id']}  {f['event']} {f['reason']}: {f['message'] or '-'}  "
        f"(entry {f['seq']})"
        for f in a.failed
    ]
    out.append(
        f"Acknowledgements: {a.acknowledged} of {a.transfers} drops acknowledged by the "
        f"partner; {a.acks_overdue} past their deadline"
    )
    if a.unacknowledged:
        out.append(f"  not acknowledged: {', '.join(a.unacknowledged)}")
    out.append(
        f"Destroyed at the partner: {len(a.destroyed)} of {a.transfers} drops (a verified "
        f"destruction receipt); {len(a.destruction_overdue)} overdue (past retention plus "
        "grace with no receipt)"
    )
    out += [
        f"  drop {r['drop_id']} destroyed at {r['destroyed_at']} by key {r['key_id']} "
        f"({', '.join(r['deleted']) or 'nothing listed'}; entry {r['seq']})"
        for r in a.destroyed
    ]
    out += [
        f"  drop {o['drop_id']} overdue: no receipt by {o['due']} (entry {o['seq']})"
        for o in a.destruction_overdue
    ]
    out.append(f"Objections overridden: {a.objections_overridden:,}")
    if a.objections_overridden:
        powers = "; ".join(a.override_powers) or "no listed power found in the legal basis"
        out.append(f"  under {powers}")
    out.append(f"Approvals, suspensions and resumes: {len(a.governance)}")
    for g in a.governance:
        detail = ""
        if g["action"] == "approved":
            detail = f" version {g['version']}, review by {g['review_by']}"
        elif g["action"] == "suspended":
            detail = f"; reason: {g['reason']}"
        out.append(f"  {g['at']}  {g['action']} by {g['by'] or '?'}{detail}  (entry {g['seq']})")
    return out


def _witness_lines(report: Report) -> list[str]:
    out = _heading("Partners as witnesses (largest ledger size each has cosigned)")
    out += [
        f"  {w['witness']} (key {w['key_id']}, {w['contract_id']}): {w['size']} entries, "
        f"cosigned {w['at']}"
        for w in report.witnesses
    ] or ["  No partner has cosigned a checkpoint."]
    out += _heading(f"Drops refused by a partner as witness: {len(report.witness_refusals)}")
    out += [
        f"  {r['at']}  {r['agreement']}  drop {r['drop_id']} by key {r['key_id']}: it had "
        f"seen {r['held_size']} entries, was offered {r['offered_size']} (entry {r['seq']})"
        for r in report.witness_refusals
    ]
    return out


def to_text(report: Report) -> str:
    """The report as plain text, stable enough to file: one section per agreement."""
    scope = f"agreement {report.agreement}" if report.agreement else "every agreement"
    out = ["Data sharing audit report", "=" * 25]
    out.append(f"Period: {report.since} to {report.until} (UTC days), {scope}")
    out += _evidence_lines(report)
    for agreement in report.agreements:
        out += _agreement_lines(agreement)
    if not report.agreements:
        out += [*_heading("Agreements"), "No agreement had activity in the period."]
    out += _witness_lines(report)
    out += _heading(f"Incidents: {len(report.incidents)}")
    out += [f"  {i['at']}  {i['agreement']}  {i['kind']}: {i['summary']}" for i in report.incidents]
    out += _heading(f"Security events: {len(report.security)}")
    out += [f"  {e['at']}  {e['agreement']}  {e['event']}: {e['detail']}" for e in report.security]
    out += _heading("Every event in the period")
    out += [
        f"  {e['count']:>6}  {e['event']} ({e['severity']}): {e['meaning']}" for e in report.events
    ]
    return "\n".join(out) + "\n"


def to_json(report: Report) -> str:
    """The report as JSON."""
    return json.dumps(asdict(report), indent=2, sort_keys=True) + "\n"


def to_csv(report: Report) -> str:
    """One row per transfer, refusal, failure, incident, approval, suspension, resume and other
    security event."""
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
    names = {action: event for event, action in GOVERNANCE.items()}
    for a in report.agreements:
        for g in a.governance:
            detail = g.get("reason") or g.get("version") or ""
            writer.writerow([g["at"], names[g["action"]], a.agreement, "", "", "", detail])
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
        "<h2>The ledger this report is built from</h2>",
        f"<pre>{escape(chr(10).join(_evidence_lines(report)))}</pre>",
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
        "<h2>Each agreement in detail</h2>",
        *(
            f"<pre>{escape(chr(10).join(_agreement_lines(a)).strip())}</pre>"
            for a in report.agreements
        ),
        "<h2>Partners as witnesses</h2>",
        f"<pre>{escape(chr(10).join(_witness_lines(report)).strip())}</pre>",
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
        "pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f2f1;padding:.5rem}"
    )
    return (
        '<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">'
        f"<title>Audit report {escape(report.since)} to {escape(report.until)}</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )
