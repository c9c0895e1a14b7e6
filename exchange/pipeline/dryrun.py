"""A dry run: read a source, minimise, guard and validate it as a contract says, and send nothing.

For a data team trying a contract before (or while) an IG officer approves it: no approval is
needed (a draft works), no secret is read (pseudonyms come from a throwaway random key, so they
are not the real ones), nothing is written (no staging, ledger, disclosure record or incident),
and nothing leaves. It answers: how many rows would go, how many would be left out and why,
which source columns the contract does not know, and which quality rules would fail, with the
failing count and where the first failing rows are in the source (line numbers, never values).

Built only from the public pieces a real run uses (sources, `Minimiser`, `guard.check`, the
compiled quality rules and the same Great Expectations suite), so it refuses what a run refuses.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from exchange import guard
from exchange.contract import Contract, load_contract
from exchange.errors import GuardRefused, Refused
from exchange.minimise import Minimiser, source_types
from exchange.pipeline.naming import SAFE_ID
from exchange.pipeline.source import resolve
from exchange.quality import WINDOW_ROWS, KeyHashes, compile_rules, key_hashes
from exchange.secrets import LocalSecrets
from exchange.settings import Settings
from exchange.sources import CsvSource, Source, check_columns
from exchange.types import arrow_type
from validators.rules import Rule

SHOWN_ROWS = 5  # failing rows located per rule: enough to find the pattern, not a dump
WHOLE_RUN = ("unique", "compound_unique")  # decided over every row at the end, not per window


@dataclass
class RuleOutcome:
    """A quality rule that would fail: counts, and where the first failing rows are."""

    rule: Rule
    failing: int = 0
    rows: int = 0
    at: list[int] = field(default_factory=list)  # 0-based source row indexes, first few
    located: bool = True  # False once a window's failing rows could not be told apart

    def describe(self) -> str:
        """'column: kind failed for N of M rows (origin)', no values."""
        where = f" ({self.rule.origin})" if self.rule.origin else ""
        scope = " (whole run)" if self.rule.kind in WHOLE_RUN else ""
        return (
            f"{self.rule.column}: {self.rule.kind} failed for {self.failing} of {self.rows} "
            f"rows{scope}{where}"
        )


@dataclass
class DryRun:
    """What a run of the contract over the source would do (counts, names and positions only)."""

    contract: Contract
    source: str
    rows_read: int = 0
    rows_sent: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    objections_overridden: int = 0
    unknown_columns: list[str] = field(default_factory=list)
    refusal: str | None = None  # a guard or map refusal: the run stops there
    failures: list[RuleOutcome] = field(default_factory=list)
    row_count: str | None = None  # the row-count rule's failure, if any
    lines: dict[int, int] = field(default_factory=dict)  # source row index -> line in the file
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether a real run would get past minimise, guard and validate."""
        return self.refusal is None and not self.failures and self.row_count is None

    def where(self, outcome: RuleOutcome) -> str:
        """Where the first failing rows are: 'source lines 4, 9' or 'rows 3, 8' (never values)."""
        if outcome.rule.kind in WHOLE_RUN:
            return ""
        if not outcome.located or not outcome.at:
            return "its rows could not be located"
        if self.lines and all(i in self.lines for i in outcome.at):
            shown = ", ".join(str(self.lines[i]) for i in outcome.at)
            return f"first at source line{'s' if len(outcome.at) > 1 else ''} {shown}"
        shown = ", ".join(str(i + 1) for i in outcome.at)
        return f"first at source row{'s' if len(outcome.at) > 1 else ''} {shown}"


def contract_path(settings: Settings, given: str | Path) -> Path:
    """The contract file: a path as given (a draft may live anywhere, since nothing runs), or
    an id in the contracts folder."""
    path = Path(given)
    if not path.exists() and path.suffix not in (".yaml", ".yml") and SAFE_ID.fullmatch(str(given)):
        return settings.contracts / f"{given}.yaml"
    return path


