"""GX builds each expectation's configuration once per validation, with the same verdicts."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pandas as pd
import pytest
from great_expectations.expectations import ExpectColumnValuesToNotBeNull

from tests.validators.test_suite import BAD_CASES, RULES, good_frame, with_column
from validators import gx_memo, suite
from validators.suite import BatchValidator

pytestmark = pytest.mark.skipif(not gx_memo.INSTALLED, reason="GX's property is not the known one")


def _frames() -> list[pd.DataFrame]:
    """Frames that pass, fail one rule each, fail several at once, or lack a column."""
    frames = [good_frame()]
    frames += [with_column(column, list(values)) for _, column, values, _ in BAD_CASES]
    broken = good_frame()
    broken["ward"] = np.array([99] * 6, dtype=np.int32)
    broken["ref"] = pd.Series([None, "A", "A", None, "B", "B"], dtype="str")
    broken["nhs"] = pd.Series(["1234567890", None, "x", "", "9434765919", "0"], dtype="str")
    frames += [broken, good_frame().drop(columns=["postcode", "sex"])]
    return frames


def _outcomes(checker: BatchValidator, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """GX's own results for the frame, as plain data (what each expectation ran and found)."""
    batch = checker._batch_definition.get_batch(batch_parameters={"dataframe": frame})
    outcome = batch.validate(checker._suite, result_format=suite._RESULT_FORMAT)
    results = []
    for result in outcome.results:
        config = result.expectation_config
        assert config is not None
        results.append(
            {
                "type": config.type,
                "kwargs": config.kwargs,
                "meta": config.meta,
                "success": result.success,
                "result": result.result,
                "raised": result.exception_info.get("raised_exception"),
            }
        )
    return results


def test_memoised_validation_gives_gx_own_results_and_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checker = BatchValidator("memo", RULES)
    memoised = []
    for frame in _frames():
        with gx_memo.memoised():
            memoised.append((_outcomes(checker, frame), checker.validate(frame)))
    monkeypatch.setattr(suite, "memoised", contextlib.nullcontext)  # GX's property throughout
    plain = [(_outcomes(checker, frame), checker.validate(frame)) for frame in _frames()]
    assert memoised == plain
    assert any(failures for _, failures in plain)  # the frames do fail rules
    assert all(len(outcomes) == len(RULES) for outcomes, _ in plain)


def test_configuration_is_built_once_inside_and_afresh_outside() -> None:
    expectation = ExpectColumnValuesToNotBeNull(column="a")
    assert expectation.configuration is not expectation.configuration
    with gx_memo.memoised():
        first = expectation.configuration
        assert expectation.configuration is first
        other = ExpectColumnValuesToNotBeNull(column="b")
        assert other.configuration is not first
        assert other.configuration.kwargs == {"column": "b"}
    assert expectation.configuration is not first
    assert expectation.configuration == first  # equal to what GX builds


def test_validate_leaves_no_memo_behind() -> None:
    checker = BatchValidator("memo-left", RULES[:2])
    checker.validate(good_frame())
    assert gx_memo._memo.get() is None
    with pytest.raises(KeyError), gx_memo.memoised():
        raise KeyError("out of the block")
    assert gx_memo._memo.get() is None
