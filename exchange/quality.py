"""Validate: the contract's quality rules, checked over every outgoing row.

Row-level rules run as a Great Expectations suite (see `validators/`) over windows of rows;
the two rules no single window can decide (uniqueness across the whole run and the row count)
are checked here, over compact hashes and counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from exchange.contract import Contract, Field
from exchange.errors import ContractError, Problem, QualityFailed
from validators.rules import Rule

WINDOW_ROWS = 100_000
ENFORCED_OPTIONS = frozenset({"pattern", "minimum", "maximum", "format"})


def compile_rules(contract: Contract) -> tuple[list[Rule], tuple[int | None, int | None]]:
    """The contract's row rules and its row-count bounds; ContractError if one is unsupported."""
    rules: list[Rule] = []
    problems: list[Problem] = []
    for f in contract.fields:
        rules.extend(_field_rules(f, problems, str(contract.path)))
    bounds: tuple[int | None, int | None] = (None, None)
    for i, q in enumerate(contract.dataset_quality):
        at = f"schema[0].quality[{i}]"
        if q.get("metric") == "rowCount":
            bounds = _bounds(q, at, problems, str(contract.path))
        else:
            problems.append(Problem(str(contract.path), at, "only 'rowCount' is supported here"))
    if problems:
        raise ContractError(problems)
    return rules, bounds


def _field_rules(f: Field, problems: list[Problem], file: str) -> Iterator[Rule]:
    if f.required:
        yield Rule("not_null", f.name, origin=f"{f.path}.required")
    if f.unique:
        yield Rule("unique", f.name, origin=f"{f.path}.unique")
    options = f.type_options
    for option in sorted(set(options) - ENFORCED_OPTIONS):
        at = f"{f.path}.logicalTypeOptions.{option}"
        problems.append(Problem(file, at, "not enforced by this gateway: remove it or use quality"))
    if "format" in options and options["format"] != "nhs-number":
        at = f"{f.path}.logicalTypeOptions.format"
        problems.append(Problem(file, at, "the only format enforced is 'nhs-number'"))
    if "pattern" in options:
        yield Rule(
            "regex", f.name, (("pattern", options["pattern"]),), f"{f.path}.logicalTypeOptions"
        )
    limits = tuple((k[:3], options[k]) for k in ("minimum", "maximum") if k in options)
    if limits:
        yield Rule("between", f.name, limits, f"{f.path}.logicalTypeOptions")
    if options.get("format") == "nhs-number":
        yield Rule("nhs_number", f.name, origin=f"{f.path}.logicalTypeOptions.format")
    for i, q in enumerate(f.quality):
        at = f"{f.path}.quality[{i}]"
        rule = _library_rule(f.name, q, at)
        if rule is None:
            problems.append(Problem(file, at, "unsupported quality rule for this gateway"))
        else:
            yield rule


def _library_rule(column: str, q: Mapping[str, Any], at: str) -> Rule | None:
    metric, args = q.get("metric"), q.get("arguments") or {}
    if q.get("mustBe") != 0:
        return None  # only "no row may break it" is enforceable per row
    if metric == "nullValues":
        return Rule("not_null", column, origin=at)
    if metric == "duplicateValues":
        return Rule("unique", column, origin=at)
    if metric == "invalidValues" and "validValues" in args:
        return Rule("in_set", column, (("values", tuple(args["validValues"])),), at)
    if metric == "invalidValues" and "pattern" in args:
        return Rule("regex", column, (("pattern", args["pattern"]),), at)
    return None


def _bounds(
    q: Mapping[str, Any], at: str, problems: list[Problem], file: str
) -> tuple[int | None, int | None]:
    if "mustBeBetween" in q:
        low, high = q["mustBeBetween"]
        return int(low), int(high)
    if "mustBeGreaterThan" in q:
        return int(q["mustBeGreaterThan"]) + 1, None
    if "mustBeGreaterOrEqualTo" in q:
        return int(q["mustBeGreaterOrEqualTo"]), None
    if "mustBeLessThan" in q:
        return None, int(q["mustBeLessThan"]) - 1
    if "mustBeLessOrEqualTo" in q:
        return None, int(q["mustBeLessOrEqualTo"])
    problems.append(Problem(file, at, "rowCount needs mustBeBetween or a bound"))
    return None, None


class QualityGate:
    """Holds outgoing rows in windows, validates each, and releases only validated rows."""

    def __init__(self, contract: Contract, *, window_rows: int = WINDOW_ROWS) -> None:
        from validators.suite import BatchValidator  # Great Expectations is slow to import

        self.rules, self.bounds = compile_rules(contract)
        self.window_rows = window_rows
        self.rows = 0
        self.failures: list[str] = []
        self._validator = BatchValidator(contract.id, self.rules)
        self._unique = sorted({r.column for r in self.rules if r.kind == "unique"})
        self._hashes: dict[str, list[np.ndarray]] = {c: [] for c in self._unique}
        self._window: list[pa.RecordBatch] = []
        self._window_rows = 0

    def add(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Take a batch; return the batches of a window once it has been validated."""
        self._window.append(batch)
        self._window_rows += batch.num_rows
        return self._release() if self._window_rows >= self.window_rows else []

    def finish(self) -> list[pa.RecordBatch]:
        """Validate what is left and the whole-run rules; QualityFailed if any rule failed."""
        released = self._release()
        self.failures.extend(self._whole_run_failures())
        if self.failures:
            raise QualityFailed(
                f"{len(self.failures)} quality rule(s) failed: {'; '.join(self.failures)}",
                failures=self.failures,
            )
        return released

    def _release(self) -> list[pa.RecordBatch]:
        batches, self._window, self._window_rows = self._window, [], 0
        if not batches:
            return []
        frame = pa.Table.from_batches(batches).to_pandas()
        self.rows += len(frame)
        for column in self._unique:
            values = frame[column].dropna()
            self._hashes[column].append(pd.util.hash_array(values.to_numpy(dtype=object)))
        failures = self._validator.validate(frame)
        if failures:
            self.failures.extend(f.describe() for f in failures)
            raise QualityFailed(
                f"{len(failures)} quality rule(s) failed: "
                + "; ".join(f.describe() for f in failures),
                failures=[f.describe() for f in failures],
            )
        return batches

    def _whole_run_failures(self) -> Iterator[str]:
        for column in self._unique:
            hashes = np.concatenate(self._hashes[column] or [np.empty(0, np.uint64)])
            duplicates = len(hashes) - len(np.unique(hashes))
            if duplicates:
                yield f"{column}: unique failed for {duplicates} of {len(hashes)} rows (whole run)"
        low, high = self.bounds
        if (low is not None and self.rows < low) or (high is not None and self.rows > high):
            yield f"row count {self.rows} is outside the contract's bounds [{low}, {high}]"