def dry_run(
    settings: Settings,
    contract: str | Path,
    source: str | Path | Source | None,
    *,
    today: dt.date | None = None,
    window_rows: int = WINDOW_ROWS,
    progress: Callable[[str], None] | None = None,
) -> DryRun:
    """Minimise, guard and validate the source as the contract says; write and send nothing.

    Raises ContractError (the contract or a rule cannot be used) or SourceError (the source
    cannot be read as the contract needs); a refusal is returned, not raised."""
    loaded = load_contract(contract_path(settings, contract))
    rules, bounds = compile_rules(loaded)
    opened, _ = resolve(
        settings, LocalSecrets.from_settings(settings), loaded, source, digest=False
    )
    types = source_types(loaded)
    result = DryRun(loaded, opened.name, unknown_columns=check_columns(opened, list(types)))
    result.notes.extend(_notes(loaded))
    key = os.urandom(32) if loaded.pseudonymisation_key else None  # throwaway: never the real one
    today = today or dt.datetime.now(dt.UTC).date()
    minimise = Minimiser(loaded, pseudonym_key=key, today=today)
    if progress is not None:
        progress(f"dry run: loading the quality rules of {loaded.id}")
    window = _Windows(loaded, rules, window_rows)
    try:
        for offset, batch in _numbered(opened.batches(types)):
            if progress is not None:
                progress(f"dry run: {offset + batch.num_rows:,} rows read from {opened.name}")
            out = minimise(batch)
            guard.check(out.schema, loaded)
            window.add(out, partial(_kept_rows, loaded, today, batch, offset, out.num_rows))
        window.flush()
    except (GuardRefused, Refused) as exc:  # the guard, or a map that meets an unknown code
        result.refusal = str(exc)
    tally = minimise.tally
    result.rows_read, result.rows_sent = tally.read, tally.sent
    result.excluded = dict(tally.excluded)
    result.objections_overridden = tally.objections_overridden
    if result.refusal is None:
        result.failures = [o for o in window.outcomes() if o.failing]
        low, high = bounds
        if (low is not None and tally.sent < low) or (high is not None and tally.sent > high):
            result.row_count = (
                f"row count {tally.sent} is outside the contract's bounds [{low}, {high}]"
            )
    wanted = sorted({i for o in result.failures for i in o.at})
    if wanted and isinstance(opened, CsvSource):
        result.lines = csv_lines(opened.path, wanted)
    return result


def _notes(contract: Contract) -> Iterator[str]:
    """What a dry run leaves out that a real run does, so its counts are not misread."""
    if contract.status != "active":
        yield f"the contract is {contract.status!r}: a real run needs it 'active' and approved"
    if contract.pseudonymisation_key:
        yield "pseudonyms come from a throwaway key: they are not the ones a real run sends"
    if contract.objections.list:
        yield (
            f"the objection list {contract.objections.list!r} (a secret) was not read: rows of "
            "people on it are counted as sent"
        )
    if contract.incremental_column:
        yield "every row was considered: a dry run does not read the last run's watermark"


