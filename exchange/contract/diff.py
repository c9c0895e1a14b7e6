"""Compare two versions of a contract as an information-governance officer reviewing it would.

Each difference becomes a `Change`: where it is, a `kind` from the closed set below, one line in
the officer's words, and whether the change needs the agreement re-approved (`reapproval`) or is
editorial. Where the tool cannot tell, it says re-approval: a wrong "editorial" would let a wider
disclosure through unreviewed, a wrong "re-approval" only costs a second look.

Fields (`schema[].properties[]`) are matched by `name`, customProperties by `property`, servers
by `server`, slaProperties by `property` and roles by `role`, so reordering is not a change; nor
is reordering purposes, statutes, recipient keys or tags. The dataset keeps its index in paths
(`schema[0]`), fields and terms are named: `schema[0].properties[birth_month].customProperties.
transformOptions.to`, `customProperties.purposes[research]`.

Kinds. Always re-approval:
    field-added, source-changed, transform-weakened, transform-changed, classification-lowered,
    classification-changed, subject-key-changed, dataset-changed, id-changed, purpose-added,
    provider-changed, recipient-changed, legal-basis-changed, retention-longer,
    retention-changed, recipient-key-added, recipient-key-removed, endpoint-changed,
    pseudonymisation-key-changed, schedule-changed, dpia-changed, termination-changed,
    justification-changed, quality-loosened, quality-changed, acknowledgements-changed,
    inbox-management-changed, unclassified.
Always editorial:
    field-removed, transform-strengthened, purpose-removed, retention-shorter,
    quality-tightened, wording, contacts-changed, version-changed, restated.
Either, by direction (see `KINDS`):
    status-changed, review-date-changed, objection-rule-changed, retention-action-changed,
    classification-raised, type-changed, role-changed, direct-identifier-changed, rows-changed.
How each sharing term is judged is declared in `exchange.contract.vocabulary.terms`; how each
transform compares, in `exchange.contract.vocabulary.transforms`.
A change a stronger transform makes necessary on the same field (its type, type options and
quality rules) is editorial: those rules describe the new, more minimised output.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from exchange.contract import legal
from exchange.contract.load import parse_text, read_document
from exchange.contract.vocabulary import PURPOSES, TRANSFORMS, units
from exchange.contract.vocabulary.terms import TERMS, Fixed
from exchange.contract.vocabulary.transforms import strength_change
from exchange.errors import ContractError, Problem

EXIT_CODES: Final = {"identical": 0, "editorial": 1, "needs-re-approval": 3}

KINDS: Final[dict[str, str]] = {
    "field-added": "a new outgoing field (re-approval)",
    "field-removed": "a field is no longer sent (editorial: less data)",
    "source-changed": "a field or the dataset is read from a different source (re-approval)",
    "transform-weakened": "a field is minimised less than before (re-approval)",
    "transform-strengthened": "a field is minimised more than before (editorial)",
    "transform-changed": "a transform whose strength cannot be compared (re-approval)",
    "type-changed": "a field's type; editorial only when it follows a transform change",
    "classification-lowered": "a field's classification lowered (re-approval)",
    "classification-raised": "raised; re-approval when it becomes special category or criminal",
    "classification-changed": "a classification that cannot be ranked (re-approval)",
    "subject-key-changed": "which field identifies the person (re-approval)",
    "direct-identifier-changed": "unmarking a direct identifier is re-approval; marking editorial",
    "justification-changed": "why a field sent in full is needed (re-approval)",
    "dataset-changed": "the shared dataset added, removed or renamed (re-approval)",
    "id-changed": "the contract id, which ties the audit trail together (re-approval)",
    "purpose-added": "a new purpose for the sharing (re-approval)",
    "purpose-removed": "a purpose dropped (editorial: less sharing)",
    "provider-changed": "the providing organisation or department (re-approval)",
    "recipient-changed": "the receiving organisation or department (re-approval)",
    "legal-basis-changed": "any part of the legal basis (re-approval)",
    "retention-longer": "the recipient keeps drops longer (re-approval)",
    "retention-shorter": "the recipient keeps drops for less time (editorial)",
    "retention-changed": "a retention that cannot be compared, added or removed (re-approval)",
    "retention-action-changed": "delete -> archive is re-approval; archive -> delete editorial",
    "recipient-key-added": "a new key can decrypt the drops (re-approval)",
    "recipient-key-removed": "a key removed; the remaining holders must be confirmed (re-approval)",
    "endpoint-changed": "where or in what format drops are delivered (re-approval)",
    "pseudonymisation-key-changed": "the pseudonymisation key's secret name (re-approval)",
    "objection-rule-changed": "how objections are honoured; turning an override off is editorial",
    "schedule-changed": "when or how often data is sent (re-approval)",
    "rows-changed": "which rows are sent: fewer is editorial, more or different re-approval",
    "acknowledgements-changed": "how the recipient acknowledges drops (re-approval)",
    "inbox-management-changed": "whether the sender deletes files on the recipient's server",
    "review-date-changed": "later is re-approval, earlier is editorial",
    "status-changed": "becoming active is re-approval; anything else editorial",
    "dpia-changed": "a different DPIA reference (re-approval)",
    "termination-changed": "the termination terms (re-approval)",
    "role-changed": "a role added or its access changed is re-approval; removed is editorial",
    "quality-loosened": "a quality rule relaxed or removed (re-approval)",
    "quality-tightened": "a quality rule added or made stricter (editorial)",
    "quality-changed": "a quality rule changed in a way that cannot be ranked (re-approval)",
    "wording": "descriptions, names for people, tags (editorial)",
    "contacts-changed": "contacts of the team, roles, parties or rights requests (editorial)",
    "version-changed": "the contract's version string (editorial)",
    "restated": "the same term written another way, e.g. 24 m for 2 y (editorial)",
    "unclassified": "a change this tool does not know how to judge (re-approval)",
}


@dataclass(frozen=True)
class Change:
    """One difference between two versions of a contract."""

    path: str
    kind: str
    summary: str
    reapproval: bool

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown change kind {self.kind!r}")


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Final[Any] = _Missing()

Handler = Callable[[list[Change], Any, Any, str], None]


# --- public interface --------------------------------------------------------------------------


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every difference between two parsed contracts, in the order of the new document."""
    out: list[Change] = []
    for key in _union(old, new):
        o, n = old.get(key, MISSING), new.get(key, MISSING)
        if o != n:
            _TOP_LEVEL.get(key, _unclassified)(out, o, n, key)
    return out


