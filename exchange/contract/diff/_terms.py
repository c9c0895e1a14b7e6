"""The sharing terms (top-level customProperties), each judged as the term registry declares."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any, Final

from exchange.contract.diff._change import Change
from exchange.contract.diff._walk import (
    MISSING,
    Handler,
    Said,
    accepts,
    added_removed,
    as_list,
    as_map,
    canon,
    changed,
    custom_properties,
    filled_list,
    fixed,
    key_text,
    members,
    present_map,
    report,
    show,
    stated,
    unclassified,
    was,
    wording,
)
from exchange.contract.vocabulary import PURPOSES
from exchange.contract.vocabulary.terms import TERMS, Fixed


def _sharing_term(out: list[Change], old: Any, new: Any, path: str, term: str) -> None:
    _TERMS.get(term, unclassified)(out, old, new, path)


sharing_terms: Final = custom_properties(_sharing_term)


def _party(kind: str, role: str) -> Handler:
    @accepts(present_map, stated(kind, role))
    def party(out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        for key, before, after, at in changed(old, new, path):
            if key == "contact":
                out.append(
                    Change(at, "contacts-changed", f"{role} contact {was(before, after)}", False)
                )
            else:
                out.append(Change(at, kind, f"{role} {key} {was(before, after)}", True))

    return party


def _purpose(code: Any) -> str:
    label = f" ({PURPOSES[code]})" if isinstance(code, str) and code in PURPOSES else ""
    return f"{code}{label}"


_purposes: Final = members(
    Said("purpose-added", "purpose added: {}"),
    Said("purpose-removed", "purpose removed: {} (less sharing)", reapproval=False),
    fixed("purpose-added", True),
    _purpose,
    indexed=True,
)

_BASIS_LABELS: Final = {
    "ukGdprArticle6": "UK GDPR Article 6 condition",
    "ukGdprArticle9": "UK GDPR Article 9 condition",
    "dpa2018Schedule1": "DPA 2018 Schedule 1 condition",
}


@accepts(as_map, fixed("legal-basis-changed", True))
def _legal_basis(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> None:
    for key, before, after, at in changed(old, new, path):
        if key == "statutes":
            _statutes(out, before, after, at)
        else:
            _basis_part(out, before, after, at, key)


def _basis_part(out: list[Change], old: Any, new: Any, path: str, key: str) -> None:
    text = f"legal basis: {_BASIS_LABELS.get(key, key)} {was(old, new)}"
    out.append(Change(path, "legal-basis-changed", text, True))


def _statute(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"{value.get('act', '?')} {value.get('section', '?')}"
    return show(value)


_statutes: Final = members(
    Said("legal-basis-changed", "legal basis: statute added: {}"),
    Said("legal-basis-changed", "legal basis: statute removed: {}"),
    functools.partial(_basis_part, key="statutes"),
    _statute,
    by=canon,
)


@accepts(present_map, fixed("objection-rule-changed", True))
def _objections(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> None:
    overridden = new.get("legalBasisOverrides") is True
    for key, before, after, at in changed(old, new, path):
        if key == "column":
            text = f"objections read from source column {was(before, after)}"
            out.append(Change(at, "objection-rule-changed", text, True))
        elif key == "legalBasisOverrides" and after is False and before is True:
            text = "objections are now honoured (the legal basis no longer overrides them)"
            out.append(Change(at, "objection-rule-changed", text, False))
        elif key == "legalBasisOverrides":
            text = f"legal basis overrides objections: {was(before, after)}"
            out.append(Change(at, "objection-rule-changed", text, True))
        elif key == "overrideJustification" and not overridden:
            wording(out, before, after, at)  # no override in force: the text decides nothing
        elif key == "overrideJustification":
            text = f"justification for overriding objections {was(before, after)}"
            out.append(Change(at, "objection-rule-changed", text, True))
        elif key == "list":
            honoured = before is MISSING  # a list added: more objections are honoured
            text = f"list of objecting people (a secret's name) {was(before, after)}"
            out.append(Change(at, "objection-rule-changed", text, not honoured))
        elif key == "objectedValues":
            wider = _values(after) >= _values(before)  # more values count as an objection
            text = f"source values that mean 'objected' {was(before, after)}"
            out.append(Change(at, "objection-rule-changed", text, not wider))
        elif key == "emptyMeans":
            honoured = after == "objected"  # an empty flag now stops the row: more honoured
            text = f"what an empty objection flag means {was(before, after)}"
            out.append(Change(at, "objection-rule-changed", text, not honoured))
        elif key == "overrideCondition":
            narrower = before is MISSING  # a condition added: the override holds in fewer rows
            text = f"the condition under which the override holds {was(before, after)}"
            out.append(Change(at, "objection-rule-changed", text, not narrower))
        else:
            unclassified(out, before, after, at)


def _values(value: Any) -> set[str]:
    """A list of flag values as a set of trimmed, case-folded text (how they are matched)."""
    items = value if isinstance(value, list) else []
    return {str(v).strip().casefold() for v in items}


def _review_date(out: list[Change], old: Any, new: Any, path: str) -> None:
    try:
        earlier = dt.date.fromisoformat(str(new)) < dt.date.fromisoformat(str(old))
    except ValueError:
        earlier = False
    note = " (earlier)" if earlier else " (later, or cannot compare)"
    text = f"review date {was(old, new)}{note}"
    out.append(Change(path, "review-date-changed", text, not earlier))


_recipient_keys: Final = members(
    Said("recipient-key-added", "recipient key added: {} (another key can decrypt every drop)"),
    Said(
        "recipient-key-removed",
        "recipient key removed: {} (confirm why, e.g. a compromised key, and who holds the "
        "remaining keys)",
    ),
    fixed("recipient-key-added", True),
    key_text,
)


def _retention_action(out: list[Change], old: Any, new: Any, path: str) -> None:
    safer = old == "archive" and new == "delete"
    text = f"recipient's action at the end of retention {was(old, new)}"
    out.append(Change(path, "retention-action-changed", text, not safer))


def _rows(fewer: bool) -> str:
    return " (fewer rows are sent)" if fewer else " (more or other rows may be sent)"


def _filters_whole(out: list[Change], old: Any, new: Any, path: str) -> None:
    fewer = not as_list(old) and bool(as_list(new))  # filters where there were none: fewer rows
    report(out, old, new, path, "rows-changed", not fewer, _rows(fewer), "purpose filters")


@accepts(filled_list, _filters_whole)
def _filters(out: list[Change], old: list[Any], new: list[Any], path: str) -> None:
    added, removed = added_removed(old, new)
    fewer = bool(added) and not removed  # only new rules: a row must pass every one
    text = f"purpose filters: {len(added)} added, {len(removed)} removed or changed"
    out.append(Change(path, "rows-changed", text + _rows(fewer), not fewer))


def _incremental(out: list[Change], old: Any, new: Any, path: str) -> None:
    on = old is MISSING and new is not MISSING  # only new or changed rows from now on
    report(out, old, new, path, "rows-changed", not on, _rows(on), "incremental sending")


def _judge(term: str) -> Handler:
    """How diff judges a change to a sharing term, as the term registry declares it."""
    rule = TERMS[term].diff
    if isinstance(rule, Fixed):
        return fixed(rule.kind, rule.reapproval, rule.note, rule.label)
    return _RULES[rule]


_RULES: Final[dict[str, Handler]] = {
    "provider": _party("provider-changed", "provider"),
    "recipient": _party("recipient-changed", "recipient"),
    "purposes": _purposes,
    "legalBasis": _legal_basis,
    "objections": _objections,
    "reviewDate": _review_date,
    "recipientKeys": _recipient_keys,
    "retentionAction": _retention_action,
    "filters": _filters,
    "incremental": _incremental,
}
_TERMS: Final[dict[str, Handler]] = {name: _judge(name) for name in TERMS}
