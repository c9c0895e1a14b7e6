"""Great Expectations is not asked to fingerprint each window (a hash of every cell that
nothing reads), while every rule still runs over every row."""

from __future__ import annotations

import pandas as pd

from validators import Rule
from validators.suite import BatchValidator


def test_windows_are_not_fingerprinted_and_still_checked() -> None:
    checker = BatchValidator("cost", [Rule("not_null", "a"), Rule("unique", "a")])
    frame = pd.DataFrame({"a": ["x", "y", None, "y"]})
    batch = checker._batch_definition.get_batch(batch_parameters={"dataframe": frame})
    assert "pandas_data_fingerprint" not in batch.batch_markers
    failures = checker.validate(frame)
    assert [(f.rule.kind, f.unexpected_count) for f in failures] == [
        ("not_null", 1),
        ("unique", 2),
    ]
