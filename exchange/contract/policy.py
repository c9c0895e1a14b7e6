"""What the protocol requires of every agreement, beyond the shape the schemas check.

Each rule yields a Problem that names the place in the contract and says how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from exchange.contract import legal
from exchange.contract.paths import custom_path, custom_properties, custom_values, format_path
from exchange.errors import Problem


def policy_problems(document: dict[str, Any], file: str) -> Iterator[Problem]:
    """Every way the agreement falls short of the protocol's rules."""
    custom = custom_properties(document.get("customProperties"))
    terms = custom_values(document.get("customProperties"))
    basis = _mapping(terms.get("legalBasis"))
    basis_at = custom_path(custom, "legalBasis")
    powers = []
    statutes = basis.get("statutes")
    for i, statute in enumerate(statutes if isinstance(statutes, list) else []):
        if not isinstance(statute, dict):
            continue
        power = legal.find_power(str(statute.get("act")), str(statute.get("section")))
        if power is None:
            yield Problem(
                file,
                f"{basis_at}.statutes[{i}]",
                f"unknown legal basis {statute.get('act')} {statute.get('section')}: use a power "
                "from the table 'Statutory powers' in docs/contracts.md (the Act's name and the "
                "section exactly as there, e.g. 'Children Act 1989' 's.47'), "
                "or ask for it to be added",
            )
        else:
            powers.append(power)
    article9 = basis.get("ukGdprArticle9")
    yield from _condition_problems(file, basis_at, basis)
    objections = _mapping(terms.get("objections"))
    if objections.get("legalBasisOverrides") and not any(p.overrides_objection for p in powers):
        able = sorted({f"{p.act} {p.section}" for p in legal.STATUTES if p.overrides_objection})
        yield Problem(
            file,
            f"{custom_path(custom, 'objections')}.legalBasisOverrides",
            "no listed legal basis overrides a person's objection; set it to false, or cite a "
            f"power that does ({'; '.join(able)})",
        )
    condition = objections.get("overrideCondition")
    if condition is not None and objections.get("legalBasisOverrides") is not True:
        yield Problem(
            file,
            f"{custom_path(custom, 'objections')}.overrideCondition",
            "an override condition limits an override, and legalBasisOverrides is not true: "
            "remove it, or state the override",
        )
    for role in ("provider", "recipient"):
        code = _mapping(_mapping(terms.get(role)).get("code"))
        problem = legal.organisation_code_problem(code.get("scheme"), code.get("value"))
        if problem:
            yield Problem(file, f"{custom_path(custom, role)}.code.value", problem)
    yield from _field_problems(document, file, article9)
    yield from _host_key_problems(document, file)


def _at(base: str, key: str, value: Any, i: int) -> str:
    """Where the i-th condition of a condition term is (one text, or a list)."""
    return f"{base}.{key}" + (f"[{i}]" if isinstance(value, list) else "")


