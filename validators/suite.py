"""Compile rules into a Great Expectations suite and validate pandas batches with it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import validators.gx_import  # noqa: F401 - must precede the first import of GX

# isort: split
import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core import ExpectationSuite
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.execution_engine import pandas_execution_engine
from great_expectations.expectations.expectation import Expectation

from validators.expectations import (
    ExpectColumnValuesToBeValidNhsNumber,
    ExpectColumnValuesToMatchPattern,
)
from validators.gx_memo import memoised
from validators.rules import Failure, Rule

# GX pins this logger to INFO, so every ephemeral context would announce a temp directory.
logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

# GX fingerprints every dataframe it is handed (a hash of every cell, kept as a batch marker)
# when the frame is under this many bytes; nothing we run reads the fingerprint, and it cost
# about half of each window's validation. Zero turns it off; the rules are checked as before.
pandas_execution_engine.HASH_THRESHOLD = 0

_RULE_INDEX = "rule_index"

# BASIC gives the counts; a zero partial count keeps sample values out of the results.
_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}
# Success alone: GX decides it from the same unexpected counts, but skips gathering the
# unexpected values (a fifth of a window's validation). A window that fails is validated again
# with BASIC for its counts; the run stops there anyway.
_VERDICT_ONLY: dict[str, Any] = {"result_format": "BOOLEAN_ONLY"}


def _expectation(rule: Rule, index: int) -> Expectation:
    """Build the GX expectation for one rule, tagged with its position in the rule list."""
    if rule.kind == "compound_unique":
        # "No two rows share this combination": a row with an empty key column is not compared,
        # as in SQL's UNIQUE (declare the key properties required to forbid empty ones).
        return gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(rule.columns),
            ignore_row_if="any_value_is_missing",
            meta={_RULE_INDEX: index},
        )
    common: dict[str, Any] = {"column": rule.column, "meta": {_RULE_INDEX: index}}
    if rule.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(**common)
    if rule.kind == "unique":
        return gxe.ExpectColumnValuesToBeUnique(**common)
    if rule.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(value_set=list(rule.param("values", ())), **common)
    if rule.kind == "between":
        low, high = rule.param("min"), rule.param("max")
        if low is None and high is None:
            raise ValueError(f"between rule on {rule.column!r} needs min or max ({rule.origin})")
        if low is not None and high is not None and low > high:
            # GX would only notice at validation time and then fail every row of every batch.
            raise ValueError(f"between rule on {rule.column!r} has min above max ({rule.origin})")
        return gxe.ExpectColumnValuesToBeBetween(min_value=low, max_value=high, **common)
    if rule.kind == "regex":
        pattern = rule.param("pattern")
        if not isinstance(pattern, str):
            raise ValueError(f"regex rule on {rule.column!r} needs a pattern ({rule.origin})")
        return ExpectColumnValuesToMatchPattern(pattern=pattern, **common)
    if rule.kind == "nhs_number":
        return ExpectColumnValuesToBeValidNhsNumber(**common)
    raise ValueError(f"unsupported rule kind {rule.kind!r}")


def build_suite(name: str, rules: Sequence[Rule]) -> ExpectationSuite:
    """Compile rules into an expectation suite, one expectation per rule in order."""
    # The constructor, unlike add_expectation, needs no active data context and keeps
    # rules that differ only in origin instead of merging them as duplicates.
    return ExpectationSuite(
        name=name, expectations=[_expectation(rule, index) for index, rule in enumerate(rules)]
    )


class BatchValidator:
    """Validates successive pandas DataFrames against one suite; builds the GE context once."""

    def __init__(self, name: str, rules: Sequence[Rule]) -> None:
        """Build the ephemeral context, dataframe asset and suite for the given rules."""
        self._rules = tuple(rules)
        self._between_columns = tuple(
            dict.fromkeys(rule.column for rule in self._rules if rule.kind == "between")
        )
        self._suite = build_suite(name, self._rules)
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self._context.data_sources.add_pandas(f"{name}-source").add_dataframe_asset(
            f"{name}-frames"
        )
        self._batch_definition = asset.add_batch_definition_whole_dataframe(f"{name}-batch")

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Return the rules this validator checks."""
        return self._rules

    def _with_vectorisable_ranges(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Return frame with between-rule columns widened to dtypes GX compares vectorised."""
        # GX 1.24 only vectorises between for int64, float64 and datetime64[ns]; anything else,
        # including pandas 3's default datetime64[us], falls back to a per-row Python loop.
        casts: dict[str, pd.Series] = {}
        for column in self._between_columns:
            if column not in frame.columns or not isinstance(frame[column], pd.Series):
                continue
            series = frame[column]
            dtype = series.dtype
            if not isinstance(dtype, np.dtype):
                continue
            if dtype.kind == "M" and np.datetime_data(dtype)[0] != "ns":
                try:
                    casts[column] = series.astype("datetime64[ns]")
                except (OverflowError, pd.errors.OutOfBoundsDatetime):
                    # Dates past 2262 do not fit in nanoseconds; GX's slow path still checks them.
                    continue
            elif dtype.kind in "iu" and dtype.itemsize < 8:
                casts[column] = series.astype(np.int64)
        return frame.assign(**casts) if casts else frame

    def validate(self, frame: pd.DataFrame) -> list[Failure]:
        """Validate one frame and return a Failure per failed rule; empty means it passed."""
        frame = self._with_vectorisable_ranges(frame)
        if self._outcome(frame, _VERDICT_ONLY).success:
            return []
        outcome = self._outcome(frame, _RESULT_FORMAT)
        rows = len(frame)
        failures: list[tuple[int, Failure]] = []
        for result in outcome.results:
            if result.success:
                continue
            config = result.expectation_config
            assert config is not None  # GE always echoes the configuration it ran
            index = int(config.meta[_RULE_INDEX])
            counts = result.result or {}
            if "unexpected_count" in counts:
                unexpected = int(counts["unexpected_count"])
                elements = int(counts.get("element_count", rows))
            else:
                # An expectation that raised (missing column, incomparable types) has no counts;
                # it fails closed on every row and its exception text, which may quote values,
                # is dropped.
                unexpected = elements = rows
            failures.append((index, Failure(self._rules[index], unexpected, elements)))
        failures.sort(key=lambda pair: pair[0])
        return [failure for _, failure in failures]

    def _outcome(self, frame: pd.DataFrame, result_format: dict[str, Any]) -> Any:
        """GX's validation result for the frame."""
        with memoised():  # GX would rebuild each expectation's configuration ~90 times
            batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
            try:
                return batch.validate(self._suite, result_format=result_format)
            finally:
                _forget(batch)


def _forget(batch: Any) -> None:
    """Have GX let go of a frame once it has validated it.

    Its execution engine keeps the last frame (in its batch caches) and every metric it computed
    on it (condition masks, unique values: as large as the frame's columns) until the next frame
    replaces them: 15-25 MB held between windows for nothing (BENCHMARKS.md, thirteenth round).
    And no frame's metrics may stand in for the next one's: every window has the same batch id,
    and GX takes a dependency a run did not compute from that cache."""
    engine = batch.data.execution_engine
    engine.batch_manager.reset_batch_cache()
    engine.batch_manager.batch_data_cache.clear()
    engine._metric_cache.clear()  # GX's fluent data sources have no setting to turn it off
