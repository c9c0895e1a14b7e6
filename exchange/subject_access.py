"""Subject access answers: every disclosure about one person, in words fit to send to them.

`describe` takes the disclosures `Disclosures.verified_lookup` found and adds, per delivered
drop, what a subject access response states: the recipient and its contact, the purpose and
legal basis in words, the fields sent and what was done to each, the agreement's retention, and
what became of an objection. The words come from the agreement (`exchange.contract.render`),
read as it was approved when the drop was sent (the approved copy kept beside the contracts,
`approved/ID/SHA256.yaml`), else from the current file with a note, else from the ledger's own
one-line facts. `to_text` lays the answer out as a letter; the JSON form is `describe`'s list.

The ledger counts each drop's overridden objections but not whose they were; the objection
paragraph says exactly what follows from that (see `_objection`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.audit import Disclosure, Entry, Ledger
from exchange.audit.events import Event
from exchange.contract import Contract, load_contract
from exchange.contract import render as words
from exchange.contract.vocabulary import PURPOSES
from exchange.errors import ExchangeError
from exchange.manifest import DESTRUCTION_GRACE_DAYS
from exchange.reporting import override_powers

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from exchange.approval import Governance
    from exchange.settings import Settings

APPROVED_DIR = "approved"  # where approvals keep each approved version (exchange.approval)


@dataclasses.dataclass(frozen=True)
class Terms:
    """The agreement a drop was sent under, as far as it can be found."""

    contract: Contract | None
    exact: bool  # the very content the drop was sent under (same SHA-256)
    note: str  # for the reader when not exact


def _load(path: Path, contract_id: str) -> Contract | None:
    try:
        contract = load_contract(path)
    except (ExchangeError, OSError):
        return None  # a file that does not load is no source of words
    return contract if contract.id == contract_id else None


def find_terms(contracts: Path, contract_id: str, version: str, sha256: str | None) -> Terms:
    """The agreement as sent (its approved copy, or the current file if unchanged since), else
    the current file with a note saying it is a later version, else nothing."""
    if sha256:
        kept = contracts / APPROVED_DIR / contract_id / f"{sha256}.yaml"
        found = _load(kept, contract_id) if kept.is_file() else None
        if found is not None and found.sha256 == sha256:
            return Terms(found, True, "")
    candidates = [contracts / f"{contract_id}.yaml", *sorted(contracts.glob("*.y*ml"))]
    current = next((c for p in candidates if p.is_file() and (c := _load(p, contract_id))), None)
    if current is None:
        return Terms(None, False, f"the agreement {contract_id} was not found in {contracts}")
    if sha256 and current.sha256 == sha256:
        return Terms(current, True, "")
    return Terms(
        current,
        False,
        f"worded from version {current.version} of the agreement, which differs from the "
        f"version {version} this was sent under",
    )


def _sent_entry(ledger: Ledger, found: Disclosure) -> dict[str, Any]:
    """The drop's transfer.sent body (what the ledger binds), or {} if there is none."""
    if not found.run_id:
        return {}
    entry = ledger.find(Event.TRANSFER_SENT, run_id=found.run_id, contract_id=found.contract_id)
    body = entry.data if entry is not None else {}
    return body if body.get("drop_id") == found.drop_id else {}


def _acknowledged(ledger: Ledger, found: Disclosure) -> str | None:
    """When the recipient's signed acknowledgement of the drop was recorded, if it was."""
    entry = _found(ledger, Event.ACK_RECEIVED, found)
    return entry.recorded_at if entry is not None else None


def _found(ledger: Ledger, event: Event, found: Disclosure) -> Entry | None:
    """The drop's newest entry of an event (recorded under its run), if any."""
    if not found.run_id:
        return None
    entry = ledger.find(event, run_id=found.run_id, contract_id=found.contract_id)
    return entry if entry is not None and entry.data.get("drop_id") == found.drop_id else None


