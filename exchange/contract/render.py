"""A human-readable summary of an agreement, for IG officers and the public register.

`summary` gathers what the agreement says, in words, as plain JSON-ready data; `to_markdown`
and `to_html` lay it out. The output is public by design, so it never carries a secret's or a
connection's name, nor key material: recipient keys and host keys appear as fingerprints only,
and the SFTP host is left out (the recipient's folder and the payload format are shown).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from exchange import approval
from exchange.contract import legal
from exchange.contract.model import Contract, Field, Party
from exchange.contract.paths import custom_values
from exchange.contract.vocabulary import PURPOSES, TRANSFORMS, units
from exchange.contract.vocabulary.terms import TERMS
from exchange.errors import ExchangeError

# What each approval reason code means: a short label and a sentence for the reader.
STATES: Final[dict[str, tuple[str, str]]] = {
    "ok": ("Approved", "Approved by a trusted IG officer; the exchange may run."),
    "not-active": (
        "Not active",
        "The contract's status is not 'active' (a draft, or retired): it does not run.",
    ),
    "suspended": (
        "Suspended",
        "An IG officer suspended the agreement: nothing is sent until it is resumed.",
    ),
    "not-approved": ("Not approved", "No IG officer has approved this contract yet."),
    "approval-invalid": (
        "Approval invalid",
        "The approval file is unreadable, its signature does not verify, or it sets a review "
        "date more than two years after approval.",
    ),
    "untrusted-key": (
        "Untrusted approver",
        "The approval was signed by a key that is not in the operator's list of trusted approvers.",
    ),
    "trust-config-invalid": (
        "Approvals cannot be checked",
        "The gateway's list of trusted approvers is missing or unsafe: nothing runs until the "
        "operator fixes it.",
    ),
    "revoked-key": ("Approver key revoked", "The approval was signed by a key since revoked."),
    "changed-since-approval": (
        "Changed since approval",
        "The contract was edited after it was approved: it needs approving again.",
    ),
    "review-overdue": (
        "Review overdue",
        "The review date has passed: the agreement must be reviewed and approved again.",
    ),
    "changed-during-run": (
        "Changed during a run",
        "The contract file changed while a run was in progress; that run was stopped.",
    ),
}

# The status the public sees, in plain English, per reason code: never the internal message,
# which can quote a suspension's reason (itself possibly sensitive) or local paths.
PUBLIC_STATUS: Final[dict[str, str]] = {
    "ok": "approved",
    "not-active": "not in use",
    "suspended": "suspended",
    "not-approved": "not yet approved",
    "review-overdue": "review overdue",
}


def public_status(reason: str, contract_status: str = "active") -> str:
    """The status in plain English for public pages (the reason code stays for machines)."""
    if contract_status == "draft":
        return "draft, not yet approved"
    if contract_status in ("retired", "deprecated"):
        return "withdrawn"
    return PUBLIC_STATUS.get(reason, "not running")


def public_message(
    reason: str, contract_status: str = "active", *, suspended_on: str | None = None
) -> str:
    """One plain sentence for the public per state, from STATES: never the internal message."""
    if reason == "suspended":
        when = f" on {suspended_on}" if suspended_on else ""
        return f"Suspended by the information governance officer{when}."
    if contract_status in ("retired", "deprecated"):
        return "The agreement has been withdrawn: it does not run."
    if contract_status == "draft":
        return "The agreement is a draft: it has not been approved and does not run."
    return STATES.get(reason, ("", "The agreement does not run at present."))[1]


def rights_contact(contract: Contract) -> str:
    """The agreement's rights-request contact (its rightsRequestsContact term), or ''."""
    terms = custom_values(contract.document.get("customProperties"))
    return _text(terms.get("rightsRequestsContact"))


_DAYS: Final = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_NAMES: Final = {d[:3].lower(): i for i, d in enumerate(_DAYS)}
_ALIASES: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


# -- summary ----------------------------------------------------------------------------------


