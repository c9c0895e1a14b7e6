"""The shared dataset and its fields: sources, transforms, types, classifications, field terms."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

from exchange.contract import legal
from exchange.contract.diff._change import Change
from exchange.contract.diff._quality import flag, options, quality
from exchange.contract.diff._walk import (
    MISSING,
    Handler,
    as_list,
    by_key,
    changed,
    custom_properties,
    fixed,
    items,
    keyed,
    present_map,
    show,
    stated,
    tags,
    unclassified,
    union,
    was,
    wording,
)
from exchange.contract.vocabulary import TRANSFORMS
from exchange.contract.vocabulary.transforms import strength_change


def _dataset_whole(out: list[Change], old: Any, new: Any, path: str, name: str) -> None:
    action = "added" if old is MISSING else "removed" if new is MISSING else "changed"
    out.append(Change(path, "dataset-changed", f"dataset {name!r} {action}", True))


# --- fields ------------------------------------------------------------------------------------


def _terms_of(prop: Mapping[str, Any]) -> dict[str, Any]:
    items = as_list(prop.get("customProperties")) or []
    return {
        key: (item.get("value") if isinstance(item, Mapping) else MISSING)
        for key, (_, item) in keyed(items, "property").items()
    }


def _source(prop: Mapping[str, Any]) -> Any:
    return prop.get("physicalName", prop.get("name"))


def _transform_text(transform: Any, options: Any) -> str:
    spec = TRANSFORMS.get(transform) if isinstance(transform, str) else None
    if spec is not None:
        return spec.phrase(options if isinstance(options, Mapping) else {})
    if transform is MISSING:
        return "with no transform"
    return f"transformed by {show(transform)} {show(options)}"


def _options_of(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _field_added_or_removed(out: list[Change], old: Any, new: Any, path: str, name: str) -> None:
    before, after = present_map(old), present_map(new)
    if old is MISSING and after is not None:
        terms = _terms_of(after)
        how = _transform_text(terms.get("transform", MISSING), terms.get("transformOptions"))
        text = (
            f"new field {name} from source column {show(_source(after))}, {how}, "
            f"classification {show(after.get('classification', MISSING))}"
        )
        out.append(Change(path, "field-added", text, True))
    elif new is MISSING and before is not None:
        source = _source(before)
        origin = f" (from {show(source)})" if source != name else ""
        out.append(Change(path, "field-removed", f"field {name}{origin} is no longer sent", False))
    else:
        unclassified(out, old, new, path)


def _field(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str, name: str
) -> None:
    strengthened, transform_changed = _transform(out, old, new, path, name)
    for key, before, after, at in changed(old, new, path):
        if key == "name":
            continue
        if key == "physicalName":
            _field_source(out, old, new, at, name)
        elif key == "logicalType":
            _field_type(
                out, before, after, at, name, transform_changed=transform_changed, field=new
            )
        elif key == "logicalTypeOptions":
            options(out, before, after, at, name, follows=strengthened)
        elif key in ("required", "unique"):
            flag(out, key, before, after, at, name, follows=strengthened)
        elif key == "classification":
            _classification(out, before, after, at, name)
        elif key in ("description", "businessName"):
            wording(out, before, after, at)
        elif key == "tags":
            tags(out, before, after, at)
        elif key == "quality":
            quality(out, before, after, at, name, follows=strengthened)
        elif key == "customProperties":
            kept = _terms_of(new).get("transform") == "keep"
            judge = functools.partial(_field_term, field=name, kept=kept)
            custom_properties(judge)(out, before, after, at)
        else:
            unclassified(out, before, after, at)


def _field_source(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str, name: str
) -> None:
    if _source(old) == _source(new):
        written = was(old.get("physicalName", MISSING), new.get("physicalName", MISSING))
        text = f"{name}: source column written explicitly ({written}), unchanged"
        out.append(Change(path, "restated", text, False))
    else:
        text = f"{name}: read from source column {show(_source(old))} -> {show(_source(new))}"
        out.append(Change(path, "source-changed", text, True))


def _field_type(
    out: list[Change],
    old: Any,
    new: Any,
    path: str,
    name: str,
    *,
    transform_changed: bool,
    field: Mapping[str, Any],
) -> None:
    """A type change is editorial when it is what a changed transform now produces."""
    terms = _terms_of(field)
    spec = TRANSFORMS.get(terms.get("transform"))  # type: ignore[arg-type]
    produced = spec.output_type(terms.get("transformOptions")) if spec else None
    follows = transform_changed and spec is not None and produced in (None, new)
    note = " (follows the transform change)" if follows else ""
    out.append(Change(path, "type-changed", f"{name}: type {was(old, new)}{note}", not follows))


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
            keys = [k for k in union(before[1], after[1]) if before[1].get(k) != after[1].get(k)]
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


def _field_term(
    out: list[Change], old: Any, new: Any, path: str, term: str, *, field: str, kept: bool
) -> None:
    if term in ("transform", "transformOptions"):
        return  # the transform is judged as a whole by _transform
    if term in ("subjectKey", "directIdentifier") and (old is True) == (new is True):
        text = f"{field}: {term} {was(old, new)} (the default, unchanged)"
        out.append(Change(path, "restated", text, False))
    elif term == "subjectKey":
        now = "is now" if new is True else "is no longer"
        text = f"{field} {now} the subject key (the field that identifies the person)"
        out.append(Change(path, "subject-key-changed", text, True))
    elif term == "directIdentifier":
        # Unmarking lifts the rule that a direct identifier is not sent in clear unjustified.
        marked = new is True
        now = "now marked" if marked else "no longer marked"
        text = f"{field} {now} as identifying a person directly"
        out.append(Change(path, "direct-identifier-changed", text, not marked))
    elif term == "justification" and kept:
        text = f"{field}: justification for sending it in full {was(old, new)}"
        out.append(Change(path, "justification-changed", text, True))
    elif term == "justification":
        wording(out, old, new, path)
    else:
        unclassified(out, old, new, path)


# --- classification ----------------------------------------------------------------------------

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
    text = f"{name}: classification {was(old, new)}"
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


_DATASET_KEYS: Final[dict[str, Handler]] = {
    "name": stated("dataset-changed", "dataset name"),
    "physicalName": stated("source-changed", "dataset read from source"),
    "description": wording,
    "businessName": wording,
    "dataGranularityDescription": wording,
    "tags": tags,
    "quality": functools.partial(quality, name="dataset", follows=False),
    "properties": items(
        "name", _field, unclassified, shape=present_map, unshaped=_field_added_or_removed
    ),
}

schema: Final = items(
    "name",
    by_key(_DATASET_KEYS),
    fixed("dataset-changed", True),
    shape=present_map,
    unshaped=_dataset_whole,
    at="{path}[{position}]",
    renames=True,
)
"""The datasets (`schema[]`), matched by name: a lone rename is one dataset."""
