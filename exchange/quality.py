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

import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange import universal_hash
from exchange.contract import Contract
from exchange.errors import ExchangeError, QualityFailed
from exchange.lazy import arrow_sees_pandas
from exchange.quality_rules import compile_rules
from validators.rules import Failure, Rule, compound_label
from validators.worker import Worker, WorkerFailed, WorkerUnavailable, give_back, take

WINDOW_ROWS = 250_000
# Validating a window briefly takes about four times its Arrow size (the IPC copy, the pandas
# frame and GX's filtered copies of it), and this process holds up to two: 8 MiB keeps the
# worker near 200 MB and both processes together 30-40 MB lower than 12 MiB did, for a fixed
# cost per window (20-30 ms for the sample's 15 rules) paid every ~90,000 rows of a 10-column
# extract: about 3% of a 10M-row run (BENCHMARKS.md, thirteenth round).
WINDOW_BYTES = 8 << 20
# A key's row hashes held in memory before they go to a temporary file (8 bytes a row).
KEY_HASHES_IN_MEMORY = 4 << 20
_BUCKETS = 256  # repeats are counted one leading byte of the hash at a time


class ValidationWorkerFailed(ExchangeError):
    """The process validating the windows died or stalled: the run stops and sends nothing."""


class QualityGate:
    """Holds outgoing rows in windows, validates each, and releases only validated rows.

    Great Expectations runs in a worker process (`validators.worker`), started when the gate is
    made so its import overlaps reading, unless `worker` is False or (by default) it is already
    imported in this process; if no worker can be started, here instead. With
    `pipelined`, the worker validates a window while the next one is gathered, and a window's
    batches are released when its verdict arrives: at most two windows are held. Otherwise each
    window is released by the `add` that closes it. Use the gate as a context manager, or call
    `finish` (or `close`), so its worker is not left running.
    """

    def __init__(
        self,
        contract: Contract,
        *,
        window_rows: int = WINDOW_ROWS,
        window_bytes: int = WINDOW_BYTES,
        pipelined: bool = False,
        worker: bool | None = None,
    ) -> None:
        self.rules, self.bounds = compile_rules(contract)
        if worker is None:
            # Where Great Expectations is loaded already (a Celery worker preloads it for its
            # tasks; a test session), validating here costs no import and no second copy.
            worker = "great_expectations" not in sys.modules
        self.window_rows = window_rows
        self.window_bytes = window_bytes
        self.rows = 0
        self.failures: list[str] = []
        self._name = contract.id
        self._pipelined = pipelined
        self._worker: Worker | None = None
        self._in_process: Any = None
        self._loading: _Loading | None = None  # the in-process validator, being built
        if worker:
            try:
                self._worker = take()
                self._worker.load(self._name, self.rules)
            except (WorkerUnavailable, WorkerFailed):
                self._worker = None  # validated here instead, with the same suite
        # One hash store per distinct key, single column or composite, however many rules ask.
        self._keys: dict[tuple[str, ...], Rule] = {}
        for rule in self.rules:
            if rule.kind in ("unique", "compound_unique"):
                self._keys.setdefault(rule.columns, rule)
        self._hashes: dict[tuple[str, ...], KeyHashes] = {k: KeyHashes() for k in self._keys}
        self._window: list[pa.RecordBatch] = []
        # The window's key hashes, batch by batch, stored a window at a time.
        self._window_keys: dict[tuple[str, ...], list[np.ndarray]] = {k: [] for k in self._keys}
        self._window_rows = 0
        self._window_bytes = 0
        # A window sent for validation and its rows, released when its verdict arrives.
        self._pending: tuple[list[pa.RecordBatch], int] | None = None
        self._verdict: list[Failure] | None = None  # an in-process verdict, not yet read

    def __enter__(self) -> QualityGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def in_worker(self) -> bool:
        """Whether the windows are validated by a worker process (False: in this one)."""
        return self._worker is not None

    def key_hashes(self, batch: pa.RecordBatch) -> dict[tuple[str, ...], np.ndarray]:
        """The hashes the whole-run uniqueness check needs of a batch, per key. It reads only
        the rules, so another thread may take them while this one validates, and pass them to
        `add` with the batch."""
        table = pa.Table.from_batches([batch])
        return {key: key_hashes(table, key, self._hashes[key].keys) for key in self._keys}

    def add(
        self, batch: pa.RecordBatch, keys: dict[tuple[str, ...], np.ndarray] | None = None
    ) -> list[pa.RecordBatch]:
        """Take a batch, and its `key_hashes` if already taken (else they are taken here);
        return the batches of windows whose validation has passed."""
        if keys is None:
            keys = self.key_hashes(batch)
        if (
            batch.num_rows
            and self._worker is None
            and self._in_process is None
            and self._loading is None
        ):
            # Great Expectations is imported (seconds) while the first window is gathered;
            # only once a row has come, so a run with nothing to send never imports it. (The
            # other threads must not import GX's own dependencies meanwhile, as two threads
            # importing one module can see it half made: nothing in `exchange` does.)
            self._loading = _Loading(self._name, self.rules)
        for key, parts in self._window_keys.items():
            parts.append(keys[key])
        self._window.append(batch)
        self._window_rows += batch.num_rows
        self._window_bytes += batch.nbytes
        full = self._window_rows >= self.window_rows or self._window_bytes >= self.window_bytes
        released: list[pa.RecordBatch] = []
        if self._pending is not None and self._worker is not None and self._worker.answered():
            released = self._settle()  # its verdict is in: release it early
        if full:
            released += self._close_window()
        return released

    def finish(self) -> list[pa.RecordBatch]:
        """Validate what is left and the whole-run rules; QualityFailed if any rule failed."""
        released = self._close_window()
        if self._pending is not None:
            released += self._settle()
        self._release_worker()  # before the whole-run checks: they need no worker
        try:
            self.failures.extend(self._whole_run_failures())
        finally:
            self.close()
        if self.failures:
            raise QualityFailed(
                f"{len(self.failures)} quality rule(s) failed: {'; '.join(self.failures)}",
                failures=self.failures,
            )
        return released

    def close(self) -> None:
        """Stop using the worker and drop the uniqueness hashes (and their temporary files)."""
        self._release_worker()
        try:
            if self._loading is not None:
                self._loading.wait()  # no import left running behind the gate
                self._loading = None
        finally:
            for hashes in self._hashes.values():
                hashes.close()

    def _release_worker(self) -> None:
        """The worker goes back for the next gate if its windows all passed; else it stops."""
        worker, self._worker = self._worker, None
        if worker is not None:
            give_back(worker)
        self._pending = None

    def _close_window(self) -> list[pa.RecordBatch]:
        """Send the gathered window for validation; return any window released meanwhile."""
        batches, self._window, self._window_rows = self._window, [], 0
        self._window_bytes = 0
        if not batches:
            return []
        rows = sum(b.num_rows for b in batches)
        self.rows += rows
        # One sorted part per window, not per batch: fewer for the whole-run count to read.
        for key, hashes in self._hashes.items():
            parts, self._window_keys[key] = self._window_keys[key], []
            if parts:
                hashes.add(np.concatenate(parts))
        released = self._settle() if self._pending is not None else []
        self._submit(batches, rows)
        if not self._pipelined or self._worker is None:  # validated here: nothing to wait for
            released += self._settle()
        return released

    def _submit(self, batches: list[pa.RecordBatch], rows: int) -> None:
        self._pending = (batches, rows)
        if self._worker is not None:
            try:
                self._worker.greet()
                self._worker.submit(batches)
                return
            except WorkerUnavailable:
                self._worker = None  # it never started: this window and the rest are done here
            except WorkerFailed as exc:
                self._release_worker()
                raise ValidationWorkerFailed(f"{exc}: nothing was sent; run it again") from None
        if self._in_process is None:
            if self._loading is None:  # the worker went away, or the window has no rows
                self._loading = _Loading(self._name, self.rules)
            self._in_process = self._loading.result()  # kept until then, for close() to wait
            self._loading = None
        self._verdict = self._in_process.validate(pa.Table.from_batches(batches).to_pandas())

    def _settle(self) -> list[pa.RecordBatch]:
        """Wait for the pending window's verdict; its batches if it passed, else QualityFailed."""
        assert self._pending is not None
        batches, rows = self._pending
        if self._verdict is not None:
            failures, self._verdict = self._verdict, None
        else:
            assert self._worker is not None
            try:
                failures = self._worker.verdict(rows)
            except WorkerFailed as exc:
                self._release_worker()
                raise ValidationWorkerFailed(f"{exc}: nothing was sent; run it again") from None
        self._pending = None
        if failures:
            self._release_worker()
            described = [f.describe() for f in failures]
            self.failures.extend(described)
            raise QualityFailed(
                f"{len(failures)} quality rule(s) failed: " + "; ".join(described),
                failures=described,
            )
        return batches

    def _whole_run_failures(self) -> Iterator[str]:
        for key, rule in self._keys.items():
            hashes = self._hashes[key]
            duplicates = hashes.repeats()
            if not duplicates:
                continue
            if rule.kind == "unique":
                yield (
                    f"{key[0]}: unique failed for {duplicates} of {hashes.count} rows (whole run)"
                )
            else:
                yield (
                    f"{compound_label(key)}: compound_unique failed for {duplicates} of "
                    f"{hashes.count} rows (whole run; {rule.origin})"
                )
        low, high = self.bounds
        if (low is not None and self.rows < low) or (high is not None and self.rows > high):
            yield f"row count {self.rows} is outside the contract's bounds [{low}, {high}]"


