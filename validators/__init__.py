"""Data-quality rules; the Great Expectations engine lives in validators.suite."""

from validators.rules import RULE_KINDS, Failure, Rule

__all__ = ["RULE_KINDS", "Failure", "Rule"]