def _deletion(
    ledger: Ledger, found: Disclosure, contract: Contract | None, now: dt.datetime
) -> dict[str, Any]:
    """Whether the recipient has confirmed deleting the drop (a verified destruction receipt
    in the ledger), or when it must, as the gateway reckons it: sent + retention + grace."""
    receipt = _found(ledger, Event.DESTRUCTION_RECEIVED, found)
    flagged = _found(ledger, Event.DESTRUCTION_OVERDUE, found)
    due: dt.datetime | None = None
    if (
        contract is not None
        and found.sent_at
        and contract.retention_action == "delete"
        and contract.retention_days is not None
    ):
        days = contract.retention_days + DESTRUCTION_GRACE_DAYS
        due = found.sent_at.astimezone(dt.UTC) + dt.timedelta(days=days)
    if flagged is not None and flagged.data.get("due"):
        due = dt.datetime.fromisoformat(str(flagged.data["due"]))
    out: dict[str, Any] = {
        "confirmed_at": None,
        "receipt_entry": None,
        "due": due.isoformat(timespec="seconds") if due else None,
    }
    if receipt is not None:
        when = str(receipt.data.get("destroyed_at"))
        return out | {
            "status": "confirmed",
            "confirmed_at": when,
            "receipt_entry": receipt.seq,
            "words": f"The recipient confirmed deleting it on {_when(when)} (a signed "
            "confirmation, checked by the gateway).",
        }
    if flagged is not None or (due is not None and due <= now):
        return out | {
            "status": "overdue",
            "words": "The recipient should have confirmed deleting it"
            + (f" by {_when(out['due'])}" if out["due"] else "")
            + " and has not: this is recorded as overdue.",
        }
    if due is not None:
        return out | {
            "status": "due",
            "words": f"Not deleted yet; the recipient must delete it when its retention ends "
            f"and confirm by {_when(out['due'])}.",
        }
    return out | {
        "status": "not-tracked",
        "words": "The agreement does not ask the recipient to confirm deletion: ask the "
        "contact below.",
    }


def _party(party: dict[str, Any]) -> str:
    return party["organisation"] + (f", {party['department']}" if party["department"] else "")


def _statute(s: dict[str, Any]) -> str:
    what = s["title"] or s["description"]
    return f"{s['act']} {s['section']}" + (f" ({what})" if what else "")


def _basis(basis: dict[str, Any]) -> list[str]:
    """Each part of the legal basis in words, as the agreement cites it."""
    out = [_statute(s) for s in basis["statutes"]]
    a6 = basis["article6"]
    out.append(f"UK GDPR Article {a6['code']}: {a6['label'] or 'a condition not on our list'}")
    for a9 in basis["article9_conditions"]:
        out.append(f"UK GDPR Article {a9['code']}: {a9['wording'] or a9['label'] or ''}".rstrip())
    for s1 in basis["schedule1_conditions"]:
        out.append(f"Data Protection Act 2018, Schedule 1, {s1['code']}")
    return out


def _objection(
    overrides: bool, powers: Sequence[str], justification: str | None, count: int | None
) -> dict[str, Any]:
    """What the person can be told about an objection, from the agreement and the drop's count.

    Someone in a drop was either not objecting when it was made, or objecting and overridden:
    an agreement that does not override leaves every recorded objection out. So a drop with no
    overridden objection proves theirs was not recorded; a drop with some cannot say whose."""
    if not overrides:
        return {
            "agreement_overrides": False,
            "powers": [],
            "justification": None,
            "overridden_in_this_delivery": count,
            "yours": "not-overridden",
            "words": "This agreement does not override objections: everyone whose objection "
            "is recorded is left out. So no objection from you was recorded when this was sent.",
        }
    under = "; ".join(powers) or "its legal basis"
    why = f" The agreement's reason: {justification}" if justification else ""
    if count == 0:
        yours = "not-overridden"
        text = (
            f"This agreement allows an objection to be overridden under {under}, but no "
            "objection was overridden in this delivery: no objection from you was recorded "
            "when this was sent."
        )
    else:
        yours = "overridden-if-recorded"
        if count is None:
            counted = "objections may have been"
        elif count == 1:
            counted = "1 person's objection was"
        else:
            counted = f"{count} people's objections were"
        text = (
            f"If you had objected and your objection was recorded when this was sent, it was "
            f"overridden: this agreement allows that under {under}, and {counted} overridden in "
            "this delivery. The gateway counts overridden objections but does not record whose, "
            f"so the provider's own record of your objection says whether yours was one.{why}"
        )
    return {
        "agreement_overrides": True,
        "powers": list(powers),
        "justification": justification,
        "overridden_in_this_delivery": count,
        "yours": yours,
        "words": text,
    }


