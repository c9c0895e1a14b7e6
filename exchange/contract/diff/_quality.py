"""Quality: a field's type options, its required and unique flags, and its quality rules.

A rule added or made stricter is editorial; relaxed, removed or changed beyond ranking, re-approval,
unless it follows a stronger transform on the same field (the rules then describe the new output).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from exchange.contract.diff._change import Change
from exchange.contract.diff._walk import (
    MISSING,
    accepts,
    as_list,
    as_map,
    canon,
    changed,
    report,
    show,
    was,
)

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


def _unranked(words: str) -> Callable[..., None]:
    """For a value not of the shape expected: a change that cannot be ranked."""

    def whole(
        out: list[Change], old: Any, new: Any, path: str, name: str, *, follows: bool
    ) -> None:
        _quality_change(out, path, "changed", f"{name}: {words}{was(old, new)}", follows=follows)

    return whole


@accepts(as_map, _unranked(""))
def options(
    out: list[Change],
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    path: str,
    name: str,
    *,
    follows: bool,
) -> None:
    """A field's logicalTypeOptions, bound by bound: a narrower range is stricter."""
    for key, before, after, at in changed(old, new, path):
        direction = _option_direction(key, before, after)
        text = f"{name}: {key} {was(before, after)} ({_DIRECTION_WORDS[direction]})"
        _quality_change(out, at, direction, text, follows=follows)


def flag(
    out: list[Change], key: str, old: Any, new: Any, path: str, name: str, *, follows: bool
) -> None:
    """A field's required or unique flag: set is stricter."""
    before = False if old is MISSING else old
    after = False if new is MISSING else new
    if not isinstance(before, bool) or not isinstance(after, bool):
        _quality_change(out, path, "changed", f"{name}: {key} {was(old, new)}", follows=follows)
    elif before == after:
        text = f"{name}: {key} {was(old, new)} (the default, unchanged)"
        out.append(Change(path, "restated", text, False))
    elif after:
        _quality_change(out, path, "tighter", f"{name}: now {key}", follows=follows)
    else:
        _quality_change(out, path, "looser", f"{name}: no longer {key}", follows=follows)


def _core(rule: Any) -> Any:
    """A rule without its wording (a composite key's properties in any order are one key)."""
    if not isinstance(rule, Mapping):
        return rule
    core = {k: v for k, v in rule.items() if k not in _RULE_WORDING}
    key = _key(core)
    if key is not None:
        core["arguments"] = {**core["arguments"], "properties": sorted(key)}
    return core


def _key(rule: Mapping[str, Any]) -> list[str] | None:
    """The properties of a schema-level duplicateValues rule (a composite key), if it has them."""
    args = rule.get("arguments")
    key = args.get("properties") if isinstance(args, Mapping) else None
    if isinstance(key, list) and all(isinstance(k, str) for k in key):
        return key
    return None


def _shape(rule: Any) -> str:
    """A rule without wording, bounds or valid values: what stays when it is only retuned."""
    core = _core(rule)
    if not isinstance(core, Mapping):
        return canon(core)
    shape = {k: v for k, v in core.items() if k not in _RULE_BOUNDS}
    if isinstance(shape.get("arguments"), Mapping):
        shape["arguments"] = {
            k: v for k, v in shape["arguments"].items() if k not in ("validValues", "properties")
        }
    return canon(shape)


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
    old_props = old_args.get("properties", MISSING) if isinstance(old_args, Mapping) else MISSING
    new_props = new_args.get("properties", MISSING) if isinstance(new_args, Mapping) else MISSING
    if old_props != new_props:
        # A composite key: unique over fewer of its properties is stricter ((a) unique makes
        # (a, b) unique); the same properties in another order are the same key.
        old_key, new_key = _key(old), _key(new)
        if old_key is None or new_key is None:
            return "changed"
        old_set, new_set = set(old_key), set(new_key)
        if old_set != new_set:
            if not (new_set < old_set or new_set > old_set):
                return "changed"
            directions.append("tighter" if new_set < old_set else "looser")
    if not directions:
        return "changed"
    return "tighter" if all(d == "tighter" for d in directions) else "looser"


def _rule_text(rule: Any) -> str:
    if not isinstance(rule, Mapping):
        return show(rule)
    what = str(rule.get("metric") or rule.get("rule") or rule.get("type") or "rule")
    args = rule.get("arguments")
    if isinstance(args, Mapping) and args:
        what += "(" + ", ".join(f"{k}={show(v, 40)}" for k, v in args.items()) + ")"
    bounds = [f"{k} {show(rule[k])}" for k in sorted(_RULE_BOUNDS & set(rule))]
    return " ".join([str(what), *bounds])


@accepts(as_list, _unranked("rules "))
def quality(
    out: list[Change], old: list[Any], new: list[Any], path: str, name: str, *, follows: bool
) -> None:
    """Quality rules, matched as the same rule reworded, retuned, or replaced by one like it."""
    olds = dict(enumerate(old))
    news = dict(enumerate(new))
    # Same rule, perhaps reworded.
    for j, rule in list(news.items()):
        i = next((i for i, r in olds.items() if canon(_core(r)) == canon(_core(rule))), None)
        if i is not None:
            report(out, olds.pop(i), news.pop(j), f"{path}[{j}]", "wording", False)
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
                report(
                    out, _wording_of(before), _wording_of(rule), f"{path}[{j}]", "wording", False
                )
    for i, rule in olds.items():
        text = f"{name}: quality rule {_rule_text(rule)} removed"
        _quality_change(out, f"{path}[{i}]", "looser", text, follows=follows)
    for j, rule in news.items():
        text = f"{name}: quality rule {_rule_text(rule)} added"
        _quality_change(out, f"{path}[{j}]", "tighter", text, follows=follows)


def _metric(rule: Any) -> str:
    return canon(rule.get("metric") or rule.get("rule")) if isinstance(rule, Mapping) else "?"


def _wording_of(rule: Any) -> dict[str, Any]:
    return (
        {k: v for k, v in rule.items() if k in _RULE_WORDING} if isinstance(rule, Mapping) else {}
    )
