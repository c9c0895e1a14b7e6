"""The contract's quality rules, compiled to plain `Rule` records.

Kept apart from `exchange.quality` (which runs them over rows with pandas and Great Expectations)
so that linting and approving a contract, which must refuse a rule the gateway cannot enforce,
load no data library.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from exchange.contract import Contract, Field
from exchange.errors import ContractError, Problem
from validators.rules import Rule

ENFORCED_OPTIONS = frozenset({"pattern", "minimum", "maximum", "format"})


def compile_rules(contract: Contract) -> tuple[list[Rule], tuple[int | None, int | None]]:
    """The contract's row rules and its row-count bounds; ContractError if one is unsupported."""
    rules: list[Rule] = []
    problems: list[Problem] = []
    for f in contract.fields:
        rules.extend(_field_rules(f, problems, str(contract.path)))
    bounds: tuple[int | None, int | None] = (None, None)
    names = {f.name for f in contract.fields}
    for i, q in enumerate(contract.dataset_quality):
        at = f"schema[0].quality[{i}]"
        if q.get("metric") == "rowCount":
            bounds = _bounds(q, at, problems, str(contract.path))
        elif q.get("metric") == "duplicateValues":
            rule = _composite_key_rule(q, at, names, problems, str(contract.path))
            if rule is not None:
                rules.append(rule)
        else:
            problems.append(
                Problem(
                    str(contract.path),
                    at,
                    "only 'rowCount' and 'duplicateValues' over properties are supported here",
                )
            )
    if problems:
        raise ContractError(problems)
    return rules, bounds


def _field_rules(f: Field, problems: list[Problem], file: str) -> Iterator[Rule]:
    if f.required:
        yield Rule("not_null", f.name, origin=f"{f.path}.required")
    if f.unique:
        yield Rule("unique", f.name, origin=f"{f.path}.unique")
    options = f.type_options
    for option in sorted(set(options) - ENFORCED_OPTIONS):
        at = f"{f.path}.logicalTypeOptions.{option}"
        problems.append(Problem(file, at, "not enforced by this gateway: remove it or use quality"))
    if "format" in options and options["format"] != "nhs-number":
        at = f"{f.path}.logicalTypeOptions.format"
        problems.append(Problem(file, at, "the only format enforced is 'nhs-number'"))
    if "pattern" in options:
        yield Rule(
            "regex", f.name, (("pattern", options["pattern"]),), f"{f.path}.logicalTypeOptions"
        )
    limits = tuple((k[:3], options[k]) for k in ("minimum", "maximum") if k in options)
    if limits:
        yield Rule("between", f.name, limits, f"{f.path}.logicalTypeOptions")
    if options.get("format") == "nhs-number":
        yield Rule("nhs_number", f.name, origin=f"{f.path}.logicalTypeOptions.format")
    for i, q in enumerate(f.quality):
        at = f"{f.path}.quality[{i}]"
        rule = _library_rule(f.name, q, at)
        if rule is None:
            problems.append(Problem(file, at, "unsupported quality rule for this gateway"))
        else:
            yield rule


def _library_rule(column: str, q: Mapping[str, Any], at: str) -> Rule | None:
    metric, args = q.get("metric"), q.get("arguments") or {}
    if q.get("mustBe") != 0:
        return None  # only "no row may break it" is enforceable per row
    if metric == "nullValues":
        return Rule("not_null", column, origin=at)
    if metric == "duplicateValues" and "properties" not in args:
        return Rule("unique", column, origin=at)  # a key of several columns is schema-level
    if metric == "invalidValues" and "validValues" in args:
        return Rule("in_set", column, (("values", tuple(args["validValues"])),), at)
    if metric == "invalidValues" and "pattern" in args:
        return Rule("regex", column, (("pattern", args["pattern"]),), at)
    return None


def _composite_key_rule(
    q: Mapping[str, Any], at: str, names: set[str], problems: list[Problem], file: str
) -> Rule | None:
    """A schema-level duplicateValues rule: no two rows may share the listed properties' values."""
    args = q.get("arguments") or {}
    key = args.get("properties") if isinstance(args, Mapping) else None
    if not isinstance(key, list | tuple) or not key or not all(isinstance(k, str) for k in key):
        where = f"{at}.arguments.properties"
        problems.append(Problem(file, where, "duplicateValues here needs a list of property names"))
        return None
    unknown = [k for k in key if k not in names]
    if unknown:
        problems.append(
            Problem(
                file,
                f"{at}.arguments.properties[{list(key).index(unknown[0])}]",
                f"the composite key names {unknown[0]!r}, which is not a property of the schema",
            )
        )
        return None
    if len(set(key)) != len(key):
        problems.append(
            Problem(file, f"{at}.arguments.properties", "a property is listed twice in the key")
        )
        return None
    if q.get("mustBe") != 0:
        problems.append(Problem(file, at, "duplicateValues is enforced only as mustBe: 0"))
        return None
    return Rule.compound_unique(tuple(key), at)


def _bounds(
    q: Mapping[str, Any], at: str, problems: list[Problem], file: str
) -> tuple[int | None, int | None]:
    if "mustBeBetween" in q:
        low, high = q["mustBeBetween"]
        return int(low), int(high)
    if "mustBeGreaterThan" in q:
        return int(q["mustBeGreaterThan"]) + 1, None
    if "mustBeGreaterOrEqualTo" in q:
        return int(q["mustBeGreaterOrEqualTo"]), None
    if "mustBeLessThan" in q:
        return None, int(q["mustBeLessThan"]) - 1
    if "mustBeLessOrEqualTo" in q:
        return None, int(q["mustBeLessOrEqualTo"])
    problems.append(Problem(file, at, "rowCount needs mustBeBetween or a bound"))
    return None, None
