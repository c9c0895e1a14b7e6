"""Plain data-quality rule and failure records, free of any Great Expectations import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RULE_KINDS: tuple[str, ...] = ("not_null", "unique", "in_set", "between", "regex", "nhs_number")


@dataclass(frozen=True)
class Rule:
    """One data-quality check on one column, as compiled from a data contract."""

    kind: str
    column: str
    params: tuple[tuple[str, Any], ...] = ()
    origin: str = ""

    def __post_init__(self) -> None:
        """Reject unknown rule kinds early, before any validation engine is loaded."""
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}; expected one of {RULE_KINDS}")

    def param(self, name: str, default: Any = None) -> Any:
        """Return the named parameter, or default when absent."""
        for key, value in self.params:
            if key == name:
                return value
        return default


@dataclass(frozen=True)
class Failure:
    """A failed rule with row counts only; it never holds data values."""

    rule: Rule
    unexpected_count: int
    element_count: int

    def describe(self) -> str:
        """Return a one-line summary that names the rule but no row values."""
        where = f" ({self.rule.origin})" if self.rule.origin else ""
        return (
            f"{self.rule.column}: {self.rule.kind} failed for {self.unexpected_count} "
            f"of {self.element_count} rows{where}"
        )
