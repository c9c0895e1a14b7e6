"""Retention units: the one table load, diff, render and the expiry command read."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final


@dataclass(frozen=True)
class Unit:
    """A unit of a retention period: its name in words, its length and how it may be written."""

    name: str
    days: Fraction
    spellings: tuple[str, ...]


# A month is a twelfth of a year so that 24 m restates 2 y exactly.
UNITS: Final = (
    Unit("day", Fraction(1), ("d", "day", "days")),
    Unit("week", Fraction(7), ("w", "week", "weeks")),
    Unit("month", Fraction(365, 12), ("m", "month", "months")),
    Unit("year", Fraction(365), ("y", "yr", "yrs", "year", "years")),
)
RETENTION_UNITS: Final[dict[str, Unit]] = {s: u for u in UNITS for s in u.spellings}
DEFAULT_UNIT: Final = "d"  # ODCS leaves the unit optional; a bare number is days
# The longest retention a contract may set, in days: 100 years, the most a manifest states
# (its schema's `retention.days` maximum), so a partner can always compute the end date.
MAX_DAYS: Final = 36500


def unit_of(unit: Any) -> Unit | None:
    """The unit a retention's `unit` names (absent: days); None if not one we know."""
    if unit is None:
        unit = DEFAULT_UNIT
    return RETENTION_UNITS.get(unit.strip().lower()) if isinstance(unit, str) else None


def amount(value: Any) -> Fraction | None:
    """A retention's `value` as an exact non-negative number; None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        return None
    return number if number >= 0 else None


def period_days(value: Any, unit: Any) -> Fraction | None:
    """A retention period in days, exactly; None if its value or unit is not understood."""
    number, known = amount(value), unit_of(unit)
    return number * known.days if number is not None and known is not None else None


def period_words(value: Any, unit: Any) -> str | None:
    """A retention period in words ("2 years", "1 week"); None if not understood."""
    number, known = amount(value), unit_of(unit)
    if number is None or known is None:
        return None
    return f"{value} {known.name}" + ("" if number == 1 else "s")
