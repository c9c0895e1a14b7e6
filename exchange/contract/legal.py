"""Controlled lists for the legal basis of sharing, as the protocol cites them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple


class Power(NamedTuple):
    """A statutory power or duty to share, and whether it overrides a person's objection."""

    act: str
    section: str
    description: str
    overrides_objection: bool = False


_OVERRIDES_OBJECTION: Final = True

# Act -> its sections: (section, description[, _OVERRIDES_OBJECTION]).
_POWERS: Final[dict[str, tuple[tuple[str, str] | tuple[str, str, bool], ...]]] = {
    "Children Act 1989": (
        ("s.17", "Services for children in need"),
        ("s.27", "Co-operation between authorities"),
        ("s.47", "Enquiries where a child may be suffering significant harm", _OVERRIDES_OBJECTION),
    ),
    "Children Act 2004": (
        ("s.10", "Co-operation to improve the well-being of children"),
        ("s.11", "Arrangements to safeguard and promote welfare"),
        ("s.16H", "Local safeguarding arrangements: supply of information"),
    ),
    "Education Act 2002": (("s.175", "Duties of local authorities in relation to welfare"),),
    "Crime and Disorder Act 1998": (
        ("s.115", "Disclosure of information for crime reduction", _OVERRIDES_OBJECTION),
        ("s.17", "Duty to consider crime and disorder"),
    ),
    "Health and Social Care Act 2012": (
        ("s.195", "Duty to encourage integrated working"),
        ("s.251B", "Duty to share information for care"),
    ),
    "Care Act 2014": (
        ("s.6", "Co-operating generally"),
        ("s.42", "Enquiry by local authority (safeguarding adults)", _OVERRIDES_OBJECTION),
        ("s.45", "Supply of information to Safeguarding Adults Boards"),
    ),
    "National Health Service Act 2006": (("s.251", "Control of patient information"),),
    "Localism Act 2011": (("s.1", "General power of competence"),),
    "Local Government Act 1972": (("s.111", "Subsidiary powers of local authorities"),),
    "Digital Economy Act 2017": (("s.35", "Disclosure to improve public service delivery"),),
    "Criminal Justice Act 2003": (("s.325", "Multi-agency public protection arrangements"),),
    "Housing Act 1996": (("s.213B", "Duty to refer cases of homelessness"),),
    "Police, Crime, Sentencing and Courts Act 2022": (
        ("s.16", "Serious violence duty: disclosure of information"),
    ),
    "Mental Health Act 1983": (("s.117", "After-care"),),
    "Data Protection Act 2018": (("Sch 2 para 2", "Crime and taxation exemption"),),
}

STATUTES: tuple[Power, ...] = tuple(
    Power(act, *section) for act, sections in _POWERS.items() for section in sections
)

ARTICLE_6: dict[str, str] = {
    "6(1)(a)": "consent",
    "6(1)(b)": "contract",
    "6(1)(c)": "legal obligation",
    "6(1)(d)": "vital interests",
    "6(1)(e)": "public task",
    "6(1)(f)": "legitimate interests (not available to public authorities for their tasks)",
}

ARTICLE_9: dict[str, str] = {
    "9(2)(a)": "explicit consent",
    "9(2)(b)": "employment, social security and social protection",
    "9(2)(c)": "vital interests",
    "9(2)(d)": "not-for-profit bodies",
    "9(2)(e)": "made public by the data subject",
    "9(2)(f)": "legal claims or judicial acts",
    "9(2)(g)": "reasons of substantial public interest",
    "9(2)(h)": "health or social care",
    "9(2)(i)": "public health",
    "9(2)(j)": "archiving, research and statistics",
}

# Article 9 conditions the DPA 2018 makes depend on a Schedule 1 condition (s.10(2)-(3)).
ARTICLE_9_NEEDS_SCHEDULE_1 = frozenset({"9(2)(b)", "9(2)(g)", "9(2)(h)", "9(2)(i)", "9(2)(j)"})

# DPA 2018 Schedule 1 conditions by part: Part 1 paras 1-4, Part 2 paras 6-28.
SCHEDULE_1: dict[int, frozenset[int]] = {1: frozenset(range(1, 5)), 2: frozenset(range(6, 29))}
_SCHEDULE_1_TEXT = re.compile(r"^Part ([12]) para (\d{1,2})\b")