def classify(changes: Iterable[Change]) -> str:
    """'identical', 'editorial' or 'needs-re-approval' for a list of changes."""
    changes = list(changes)
    if not changes:
        return "identical"
    return "needs-re-approval" if any(c.reapproval for c in changes) else "editorial"


def read_revision(spec: str, *, cwd: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Read a contract from a file path, or from git as `REV:path`; return (label, document).

    `REV:path` is resolved as `git show` does, in `cwd`: the path is from the repository's top
    (`REV:./path` for one relative to `cwd`). An existing file of that name is read instead.
    """
    base = cwd if cwd is not None else Path.cwd()
    path = Path(spec) if Path(spec).is_absolute() else base / spec
    rev, colon, inner = spec.partition(":")
    if path.is_file() or not colon:
        return spec, read_document(path)
    if rev.startswith("-") or not inner:
        raise ContractError([Problem(spec, "", "not a file, and not a git revision REV:path")])
    try:
        result = subprocess.run(
            ["git", "--no-pager", "show", f"{rev}:{inner}"],
            cwd=base,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ContractError([Problem(spec, "", "git is not installed")]) from exc
    except subprocess.TimeoutExpired as exc:
        raise ContractError([Problem(spec, "", "git show timed out")]) from exc
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[0] if lines else f"exit status {result.returncode}"
        raise ContractError([Problem(spec, "", f"cannot read from git: {detail}")])
    try:
        text = result.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError([Problem(spec, "", "not UTF-8 text")]) from exc
    return spec, parse_text(text, spec)


# --- generic helpers ---------------------------------------------------------------------------


def _union(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys of both, in the new order, then those only the old has."""
    return [*new, *(k for k in old if k not in new)]


def _as_map(value: Any) -> Mapping[str, Any] | None:
    if value is MISSING or value is None:
        return {}
    return value if isinstance(value, Mapping) else None


def _as_list(value: Any) -> list[Any] | None:
    if value is MISSING or value is None:
        return []
    return value if isinstance(value, list) else None


def _show(value: Any, limit: int = 60) -> str:
    """A short, one-line rendering of a contract value."""
    if value is MISSING:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f'"{text}"' if isinstance(value, str) else text


def _was(old: Any, new: Any) -> str:
    if old is MISSING:
        return f"added {_show(new)}"
    if new is MISSING:
        return f"removed (was {_show(old)})"
    if isinstance(old, str) and isinstance(new, str):
        old, new = _from_first_difference(old, new)
    return f"{_show(old)} -> {_show(new)}"


def _from_first_difference(old: str, new: str, context: int = 20) -> tuple[str, str]:
    """Both texts from a little before where they first differ, so a long rewording shows."""
    old, new = " ".join(old.split()), " ".join(new.split())
    same = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), None)
    if same is None:
        same = min(len(old), len(new))
    start = old.rfind(" ", 0, max(same - context, 0)) + 1
    if start <= 0:
        return old, new
    return "..." + old[start:], "..." + new[start:]


