"""The protocol's purposes for sharing: the controlled list of purpose codes."""

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