def repeats(hashes: np.ndarray) -> int:
    """How many entries repeat an earlier one; sorts `hashes` in place."""
    hashes.sort()
    return int(np.count_nonzero(hashes[1:] == hashes[:-1]))


class KeyHashes:
    """A key's 64-bit row hashes for the whole run, counted for repeats in flat memory.

    Each window's hashes are kept sorted; past `memory_bytes` they go to an unnamed temporary
    file (0600, gone when closed), encrypted with a key only this object holds: the hashes are
    keyed, but a universal hash is made to spread values, not to hide them, so the keys and
    short values (a 10-digit id) are not left to be worked out from many hashes on disk.
    Repeats are then counted one leading byte at a time, so the count needs 1/256 of the run's
    hashes in memory, where one sort of all of them needed two copies (16 bytes a row: 160 MB
    at 10M rows).
    """

    def __init__(self, *, memory_bytes: int | None = None) -> None:
        self.count = 0
        self._memory_bytes = KEY_HASHES_IN_MEMORY if memory_bytes is None else memory_bytes
        self._parts: list[np.ndarray] = []  # sorted, each; not yet written out
        self._held = 0
        self._file: IO[bytes] | None = None
        self._written: list[tuple[int, np.ndarray]] = []  # (offset, leading-byte cuts) per part
        self._file_key = os.urandom(32)  # AES-256-CTR over the file's bytes, by offset
        # What `key_hashes` hashes values under for this store: its own, so nobody can aim
        # key values at a collision.
        self.keys = new_key_hash_keys()

    def add(self, hashes: np.ndarray) -> None:
        """Take one window's hashes."""
        if not len(hashes):
            return
        self._parts.append(np.sort(hashes.astype(np.uint64, copy=False)))
        self.count += len(hashes)
        self._held += hashes.nbytes
        if self._held > self._memory_bytes:
            self._write_out()

    def _write_out(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="exchange-keys-")  # noqa: SIM115
        for part in self._parts:
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(self._crypt(part.tobytes(), offset))
            self._written.append((offset, _cuts(part)))
        self._file.flush()
        self._parts, self._held = [], 0

    def repeats(self) -> int:
        """How many of the hashes repeat an earlier one (the rows past each key's first)."""
        cuts = [_cuts(part) for part in self._parts]
        total = 0
        for bucket in range(_BUCKETS):
            pieces = [p[c[bucket] : c[bucket + 1]] for p, c in zip(self._parts, cuts, strict=True)]
            pieces += [self._read(offset, c[bucket], c[bucket + 1]) for offset, c in self._written]
            words = np.concatenate([*pieces, np.empty(0, np.uint64)])
            if len(words) > 1:
                total += repeats(words)
        return total

    def _read(self, offset: int, start: int, stop: int) -> np.ndarray:
        assert self._file is not None  # parts are only written out to an open file
        size = int(stop - start) * 8
        at = offset + int(start) * 8
        data = os.pread(self._file.fileno(), size, at)
        if len(data) != size:
            raise OSError("the run's key hashes could not be read back in full")
        return np.frombuffer(self._crypt(data, at), dtype=np.uint64).copy()

    def _crypt(self, data: bytes, offset: int) -> bytes:
        """Encrypt or decrypt (CTR: the same) `data` found at byte `offset` of the file."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        block, skip = divmod(offset, 16)
        counter = modes.CTR(block.to_bytes(16, "big"))  # the key is new for every file
        stream = Cipher(algorithms.AES(self._file_key), counter).encryptor()
        return stream.update(bytes(skip) + data)[skip:]

    def close(self) -> None:
        """Drop the hashes and remove the temporary file, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._parts, self._written, self._held = [], [], 0


