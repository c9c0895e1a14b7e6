"""Controlled lists the contracts are checked against."""

from __future__ import annotations

# The protocol's purposes for sharing, by code.
PURPOSES: dict[str, str] = {
    "safeguarding": "Safeguarding children and adults at risk",
    "wellbeing": "Improving wellbeing through education, health and social care",
    "protecting-people": "Protecting people and communities",
    "supporting-people-in-need": "Supporting people in need",
    "crime-and-violence-reduction": "Crime and violence reduction",
    "health-inequalities": "Preventing health inequalities",
    "childrens-services": "Children's services",
    "access-to-services": "Access to services",
    "statutory-duties": "Statutory duties",
    "crime-prevention-detection": "Prevention and detection of crime",
    "data-quality": "Data quality",
    "complaints": "Complaints",
    "service-planning": "Service planning",
    "commissioning": "Commissioning",
    "inter-agency-strategy": "Inter-agency strategy",
    "performance-audit": "Performance and audit",
    "research": "Research",
}

# The output type each transform produces, as an ODCS logicalType (None: same as its input),
# keyed by transform and then by its `to` option ("" for transforms that have none).
TRANSFORM_OUTPUT_TYPES: dict[str, dict[str, str | None]] = {
    "keep": {"": None},
    "pseudonymise": {"": "string"},
    "hash": {"": "string"},
    "postcode-district": {"": "string"},
    "postcode-sector": {"": "string"},
    "generalise-date": {"year": "integer", "year-month": "string", "age-band": "string"},
    "truncate": {"": "string"},
    "top-code": {"": None},
    "band": {"": "string"},
    "map": {"": "string"},
}