def _leaves(old: Any, new: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """The differing leaves of two values; lists are compared whole."""
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in _union(old, new):
            yield from _leaves(old.get(key, MISSING), new.get(key, MISSING), f"{path}.{key}")
    else:
        yield path, old, new


def _report(
    out: list[Change],
    old: Any,
    new: Any,
    path: str,
    kind: str,
    reapproval: bool,
    note: str = "",
    label: str = "",
) -> None:
    for where, o, n in _leaves(old, new, path):
        name = label if label and where == path else where
        out.append(Change(where, kind, f"{name}: {_was(o, n)}{note}", reapproval))


def _unclassified(out: list[Change], old: Any, new: Any, path: str) -> None:
    _report(out, old, new, path, "unclassified", True, " (not a term this tool can judge)")


def _wording(out: list[Change], old: Any, new: Any, path: str) -> None:
    _report(out, old, new, path, "wording", False)


def _contacts(out: list[Change], old: Any, new: Any, path: str) -> None:
    _report(out, old, new, path, "contacts-changed", False)


def _fixed(kind: str, reapproval: bool, note: str = "", label: str = "") -> Handler:
    def handler(out: list[Change], old: Any, new: Any, path: str) -> None:
        _report(out, old, new, path, kind, reapproval, note, label)

    return handler


def _tags(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _wording(out, old, new, path)
        return
    added = [t for t in n if t not in o]
    removed = [t for t in o if t not in n]
    if added or removed:
        parts = ([f"added {_show(added)}"] if added else []) + (
            [f"removed {_show(removed)}"] if removed else []
        )
        out.append(Change(path, "wording", f"{path}: tags {', '.join(parts)}", False))


class _Pair(NamedTuple):
    key: str
    old_index: int | None
    old: Any
    new_index: int | None
    new: Any

    @property
    def position(self) -> int:
        return self.new_index if self.new_index is not None else self.old_index or 0


def _keyed(items: list[Any], key: str) -> dict[str, tuple[int, Any]]:
    out: dict[str, tuple[int, Any]] = {}
    for i, item in enumerate(items):
        name = item.get(key) if isinstance(item, Mapping) else None
        out[str(name) if name is not None else f"#{i}"] = (i, item)
    return out


def _match(old: list[Any], new: list[Any], key: str, *, renames: bool = False) -> list[_Pair]:
    """Pair list items by `key`; with `renames`, a lone leftover on each side is one item."""
    o, n = _keyed(old, key), _keyed(new, key)
    pairs = [_Pair(k, *o.get(k, (None, MISSING)), *n.get(k, (None, MISSING))) for k in _union(o, n)]
    gone = [p for p in pairs if p.new is MISSING]
    fresh = [p for p in pairs if p.old is MISSING]
    if renames and len(gone) == 1 and len(fresh) == 1:
        pairs.remove(gone[0])
        pairs[pairs.index(fresh[0])] = fresh[0]._replace(
            old_index=gone[0].old_index, old=gone[0].old
        )
    return pairs


def _item_extras(out: list[Change], old: Any, new: Any, path: str, skip: set[str]) -> None:
    """Keys of a list item other than its identity and value: description is wording."""
    o, n = _as_map(old), _as_map(new)
    if o is None or n is None:
        return
    for key in _union(o, n):
        ov, nv = o.get(key, MISSING), n.get(key, MISSING)
        if key in skip or ov == nv:
            continue
        (_wording if key == "description" else _unclassified)(out, ov, nv, f"{path}.{key}")


# --- top level ---------------------------------------------------------------------------------


def _version(out: list[Change], old: Any, new: Any, path: str) -> None:
    out.append(Change(path, "version-changed", f"contract version {_was(old, new)}", False))


def _status(out: list[Change], old: Any, new: Any, path: str) -> None:
    activated = new == "active" and old != "active"
    note = " (the gateway will run it)" if activated else ""
    out.append(Change(path, "status-changed", f"status {_was(old, new)}{note}", activated))


def _roles(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _fixed("role-changed", True)(out, old, new, path)
        return
    for p in _match(o, n, "role"):
        where = f"{path}[{p.key}]"
        if p.old is MISSING:
            access = p.new.get("access") if isinstance(p.new, Mapping) else None
            text = f"new role {p.key!r} with {access or 'unstated'} access to the data"
            out.append(Change(where, "role-changed", text, True))
        elif p.new is MISSING:
            text = f"role {p.key!r} removed (fewer people have access)"
            out.append(Change(where, "role-changed", text, False))
        elif isinstance(p.old, Mapping) and isinstance(p.new, Mapping):
            for key in _union(p.old, p.new):
                ov, nv = p.old.get(key, MISSING), p.new.get(key, MISSING)
                if ov == nv:
                    continue
                if key in ("description", "firstLevelApprovers", "secondLevelApprovers"):
                    _contacts(out, ov, nv, f"{where}.{key}")
                elif key == "access":
                    _fixed("role-changed", True)(out, ov, nv, f"{where}.access")
                else:
                    _unclassified(out, ov, nv, f"{where}.{key}")
        else:
            _fixed("role-changed", True)(out, p.old, p.new, where)


def _servers(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _fixed("endpoint-changed", True)(out, old, new, path)
        return
    for p in _match(o, n, "server", renames=True):
        where = f"{path}[{p.key}]"
        if p.old is MISSING or p.new is MISSING:
            text = f"server {p.key!r} {'added' if p.old is MISSING else 'removed'}"
            out.append(Change(where, "endpoint-changed", text, True))
            continue
        om, nm = _as_map(p.old), _as_map(p.new)
        if om is None or nm is None:
            _fixed("endpoint-changed", True)(out, p.old, p.new, where)
            continue
        for key in _union(om, nm):
            ov, nv = om.get(key, MISSING), nm.get(key, MISSING)
            if ov == nv:
                continue
            if key == "description":
                _wording(out, ov, nv, f"{where}.description")
                continue
            if key == "customProperties":
                _server_terms(out, ov, nv, f"{where}.customProperties")
                continue
            label = {"location": "delivery location", "format": "payload format"}.get(key, key)
            text = f"recipient server {label}: {_was(ov, nv)}"
            out.append(Change(f"{where}.{key}", "endpoint-changed", text, True))


def _server_terms(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _fixed("endpoint-changed", True)(out, old, new, path)
        return
    for p in _match(o, n, "property"):
        where = f"{path}.{p.key}"
        _item_extras(out, p.old, p.new, where, {"property", "value"})
        ov = p.old.get("value", MISSING) if isinstance(p.old, Mapping) else MISSING
        nv = p.new.get("value", MISSING) if isinstance(p.new, Mapping) else MISSING
        before, after = _as_list(ov), _as_list(nv)
        if ov == nv:
            continue
        if p.key != "hostKeys" or before is None or after is None:
            _fixed("endpoint-changed", True)(out, ov, nv, where)
            continue
        for key in [k for k in after if k not in before]:
            text = f"recipient server host key added: {_key_text(key)} (confirm it is theirs)"
            out.append(Change(where, "endpoint-changed", text, True))
        for key in [k for k in before if k not in after]:
            text = f"recipient server host key removed: {_key_text(key)}"
            out.append(Change(where, "endpoint-changed", text, True))


def _days(item: Mapping[str, Any]) -> Any:
    return units.period_days(item.get("value"), item.get("unit"))


def _sla(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _unclassified(out, old, new, path)
        return
    for p in _match(o, n, "property"):
        where = f"{path}[{p.key}]"
        kind = {"retention": "retention-changed", "frequency": "schedule-changed"}.get(p.key)
        om = _as_map(p.old) if p.old is not MISSING else None
        nm = _as_map(p.new) if p.new is not MISSING else None
        if om is None or nm is None:
            if kind:
                _fixed(kind, True)(out, p.old, p.new, where)
            else:
                _unclassified(out, p.old, p.new, where)
            continue
        _item_extras(out, om, nm, where, {"property", "value", "unit"} if kind else {"property"})
        if p.key == "retention":
            _retention(out, om, nm, where)
        elif p.key == "frequency" and (om.get("value"), om.get("unit")) != (
            nm.get("value"),
            nm.get("unit"),
        ):
            text = f"frequency {_amount(om)} -> {_amount(nm)}"
            out.append(Change(where, "schedule-changed", text, True))


def _amount(item: Mapping[str, Any]) -> str:
    return f"{item.get('value', '?')} {item.get('unit', '')}".strip()


def _retention(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str
) -> None:
    if (old.get("value"), old.get("unit")) == (new.get("value"), new.get("unit")):
        return
    before, after = _days(old), _days(new)
    text = f"recipient's retention {_amount(old)} -> {_amount(new)}"
    if before is None or after is None:
        out.append(Change(path, "retention-changed", f"{text} (cannot compare)", True))
    elif after > before:
        out.append(Change(path, "retention-longer", f"{text} (longer)", True))
    elif after < before:
        out.append(Change(path, "retention-shorter", f"{text} (shorter)", False))
    else:
        out.append(Change(path, "restated", f"{text} (the same period)", False))


# --- the dataset and its fields ----------------------------------------------------------------


def _schema(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _fixed("dataset-changed", True)(out, old, new, path)
        return
    for p in _match(o, n, "name", renames=True):
        where = f"{path}[{p.position}]"
        om = _as_map(p.old) if p.old is not MISSING else None
        nm = _as_map(p.new) if p.new is not MISSING else None
        if om is None or nm is None:
            action = "added" if p.old is MISSING else "removed" if p.new is MISSING else "changed"
            out.append(Change(where, "dataset-changed", f"dataset {p.key!r} {action}", True))
            continue
        for key in _union(om, nm):
            ov, nv = om.get(key, MISSING), nm.get(key, MISSING)
            if ov == nv:
                continue
            at = f"{where}.{key}"
            if key == "name":
                out.append(Change(at, "dataset-changed", f"dataset name {_was(ov, nv)}", True))
            elif key == "physicalName":
                text = f"dataset read from source {_was(ov, nv)}"
                out.append(Change(at, "source-changed", text, True))
            elif key in ("description", "businessName", "dataGranularityDescription"):
                _wording(out, ov, nv, at)
            elif key == "tags":
                _tags(out, ov, nv, at)
            elif key == "quality":
                _quality(out, ov, nv, at, "dataset", follows=False)
            elif key == "properties":
                _fields(out, ov, nv, at)
            else:
                _unclassified(out, ov, nv, at)


def _terms_of(prop: Mapping[str, Any]) -> dict[str, Any]:
    items = _as_list(prop.get("customProperties")) or []
    return {
        key: (item.get("value") if isinstance(item, Mapping) else MISSING)
        for key, (_, item) in _keyed(items, "property").items()
    }


def _source(prop: Mapping[str, Any]) -> Any:
    return prop.get("physicalName", prop.get("name"))


def _transform_text(transform: Any, options: Any) -> str:
    spec = TRANSFORMS.get(transform) if isinstance(transform, str) else None
    if spec is not None:
        return spec.phrase(options if isinstance(options, Mapping) else {})
    if transform is MISSING:
        return "with no transform"
    return f"transformed by {_show(transform)} {_show(options)}"


def _options_of(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _fields(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _unclassified(out, old, new, path)
        return
    for p in _match(o, n, "name"):
        where = f"{path}[{p.key}]"
        om = _as_map(p.old) if p.old is not MISSING else None
        nm = _as_map(p.new) if p.new is not MISSING else None
        if p.old is MISSING and nm is not None:
            terms = _terms_of(nm)
            how = _transform_text(terms.get("transform", MISSING), terms.get("transformOptions"))
            text = (
                f"new field {p.key} from source column {_show(_source(nm))}, {how}, "
                f"classification {_show(nm.get('classification', MISSING))}"
            )
            out.append(Change(where, "field-added", text, True))
        elif p.new is MISSING and om is not None:
            source = _source(om)
            origin = f" (from {_show(source)})" if source != p.key else ""
            text = f"field {p.key}{origin} is no longer sent"
            out.append(Change(where, "field-removed", text, False))
        elif om is not None and nm is not None:
            _field(out, om, nm, where, p.key)
        else:
            _unclassified(out, p.old, p.new, where)


def _field(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str, name: str
) -> None:
    strengthened, transform_changed = _transform(out, old, new, path, name)
    for key in _union(old, new):
        ov, nv = old.get(key, MISSING), new.get(key, MISSING)
        if ov == nv or key == "name":
            continue
        at = f"{path}.{key}"
        if key == "physicalName":
            if _source(old) == _source(new):
                text = f"{name}: source column written explicitly ({_was(ov, nv)}), unchanged"
                out.append(Change(at, "restated", text, False))
            else:
                text = f"{name}: read from source column {_show(_source(old))} -> "
                out.append(Change(at, "source-changed", text + _show(_source(new)), True))
        elif key == "logicalType":
            terms = _terms_of(new)
            spec = TRANSFORMS.get(terms.get("transform"))  # type: ignore[arg-type]
            produced = spec.output_type(terms.get("transformOptions")) if spec else None
            follows = transform_changed and spec is not None and produced in (None, nv)
            note = " (follows the transform change)" if follows else ""
            text = f"{name}: type {_was(ov, nv)}{note}"
            out.append(Change(at, "type-changed", text, not follows))
        elif key == "logicalTypeOptions":
            _options(out, ov, nv, at, name, follows=strengthened)
        elif key in ("required", "unique"):
            _flag(out, key, ov, nv, at, name, follows=strengthened)
        elif key == "classification":
            _classification(out, ov, nv, at, name)
        elif key in ("description", "businessName"):
            _wording(out, ov, nv, at)
        elif key == "tags":
            _tags(out, ov, nv, at)
        elif key == "quality":
            _quality(out, ov, nv, at, name, follows=strengthened)
        elif key == "customProperties":
            kept = _terms_of(new).get("transform") == "keep"
            _field_terms(out, ov, nv, at, name, kept=kept)
        else:
            _unclassified(out, ov, nv, at)


def _transform(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str, name: str
) -> tuple[bool, bool]:
    """Report a transform change; return (strengthened, changed at all)."""
    ot, nt = _terms_of(old), _terms_of(new)
    before = (ot.get("transform", MISSING), ot.get("transformOptions", MISSING))
    after = (nt.get("transform", MISSING), nt.get("transformOptions", MISSING))
    if before == after:
        return False, False
    at = f"{path}.customProperties.transform"
    if before[0] == after[0]:
        at += "Options"
        if isinstance(before[1], Mapping) and isinstance(after[1], Mapping):
            keys = [k for k in _union(before[1], after[1]) if before[1].get(k) != after[1].get(k)]
            at += f".{keys[0]}" if len(keys) == 1 else ""
    direction = (
        strength_change(before[0], _options_of(before[1]), after[0], _options_of(after[1]))
        if isinstance(before[0], str) and isinstance(after[0], str)
        else None
    )
    source = str(_source(new)).replace("_", " ")
    text = f"{name}: {source} {_transform_text(*before)} -> {_transform_text(*after)}"
    if direction is None:
        out.append(Change(at, "transform-changed", f"{text} (cannot compare)", True))
    elif direction < 0:
        out.append(Change(at, "transform-weakened", f"{text} (weaker)", True))
    elif direction > 0:
        out.append(Change(at, "transform-strengthened", f"{text} (stronger)", False))
        return True, True
    else:
        text = f"{name}: transform options changed without effect ({_transform_text(*after)})"
        out.append(Change(at, "restated", text, False))
    return False, True


def _field_terms(
    out: list[Change], old: Any, new: Any, path: str, name: str, *, kept: bool
) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _unclassified(out, old, new, path)
        return
    for p in _match(o, n, "property"):
        where = f"{path}.{p.key}"
        _item_extras(out, p.old, p.new, where, {"property", "value"})
        ov = p.old.get("value", MISSING) if isinstance(p.old, Mapping) else MISSING
        nv = p.new.get("value", MISSING) if isinstance(p.new, Mapping) else MISSING
        if ov == nv or p.key in ("transform", "transformOptions"):
            continue  # the transform is judged as a whole by _transform
        if p.key in ("subjectKey", "directIdentifier") and (ov is True) == (nv is True):
            text = f"{name}: {p.key} {_was(ov, nv)} (the default, unchanged)"
            out.append(Change(where, "restated", text, False))
        elif p.key == "subjectKey":
            now = "is now" if nv is True else "is no longer"
            text = f"{name} {now} the subject key (the field that identifies the person)"
            out.append(Change(where, "subject-key-changed", text, True))
        elif p.key == "directIdentifier":
            # Unmarking lifts the rule that a direct identifier is not sent in clear unjustified.
            marked = nv is True
            now = "now marked" if marked else "no longer marked"
            text = f"{name} {now} as identifying a person directly"
            out.append(Change(where, "direct-identifier-changed", text, not marked))
        elif p.key == "justification" and kept:
            text = f"{name}: justification for sending it in full {_was(ov, nv)}"
            out.append(Change(where, "justification-changed", text, True))
        elif p.key == "justification":
            _wording(out, ov, nv, where)
        else:
            _unclassified(out, ov, nv, where)


# Higher is more sensitive; an unlisted label cannot be ranked.
_CLASSIFICATION_RANK: Final = {
    "public": 0,
    "internal": 1,
    "official": 1,
    "confidential": 2,
    "restricted": 2,
    "sensitive": 3,
    "official-sensitive": 3,
    "special-category": 4,
    "criminal-offence": 4,
}


_SPECIAL: Final = _CLASSIFICATION_RANK["special-category"]


def _classification_rank(label: Any) -> int | None:
    if not isinstance(label, str):
        return None
    if label in legal.SPECIAL_CATEGORY_CLASSES:
        return _SPECIAL
    return _CLASSIFICATION_RANK.get(label.lower())


def _classification(out: list[Change], old: Any, new: Any, path: str, name: str) -> None:
    before, after = _classification_rank(old), _classification_rank(new)
    text = f"{name}: classification {_was(old, new)}"
    if before is None or after is None or before == after:
        out.append(Change(path, "classification-changed", text, True))
    elif after < before:
        out.append(Change(path, "classification-lowered", f"{text} (lower)", True))
    elif after == _SPECIAL:
        # Special-category or criminal-offence data needs an Art 9 / Art 10 condition.
        note = " (now special category or criminal: the legal basis must cover it)"
        out.append(Change(path, "classification-raised", text + note, True))
    else:
        out.append(Change(path, "classification-raised", f"{text} (higher)", False))


# --- quality -----------------------------------------------------------------------------------

_LOWER_BOUNDS: Final = {"minimum", "exclusiveMinimum", "minLength", "minItems"}
_UPPER_BOUNDS: Final = {"maximum", "exclusiveMaximum", "maxLength", "maxItems"}
_CONSTRAINTS: Final = {"pattern", "format"}
_RULE_WORDING: Final = {"description", "name", "businessImpact", "tags"}
_RULE_BOUNDS: Final = {
    "mustBe",
    "mustBeBetween",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
}
_DIRECTION_WORDS: Final = {"tighter": "stricter", "looser": "looser", "changed": "changed"}
_QUALITY_KIND: Final = {
    "tighter": ("quality-tightened", False),
    "looser": ("quality-loosened", True),
    "changed": ("quality-changed", True),
}


def _quality_change(
    out: list[Change], path: str, direction: str, text: str, *, follows: bool
) -> None:
    kind, reapproval = _QUALITY_KIND[direction]
    if follows and reapproval:
        text, reapproval = f"{text} (follows the stronger transform)", False
    out.append(Change(path, kind, text, reapproval))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _option_direction(key: str, old: Any, new: Any) -> str:
    if key in _LOWER_BOUNDS | _UPPER_BOUNDS | _CONSTRAINTS:
        if old is MISSING:
            return "tighter"
        if new is MISSING:
            return "looser"
    if key in _LOWER_BOUNDS | _UPPER_BOUNDS and _is_number(old) and _is_number(new):
        raised = new > old
        return "tighter" if raised == (key in _LOWER_BOUNDS) else "looser"
    return "changed"


def _options(out: list[Change], old: Any, new: Any, path: str, name: str, *, follows: bool) -> None:
    o, n = _as_map(old), _as_map(new)
    if o is None or n is None:
        _quality_change(out, path, "changed", f"{name}: {_was(old, new)}", follows=follows)
        return
    for key in _union(o, n):
        ov, nv = o.get(key, MISSING), n.get(key, MISSING)
        if ov != nv:
            direction = _option_direction(key, ov, nv)
            text = f"{name}: {key} {_was(ov, nv)} ({_DIRECTION_WORDS[direction]})"
            _quality_change(out, f"{path}.{key}", direction, text, follows=follows)


def _flag(
    out: list[Change], key: str, old: Any, new: Any, path: str, name: str, *, follows: bool
) -> None:
    before = False if old is MISSING else old
    after = False if new is MISSING else new
    if not isinstance(before, bool) or not isinstance(after, bool):
        _quality_change(out, path, "changed", f"{name}: {key} {_was(old, new)}", follows=follows)
    elif before == after:
        text = f"{name}: {key} {_was(old, new)} (the default, unchanged)"
        out.append(Change(path, "restated", text, False))
    elif after:
        _quality_change(out, path, "tighter", f"{name}: now {key}", follows=follows)
    else:
        _quality_change(out, path, "looser", f"{name}: no longer {key}", follows=follows)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _core(rule: Any) -> Any:
    """A rule without its wording."""
    if not isinstance(rule, Mapping):
        return rule
    return {k: v for k, v in rule.items() if k not in _RULE_WORDING}


def _shape(rule: Any) -> str:
    """A rule without wording, bounds or valid values: what stays when it is only retuned."""
    core = _core(rule)
    if not isinstance(core, Mapping):
        return _canon(core)
    shape = {k: v for k, v in core.items() if k not in _RULE_BOUNDS}
    if isinstance(shape.get("arguments"), Mapping):
        shape["arguments"] = {k: v for k, v in shape["arguments"].items() if k != "validValues"}
    return _canon(shape)


Bound = tuple[float, int]


def _interval(rule: Mapping[str, Any]) -> tuple[Bound, Bound] | None:
    """The accepted range of a rule's measure; strictness breaks ties (None: cannot tell)."""
    low: Bound = (float("-inf"), 0)
    high: Bound = (float("inf"), 1)
    for key in _RULE_BOUNDS & set(rule):
        value = rule[key]
        if key == "mustBeBetween":
            if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
                return None
            low, high = max(low, (value[0], 0)), min(high, (value[1], 1))
            continue
        if not _is_number(value):
            return None
        if key in ("mustBe", "mustBeGreaterOrEqualTo"):
            low = max(low, (value, 0))
        if key in ("mustBe", "mustBeLessOrEqualTo"):
            high = min(high, (value, 1))
        if key == "mustBeGreaterThan":
            low = max(low, (value, 1))
        if key == "mustBeLessThan":
            high = min(high, (value, 0))
    return low, high


def _retuned(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """How a rule with the same shape changed: 'tighter', 'looser' or 'changed'."""
    directions = []
    if {k: old.get(k, MISSING) for k in _RULE_BOUNDS} != {
        k: new.get(k, MISSING) for k in _RULE_BOUNDS
    }:
        before, after = _interval(old), _interval(new)
        if before is None or after is None:
            return "changed"
        inside = after[0] >= before[0] and after[1] <= before[1]
        directions.append("tighter" if inside else "looser")
    old_args, new_args = old.get("arguments"), new.get("arguments")
    old_valid = old_args.get("validValues", MISSING) if isinstance(old_args, Mapping) else MISSING
    new_valid = new_args.get("validValues", MISSING) if isinstance(new_args, Mapping) else MISSING
    if old_valid != new_valid:
        if not isinstance(old_valid, list) or not isinstance(new_valid, list):
            return "changed"
        subset = all(v in old_valid for v in new_valid)
        directions.append("tighter" if subset else "looser")
    if not directions:
        return "changed"
    return "tighter" if all(d == "tighter" for d in directions) else "looser"


def _rule_text(rule: Any) -> str:
    if not isinstance(rule, Mapping):
        return _show(rule)
    what = str(rule.get("metric") or rule.get("rule") or rule.get("type") or "rule")
    args = rule.get("arguments")
    if isinstance(args, Mapping) and args:
        what += "(" + ", ".join(f"{k}={_show(v, 40)}" for k, v in args.items()) + ")"
    bounds = [f"{k} {_show(rule[k])}" for k in sorted(_RULE_BOUNDS & set(rule))]
    return " ".join([str(what), *bounds])


def _quality(out: list[Change], old: Any, new: Any, path: str, name: str, *, follows: bool) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _quality_change(out, path, "changed", f"{name}: rules {_was(old, new)}", follows=follows)
        return
    olds = dict(enumerate(o))
    news = dict(enumerate(n))
    # Same rule, perhaps reworded.
    for j, rule in list(news.items()):
        i = next((i for i, r in olds.items() if _canon(_core(r)) == _canon(_core(rule))), None)
        if i is not None:
            _report(out, olds.pop(i), news.pop(j), f"{path}[{j}]", "wording", False)
    # Same rule retuned, or replaced by one rule of the same metric.
    for grouping in (_shape, _metric):
        for j, rule in list(news.items()):
            same = [i for i, r in olds.items() if grouping(r) == grouping(rule)]
            peers = [k for k, r in news.items() if grouping(r) == grouping(rule)]
            if len(same) != 1 or len(peers) != 1:
                continue
            before = olds.pop(same[0])
            del news[j]
            direction = _retuned(before, rule) if grouping is _shape else "changed"
            text = f"{name}: quality rule {_rule_text(before)} -> {_rule_text(rule)}"
            text += f" ({_DIRECTION_WORDS[direction]})"
            _quality_change(out, f"{path}[{j}]", direction, text, follows=follows)
            if grouping is _shape:
                _report(
                    out, _wording_of(before), _wording_of(rule), f"{path}[{j}]", "wording", False
                )
    for i, rule in olds.items():
        text = f"{name}: quality rule {_rule_text(rule)} removed"
        _quality_change(out, f"{path}[{i}]", "looser", text, follows=follows)
    for j, rule in news.items():
        text = f"{name}: quality rule {_rule_text(rule)} added"
        _quality_change(out, f"{path}[{j}]", "tighter", text, follows=follows)


def _metric(rule: Any) -> str:
    return _canon(rule.get("metric") or rule.get("rule")) if isinstance(rule, Mapping) else "?"


def _wording_of(rule: Any) -> dict[str, Any]:
    return (
        {k: v for k, v in rule.items() if k in _RULE_WORDING} if isinstance(rule, Mapping) else {}
    )


# --- the sharing terms (top-level customProperties) ---------------------------------------------


def _terms(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _unclassified(out, old, new, path)
        return
    for p in _match(o, n, "property"):
        where = f"{path}.{p.key}"
        _item_extras(out, p.old, p.new, where, {"property", "value"})
        ov = p.old.get("value", MISSING) if isinstance(p.old, Mapping) else MISSING
        nv = p.new.get("value", MISSING) if isinstance(p.new, Mapping) else MISSING
        if ov != nv:
            _TERMS.get(p.key, _unclassified)(out, ov, nv, where)


def _party(kind: str, role: str) -> Handler:
    def handler(out: list[Change], old: Any, new: Any, path: str) -> None:
        o, n = _as_map(old), _as_map(new)
        if o is None or n is None or old is MISSING or new is MISSING:
            out.append(Change(path, kind, f"{role} {_was(old, new)}", True))
            return
        for key in _union(o, n):
            ov, nv = o.get(key, MISSING), n.get(key, MISSING)
            if ov == nv:
                continue
            if key == "contact":
                out.append(
                    Change(
                        f"{path}.contact",
                        "contacts-changed",
                        f"{role} contact {_was(ov, nv)}",
                        False,
                    )
                )
            else:
                out.append(Change(f"{path}.{key}", kind, f"{role} {key} {_was(ov, nv)}", True))

    return handler


def _purposes(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _fixed("purpose-added", True)(out, old, new, path)
        return
    for code in [c for c in n if c not in o]:
        label = f" ({PURPOSES[code]})" if isinstance(code, str) and code in PURPOSES else ""
        text = f"purpose added: {code}{label}"
        out.append(Change(f"{path}[{code}]", "purpose-added", text, True))
    for code in [c for c in o if c not in n]:
        label = f" ({PURPOSES[code]})" if isinstance(code, str) and code in PURPOSES else ""
        text = f"purpose removed: {code}{label} (less sharing)"
        out.append(Change(f"{path}[{code}]", "purpose-removed", text, False))


_BASIS_LABELS: Final = {
    "ukGdprArticle6": "UK GDPR Article 6 condition",
    "ukGdprArticle9": "UK GDPR Article 9 condition",
    "dpa2018Schedule1": "DPA 2018 Schedule 1 condition",
}


def _statute(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"{value.get('act', '?')} {value.get('section', '?')}"
    return _show(value)


def _legal_basis(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_map(old), _as_map(new)
    if o is None or n is None:
        _fixed("legal-basis-changed", True)(out, old, new, path)
        return
    for key in _union(o, n):
        ov, nv = o.get(key, MISSING), n.get(key, MISSING)
        if ov == nv:
            continue
        at = f"{path}.{key}"
        os_, ns_ = _as_list(ov), _as_list(nv)
        if key == "statutes" and os_ is not None and ns_ is not None:
            before = {_canon(s): s for s in os_}
            after = {_canon(s): s for s in ns_}
            for k in [k for k in after if k not in before]:
                text = f"legal basis: statute added: {_statute(after[k])}"
                out.append(Change(at, "legal-basis-changed", text, True))
            for k in [k for k in before if k not in after]:
                text = f"legal basis: statute removed: {_statute(before[k])}"
                out.append(Change(at, "legal-basis-changed", text, True))
        else:
            text = f"legal basis: {_BASIS_LABELS.get(key, key)} {_was(ov, nv)}"
            out.append(Change(at, "legal-basis-changed", text, True))


def _objections(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_map(old), _as_map(new)
    if o is None or n is None or old is MISSING or new is MISSING:
        _fixed("objection-rule-changed", True)(out, old, new, path)
        return
    overridden = n.get("legalBasisOverrides") is True
    for key in _union(o, n):
        ov, nv = o.get(key, MISSING), n.get(key, MISSING)
        if ov == nv:
            continue
        at = f"{path}.{key}"
        if key == "column":
            text = f"objections read from source column {_was(ov, nv)}"
            out.append(Change(at, "objection-rule-changed", text, True))
        elif key == "legalBasisOverrides" and nv is False and ov is True:
            text = "objections are now honoured (the legal basis no longer overrides them)"
            out.append(Change(at, "objection-rule-changed", text, False))
        elif key == "legalBasisOverrides":
            text = f"legal basis overrides objections: {_was(ov, nv)}"
            out.append(Change(at, "objection-rule-changed", text, True))
        elif key == "overrideJustification" and not overridden:
            _wording(out, ov, nv, at)  # no override in force: the text decides nothing
        elif key == "overrideJustification":
            text = f"justification for overriding objections {_was(ov, nv)}"
            out.append(Change(at, "objection-rule-changed", text, True))
        elif key == "list":
            honoured = ov is MISSING  # a list added: more objections are honoured
            text = f"list of objecting people (a secret's name) {_was(ov, nv)}"
            out.append(Change(at, "objection-rule-changed", text, not honoured))
        else:
            _unclassified(out, ov, nv, at)


def _review_date(out: list[Change], old: Any, new: Any, path: str) -> None:
    try:
        earlier = dt.date.fromisoformat(str(new)) < dt.date.fromisoformat(str(old))
    except ValueError:
        earlier = False
    note = " (earlier)" if earlier else " (later, or cannot compare)"
    out.append(
        Change(path, "review-date-changed", f"review date {_was(old, new)}{note}", not earlier)
    )


def _key_text(key: Any) -> str:
    return f"{key[:12]}...{key[-6:]}" if isinstance(key, str) and len(key) > 24 else _show(key)


def _recipient_keys(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None:
        _fixed("recipient-key-added", True)(out, old, new, path)
        return
    for key in [k for k in n if k not in o]:
        text = f"recipient key added: {_key_text(key)} (another key can decrypt every drop)"
        out.append(Change(path, "recipient-key-added", text, True))
    for key in [k for k in o if k not in n]:
        text = (
            f"recipient key removed: {_key_text(key)} (confirm why, e.g. a compromised key, "
            "and who holds the remaining keys)"
        )
        out.append(Change(path, "recipient-key-removed", text, True))


def _retention_action(out: list[Change], old: Any, new: Any, path: str) -> None:
    safer = old == "archive" and new == "delete"
    text = f"recipient's action at the end of retention {_was(old, new)}"
    out.append(Change(path, "retention-action-changed", text, not safer))


_TOP_LEVEL: Final[dict[str, Handler]] = {
    "version": _version,
    "status": _status,
    "id": _fixed("id-changed", True, " (a new agreement in the audit trail)", "contract id"),
    "name": _wording,
    "description": _wording,
    "tags": _tags,
    "team": _contacts,
    "support": _contacts,
    "roles": _roles,
    "servers": _servers,
    "slaProperties": _sla,
    "schema": _schema,
    "customProperties": _terms,
}


def _filters(out: list[Change], old: Any, new: Any, path: str) -> None:
    o, n = _as_list(old), _as_list(new)
    if o is None or n is None or not o or not n:
        fewer = not o and bool(n)  # filters added where there were none: fewer rows
        note = " (fewer rows are sent)" if fewer else " (more or other rows may be sent)"
        _report(out, old, new, path, "rows-changed", not fewer, note, "purpose filters")
        return
    added = [f for f in n if f not in o]
    removed = [f for f in o if f not in n]
    fewer = bool(added) and not removed  # only new rules: a row must pass every one
    text = f"purpose filters: {len(added)} added, {len(removed)} removed or changed"
    note = " (fewer rows are sent)" if fewer else " (more or other rows may be sent)"
    out.append(Change(path, "rows-changed", text + note, not fewer))


def _incremental(out: list[Change], old: Any, new: Any, path: str) -> None:
    on = old is MISSING and new is not MISSING  # only new or changed rows from now on
    note = " (fewer rows are sent)" if on else " (more or other rows may be sent)"
    _report(out, old, new, path, "rows-changed", not on, note, "incremental sending")


def _judge(term: str) -> Handler:
    """How diff judges a change to a sharing term, as the term registry declares it."""
    rule = TERMS[term].diff
    if isinstance(rule, Fixed):
        return _fixed(rule.kind, rule.reapproval, rule.note, rule.label)
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