class _Loading:
    """Builds the in-process validator (importing Great Expectations) on a thread of its own."""

    def __init__(self, name: str, rules: Sequence[Rule]) -> None:
        self._validator: Any = None
        self._error: BaseException | None = None
        # Waited on instead of joining the thread: a join cut short by Ctrl-C (3.11) marks the
        # thread stopped while it still runs, so a later join would not wait.
        self._built = threading.Event()
        self._thread = threading.Thread(
            target=self._build, args=(name, rules), name="exchange-gx-load", daemon=True
        )
        self._thread.start()

    def _build(self, name: str, rules: Sequence[Rule]) -> None:
        try:
            from validators.suite import BatchValidator  # Great Expectations is slow to import

            arrow_sees_pandas()  # `exchange run` kept pandas from pyarrow's view until now
            self._validator = BatchValidator(name, rules)
        except BaseException as exc:  # raised again, unchanged, where the validator is needed
            self._error = exc
        finally:
            self._built.set()

    def wait(self) -> None:
        self._built.wait()

    def result(self) -> Any:
        """The validator, once built; what building it raised, raised here."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self._validator


def _cuts(part: np.ndarray) -> np.ndarray:
    """Where each leading byte's hashes start in a sorted part, and its end (257 offsets)."""
    edges = np.arange(1, _BUCKETS, dtype=np.uint64) << np.uint64(64 - 8)
    return np.concatenate(([0], np.searchsorted(part, edges), [len(part)]))