def summary(
    contract: Contract, *, today: dt.date, governance: approval.Governance | None = None
) -> dict[str, Any]:
    """A plain, JSON-ready summary of the agreement and its approval status on `today`."""
    document = contract.document
    terms = custom_values(document.get("customProperties"))
    description = document.get("description") or {}
    basis = contract.legal_basis
    return {
        "id": contract.id,
        "name": contract.name,
        "version": contract.version,
        "sha256": contract.sha256,
        "status": contract.status,
        "as_of": today.isoformat(),
        "dataset": contract.dataset,
        "parties": {
            "provider": _party(contract.provider, terms.get("provider")),
            "recipient": _party(contract.recipient, terms.get("recipient")),
        },
        "purposes": [{"code": c, "label": PURPOSES.get(c, c)} for c in contract.purposes],
        "purpose": _text(contract.purpose),
        "usage": _text(description.get("usage")) if isinstance(description, Mapping) else "",
        "limitations": (
            _text(description.get("limitations")) if isinstance(description, Mapping) else ""
        ),
        "legal_basis": {
            "summary": basis.summary(),
            "statutes": [_statute(s.act, s.section, s.title, s.wording) for s in basis.statutes],
            "article6": {"code": basis.article6, "label": legal.ARTICLE_6.get(basis.article6)},
            "article9": (
                {"code": basis.article9, "label": legal.ARTICLE_9.get(basis.article9)}
                if basis.article9
                else None
            ),
            "dpa2018_schedule1": basis.dpa2018_schedule1,
            "article9_conditions": [
                {"code": c.code, "label": legal.ARTICLE_9.get(c.code), "wording": c.wording}
                for c in basis.article9_conditions
            ],
            "schedule1_conditions": [
                {"code": c.code, "wording": c.wording} for c in basis.schedule1_conditions
            ],
        },
        "fields": _fields(contract),
        "filters": [
            {"name": f.get("name"), "column": f.get("column"), "words": filter_words(f)}
            for f in getattr(contract, "filters", ())
        ],
        "objections": _objections(contract),
        "quality": [quality_words(q) for q in contract.dataset_quality],
        "terms": other_terms(contract),
        "retention": _retention(contract),
        "schedule": {"cron": contract.schedule, "words": describe_cron(contract.schedule)},
        "review_date": contract.review_date.isoformat(),
        "endpoint": {"folder": contract.endpoint.folder, "format": contract.endpoint.format},
        "recipient_keys": [recipient_key_fingerprint(k) for k in contract.recipient_keys],
        "host_keys": [host_key_fingerprint(k) for k in contract.endpoint.host_keys],
        "pseudonym_scope": _pseudonym_scope(contract),
        "dpia_reference": contract.dpia_reference,
        "rights_requests_contact": _text(terms.get("rightsRequestsContact")),
        "termination": _text(terms.get("termination")),
        "approval": approval_summary(contract, today, governance),
    }


def approval_summary(
    contract: Contract, today: dt.date, governance: approval.Governance | None = None
) -> dict[str, Any]:
    """Whether the agreement may run on `today`: who approved it and when, or why not.

    Without `governance`, the gateway's configured trust anchor and ledger are used."""
    try:
        if governance is None:
            from exchange.settings import Settings

            governance = approval.Governance.from_settings(Settings.from_env())
        state = governance.status(contract, today)
    except ExchangeError as exc:  # e.g. no trusted approvers configured: not runnable
        reason = getattr(exc, "reason", "approval-invalid")
        state = approval.Status(False, reason, f"the approval cannot be checked: {exc}")
    label, meaning = STATES.get(state.reason, (state.reason, ""))
    return {
        "runnable": state.runnable,
        "reason": state.reason,
        "label": label,
        "meaning": meaning,
        "message": state.message,  # internal (officers' tools only): never rendered publicly
        "public_status": public_status(state.reason, contract.status),
        "public_message": public_message(
            state.reason, contract.status, suspended_on=state.suspended_on
        ),
        "approved_by": state.approver,
        "approved_at": state.approved_at,
        "review_by": state.review_by,
    }


def recipient_key_fingerprint(key: str) -> dict[str, str]:
    """An age recipient shown by its start and the SHA-256 of its text, never in full."""
    return {"shown": key[:12] + "…", "sha256": hashlib.sha256(key.encode()).hexdigest()}


def host_key_fingerprint(line: str) -> dict[str, str]:
    """An SSH host key line as its type and OpenSSH-style fingerprint (SHA256:base64)."""
    parts = line.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, binascii.Error, ValueError):
        return {"type": parts[0] if parts else "", "fingerprint": "unreadable"}
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return {"type": parts[0], "fingerprint": "SHA256:" + digest}


