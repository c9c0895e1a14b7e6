"""GX builds each expectation's configuration once per validation, with the same verdicts."""

from __future__ import annotations

import contextlib
import hashlib
import types
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from great_expectations.core import id_dict
from great_expectations.core.id_dict import IDDict
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


# Values GX writes as different JSON (so different ids) that a careless key would call equal,
# and values of types the memo does not key (GX computes their ids as always).
_ID_CASES: list[dict[str, Any]] = [
    {"column": "a", "mostly": 1},
    {"column": "a", "mostly": True},
    {"column": "a", "mostly": 1.0},
    {"column": "a", "mostly": 0.0},
    {"column": "a", "mostly": -0.0},
    {"column": "a", "mostly": "1"},
    {"column": "a", "mostly": None},
    {"column": "a", "value_set": [1, 2]},
    {"column": "a", "value_set": [2, 1]},
    {"column": "a", "value_set": (1, 2)},
    {"column": "a", "value_set": {"x": 1}},
    {"column": "a", "value_set": {"x": True}},
    {"column": "a", "mostly": np.int64(1)},
    {"column": "a", "mostly": np.float64(-0.0)},
    {"column": "a", "when": pd.Timestamp("2026-01-01")},
    {1: "a", "mostly": 1},
    {"column": "a"},
    {"value_set": {"x": 1, "y": 2}},  # a lone key: GX writes the nested dict by str(), in order
    {"value_set": {"y": 2, "x": 1}},
    {},
]


class _Ignoring(IDDict):
    _id_ignore_keys: ClassVar[set[str]] = {"mostly"}


def test_argument_ids_are_gx_own_for_every_value_json_tells_apart() -> None:
    dicts = [kind(case) for case in _ID_CASES for kind in (IDDict, _Ignoring)]
    plain = [d.to_id() for d in dicts]  # outside the block: GX's own
    assert len(set(plain[:14:2])) == 7  # 1, True, 1.0, 0.0, -0.0, "1", None: seven ids to GX
    with gx_memo.memoised():
        again = [d.to_id() for d in dicts] + [d.to_id() for d in reversed(dicts)]
        # the arguments GX may pass are never memoised
        assert dicts[0].to_id(id_keys={"column"}) == "column=a"
        assert dicts[0].to_id(id_ignore_keys={"column"}) == "mostly=1"
    assert again == plain + plain[::-1]


def test_an_argument_dict_with_its_own_ignored_keys_or_holding_itself_gets_gx_own_id() -> None:
    own = IDDict(column="a", mostly=1)
    own._id_ignore_keys = {"column"}
    loop: list[Any] = []
    loop.append(loop)
    dicts = [IDDict(column="a", mostly=1), own, IDDict(value_set=loop)]  # GX: str() of it
    plain = [d.to_id() for d in dicts]
    assert plain[0] != plain[1]
    with gx_memo.memoised():
        assert [d.to_id() for d in dicts] == plain


def test_argument_ids_are_computed_once_per_content_inside_a_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[bytes] = []

    def md5(data: bytes, **kwargs: Any) -> Any:
        hashed.append(data)
        return hashlib.md5(data, **kwargs)  # noqa: S324 - GX's own id, not security

    monkeypatch.setattr(id_dict, "hashlib", types.SimpleNamespace(md5=md5))
    arguments = {"batch_id": "b", "column": "a", "row_condition": None}
    with gx_memo.memoised():
        ids = {IDDict(arguments).to_id() for _ in range(5)}
        unkeyed = {IDDict({**arguments, "mostly": np.float64(0.5)}).to_id() for _ in range(3)}
    assert len(ids) == len(unkeyed) == 1
    assert len(hashed) == 1 + 3  # the plain dict once; the numpy value every time
    IDDict(arguments).to_id()
    assert len(hashed) == 5  # outside a block: GX's own, every time


def test_a_verdict_alone_passes_and_fails_exactly_the_frames_basic_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows are validated for success alone first (BOOLEAN_ONLY), and again with BASIC only
    when one fails: every rule's success is the same either way, and so are the failures."""
    checker = BatchValidator("verdict", RULES)
    frames = _frames()
    for frame in frames:
        verdicts = checker._outcome(frame, suite._VERDICT_ONLY).results
        basic = checker._outcome(frame, suite._RESULT_FORMAT).results
        assert [r.success for r in verdicts] == [r.success for r in basic]
    two_pass = [checker.validate(frame) for frame in frames]
    monkeypatch.setattr(suite, "_VERDICT_ONLY", suite._RESULT_FORMAT)  # BASIC alone, as before
    assert two_pass == [checker.validate(frame) for frame in frames]
    assert two_pass[0] == [] and sum(bool(failures) for failures in two_pass) >= len(frames) - 1