def new_key_hash_keys() -> np.ndarray:
    """Keys for one store of key hashes: a set for each column's values, and an independent
    one for joining a composite key's column hashes."""
    return np.stack([universal_hash.new_keys(), universal_hash.new_keys()])


def key_hashes(table: pa.Table, columns: tuple[str, ...], keys: np.ndarray) -> np.ndarray:
    """A uint64 hash of each row's key over `columns`, for rows where no key column is empty.

    Vectorised over Arrow columns: equal keys hash alike in every window of a run, since a run's
    column types are fixed (an integer column is not read as float when a window has a null).
    Every value is hashed under `keys` (`new_key_hash_keys`, `exchange.universal_hash`), so
    equal values hash alike only under one set, and nobody can aim key values at a collision.
    A column missing from the table yields no hashes: the window's own check fails it closed.
    """
    if not all(c in table.column_names for c in columns):
        return np.empty(0, np.uint64)
    parts = [table.column(c) for c in columns]
    complete = None
    for values in parts:
        present = pc.is_valid(values)
        if pa.types.is_floating(values.type):
            present = pc.and_(present, pc.invert(pc.is_nan(values)))
        complete = present if complete is None else pc.and_(complete, present)
    complete = pc.fill_null(complete, False)  # is_nan of a null is null: not complete
    if not pc.all(complete).as_py():
        parts = [pc.filter(values, complete) for values in parts]
    column_keys, joining_keys = keys
    hashed = [_hashable(values, column_keys) for values in parts]
    if len(hashed) == 1:
        return hashed[0]
    return universal_hash.fixed(np.column_stack(hashed), joining_keys)


def _hashable(values: pa.ChunkedArray, keys: np.ndarray) -> np.ndarray:
    """A key column, free of nulls, as a keyed uint64 per value: numbers by their 8 bytes in
    one dtype per Arrow type, text and binary by their bytes, anything else by its text."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values, kind = values.cast(kind.value_type), kind.value_type
    numbers = _numbers(values, kind)
    if numbers is not None:
        return universal_hash.fixed(numbers.reshape(-1, 1), keys)
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view, _is_binary)
    if not any(test(kind) for test in text):
        try:  # decimals and the like: by their text, which is exact for each type
            values = values.cast(pa.large_string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            values = pa.chunked_array(
                [pa.array([repr(v) for v in values.to_pylist()], pa.large_string())]
            )
    return universal_hash.hashes(values.combine_chunks(), keys)


def _numbers(values: pa.ChunkedArray, kind: pa.DataType) -> np.ndarray | None:
    """A column of numbers, booleans or times as 64-bit words (None for any other type)."""
    if pa.types.is_boolean(kind):
        return values.to_numpy().astype(np.uint64)
    if pa.types.is_signed_integer(kind):
        return values.cast(pa.int64()).to_numpy().view(np.uint64)
    if pa.types.is_unsigned_integer(kind):
        return values.cast(pa.uint64()).to_numpy()
    if pa.types.is_floating(kind):
        return (values.cast(pa.float64()).to_numpy() + 0.0).view(np.uint64)  # -0.0 is 0.0
    if pa.types.is_temporal(kind) and not pa.types.is_interval(kind):
        width = pa.int32() if kind.bit_width == 32 else pa.int64()
        return values.cast(width).to_numpy().astype(np.int64).view(np.uint64)
    return None


def _is_binary(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_fixed_size_binary(kind)
    )