def describe_cron(cron: str) -> str:
    """Common cron schedules in words (times are UTC); other schedules as the cron itself."""
    fields = _ALIASES.get(cron.strip(), cron).split()
    if len(fields) != 5:
        return f"on the cron schedule {cron}"
    minute, hour, dom, month, dow = fields
    if not minute.isdigit():
        if re.fullmatch(r"\*/\d+", minute) and (hour, dom, month, dow) == ("*",) * 4:
            return f"every {int(minute[2:])} minutes"
        return f"on the cron schedule {cron}"
    if hour == "*" and (dom, month, dow) == ("*",) * 3:
        return f"every hour at {int(minute)} minutes past"
    if re.fullmatch(r"\*/\d+", hour) and (dom, month, dow) == ("*",) * 3:
        return f"every {int(hour[2:])} hours at {int(minute)} minutes past"
    hours = hour.split(",")
    if not all(h.isdigit() and int(h) < 24 for h in hours) or int(minute) > 59:
        return f"on the cron schedule {cron}"
    at = " and ".join(f"{int(h):02d}:{int(minute):02d}" for h in hours) + " UTC"
    days = _days_of_week(dow)
    if (dom, month) == ("*", "*") and dow == "*":
        return f"every day at {at}"
    if (dom, month) == ("*", "*") and days:
        return f"every {days} at {at}"
    if dom.isdigit() and dow == "*" and month == "*":
        return f"on day {int(dom)} of every month at {at}"
    if dom.isdigit() and dow == "*" and month.isdigit() and 1 <= int(month) <= 12:
        return f"every year on {int(dom)} {_MONTHS[int(month) - 1]} at {at}"
    return f"on the cron schedule {cron}"


def _days_of_week(dow: str) -> str | None:
    """'1-5' as 'Monday to Friday', '1,3' as 'Monday and Wednesday'; None if not simple."""

    def day(token: str) -> int | None:
        if token.isdigit() and int(token) <= 7:
            return int(token) % 7
        return _DAY_NAMES.get(token.lower())

    span = dow.split("-")
    if len(span) == 2:
        first, last = day(span[0]), day(span[1])
        if first is None or last is None:
            return None
        return f"{_DAYS[first]} to {_DAYS[last]}"
    picked = [day(t) for t in dow.split(",")]
    if not picked or any(d is None for d in picked):
        return None
    names = [_DAYS[d] for d in picked if d is not None]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def transform_words(transform: str, options: Mapping[str, Any]) -> str:
    """What a transform does to a field, in words (from the transform registry)."""
    spec = TRANSFORMS.get(transform)
    return spec.words(options) if spec else f"Transformed by {transform}."


def other_terms(contract: Contract) -> list[dict[str, str]]:
    """The sharing terms shown by their own words ("Other terms"), in registry order."""
    present = custom_values(contract.document.get("customProperties"))
    return [
        {"term": t.name, "words": t.words(present[t.name])}
        for t in TERMS.values()
        if t.shown_in == "terms" and t.words is not None and t.name in present
    ]


_FILTER_OPS: Final[dict[str, str]] = {
    "==": "is",
    "!=": "is not",
    "<": "is less than",
    "<=": "is at most",
    ">": "is more than",
    ">=": "is at least",
    "in": "is one of",
    "not_in": "is none of",
    "is_null": "is empty",
    "not_null": "is not empty",
    "age_under": "gives an age under",
    "age_at_least": "gives an age of at least",
}


def filter_words(spec: Mapping[str, Any]) -> str:
    """A purpose filter (a row rule on a source column) in words."""
    op = str(spec.get("op"))
    value = spec.get("value")
    shown = ", ".join(map(str, value)) if isinstance(value, list) else value
    words = f"{spec.get('column')} {_FILTER_OPS.get(op, op)}"
    if op not in ("is_null", "not_null"):
        words += f" {shown}"
    return words + (" (on the day of the run)" if op.startswith("age_") else "")


def quality_words(rule: Mapping[str, Any]) -> str:
    """A schema-level quality rule in words; one the gateway does not know is named as written."""
    metric = rule.get("metric") or rule.get("rule") or rule.get("type") or "rule"
    given = rule.get("arguments")
    args: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    key = args.get("properties")
    if metric == "duplicateValues" and isinstance(key, list) and rule.get("mustBe") == 0:
        return (
            f"No two rows share the same {' and '.join(map(str, key))} (a composite key: a "
            "duplicate anywhere in a run fails it; rows missing one of these are not compared)."
        )
    if metric == "rowCount":
        bounds = rule.get("mustBeBetween")
        if (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int) for b in bounds)
        ):
            return f"Between {bounds[0]:,} and {bounds[1]:,} rows are sent in a run."
    operators = [k for k in rule if str(k).startswith("mustBe") or k == "mustNotBe"]
    limits = ", ".join(f"{k} {rule[k]}" for k in operators)
    text = f"Quality rule {metric}" + (f"({', '.join(map(str, args))})" if args else "")
    return text + (f": {limits}." if limits else ".")


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _pseudonym_scope(contract: Contract) -> str | None:
    """How this agreement's pseudonyms relate to others' (None: it sends no pseudonyms)."""
    if not contract.pseudonymisation_key:
        return None
    if contract.pseudonym_scope == "agreement":
        return "unique to this agreement"
    if contract.pseudonym_scope == "shared":
        return "shared with every agreement using the same key"
    return (
        "not stated: shared with every agreement using the same key, as before the term "
        "pseudonymScope (new agreements should state it)"
    )


