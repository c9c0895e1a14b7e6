"""Validate: the contract's quality rules, checked over every outgoing row.

Row-level rules run as a Great Expectations suite (see `validators/`) over windows of rows;
the two rules no single window can decide (uniqueness across the whole run and the row count)
are checked here, over compact hashes and counts.

Uniqueness, of one column or of a composite key (ODCS's schema-level `duplicateValues` with
`arguments.properties`), spans windows through one 64-bit hash per row whose key is complete
(rows with an empty key column are not compared, as in SQL's UNIQUE). The hashes are computed
vectorised from the Arrow columns, whose types are fixed for a run, so a key hashes alike in
every window. Memory: 8 bytes per row per key kept for the run (8 MB per million rows), and at
the end one more copy while they are sorted and counted (about 17 MB per million rows at peak).
A chance collision of two different keys (odds about n**2 / 2**65: 3e-8 for a million rows)
could only fail a run, never pass a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from exchange.contract import Contract
from exchange.errors import QualityFailed
from exchange.quality_rules import compile_rules
from validators.rules import Rule, compound_label

WINDOW_ROWS = 250_000
# Validating a window briefly takes about four times its Arrow size (the pandas frame and GX's
# intermediate masks): 12 MiB keeps that near 50 MB at any row width; the fixed cost per
# window (about 0.1 s) is then paid every ~130,000 rows of a 10-column extract.
WINDOW_BYTES = 12 << 20


class QualityGate:
    """Holds outgoing rows in windows, validates each, and releases only validated rows."""

    def __init__(
        self,
        contract: Contract,
        *,
        window_rows: int = WINDOW_ROWS,
        window_bytes: int = WINDOW_BYTES,
    ) -> None:
        from validators.suite import BatchValidator  # Great Expectations is slow to import

        self.rules, self.bounds = compile_rules(contract)
        self.window_rows = window_rows
        self.window_bytes = window_bytes
        self.rows = 0
        self.failures: list[str] = []
        self._validator = BatchValidator(contract.id, self.rules)
        # One hash store per distinct key, single column or composite, however many rules ask.
        self._keys: dict[tuple[str, ...], Rule] = {}
        for rule in self.rules:
            if rule.kind in ("unique", "compound_unique"):
                self._keys.setdefault(rule.columns, rule)
        self._hashes: dict[tuple[str, ...], list[np.ndarray]] = {k: [] for k in self._keys}
        self._window: list[pa.RecordBatch] = []
        self._window_rows = 0
        self._window_bytes = 0

    def add(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Take a batch; return the batches of a window once it has been validated."""
        self._window.append(batch)
        self._window_rows += batch.num_rows
        self._window_bytes += batch.nbytes
        full = self._window_rows >= self.window_rows or self._window_bytes >= self.window_bytes
        return self._release() if full else []

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
        self._window_bytes = 0
        if not batches:
            return []
        table = pa.Table.from_batches(batches)
        frame = table.to_pandas()
        self.rows += len(frame)
        for key, hashes in self._hashes.items():
            hashes.append(key_hashes(table, key))
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
        for key, rule in self._keys.items():
            chunks = self._hashes[key]
            hashes = np.concatenate(chunks or [np.empty(0, np.uint64)])
            chunks.clear()  # the concatenated copy replaces them
            duplicates = repeats(hashes)
            if not duplicates:
                continue
            if rule.kind == "unique":
                yield f"{key[0]}: unique failed for {duplicates} of {len(hashes)} rows (whole run)"
            else:
                yield (
                    f"{compound_label(key)}: compound_unique failed for {duplicates} of "
                    f"{len(hashes)} rows (whole run; {rule.origin})"
                )
        low, high = self.bounds
        if (low is not None and self.rows < low) or (high is not None and self.rows > high):
            yield f"row count {self.rows} is outside the contract's bounds [{low}, {high}]"


def repeats(hashes: np.ndarray) -> int:
    """How many entries repeat an earlier one; sorts `hashes` in place."""
    hashes.sort()
    return int(np.count_nonzero(hashes[1:] == hashes[:-1]))


def key_hashes(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """A uint64 hash of each row's key over `columns`, for rows where no key column is empty.

    Vectorised over Arrow columns: equal keys hash alike in every window of a run, since a run's
    column types are fixed (an integer column is not read as float when a window has a null).
    A column missing from the table yields no hashes: the window's own check fails it closed.
    """
    if not all(c in table.column_names for c in columns):
        return np.empty(0, np.uint64)
    keys = [table.column(c) for c in columns]
    complete = None
    for values in keys:
        present = pc.is_valid(values)
        if pa.types.is_floating(values.type):
            present = pc.and_(present, pc.invert(pc.is_nan(values)))
        complete = present if complete is None else pc.and_(complete, present)
    complete = pc.fill_null(complete, False)  # is_nan of a null is null: not complete
    if not pc.all(complete).as_py():
        keys = [pc.filter(values, complete) for values in keys]
    frame = pd.DataFrame({str(i): _hashable(values) for i, values in enumerate(keys)})
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def _hashable(values: pa.ChunkedArray) -> np.ndarray:
    """A key column, free of nulls, as a numpy array of one dtype per Arrow type."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values, kind = values.cast(kind.value_type), kind.value_type
    if pa.types.is_boolean(kind):
        return values.to_numpy().astype(np.uint8)
    if pa.types.is_signed_integer(kind):
        return values.cast(pa.int64()).to_numpy()
    if pa.types.is_unsigned_integer(kind):
        return values.cast(pa.uint64()).to_numpy()
    if pa.types.is_floating(kind):
        return values.cast(pa.float64()).to_numpy() + 0.0  # -0.0 and 0.0 are one key
    if pa.types.is_temporal(kind) and not pa.types.is_interval(kind):
        width = pa.int32() if kind.bit_width == 32 else pa.int64()
        return values.cast(width).to_numpy().astype(np.int64)
    if any(test(kind) for test in (pa.types.is_string, pa.types.is_large_string, _is_binary)):
        return values.to_numpy()
    try:  # decimals and the like: by their text, which is exact for each type
        return values.cast(pa.large_string()).to_numpy()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return np.array([repr(v) for v in values.to_pylist()], dtype=object)


def _is_binary(kind: pa.DataType) -> bool:
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind))