# Which Schedule 1 conditions meet each Article 9 condition (DPA 2018 s.10(2)-(3)): (part, paras).
ARTICLE_9_SCHEDULE_1: Final[dict[str, tuple[int, frozenset[int]]]] = {
    "9(2)(b)": (1, frozenset({1})),  # employment, social security and social protection
    "9(2)(h)": (1, frozenset({2})),  # health or social care purposes
    "9(2)(i)": (1, frozenset({3})),  # public health
    "9(2)(j)": (1, frozenset({4})),  # research etc
    "9(2)(g)": (2, SCHEDULE_1[2]),  # substantial public interest: any Part 2 condition
}
SCHEDULE_1_EXAMPLE: Final[dict[str, str]] = {
    "9(2)(b)": "Part 1 para 1 (employment, social security and social protection)",
    "9(2)(h)": "Part 1 para 2 (health or social care purposes)",
    "9(2)(i)": "Part 1 para 3 (public health)",
    "9(2)(j)": "Part 1 para 4 (research etc)",
    "9(2)(g)": "Part 2 para 18 (safeguarding of children and individuals at risk)",
}

# Official organisation codes: scheme -> (what it is, the shape of a code).
ORGANISATION_CODES: Final[dict[str, tuple[str, str]]] = {
    "ods": ("NHS ODS code", r"^[A-Z0-9]{3,10}$"),
    "gss": ("GSS code", r"^[EKLMNSW][0-9]{8}$"),
    "urn": ("school URN", r"^[0-9]{6}$"),
    "ukprn": ("UK provider reference number", r"^1[0-9]{7}$"),
    "companies-house": ("Companies House number", r"^[A-Z0-9]{8}$"),
    "charity": ("registered charity number", r"^[0-9]{6,8}(-[0-9]+)?$"),
}
ORGANISATION_CODE_SCHEMES: Final = tuple(ORGANISATION_CODES)

SPECIAL_CATEGORY_CLASSES = frozenset(
    {
        "special-category",
        "health",
        "ethnicity",
        "racial-or-ethnic-origin",
        "political-opinions",
        "religion",
        "religious-or-philosophical-beliefs",
        "trade-union-membership",
        "genetic",
        "biometric",
        "sex-life",
        "sexual-orientation",
    }
)

# Source column names that identify a person directly (compared after lower-casing).
DIRECT_IDENTIFIER_NAMES = frozenset(
    {
        "nhs_number",
        "nhs_no",
        "chi_number",
        "upn",
        "uln",
        "ni_number",
        "national_insurance_number",
        "name",
        "full_name",
        "first_name",
        "forename",
        "last_name",
        "surname",
        "address",
        "address_line",
        "address_line_1",
        "email",
        "phone",
        "telephone",
        "mobile",
        "date_of_birth",
        "dob",
    }
)


def find_power(act: str, section: str) -> Power | None:
    """The listed power for an Act and section, if any."""
    return next((p for p in STATUTES if p.act == act and p.section == section), None)


def schedule_1_condition_known(text: str) -> bool:
    """Whether text names a real DPA 2018 Schedule 1 condition, as 'Part N para M (...)'."""
    return schedule_1_condition(text) is not None


def schedule_1_condition(text: str) -> tuple[int, int] | None:
    """(part, paragraph) of a DPA 2018 Schedule 1 condition written 'Part N para M (...)'."""
    match = _SCHEDULE_1_TEXT.match(text)
    if match is None or int(match.group(2)) not in SCHEDULE_1[int(match.group(1))]:
        return None
    return int(match.group(1)), int(match.group(2))


def pairs(article9: str, condition: tuple[int, int]) -> bool:
    """Whether a Schedule 1 condition (part, paragraph) meets an Article 9 condition."""
    needed = ARTICLE_9_SCHEDULE_1.get(article9)
    return needed is not None and condition[0] == needed[0] and condition[1] in needed[1]


def condition_codes(value: Any) -> list[str]:
    """The condition texts of a legal condition term: one text, or a list of texts or
    `{condition, wording}` (ill-shaped items, reported by the schema, are left out)."""
    listed = value if isinstance(value, list) else [value]
    out = []
    for item in listed:
        code = item.get("condition") if isinstance(item, Mapping) else item
        if isinstance(code, str):
            out.append(code)
    return out


def organisation_code_problem(scheme: Any, value: Any) -> str | None:
    """What is wrong with an organisation code, if anything."""
    known = ORGANISATION_CODES.get(str(scheme))
    if known is None or not isinstance(value, str):
        return None  # reported by the schema
    label, pattern = known
    if not re.fullmatch(pattern, value):
        return f"not a valid {label} ({scheme}): expected {pattern}"
    return None


def identifies_directly(terms: Mapping[str, Any], source: Any) -> bool:
    """Whether a field identifies a person directly: marked subjectKey or directIdentifier, or
    read from a source column whose name is a direct identifier's."""
    return bool(
        terms.get("subjectKey")
        or terms.get("directIdentifier")
        or str(source).lower() in DIRECT_IDENTIFIER_NAMES
    )
