"""Plain data-quality rule and failure records, free of any Great Expectations import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RULE_KINDS: tuple[str, ...] = (
    "not_null",
    "unique",
    "in_set",
    "between",
    "regex",
    "nhs_number",
    "compound_unique",
)


def compound_label(columns: tuple[str, ...]) -> str:
    """The name a rule over several columns goes by in messages: '(a, b)'."""
    return "(" + ", ".join(columns) + ")"


@dataclass(frozen=True)
class Rule:
    """One data-quality check on one column, as compiled from a data contract.

    A rule over several columns (compound_unique: no two rows share the combination) names them
    in its "columns" parameter; its `column` is then only a label, see `compound_label`.
    """

    kind: str
    column: str
    params: tuple[tuple[str, Any], ...] = ()
    origin: str = ""

    def __post_init__(self) -> None:
        """Reject unknown rule kinds early, before any validation engine is loaded."""
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown rule kind {self.kind!r}; expected one of {RULE_KINDS}")
        if self.kind == "compound_unique":
            columns = self.param("columns")
            if (
                not isinstance(columns, tuple)
                or not columns
                or not all(isinstance(c, str) for c in columns)
                or len(set(columns)) != len(columns)
            ):
                raise ValueError(
                    f"compound_unique needs a tuple of distinct column names ({self.origin})"
                )

    @classmethod
    def compound_unique(cls, columns: tuple[str, ...], origin: str = "") -> Rule:
        """No two rows may share the combination of values in `columns` (a composite key)."""
        return cls("compound_unique", compound_label(columns), (("columns", columns),), origin)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the rule reads: its "columns" parameter, or its one column."""
        columns = self.param("columns")
        return tuple(columns) if columns else (self.column,)

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