def _numbered(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Each batch with the source row index of its first row."""
    offset = 0
    for batch in batches:
        yield offset, batch
        offset += batch.num_rows


def _kept_rows(
    contract: Contract, today: dt.date, batch: pa.RecordBatch, offset: int, sent: int
) -> np.ndarray | None:
    """The source row index of each row minimise keeps from `batch`, or None if unknowable.

    A second minimiser sees the batch with the subject key's column replaced by row numbers:
    it keeps the same rows (objections and filters read other columns) and reports the kept
    subjects, which are then the row numbers. If the filters read the subject column, the kept
    count differs from the real one and the rows are not located."""
    column = contract.subject_key.source
    kind = batch.schema.field(column).type
    numbers = pa.array(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
    try:
        tagged = batch.set_column(batch.schema.get_field_index(column), column, numbers.cast(kind))
        probe = Minimiser(contract, pseudonym_key=os.urandom(32), today=today)
        out = probe(tagged)
        kept = probe.last_subjects.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, Refused):
        return None
    if len(kept) != sent or out.num_rows != sent or kept.null_count:
        return None  # not the rows the real minimiser kept: better no line than a wrong one
    return np.asarray(kept.to_numpy(zero_copy_only=False), dtype=np.int64)


class _Windows:
    """Validates the outgoing rows in windows with the real suite; sums failures per rule."""

    def __init__(self, contract: Contract, rules: Sequence[Rule], window_rows: int) -> None:
        from validators.suite import BatchValidator  # Great Expectations is slow to import

        self.schema = pa.schema(
            [pa.field(f.name, arrow_type(f.logical_type)) for f in contract.fields]
        )
        self.window_rows = window_rows
        self.per_row = [r for r in rules if r.kind not in WHOLE_RUN]
        self.whole = {r.columns: r for r in rules if r.kind in WHOLE_RUN}
        self.validator = BatchValidator(contract.id, self.per_row) if self.per_row else None
        self.results = {r: RuleOutcome(r) for r in rules}
        # Past a few MiB a key's hashes wait in a temporary file: memory stays flat.
        self.hashes: dict[tuple[str, ...], KeyHashes] = {k: KeyHashes() for k in self.whole}
        self.sent = 0
        self._batches: list[tuple[pa.RecordBatch, Any]] = []
        self._rows = 0

    def add(self, out: pa.RecordBatch, kept: Any) -> None:
        """Take a minimised batch and a way to find its rows in the source."""
        self._batches.append((out.cast(self.schema), kept))
        self._rows += out.num_rows
        if self._rows >= self.window_rows:
            self.flush()

    def flush(self) -> None:
        """Validate the rows held; count each rule's failures and locate the first few."""
        batches, self._batches, self._rows = self._batches, [], 0
        if not batches:
            return
        table = pa.Table.from_batches([b for b, _ in batches], schema=self.schema)
        self.sent += table.num_rows
        for key, hashes in self.hashes.items():
            hashes.add(key_hashes(table, key, hashes.keys))
        if self.validator is None:
            return
        frame = table.to_pandas()
        failed = {f.rule: f for f in self.validator.validate(frame)}
        for rule in self.per_row:
            outcome = self.results[rule]
            outcome.rows += len(frame)
            failure = failed.get(rule)
            if failure is None:
                continue
            outcome.failing += failure.unexpected_count
            if outcome.located and len(outcome.at) < SHOWN_ROWS:
                self._locate(outcome, frame, failure.unexpected_count, batches)

    def _locate(
        self, outcome: RuleOutcome, frame: pd.DataFrame, count: int, batches: list[Any]
    ) -> None:
        """Find the window's failing rows in the source; give up on a rule if unsure."""
        mask = failing_rows(outcome.rule, frame)
        if mask is None or int(mask.sum()) != count:  # not the suite's own answer: say so
            outcome.located = False
            return
        wanted = np.flatnonzero(mask)[: SHOWN_ROWS - len(outcome.at)]
        start = 0
        for out, kept in batches:
            inside = wanted[(wanted >= start) & (wanted < start + out.num_rows)] - start
            if len(inside):
                rows = kept()
                if rows is None:
                    outcome.located = False
                    return
                outcome.at.extend(int(rows[i]) for i in inside)
            start += out.num_rows

    def outcomes(self) -> list[RuleOutcome]:
        """Every rule's outcome, the whole-run rules decided now."""
        for key, rule in self.whole.items():
            hashes = self.hashes[key]
            outcome = self.results[rule]
            outcome.rows, outcome.failing = hashes.count, hashes.repeats()
            hashes.close()
        return list(self.results.values())


def failing_rows(rule: Rule, frame: pd.DataFrame) -> np.ndarray | None:
    """Where a per-row rule fails in the frame (a boolean mask), or None if not computable.

    Only to point at rows: the counts always come from the Great Expectations suite, and a mask
    that disagrees with them is not used."""
    if rule.column not in frame.columns:
        return None
    values = frame[rule.column]
    present = values.notna().to_numpy(dtype=bool)
    try:
        if rule.kind == "not_null":
            return ~present
        if rule.kind == "in_set":
            allowed = values.isin(list(rule.param("values", ()))).to_numpy(dtype=bool)
            return present & ~allowed
        if rule.kind == "between":
            outside = np.zeros(len(values), dtype=bool)
            if rule.param("min") is not None:
                outside |= (values < rule.param("min")).to_numpy(dtype=bool)
            if rule.param("max") is not None:
                outside |= (values > rule.param("max")).to_numpy(dtype=bool)
            return present & outside
        if rule.kind == "regex":
            from validators.expectations import pattern_mask

            return present & ~pattern_mask(values, rule.param("pattern")).to_numpy(dtype=bool)
        if rule.kind == "nhs_number":
            from validators.expectations import nhs_number_mask

            return present & ~nhs_number_mask(values).to_numpy(dtype=bool)
    except (TypeError, ValueError):  # incomparable types, a pattern RE2 cannot compile
        return None
    return None


def csv_lines(path: Path, rows: Sequence[int]) -> dict[int, int]:
    """The line on which each given data row (0-based, after the header) starts in a CSV file.

    Read with the csv module, so a quoted field spanning lines counts as the lines it spans;
    empty lines are skipped as the CSV reader skips them. No value is kept."""
    wanted, found = set(rows), {}
    last = max(wanted)
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        index, start = -1, 1  # -1: the header
        for record in reader:
            if record:
                if index in wanted:
                    found[index] = start
                if index >= last:
                    break
                index += 1
            start = reader.line_num + 1
    return found


__all__ = ["DryRun", "RuleOutcome", "csv_lines", "dry_run", "failing_rows"]
