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
    match = _SCHEDULE_1_TEXT.match(text)
    return match is not None and int(match.group(2)) in SCHEDULE_1[int(match.group(1))]


def identifies_directly(terms: Mapping[str, Any], source: Any) -> bool:
    """Whether a field identifies a person directly: marked subjectKey or directIdentifier, or
    read from a source column whose name is a direct identifier's."""
    return bool(
        terms.get("subjectKey")
        or terms.get("directIdentifier")
        or str(source).lower() in DIRECT_IDENTIFIER_NAMES
    )