def _rows(sent: dict[str, Any]) -> int | None:
    rows = sent.get("rows")
    if not isinstance(rows, dict):
        return None
    return int(rows.get("objections_overridden") or 0)


def describe(
    found: Sequence[Disclosure],
    ledger: Ledger,
    contracts: Path,
    *,
    today: dt.date,
    governance: Governance | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Each disclosure with what a subject access response says about it (JSON-ready).

    `governance` only spares the agreement's summary from loading the trust anchor again;
    `now` (default: the current time) decides whether a deletion is overdue."""
    now = now or dt.datetime.now(dt.UTC)
    answers = []
    cache: dict[tuple[str, str, str | None], Terms] = {}  # most drops share a few versions
    for d in found:
        sent = _sent_entry(ledger, d)
        known = (d.contract_id, d.contract_version, sent.get("sha256"))
        terms = cache.get(known) or cache.setdefault(known, find_terms(contracts, *known))
        count = _rows(sent)
        base = {
            **dataclasses.asdict(d),
            "sent_at": d.sent_at.isoformat() if d.sent_at else None,
            "contract_sha256": sent.get("sha256"),
            "acknowledged_at": _acknowledged(ledger, d),
            "terms_as_sent": terms.exact,
            "terms_note": terms.note,
        }
        if terms.contract is None:
            powers = override_powers(d.legal_basis)
            base |= {
                "deletion": _deletion(ledger, d, None, now),
                "recipient_department": None,
                "recipient_contact": None,
                "provider": sent.get("provider"),
                "purpose": None,
                "purpose_labels": [PURPOSES.get(p, p) for p in d.purposes],
                "legal_basis_words": [p.strip() for p in d.legal_basis.split(";")],
                "fields_described": [{"name": f, "done": None} for f in d.fields],
                "retention": None,
                "rights_contact": None,
                "objection": _objection(bool(powers) and bool(count), powers, None, count),
            }
            answers.append(base)
            continue
        contract = terms.contract
        s = words.summary(contract, today=today, governance=governance)
        recipient, provider = s["parties"]["recipient"], s["parties"]["provider"]
        powers = [_statute(st) for st in s["legal_basis"]["statutes"] if st["overrides_objection"]]
        base |= {
            "deletion": _deletion(ledger, d, contract, now),
            "recipient_department": recipient["department"],
            "recipient_contact": recipient["contact"],
            "provider": _party(provider),
            "purpose": s["purpose"],
            "purpose_labels": [p["label"] for p in s["purposes"]],
            "legal_basis_words": _basis(s["legal_basis"]),
            "fields_described": [
                {"name": f["name"], "done": f["done"]} for f in s["fields"] if f["name"] in d.fields
            ],
            "retention": s["retention"]["words"],
            "rights_contact": s["rights_requests_contact"] or None,
            "objection": _objection(
                contract.objections.overridden, powers, s["objections"]["justification"], count
            ),
        }
        answers.append(base)
    return answers


def _when(iso: str | None) -> str:
    if not iso:
        return "not delivered"
    at = dt.datetime.fromisoformat(iso).astimezone(dt.UTC)
    return f"{at.day} {at:%B %Y} at {at:%H:%M} UTC"


WIDTH = 88  # a letter's lines; ids and addresses are never broken


def _para(text: str, indent: str = "   ", hang: str = "     ") -> list[str]:
    """One paragraph, wrapped, its later lines indented under the first's words."""
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=hang,
        break_long_words=False,
        break_on_hyphens=False,
    )