def _condition_problems(file: str, basis_at: str, basis: dict[str, Any]) -> Iterator[Problem]:
    """Each Article 9 condition needing a Schedule 1 condition has one that meets it, and each
    Schedule 1 condition is a real one, meeting one of the Article 9 conditions stated."""
    article9_value, schedule1_value = basis.get("ukGdprArticle9"), basis.get("dpa2018Schedule1")
    article9 = legal.condition_codes(article9_value)
    schedule1 = legal.condition_codes(schedule1_value) if schedule1_value else []
    known: list[tuple[int, tuple[int, int]]] = []
    for i, text in enumerate(schedule1):
        found = legal.schedule_1_condition(text)
        if found is None:
            yield Problem(
                file,
                _at(basis_at, "dpa2018Schedule1", schedule1_value, i),
                "not a DPA 2018 Schedule 1 condition: write 'Part 1 para N' (1-4) or "
                "'Part 2 para N' (6-28), optionally followed by its name in brackets",
            )
        else:
            known.append((i, found))
    for i, code in enumerate(article9):
        if code not in legal.ARTICLE_9_NEEDS_SCHEDULE_1:
            continue
        example = legal.SCHEDULE_1_EXAMPLE.get(code, "Part 2 para 18 (...)")
        if not schedule1:
            yield Problem(
                file,
                basis_at,
                f"Article {code} needs a DPA 2018 Schedule 1 condition: add dpa2018Schedule1, "
                f"{'a Part 2 condition, e.g. ' if code == '9(2)(g)' else ''}'{example}'",
            )
        elif known and not any(legal.pairs(code, found) for _, found in known):
            yield Problem(
                file,
                _at(basis_at, "ukGdprArticle9", article9_value, i),
                f"no Schedule 1 condition given meets Article {code}: it needs "
                f"{'a Part 2 condition, e.g. ' if code == '9(2)(g)' else ''}'{example}'",
            )
    for i, found in known:
        if article9 and not any(legal.pairs(code, found) for code in article9):
            needs = (
                "9(2)(g)"
                if found[0] == 2
                else next(
                    (
                        c
                        for c, (part, paras) in legal.ARTICLE_9_SCHEDULE_1.items()
                        if part == found[0] and found[1] in paras
                    ),
                    "?",
                )
            )
            yield Problem(
                file,
                _at(basis_at, "dpa2018Schedule1", schedule1_value, i),
                f"Schedule 1 Part {found[0]} para {found[1]} is a condition for Article "
                f"{needs}, which the agreement does not state: add it, or remove this condition",
            )


def _mapping(value: Any) -> dict[str, Any]:
    """The value if it is a mapping (a wrong type was already reported by the schema)."""
    return value if isinstance(value, dict) else {}


def _field_problems(document: dict[str, Any], file: str, article9: Any) -> Iterator[Problem]:
    schema = document.get("schema") or [{}]
    for i, prop in enumerate(schema[0].get("properties") or []):
        at: list[str | int] = ["schema", 0, "properties", i]
        terms = custom_values(prop.get("customProperties"))
        if prop.get("classification") in legal.SPECIAL_CATEGORY_CLASSES and not article9:
            yield Problem(
                file,
                format_path([*at, "classification"]),
                f"{prop.get('name')} is special category data: add a UK GDPR Article 9 "
                "condition (legalBasis.ukGdprArticle9) or do not share the field",
            )
        source = prop.get("physicalName") or prop.get("name") or ""
        direct = legal.identifies_directly(terms, source)
        if direct and terms.get("transform") == "keep" and not terms.get("justification"):
            yield Problem(
                file,
                format_path([*at, "customProperties"]),
                f"{prop.get('name')} identifies a person directly and is kept in clear: "
                "pseudonymise or generalise it, or add a written 'justification'",
            )


def _host_key_problems(document: dict[str, Any], file: str) -> Iterator[Problem]:
    for i, server in enumerate(document.get("servers") or []):
        if server.get("type") != "sftp":
            continue
        custom = custom_properties(server.get("customProperties"))
        keys = custom_values(server.get("customProperties")).get("hostKeys")
        at = custom_path(custom, "hostKeys", "servers", i)
        if not keys:
            yield Problem(
                file,
                at,
                "pin the recipient server's SSH host key: add a 'hostKeys' custom property "
                "listing its public key lines ('ssh-ed25519 AAAA...'), as the partner gives them",
            )
            continue
        if not isinstance(keys, list):
            yield Problem(file, at, "must be a list of SSH public key lines")
            continue
        for j, line in enumerate(keys):
            if not isinstance(line, str):
                yield Problem(file, f"{at}[{j}]", "must be an SSH public key line (text)")
                continue
            try:
                load_ssh_public_key(line.encode())
            except (ValueError, TypeError, UnsupportedAlgorithm):
                yield Problem(file, f"{at}[{j}]", "not an SSH public key line")