def _party(party: Party, raw: Any) -> dict[str, Any]:
    ico = raw.get("icoRegistration") if isinstance(raw, Mapping) else None
    code = party.code
    return {
        "organisation": party.organisation,
        "department": party.department,
        "contact": party.contact,
        "ico_registration": ico,
        "code": {"scheme": code.scheme, "value": code.value} if code else None,
    }


def party_code_text(code: Any) -> str:
    """An organisation code as shown: "NHS ODS code RXX"; empty when there is none."""
    if not isinstance(code, Mapping):
        return ""
    label = legal.ORGANISATION_CODES.get(str(code.get("scheme")), (str(code.get("scheme")), ""))
    return f"{label[0]} {code.get('value')}"


def _statute(
    act: str, section: str, title: str | None = None, wording: str | None = None
) -> dict[str, Any]:
    power = legal.find_power(act, section)
    return {
        "act": act,
        "section": section,
        "title": _text(title) if title else None,
        "wording": _text(wording) if wording else None,
        "description": power.description if power else None,
        "overrides_objection": bool(power and power.overrides_objection),
    }


def _fields(contract: Contract) -> list[dict[str, Any]]:
    props = contract.document["schema"][0]["properties"]
    return [_field(f, p) for f, p in zip(contract.fields, props, strict=True)]


def _field(field: Field, prop: Mapping[str, Any]) -> dict[str, Any]:
    terms = custom_values(prop.get("customProperties"))
    direct = bool(terms.get("directIdentifier")) or field.source.lower() in (
        legal.DIRECT_IDENTIFIER_NAMES
    )
    if field.subject_key:
        identifies = True
        note = (
            "Yes: the subject key, a pseudonym that links one person's records"
            if field.transform == "pseudonymise"
            else "Yes: the subject key, identifying the person"
        )
    elif direct and field.transform == "keep":
        identifies, note = True, "Yes: a direct identifier, sent unchanged"
    elif direct:
        identifies, note = False, "Not directly: read from an identifier, sent only reduced"
    else:
        identifies, note = False, "No"
    return {
        "name": field.name,
        "source": field.source,
        "type": field.logical_type,
        "transform": field.transform,
        "transform_options": dict(field.transform_options),
        "done": transform_words(field.transform, field.transform_options),
        "why": _text(prop.get("description")),
        "justification": _text(terms.get("justification")),
        "classification": field.classification,
        "special_category": field.classification in legal.SPECIAL_CATEGORY_CLASSES,
        "required": field.required,
        "identifies_person": identifies,
        "identifies": note,
    }


def _objections(contract: Contract) -> dict[str, Any]:
    rule = contract.objections
    if rule.objected_values is not None:
        shown = ", ".join(rule.objected_values)
        flag = f"source column {rule.column}, where {shown} (in any case) means objected"
    else:
        flag = f"source column {rule.column}"
    empty = (
        "An empty flag counts as an objection."
        if rule.empty_objected
        else "An empty flag counts as no objection."
    )
    if rule.overridden and rule.override_column:
        words = (
            f"A person's objection ({flag}) is overridden by the legal basis only for rows "
            f"whose source column {rule.override_column} is {' or '.join(rule.override_values)}"
            "; every other row of a person who objected is left out of every drop. Every "
            f"overridden objection is counted in the audit ledger. {empty}"
        )
    elif rule.overridden:
        words = (
            f"A person's objection ({flag}) does not stop sharing: the "
            "legal basis overrides it, and every overridden objection is counted in the audit "
            "ledger."
        )
    else:
        words = f"Anyone whose objection is recorded ({flag}) is left out of every drop. {empty}"
    if rule.list:
        words += (
            " The provider also leaves out everyone on its own list of objections, kept outside "
            "the contract."
        )
    return {
        "column": rule.column,
        "overridden": rule.overridden,
        "justification": _text(rule.justification) if rule.justification else None,
        "words": words,
    }


