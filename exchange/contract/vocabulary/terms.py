"""The contract-term registry: every top-level sharing term in `customProperties`, declared once.

Each term says whether it is required, how `contract diff` judges a change to it (a fixed kind,
or the name of a rule in `exchange.contract.diff._terms`), where the officer and the public read
it (a section of the rendered agreement, or its words in "Other terms"; `None` for a secret's
name, which is never shown), its documentation, and the JSON schema of its value, from which
`terms.schema.json` is generated (`python -m exchange.contract.vocabulary.generate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from exchange.contract.legal import ORGANISATION_CODE_SCHEMES
from exchange.contract.vocabulary.shapes import items, record, text


@dataclass(frozen=True)
class Fixed:
    """A change to the term is always of one kind, needing re-approval or not."""

    kind: str
    reapproval: bool
    note: str = ""
    label: str = ""


@dataclass(frozen=True)
class Term:
    """One sharing term: its name, how diff judges it, how it is shown and documented."""

    name: str
    docs: str
    required: str  # "yes", "no", or when
    diff: Fixed | str  # a rule name: a handler in exchange.contract.diff._terms
    shown_in: str | None  # a section of the rendered agreement; "terms": by `words`; None: never
    example: Any  # a valid value unlike the sample contract's, for docs and coverage tests
    schema: Mapping[str, Any]  # the JSON schema of the value, in terms.schema.json
    words: Callable[[Any], str] | None = None  # for "Other terms", officer and public alike
    register: bool = False  # also stated in the register's index (register.json)


def _incremental(value: Any) -> str:
    column = value.get("column") if isinstance(value, Mapping) else None
    return (
        "Only records new or changed since the last delivered drop are sent (by the source "
        f"column {column}); a full resend is recorded in the audit ledger."
    )


def _inbox(value: Any) -> str:
    if value is True:
        return (
            "The sender may delete files on the recipient's server: it removes drops older than "
            "the retention period from the recipient's inbox."
        )
    return "The sender never deletes files on the recipient's server."


# How pseudonyms relate across agreements (`pseudonymScope`).
PSEUDONYM_SCOPES: Final = ("agreement", "shared")


def _pseudonym_scope(value: Any) -> str:
    if value == "agreement":
        return (
            "Pseudonyms are unique to this agreement: they cannot be joined with the pseudonyms "
            "the provider sends under any other agreement."
        )
    return (
        "Pseudonyms are shared: every agreement using the same key gives the same pseudonym "
        "for a person, so their recipients can join their data."
    )


def _acknowledgements(value: Any) -> str:
    if not isinstance(value, Mapping):
        return "The recipient acknowledges each drop."
    keys = value.get("partnerKeys")
    count = len(keys) if isinstance(keys, list) else 0
    return (
        f"The recipient acknowledges each drop with a signed receipt in its folder "
        f"{value.get('folder')} within {value.get('deadlineHours')} hours ({count} recipient "
        "key(s) may sign); a late acknowledgement is an incident."
    )


# How a time in the autumn hour that occurs twice is read (`sourceTimeZone.ambiguousTimes`).
AMBIGUOUS_TIMES: Final = ("refuse", "earlier", "later")
_IANA_ZONE: Final = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"


def source_time_zone(value: Any) -> tuple[str | None, str]:
    """The zone and the ambiguousTimes rule of a `sourceTimeZone` value (name or object)."""
    if isinstance(value, Mapping):
        return value.get("zone"), str(value.get("ambiguousTimes", "refuse"))
    return (value if isinstance(value, str) else None), "refuse"


def _source_time_zone(value: Any) -> str:
    zone, ambiguous = source_time_zone(value)
    twice = {
        "earlier": "is read as the first of the two (summer time)",
        "later": "is read as the second of the two (standard time)",
    }.get(ambiguous, "stops the run")
    return (
        f"The source's times without a zone are local times in {zone}, converted to UTC. A time "
        f"in the hour that occurs twice when the clocks go back {twice}; a time in the hour "
        "skipped when they go forward stops the run."
    )


# --- JSON schema of the terms' values ----------------------------------------------------------


_SECRET_NAME: Final = {"$ref": "#/$defs/secretName"}
_ORGANISATION: Final = {"$ref": "#/$defs/organisation"}

# What an empty objection flag means (`objections.emptyMeans`).
EMPTY_MEANS: Final = ("objected", "not-objected")

# Purpose-filter ops by the value they take; exchange.filters implements them (a test keeps both).
FILTER_OPS: Final[dict[str, tuple[str, ...]]] = {
    "comparison": ("==", "!=", "<", "<=", ">", ">="),
    "set": ("in", "not_in"),
    "null": ("is_null", "not_null"),
    "age": ("age_under", "age_at_least"),
}
_SCALAR: Final = {"type": ["string", "number", "boolean"]}


_ARTICLE_9: Final = r"^9\(2\)\([a-j]\)$"


def _conditions(condition: dict[str, Any]) -> dict[str, Any]:
    """One legal condition as text, or a list of them, each text or `{condition, wording}`."""
    worded = record(["condition"], {"condition": condition, "wording": text(3)})
    return {"anyOf": [condition, items({"anyOf": [condition, worded]}, unique=True)]}


def _when_op(group: str, then: dict[str, Any], otherwise: Any = None) -> dict[str, Any]:
    when = {"required": ["op"], "properties": {"op": {"enum": list(FILTER_OPS[group])}}}
    rule = {"if": when, "then": then}
    return rule if otherwise is None else {**rule, "else": otherwise}


def _value(schema: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {"value": schema}}


_FILTER: Final = record(
    ["column", "op"],
    {
        "name": text(pattern="^[a-z0-9][a-z0-9-]{0,62}$"),
        "column": text(1),
        "op": {"enum": [op for ops in FILTER_OPS.values() for op in ops]},
        "value": {},
        "type": {"enum": ["string", "integer", "number", "boolean", "date", "timestamp"]},
    },
    allOf=[
        _when_op("null", {"not": {"required": ["value"]}}, {"required": ["value"]}),
        _when_op("set", _value(items(_SCALAR, unique=True))),
        _when_op("comparison", _value(_SCALAR)),
        _when_op("age", _value({"type": "integer", "minimum": 0, "maximum": 150})),
    ],
)

# The shapes several terms share (`$defs` of terms.schema.json).
SCHEMA_DEFS: Final[dict[str, Any]] = {
    "organisation": record(
        ["organisation", "contact"],
        {
            "organisation": text(2),
            "department": text(),
            "contact": text(3),
            "icoRegistration": text(pattern="^[A-Z]{1,2}[0-9]{6,8}$"),
            "code": {"$ref": "#/$defs/organisationCode"},
        },
    ),
    "statute": record(
        ["act", "section"],
        {
            "act": text(3),
            "section": text(1),
            "title": text(3),  # the section's title as the agreement cites it, shown verbatim
            "wording": text(3),  # the agreement's own words on how it applies, shown verbatim
        },
    ),
    "organisationCode": record(
        ["scheme", "value"],
        {"scheme": {"enum": list(ORGANISATION_CODE_SCHEMES)}, "value": text(1)},
    ),
    "secretName": text(pattern="^[a-z0-9][a-z0-9_-]{1,62}$"),
}

_PARTY = (
    "Object: `organisation` (2+ characters), `contact` (3+), optional `department` and "
    "`icoRegistration` (e.g. `Z1234567`) and `code`, the organisation's official code: "
    "`{scheme: ods, value: RXX}` (an NHS ODS code) or `{scheme: gss, value: E10000023}` (a "
    "council's GSS code); shown in the agreement, the register and every manifest."
)
_PARTNER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGe1B2lS0fTKyQj2hWvUm1p8y1H5m6Lq5oXqN2Zr0vLD"


def _party(name: str, docs: str, example: dict[str, Any]) -> Term:
    """The provider or the recipient: an organisation, judged and shown as a party."""
    return Term(
        name, docs, "yes", name, "parties", example, schema={"$ref": "#/$defs/organisation"}
    )


def _secret(name: str, docs: str, required: str, diff: Fixed, example: str) -> Term:
    """A term naming a secret: its schema is a secret's name, and it is never shown."""
    return Term(name, docs, required, diff, None, example, schema=_SECRET_NAME)


