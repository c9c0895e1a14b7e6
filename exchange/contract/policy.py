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
                "from the list in docs/contracts.md (exact Act name and section, e.g. 's.47'), "
                "or ask for it to be added",
            )
        else:
            powers.append(power)
    article9 = basis.get("ukGdprArticle9")
    schedule1 = basis.get("dpa2018Schedule1")
    if isinstance(article9, str) and article9 in legal.ARTICLE_9_NEEDS_SCHEDULE_1 and not schedule1:
        yield Problem(
            file,
            basis_at,
            f"Article {article9} needs a DPA 2018 Schedule 1 condition: add dpa2018Schedule1, "
            "e.g. 'Part 2 para 18 (safeguarding of children and individuals at risk)'",
        )
    if schedule1 and not legal.schedule_1_condition_known(str(schedule1)):
        yield Problem(
            file,
            f"{basis_at}.dpa2018Schedule1",
            "not a DPA 2018 Schedule 1 condition: write 'Part 1 para N' (1-4) or "
            "'Part 2 para N' (6-28), optionally followed by its name in brackets",
        )
    objections = _mapping(terms.get("objections"))
    if objections.get("legalBasisOverrides") and not any(p.overrides_objection for p in powers):
        able = sorted({f"{p.act} {p.section}" for p in legal.STATUTES if p.overrides_objection})
        yield Problem(
            file,
            f"{custom_path(custom, 'objections')}.legalBasisOverrides",
            "no listed legal basis overrides a person's objection; set it to false, or cite a "
            f"power that does ({'; '.join(able)})",
        )
    yield from _field_problems(document, file, article9)
    yield from _host_key_problems(document, file)


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