def _retention(contract: Contract) -> dict[str, Any]:
    item = next(s for s in contract.document["slaProperties"] if s.get("property") == "retention")
    period = units.period_words(item.get("value"), item.get("unit")) or contract.retention
    action = contract.retention_action
    then = "deletes" if action == "delete" else "archives" if action == "archive" else action
    return {
        "period": period,
        "action": action,
        "words": f"The recipient keeps each drop for {period}, then {then} it.",
        "description": _text(item.get("description")),
    }


# -- Markdown ---------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def _md(value: Any) -> str:
    """Text for Markdown: one line, with every character Markdown would act on escaped."""
    if value is None or value == "":
        return "—"
    return _MD_SPECIAL.sub(r"\\\1", _text(value))


def _code(value: Any) -> str:
    """A Markdown code span that holds any text (pipes escaped, for table cells)."""
    text = _text(value).replace("|", "\\|")
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _party_text(party: Mapping[str, Any]) -> str:
    return party["organisation"] + (f", {party['department']}" if party["department"] else "")


def to_markdown(
    contract: Contract, *, today: dt.date, governance: approval.Governance | None = None
) -> str:
    """The agreement as a Markdown document."""
    s = summary(contract, today=today, governance=governance)
    a, basis = s["approval"], s["legal_basis"]
    provider, recipient = s["parties"]["provider"], s["parties"]["recipient"]
    out = [f"# {_md(s['name'])}", ""]
    out += [
        f"Agreement {_code(s['id'])}, version {_md(s['version'])}, "
        f"status {_md(s['approval']['public_status'])}. "
        f"Summary as of {s['as_of']}.",
        "",
        "## Approval",
        "",
    ]
    out += _md_table(["Item", "Value"], [[f"**{k}**", v] for k, v in _approval_rows(a)])
    out += ["## Parties", ""]
    out += _md_table(
        ["Role", "Organisation", "Official code", "Contact", "ICO registration"],
        [
            [
                role,
                _md(_party_text(p)),
                _md(party_code_text(p["code"])),
                _md(p["contact"]),
                _md(p["ico_registration"]),
            ]
            for role, p in (("Provider", provider), ("Recipient", recipient))
        ],
    )
    out += ["## Purpose", "", _md(s["purpose"]), ""]
    if s["usage"]:
        out += [f"How the data is used: {_md(s['usage'])}", ""]
    if s["limitations"]:
        out += [f"Limitations: {_md(s['limitations'])}", ""]
    out += _md_table(
        ["Purpose code", "Meaning"], [[_code(p["code"]), _md(p["label"])] for p in s["purposes"]]
    )
    out += ["## Legal basis", ""]
    out += _md_table(
        ["Act", "Section", "What it provides"],
        [[_md(st["act"]), _md(st["section"]), _md(_power(st))] for st in basis["statutes"]],
    )
    out += _md_table(["Condition", "Detail"], [[k, _md(v)] for k, v in _basis_rows(basis)])
    out += ["## Fields sent", ""]
    out += _md_table(FIELD_COLUMNS, [_field_cells(f, _md, _code) for f in s["fields"]])
    if s["quality"]:
        out += [_QUALITY_INTRO, ""] + [f"- {_md(q)}" for q in s["quality"]] + [""]
    objections = s["objections"]
    out += ["## Which rows are sent", "", _md(_filters_intro(s["filters"])), ""]
    out += [f"- {_md(f['words'])}" for f in s["filters"]] + ([""] if s["filters"] else [])
    out += [f"Objections: {_md(objections['words'])}", ""]
    if objections["justification"]:
        out += [f"Why the objection is overridden: {_md(objections['justification'])}", ""]
    if s["terms"]:
        out += ["## Other terms", ""] + [f"- {_md(t['words'])}" for t in s["terms"]] + [""]
    out += ["## Retention", "", _md(s["retention"]["words"]), ""]
    if s["retention"]["description"]:
        out += [_md(s["retention"]["description"]), ""]
    out += ["## Delivery", ""]
    out += _md_table(["Item", "Value"], [[f"**{k}**", v] for k, v in _delivery_rows(s, _md, _code)])
    out += ["## Governance", ""]
    out += _md_table(
        ["Item", "Value"],
        [
            ["**DPIA reference**", _md(s["dpia_reference"])],
            ["**Rights requests**", _md(s["rights_requests_contact"])],
            ["**Termination**", _md(s["termination"])],
            ["**Review date in the contract**", _md(s["review_date"])],
            ["**Contract SHA-256**", _code(s["sha256"])],
        ],
    )
    return "\n".join(out).rstrip("\n") + "\n"