def _text(name: str, docs: str, diff: Fixed, shown_in: str, example: str, *, minimum: int) -> Term:
    """A required term of free text, at least `minimum` characters long."""
    return Term(name, docs, "yes", diff, shown_in, example, schema=text(minimum))


TERMS_LIST: Final[tuple[Term, ...]] = (
    _party(
        "provider",
        f"{_PARTY} The organisation sharing the data.",
        {"organisation": "Another Council", "contact": "dpo@another.example"},
    ),
    _party(
        "recipient",
        "Same shape. The organisation receiving the data.",
        {
            "organisation": "Another Trust",
            "contact": "dpo@trust.example",
            "code": {"scheme": "ods", "value": "RXX"},
        },
    ),
    Term(
        "purposes",
        "List of purpose codes (below), at least one, no repeats.",
        "yes",
        "purposes",
        "purposes",
        ["research"],
        schema=items(text(pattern="^[a-z][a-z0-9-]*$"), unique=True),
    ),
    Term(
        "legalBasis",
        "Object: `statutes` (list of `{act, section}`, at least one, each with an optional "
        "`title`, the section's title as the agreement cites it, and `wording`, the agreement's "
        "own words on it, both shown verbatim); `ukGdprArticle6` like `6(1)(e)`; optional "
        "`ukGdprArticle9` like `9(2)(g)`, or a list of conditions; optional `dpa2018Schedule1` "
        "like `Part 2 para 18 (...)`, or a list. A list item is the condition's text or "
        "`{condition, wording}`, the wording shown verbatim. Each Article 9 condition that needs "
        "a Schedule 1 condition needs its own: 9(2)(b) Part 1 para 1, 9(2)(h) Part 1 para 2, "
        "9(2)(i) Part 1 para 3, 9(2)(j) Part 1 para 4, 9(2)(g) a Part 2 condition.",
        "yes",
        "legalBasis",
        "legal_basis",
        {
            "statutes": [
                {
                    "act": "Care Act 2014",
                    "section": "s.42",
                    "title": "Enquiry by local authority",
                    "wording": "The council makes enquiries where an adult may be at risk.",
                },
                {"act": "Health and Social Care Act 2012", "section": "s.251B"},
            ],
            "ukGdprArticle6": "6(1)(e)",
            "ukGdprArticle9": ["9(2)(h)", {"condition": "9(2)(g)", "wording": "Safeguarding."}],
            "dpa2018Schedule1": [
                "Part 1 para 2 (health or social care purposes)",
                {
                    "condition": "Part 2 para 18",
                    "wording": "Safeguarding of children and of individuals at risk.",
                },
            ],
        },
        schema=record(
            ["statutes", "ukGdprArticle6"],
            {
                "statutes": items({"$ref": "#/$defs/statute"}),
                "ukGdprArticle6": text(pattern=r"^6\(1\)\([a-f]\)$"),
                "ukGdprArticle9": _conditions(text(pattern=_ARTICLE_9)),
                "dpa2018Schedule1": _conditions(text(3)),
            },
        ),
    ),
    Term(
        "objections",
        "Object: `column` (the source column, true where the person objected); "
        "`legalBasisOverrides` (boolean); `overrideJustification` (10+ characters, required when "
        "the override is true); optional `list` (the name of a secret holding objecting subject "
        "ids, one per line, matched against the subject key's source column; a list that cannot "
        "be read stops the run). For a flag the source writes as text (`Y`/`N`, `1`/`0`, "
        "`Yes`/`No`, `T`/`F`): `objectedValues`, the values meaning objected (compared as text, "
        "trimmed and ignoring case: `Y` also matches `y`; any other value is no objection), and "
        "`emptyMeans` (`objected` or `not-objected`; for a text flag it defaults to `objected`, "
        "so a row whose objection cannot be read is never sent; for a true/false column it "
        "defaults to `not-objected`, as before). With `legalBasisOverrides`, an optional "
        "`overrideCondition: {column, values}` limits the override to rows whose source column "
        "holds one of `values` (text, exact), e.g. `{column: enquiry_open, values: [Y]}`; other "
        "objecting rows are left out.",
        "yes",
        "objections",
        "objections",
        {"column": "objected", "legalBasisOverrides": False, "list": "objection-list"},
        schema={
            **record(
                ["column", "legalBasisOverrides"],
                {
                    "column": text(1),
                    "legalBasisOverrides": {"type": "boolean"},
                    "overrideJustification": text(10),
                    "list": {
                        "description": "The secret holding a list of objecting subject ids (one "
                        "per line), matched against the subject key's source column.",
                        **_SECRET_NAME,
                    },
                    "objectedValues": {
                        "description": "The source's values meaning objected, compared as text "
                        "(trimmed, ignoring case); the column is then read as text.",
                        **items(text(1), unique=True),
                    },
                    "emptyMeans": {"enum": list(EMPTY_MEANS)},
                    "overrideCondition": record(
                        ["column", "values"],
                        {"column": text(1), "values": items(text(1), unique=True)},
                        description="The override holds only for rows whose source column "
                        "holds one of these values (text, exact).",
                    ),
                },
            ),
            "if": {"properties": {"legalBasisOverrides": {"const": True}}},
            "then": {"required": ["overrideJustification"]},
        },
    ),
    _text(
        "schedule",
        'Cron expression for the Airflow schedule, e.g. `"0 2 * * *"`.',
        Fixed("schedule-changed", True, label="schedule (cron)"),
        "delivery",
        "30 3 * * 1",
        minimum=9,
    ),
    Term(
        "reviewDate",
        "Date `YYYY-MM-DD`. The contract does not run after it.",
        "yes",
        "reviewDate",
        "governance",
        "2026-06-30",
        schema={"type": "string", "format": "date"},
    ),
    Term(
        "recipientKeys",
        "List of the recipient's age public keys (`age1...`), at least one. Each drop is "
        "encrypted to all of them.",
        "yes",
        "recipientKeys",
        "delivery",
        ["age1a40fshp8dlqnttm4rpptjsfdgmxeyg0z02vy27axlxddjlxdlc8qggp4h5"],
        schema=items(text(pattern="^age1[02-9ac-hj-np-z]{58}$"), unique=True),
    ),
    _secret(
        "sftpConnection",
        "Name of the connection holding the SFTP login (lower case, digits, `-`, `_`).",
        "yes",
        Fixed("endpoint-changed", True, " (the connection decides the server)", "SFTP connection"),
        "another-sftp-connection",
    ),
    _secret(
        "pseudonymisationKey",
        "Name of the secret holding the pseudonymisation key.",
        "when a field is pseudonymised",
        Fixed(
            "pseudonymisation-key-changed",
            True,
            " (another key gives other pseudonyms; a shared one lets them be linked)",
            "pseudonymisation key",
        ),
        "another-pseudonym-key",
    ),
    Term(
        "pseudonymScope",
        "`agreement` or `shared`. `agreement`: pseudonyms are made with a key derived from the "
        "pseudonymisation key and this agreement's id (HMAC-SHA256 under the key of the line "
        "`exchange pseudonym scope` then the id), so they differ from every other agreement's "
        "and two recipients cannot join "
        "their data by them. `shared`: the key itself, so agreements sharing the key give the "
        "same pseudonyms. Not stated: as `shared` (the behaviour before this term, which keeps "
        "existing pseudonyms); new agreements should state it, normally `agreement`. Every "
        "manifest records the scope.",
        "when a field is pseudonymised (recommended)",
        Fixed(  # another scope is another effective key: a kind diff already knows
            "pseudonymisation-key-changed",
            True,
            " (pseudonyms change, or become linkable across agreements)",
            "pseudonym scope",
        ),
        "terms",
        "agreement",
        schema={
            "description": "Whether pseudonyms are unique to this agreement or shared by every "
            "agreement using the same key (not stated: shared, as before).",
            "enum": list(PSEUDONYM_SCOPES),
        },
        words=_pseudonym_scope,
        register=True,
    ),
    _text(
        "dpiaReference",
        "Reference of the DPIA (3+ characters).",
        Fixed("dpia-changed", True, label="DPIA reference"),
        "governance",
        "DPIA-2099-999",
        minimum=3,
    ),
    _text(
        "rightsRequestsContact",
        "Where individuals send rights requests (3+ characters).",
        Fixed("contacts-changed", False),
        "governance",
        "rights@another.example",
        minimum=3,
    ),
    Term(
        "retentionAction",
        "`delete` or `archive`: what the recipient does at the end of retention.",
        "yes",
        "retentionAction",
        "retention",
        "archive",
        schema={"enum": ["delete", "archive"]},
    ),
    _text(
        "termination",
        "How the agreement ends (10+ characters).",
        Fixed("termination-changed", True, label="termination terms"),
        "governance",
        "Either party may end the agreement with 30 days' written notice.",
        minimum=10,
    ),
    Term(
        "filters",
        "Purpose filters on source columns (see the reference at the end).",
        "no",
        "filters",
        "rows",
        [{"column": "year_group", "op": "<=", "value": 6, "name": "primary"}],
        schema={
            "description": "Purpose filters on source columns: a row is sent only if every "
            "filter is true.",
            **items(_FILTER),
        },
    ),
    Term(
        "incremental",
        "Object: `column`, a last-updated timestamp column: each run sends only rows newer than "
        "the last delivered run's newest (`exchange run --full-refresh` sends all, audited).",
        "no",
        "incremental",
        "terms",
        {"column": "updated_at"},
        schema=record(
            ["column"],
            {"column": text(1)},
            description="Send only records new or changed since the last delivered run, by "
            "this timestamp column.",
        ),
        words=_incremental,
        register=True,
    ),
    Term(
        "sourceTimeZone",
        "IANA time-zone name (e.g. `Europe/London`) of times the source writes without an "
        "offset (CSV) or zone (Parquet); they are read as local times there and sent in UTC. "
        "Or an object: `zone` and `ambiguousTimes`, for a time in the hour that occurs twice "
        "when the clocks go back: `refuse` (the default), `earlier` or `later`. A time in the "
        "hour skipped when they go forward is always refused. Absent: such times are refused.",
        "no",
        Fixed(  # the same source times become other instants: the data read changes
            "source-changed",
            True,
            " (the same source times are sent as other instants)",
            "source time zone",
        ),
        "terms",
        {"zone": "Europe/London", "ambiguousTimes": "earlier"},
        schema={
            "description": "The time zone of the source's times written without an offset or "
            "zone, and how a time in the hour that occurs twice is read.",
            # if/then/else, not anyOf: a problem is reported against the form that was written.
            "type": ["string", "object"],
            "if": {"type": "string"},
            "then": text(pattern=_IANA_ZONE),
            "else": record(
                ["zone"],
                {
                    "zone": text(pattern=_IANA_ZONE),
                    "ambiguousTimes": {"enum": list(AMBIGUOUS_TIMES)},
                },
            ),
        },
        words=_source_time_zone,
    ),
    Term(
        "acknowledgements",
        "Object: `folder` (where the recipient puts signed acknowledgements), `partnerKeys` "
        "(their `ssh-ed25519` public key lines), `deadlineHours` (a drop not acknowledged by "
        "then is an incident, and the DAG's last task fails).",
        "no",
        Fixed("acknowledgements-changed", True),
        "terms",
        {"folder": "acks", "partnerKeys": [_PARTNER_KEY], "deadlineHours": 48},
        schema=record(
            ["folder", "partnerKeys", "deadlineHours"],
            {
                "folder": text(1),
                "partnerKeys": items(text(pattern="^ssh-ed25519 [A-Za-z0-9+/=]+( .*)?$")),
                "deadlineHours": {"type": "number", "minimum": 0},
            },
            description="Where the recipient puts signed acknowledgements, with which keys, "
            "and how soon.",
        ),
        words=_acknowledgements,
        register=True,
    ),
    Term(
        "senderManagesInbox",
        "Boolean: the sender removes drops older than the retention period from the "
        "recipient's server (`exchange drops expire`). The public register says so.",
        "no",
        Fixed("inbox-management-changed", True, " (the sender deleting files on their server)"),
        "terms",
        True,
        schema={
            "description": "True when the agreement makes the sender remove drops older than "
            "the retention period from the recipient's inbox.",
            "type": "boolean",
        },
        words=_inbox,
        register=True,
    ),
)

TERMS: Final[dict[str, Term]] = {t.name: t for t in TERMS_LIST}