def to_text(answers: Sequence[dict[str, Any]], *, today: dt.date) -> str:
    """The answer as a letter: one numbered block per disclosure, oldest first."""
    title = "Your personal data shared through the data exchange gateway"
    out = [title, "=" * len(title), f"Answered on {today.isoformat()}."]
    if not answers:
        out += [
            "",
            *_para(
                "There is no recorded disclosure about this person: no delivery made through "
                "the gateway carried information about you.",
                "",
                "",
            ),
        ]
        return "\n".join(out) + "\n"
    times = "once" if len(answers) == 1 else f"{len(answers)} times"
    out.append(f"Information about you was sent to another organisation {times}.")
    contacts: list[str] = []
    for n, a in enumerate(answers, 1):
        to = a["recipient"] + (
            f", {a['recipient_department']}" if a["recipient_department"] else ""
        )
        contact = a["recipient_contact"] or "not recorded"
        out += ["", f"{n}. Sent on {_when(a['sent_at'])}"]
        out += _para(f"To: {to} (contact: {contact})")
        if a["provider"]:
            out += _para(f"By: {a['provider']}")
        if a["purpose"]:
            out += _para(f"Why: {a['purpose']}")
        out += _para(f"Purposes: {'; '.join(a['purpose_labels'])}")
        out += _para(f"Legal basis: {'; '.join(a['legal_basis_words'])}")
        out.append("   Information sent:")
        for f in a["fields_described"]:
            out += _para(
                f"- {f['name']}" + (f": {f['done']}" if f["done"] else ""), "     ", "       "
            )
        retention = a["retention"] or "not recorded here: ask the contact below"
        out += _para(f"How long they keep it: {retention}")
        if a.get("deletion"):
            out += _para(f"Deleted: {a['deletion']['words']}")
        out += _para(f"Your objection: {a['objection']['words']}")
        # Unwrapped: the reference is what a reader quotes back, and is searched for.
        out.append(
            f"   Agreement {a['contract_id']}, version {a['contract_version']}; "
            f"reference: drop {a['drop_id']}"
        )
        if a["terms_note"]:
            out += _para(f"Note: {a['terms_note']}.")
        if a["rights_contact"] and a["rights_contact"] not in contacts:
            contacts.append(a["rights_contact"])
    if contacts:
        out += [
            "",
            *_para(
                f"To ask about this answer or use your other rights: {', '.join(contacts)}.", "", ""
            ),
        ]
    return "\n".join(out) + "\n"


@dataclasses.dataclass(frozen=True)
class Lookup:
    """One audited subject lookup: the answer per disclosure, the ledger check, and the
    ledger entry that records the lookup."""

    answers: list[dict[str, Any]]
    verified: str
    seq: int
    # Delivered drops recorded under a disclosure key not configured: not searched.
    unsearched: tuple[tuple[str, str], ...] = ()


def look_up(
    settings: Settings,
    subject: str,
    ledger: Ledger,
    *,
    requested_by: str,
    reason: str,
    public_key: Ed25519PublicKey | None = None,
    origin: str | None = None,
    governance: Governance | None = None,
    today: dt.date | None = None,
) -> Lookup:
    """Who received data about `subject`, checked against the ledger first; the lookup itself is
    recorded (a keyed hash of the id, who asked and why; never the id) before the answer is
    worded, so a lookup that was made is on the record even if wording it fails.

    Raises ExchangeError (after recording a refused lookup) when the ledger does not verify."""
    from exchange.audit.disclosures import key_id, lookup_hash
    from exchange.gateway import Gateway

    disclosures = Gateway(settings).disclosures()
    asked = {
        "subject_hash": lookup_hash(disclosures.key, subject),
        "key_id": key_id(disclosures.key),
        "requested_by": requested_by,
        "reason": reason,
    }
    try:
        found, verified = disclosures.verified_lookup(
            subject, ledger, public_key=public_key, origin=origin
        )
    except ExchangeError as exc:
        ledger.append("subject.looked_up", {**asked, "outcome": "refused", "problem": str(exc)})
        raise
    recorded = ledger.append(
        "subject.looked_up", {**asked, "outcome": "answered", "drops": len(found)}
    )
    answers = describe(
        found, ledger, settings.contracts, today=today or dt.date.today(), governance=governance
    )
    return Lookup(answers, verified.message, recorded.seq, tuple(disclosures.unsearchable()))