_QUALITY_INTRO: Final = "Checked over all the rows of a run before any is sent:"


def _filters_intro(filters: Sequence[Mapping[str, Any]]) -> str:
    if not filters:
        return "No purpose filter: every row of the source is sent, except as below."
    return "Only rows that meet every one of these rules (on source columns) are sent:"


def _approval_rows(a: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [("State", _md(a["label"])), ("What it means", _md(a["meaning"]))]
    if a["runnable"]:
        rows += [
            ("Approved by", _md(a["approved_by"])),
            ("Approved at", _md(a["approved_at"])),
            ("Review by", _md(a["review_by"])),
        ]
    else:
        rows += [("Status", _md(a["public_status"])), ("Detail", _md(a["public_message"]))]
    return rows


def _basis_rows(basis: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each condition with the agreement's own wording where it gives one, else the label."""
    a6 = basis["article6"]
    rows = [("UK GDPR Article 6", f"{a6['code']}: {a6['label'] or 'unknown condition'}")]
    for a9 in basis["article9_conditions"]:
        words = a9["wording"] or a9["label"] or "unknown condition"
        rows.append(("UK GDPR Article 9", f"{a9['code']}: {words}"))
    for condition in basis["schedule1_conditions"]:
        words = f"{condition['code']}: {condition['wording']}" if condition["wording"] else ""
        rows.append(("DPA 2018 Schedule 1", words or condition["code"]))
    return rows


def _power(statute: Mapping[str, Any]) -> str:
    """What a statute provides: the agreement's own title and wording, else the list's words."""
    own = " ".join(p for p in (statute.get("title"), statute.get("wording")) if p)
    text = own or statute["description"] or "not on the protocol's list of powers"
    return text + (" (can override an objection)" if statute["overrides_objection"] else "")


def _why(f: Mapping[str, Any]) -> str:
    parts = [f["why"], f"Justification: {f['justification']}" if f["justification"] else ""]
    return " ".join(p for p in parts if p) or "No reason written in the contract"


def _classification(f: Mapping[str, Any]) -> str:
    text = f["classification"] or "not classified"
    return text + (" (special category data)" if f["special_category"] else "")


FIELD_COLUMNS: Final = (
    "Field",
    "Source column",
    "Type",
    "What is done",
    "Why",
    "Classification",
    "Identifies the person",
)


def _field_cells(f: Mapping[str, Any], text: Any, code: Any) -> list[str]:
    """One row of the fields table, in the output's escaping (Markdown or HTML)."""
    why, kind = text(_why(f)), text(_classification(f))
    return [
        code(f["name"]),
        code(f["source"]),
        text(f["type"]),
        text(f["done"]),
        why,
        kind,
        text(f["identifies"]),
    ]


def _delivery_rows(s: Mapping[str, Any], text: Any, code: Any) -> list[tuple[str, str]]:
    keys = [f"{code(k['shown'])} (SHA-256 {code(k['sha256'])})" for k in s["recipient_keys"]]
    hosts = [f"{text(k['type'])} {code(k['fingerprint'])}" for k in s["host_keys"]]
    rows = [
        ("Schedule", f"{text(s['schedule']['words'])} (cron {code(s['schedule']['cron'])})"),
        ("Recipient folder", code(s["endpoint"]["folder"])),
        ("Format", text(s["endpoint"]["format"])),
        ("Encrypted to (age public keys)", "; ".join(keys) or text("")),
        ("Recipient server host keys", "; ".join(hosts) or text("none pinned")),
    ]
    if s.get("pseudonym_scope"):
        rows.append(("Pseudonyms", text(s["pseudonym_scope"])))
    return rows


# -- HTML -------------------------------------------------------------------------------------

STYLE: Final = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Arial, sans-serif;
  color: #0b0c0c; background: #fff; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1rem; top: 1rem; background: #ffdd00; padding: .5rem; }
header { background: #1d3557; color: #fff; padding: 1rem 1.5rem; }
header p { margin: .25rem 0 0; }
header a { color: #fff; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.8rem; margin: 0; line-height: 1.2; }
h2 { font-size: 1.35rem; margin: 2rem 0 .5rem; border-bottom: 2px solid #1d3557; }
a { color: #1d4ed8; }
a:focus, .scroll:focus { outline: 3px solid #ffdd00; outline-offset: 0; }
.scroll { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: 600; padding: .25rem 0; }
th, td { border: 1px solid #b1b4b6; padding: .4rem .6rem; text-align: left;
  vertical-align: top; }
thead th { background: #f3f2f1; }
tbody th { font-weight: 600; background: #fafafa; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9em;
  overflow-wrap: break-word; }
.state { display: inline-block; padding: .1rem .5rem; border: 2px solid; font-weight: 700; }
.state-ok { color: #005a30; background: #e6f4ea; }
.state-stop { color: #942514; background: #fbe9e7; }
.state-invalid { color: #594d00; background: #fff7bf; }
.nowrap { white-space: nowrap; }
ul.plain { list-style: none; margin: 0; padding: 0; }
footer { color: #505a5f; font-size: .9rem; border-top: 1px solid #b1b4b6; margin-top: 2rem;
  padding-top: .5rem; }
@media print { .skip { display: none; } header { color: #000; background: none; } }
@media (max-width: 40rem) {
  table.stack thead { position: absolute; left: -9999px; }
  table.stack tr { display: block; border: 1px solid #b1b4b6; margin-bottom: 1rem; }
  table.stack th, table.stack td { display: block; border: 0;
    border-bottom: 1px solid #f3f2f1; }
  table.stack td::before { content: attr(data-label); display: block; font-weight: 600; }
}
"""


def escape(value: Any) -> str:
    """HTML-escape a value (None and empty as a dash)."""
    if value is None or value == "":
        return "—"
    return html.escape(str(value), quote=True)


def code_html(value: Any) -> str:
    """A value as escaped inline code."""
    return f"<code>{escape(value)}</code>"


def page(title: str, heading: str, subtitle: str, body: str, *, footer: str) -> str:
    """A complete, self-contained HTML5 page: inline CSS only, no script, no external resource."""
    style_hash = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; style-src 'sha256-{style_hash}'; img-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    return f"""<!DOCTYPE html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{escape(policy)}">
<meta name="referrer" content="no-referrer">
<meta name="generator" content="exchange gateway">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<a class="skip" href="#main">Skip to main content</a>
<header>
<h1>{escape(heading)}</h1>
<p>{subtitle}</p>
</header>
<main id="main">
{body}
<footer><p>{footer}</p></footer>
</main>
</body>
</html>
"""


def state_badge(reason: str, label: str) -> str:
    """The approval state as a labelled badge (the colour only repeats the words)."""
    kind = "ok" if reason == "ok" else "invalid" if reason == "invalid" else "stop"
    return f'<span class="state state-{kind}">{escape(label)}</span>'


def table(
    caption: str,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    anchor: str,
    row_headers: bool = True,
    stack: bool = False,
) -> str:
    """An accessible table: caption, column headers, first cell a row header; cells pre-escaped.

    `stack`: on a narrow screen each row becomes a card, every cell labelled with its column
    (a wide table would otherwise push all but the first columns off a phone's screen)."""
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in header)
    labels = [f' data-label="{escape(h)}"' if stack else "" for h in header]
    body = []
    for row in rows:
        first = f'<th scope="row">{row[0]}</th>' if row_headers else f"<td>{row[0]}</td>"
        cells = "".join(
            f"<td{labels[i] if i < len(labels) else ''}>{c}</td>"
            for i, c in enumerate(row)
            if i > 0
        )
        body.append("<tr>" + first + cells + "</tr>")
    kind = ' class="stack"' if stack else ""
    return (
        f'<div class="scroll" role="region" aria-labelledby="{anchor}" tabindex="0">'
        f'<table{kind}><caption id="{anchor}">{escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _pairs(caption: str, rows: Iterable[tuple[str, str]], *, anchor: str) -> str:
    return table(caption, ["Item", "Value"], [[escape(k), v] for k, v in rows], anchor=anchor)


def to_html(
    contract: Contract,
    *,
    today: dt.date,
    back_link: str | None = None,
    governance: approval.Governance | None = None,
) -> str:
    """The agreement as a complete, self-contained, accessible HTML page."""
    s = summary(contract, today=today, governance=governance)
    a, basis = s["approval"], s["legal_basis"]
    provider, recipient = s["parties"]["provider"], s["parties"]["recipient"]
    sections = []
    sections.append(
        "<h2>Approval</h2>"
        f"<p>{state_badge(a['reason'], a['label'])} {escape(a['meaning'])}</p>"
        + _pairs(
            "Approval status",
            [(k, escape(v)) for k, v in _approval_items(a)],
            anchor="t-approval",
        )
    )
    sections.append(
        "<h2>Parties</h2>"
        + table(
            "Who shares and who receives",
            ["Role", "Organisation", "Official code", "Contact", "ICO registration"],
            [
                [
                    role,
                    escape(_party_text(p)),
                    escape(party_code_text(p["code"]) or "—"),
                    escape(p["contact"]),
                    escape(p["ico_registration"]),
                ]
                for role, p in (("Provider", provider), ("Recipient", recipient))
            ],
            anchor="t-parties",
        )
    )
    purpose = f"<h2>Purpose</h2><p>{escape(s['purpose'])}</p>"
    if s["usage"]:
        purpose += f"<p><strong>How the data is used:</strong> {escape(s['usage'])}</p>"
    if s["limitations"]:
        purpose += f"<p><strong>Limitations:</strong> {escape(s['limitations'])}</p>"
    purpose += table(
        "Purposes from the protocol's list",
        ["Purpose code", "Meaning"],
        [[code_html(p["code"]), escape(p["label"])] for p in s["purposes"]],
        anchor="t-purposes",
    )
    sections.append(purpose)
    sections.append(
        "<h2>Legal basis</h2>"
        + table(
            "Statutory powers and duties relied on",
            ["Act", "Section", "What it provides"],
            [
                [
                    escape(st["act"]),
                    escape(st["section"]),
                    escape(_power(st)),
                ]
                for st in basis["statutes"]
            ],
            anchor="t-statutes",
        )
        + _pairs(
            "Conditions for processing",
            [(k, escape(v)) for k, v in _basis_rows(basis)],
            anchor="t-conditions",
        )
    )
    sections.append(
        "<h2>Fields sent</h2>"
        f"<p>{len(s['fields'])} fields leave the provider, and no others.</p>"
        + table(
            "Every field sent, where it comes from and what is done to it",
            FIELD_COLUMNS,
            [_field_cells(f, escape, code_html) for f in s["fields"]],
            anchor="t-fields",
        )
        + (
            f"<p>{escape(_QUALITY_INTRO)}</p><ul>"
            + "".join(f"<li>{escape(q)}</li>" for q in s["quality"])
            + "</ul>"
            if s["quality"]
            else ""
        )
    )
    objections = s["objections"]
    text = f"<h2>Which rows are sent</h2><p>{escape(_filters_intro(s['filters']))}</p>"
    if s["filters"]:
        text += "<ul>" + "".join(f"<li>{escape(f['words'])}</li>" for f in s["filters"]) + "</ul>"
    text += f"<p><strong>Objections:</strong> {escape(objections['words'])}</p>"
    if objections["justification"]:
        text += f"<p><strong>Why:</strong> {escape(objections['justification'])}</p>"
    sections.append(text)
    if s["terms"]:
        items = "".join(f"<li>{escape(t['words'])}</li>" for t in s["terms"])
        sections.append(f"<h2>Other terms</h2><ul>{items}</ul>")
    retention = s["retention"]
    text = f"<h2>Retention</h2><p>{escape(retention['words'])}</p>"
    if retention["description"]:
        text += f"<p>{escape(retention['description'])}</p>"
    sections.append(text)
    sections.append(
        "<h2>Delivery</h2>"
        + _pairs(
            "How and where data is sent", _delivery_rows(s, escape, code_html), anchor="t-delivery"
        )
    )
    sections.append(
        "<h2>Governance</h2>"
        + _pairs(
            "Governance of the agreement",
            [
                ("DPIA reference", escape(s["dpia_reference"])),
                ("Rights requests", escape(s["rights_requests_contact"])),
                ("Termination", escape(s["termination"])),
                ("Review date in the contract", escape(s["review_date"])),
                ("Contract SHA-256", code_html(s["sha256"])),
            ],
            anchor="t-governance",
        )
    )
    subtitle = (
        f"Data sharing agreement {code_html(s['id'])}, version {escape(s['version'])}: "
        f"{escape(_party_text(provider))} to {escape(_party_text(recipient))}"
    )
    if back_link:
        subtitle += f' · <a href="{escape(back_link)}">Back to the register</a>'
    footer = (
        f"Status as of {escape(s['as_of'])}. Generated by the exchange gateway from the contract "
        "file; the contract itself is the authoritative text."
    )
    return page(s["name"], s["name"], subtitle, "\n".join(sections), footer=footer)


def _approval_items(a: Mapping[str, Any]) -> list[tuple[str, Any]]:
    if a["runnable"]:
        return [
            ("Approved by", a["approved_by"]),
            ("Approved at", a["approved_at"]),
            ("Review by", a["review_by"]),
        ]
    return [("Status", a["public_status"]), ("Detail", a["public_message"])]
