"""The gateway's own Great Expectations expectations: NHS numbers, and patterns matched by RE2.

Each has a vectorised check over a pandas column that the dry run shares."""

from __future__ import annotations

from typing import Any

import validators.gx_import  # noqa: F401 - must precede the first import of GX

# isort: split
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)
from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype

NHS_NUMBER_METRIC = "column_values.valid_nhs_number"
PATTERN_METRIC = "column_values.match_pattern"

_CHECK_WEIGHTS = np.arange(10, 1, -1, dtype=np.int64)
_DIGIT_PLACES = 10 ** np.arange(9, -1, -1, dtype=np.int64)
_LIMIT = 10**10


def _as_candidates(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return (well-formed mask, int64 numbers) with malformed entries set to 0."""
    if is_integer_dtype(values.dtype) and not is_bool_dtype(values.dtype):
        # Integer storage cannot keep leading zeros, so read each value as zero-padded.
        numbers = values.to_numpy(dtype=np.int64, na_value=-1)
        shaped = (numbers >= 0) & (numbers < _LIMIT)
        return shaped, np.where(shaped, numbers, 0)
    if is_float_dtype(values.dtype):
        # Integer columns holding nulls arrive as float64 from parquet.
        floats = values.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            shaped = (floats >= 0) & (floats < _LIMIT) & (floats == np.floor(floats))
        return shaped, np.where(shaped, floats, 0).astype(np.int64)
    text = values.astype("str")
    # [0-9] rather than \d so non-ASCII digits cannot slip through.
    shaped = text.str.fullmatch("[0-9]{10}").fillna(False).to_numpy(dtype=bool)
    numbers = text.where(shaped, "0").astype(np.int64).to_numpy()
    return shaped, numbers


def nhs_number_mask(values: pd.Series) -> pd.Series:
    """Return True where a value is a 10-digit NHS number with a valid modulus-11 check digit."""
    shaped, numbers = _as_candidates(values)
    digits = (numbers[:, None] // _DIGIT_PLACES) % 10
    remainder = (digits[:, :9] @ _CHECK_WEIGHTS) % 11
    # 11 - 0 = 11 maps to check digit 0; 11 - 1 = 10 maps to 10, which no digit can equal.
    check = (11 - remainder) % 11
    return pd.Series(shaped & (check == digits[:, 9]), index=values.index, dtype=bool)


class ColumnValuesValidNhsNumber(ColumnMapMetricProvider):
    """Row-wise metric: the value is a valid NHS number."""

    condition_metric_name = NHS_NUMBER_METRIC

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        """Evaluate the NHS number check over the non-null values of a column."""
        return nhs_number_mask(column)


class ExpectColumnValuesToBeValidNhsNumber(ColumnMapExpectation):
    """Expect column values to be 10-digit NHS numbers with a valid modulus-11 check digit."""

    map_metric = NHS_NUMBER_METRIC
    success_keys = ("mostly",)


def pattern_mask(values: pd.Series, pattern: str) -> pd.Series:
    """True where `pattern` is found in a value's text, as RE2 finds it (Arrow's
    `match_substring_regex`, the dialect `contract lint` checks patterns in).

    GX's own regex expectation goes through pandas, which runs a pattern with Python's `re`
    whenever the column holds a line break or non-ASCII text; there `$` also matches before a
    final line break and `\\d` any Unicode digit, so "123456\\n" or six Arabic-Indic digits passed
    `^\\d{6}$`. In RE2, as in the JSON Schema patterns ODCS takes, `$` is the end of the value
    and `\\d` is 0-9. A value that is not text is matched as the payload writes it (Arrow's
    text of it: `123456` for an integer column that pandas holds as floats because of a null,
    exact up to 2**53, `true` for a boolean). Raises pyarrow's ArrowInvalid for a pattern RE2
    cannot compile."""
    found = pc.fill_null(pc.match_substring_regex(_payload_text(values), pattern), False)
    return pd.Series(np.asarray(found, dtype=bool), index=values.index, dtype=bool)


def _payload_text(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    if isinstance(values.dtype, pd.StringDtype):
        return pa.array(values.array)
    try:
        return pc.cast(pa.array(values, from_pandas=True), pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array(values.astype("str").array)  # a mix of Python objects: their str()


class ColumnValuesMatchPattern(ColumnMapMetricProvider):
    """Row-wise metric: the pattern is found in the value (RE2)."""

    condition_metric_name = PATTERN_METRIC
    condition_value_keys = ("pattern",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, pattern: str, **kwargs: Any) -> pd.Series:
        """Evaluate the pattern over the non-null values of a column."""
        return pattern_mask(column, pattern)


class ExpectColumnValuesToMatchPattern(ColumnMapExpectation):
    """Expect the pattern to be found in each column value, matched by RE2 (see pattern_mask)."""

    pattern: str
    map_metric = PATTERN_METRIC
    success_keys = ("pattern", "mostly")
