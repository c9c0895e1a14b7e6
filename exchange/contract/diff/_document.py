"""The whole contract, key by key: version, status, roles, servers, service levels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from exchange.contract.diff._change import Change
from exchange.contract.diff._dataset import schema
from exchange.contract.diff._terms import sharing_terms
from exchange.contract.diff._walk import (
    MISSING,
    Handler,
    Said,
    accepts,
    by_key,
    changed,
    contacts,
    custom_properties,
    fixed,
    item_extras,
    items,
    key_text,
    members,
    only_map,
    present_map,
    stated,
    tags,
    unclassified,
    was,
    wording,
)
from exchange.contract.vocabulary import units


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every difference between two parsed contracts, in the order of the new document."""
    out: list[Change] = []
    by_key(_TOP_LEVEL)(out, old, new, None)
    return out


def _status(out: list[Change], old: Any, new: Any, path: str) -> None:
    activated = new == "active" and old != "active"
    note = " (the gateway will run it)" if activated else ""
    out.append(Change(path, "status-changed", f"status {was(old, new)}{note}", activated))


# --- roles -------------------------------------------------------------------------------------

_ROLE_CHANGED: Final = fixed("role-changed", True)
_ROLE_KEYS: Final[dict[str, Handler]] = {
    "description": contacts,
    "firstLevelApprovers": contacts,
    "secondLevelApprovers": contacts,
    "access": _ROLE_CHANGED,
}


def _role_whole(out: list[Change], old: Any, new: Any, path: str, name: str) -> None:
    if old is MISSING:
        access = new.get("access") if isinstance(new, Mapping) else None
        text = f"new role {name!r} with {access or 'unstated'} access to the data"
        out.append(Change(path, "role-changed", text, True))
    elif new is MISSING:
        text = f"role {name!r} removed (fewer people have access)"
        out.append(Change(path, "role-changed", text, False))
    else:
        _ROLE_CHANGED(out, old, new, path)


# --- servers -----------------------------------------------------------------------------------

_ENDPOINT: Final = fixed("endpoint-changed", True)
_ENDPOINT_LABELS: Final = {"location": "delivery location", "format": "payload format"}


def _server_whole(out: list[Change], old: Any, new: Any, path: str, name: str) -> None:
    if old is MISSING or new is MISSING:
        text = f"server {name!r} {'added' if old is MISSING else 'removed'}"
        out.append(Change(path, "endpoint-changed", text, True))
    else:
        _ENDPOINT(out, old, new, path)


def _server(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str, name: str
) -> None:
    for key, before, after, at in changed(old, new, path):
        if key == "description":
            wording(out, before, after, at)
        elif key == "customProperties":
            _server_terms(out, before, after, at)
        else:
            text = f"recipient server {_ENDPOINT_LABELS.get(key, key)}: {was(before, after)}"
            out.append(Change(at, "endpoint-changed", text, True))


_host_keys: Final = members(
    Said("endpoint-changed", "recipient server host key added: {} (confirm it is theirs)"),
    Said("endpoint-changed", "recipient server host key removed: {}"),
    _ENDPOINT,
    key_text,
)


def _server_term(out: list[Change], old: Any, new: Any, path: str, term: str) -> None:
    (_host_keys if term == "hostKeys" else _ENDPOINT)(out, old, new, path)


_server_terms: Final = custom_properties(_server_term, _ENDPOINT)


# --- service levels ----------------------------------------------------------------------------

_AMOUNT_ITEM: Final = {"property", "value", "unit"}


def _sla_item(out: list[Change], old: Any, new: Any, path: str, name: str) -> None:
    _SLA.get(name, _other_sla)(out, old, new, path)


def _amount(item: Mapping[str, Any]) -> str:
    return f"{item.get('value', '?')} {item.get('unit', '')}".strip()


def _same_amount(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return (old.get("value"), old.get("unit")) == (new.get("value"), new.get("unit"))


@accepts(present_map, fixed("retention-changed", True))
def _retention(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> None:
    item_extras(out, old, new, path, _AMOUNT_ITEM)
    if _same_amount(old, new):
        return
    before = units.period_days(old.get("value"), old.get("unit"))
    after = units.period_days(new.get("value"), new.get("unit"))
    text = f"recipient's retention {_amount(old)} -> {_amount(new)}"
    if before is None or after is None:
        out.append(Change(path, "retention-changed", f"{text} (cannot compare)", True))
    elif after > before:
        out.append(Change(path, "retention-longer", f"{text} (longer)", True))
    elif after < before:
        out.append(Change(path, "retention-shorter", f"{text} (shorter)", False))
    else:
        out.append(Change(path, "restated", f"{text} (the same period)", False))


@accepts(present_map, fixed("schedule-changed", True))
def _frequency(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> None:
    item_extras(out, old, new, path, _AMOUNT_ITEM)
    if not _same_amount(old, new):
        text = f"frequency {_amount(old)} -> {_amount(new)}"
        out.append(Change(path, "schedule-changed", text, True))


@accepts(present_map, unclassified)
def _other_sla(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> None:
    item_extras(out, old, new, path, {"property"})


_SLA: Final[dict[str, Handler]] = {"retention": _retention, "frequency": _frequency}

_TOP_LEVEL: Final[dict[str, Handler]] = {
    "version": stated("version-changed", "contract version", reapproval=False),
    "status": _status,
    "id": fixed("id-changed", True, " (a new agreement in the audit trail)", "contract id"),
    "name": wording,
    "description": wording,
    "tags": tags,
    "team": contacts,
    "support": contacts,
    "roles": items("role", by_key(_ROLE_KEYS), _ROLE_CHANGED, shape=only_map, unshaped=_role_whole),
    "servers": items(
        "server", _server, _ENDPOINT, shape=present_map, unshaped=_server_whole, renames=True
    ),
    "slaProperties": items("property", _sla_item, unclassified),
    "schema": schema,
    "customProperties": sharing_terms,
}
