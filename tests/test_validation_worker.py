"""The quality gate's Great Expectations worker process (validators.worker) and the whole-run
uniqueness hashes kept in flat memory (exchange.quality.KeyHashes).

Real child processes throughout: one worker is started for the module and reused by gate after
gate, as in a process making several drops; tests that kill or replace it start their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import PSEUDONYM_KEY, SAMPLE

from exchange import quality, synth
from exchange.contract import Contract, load_contract
from exchange.errors import InvalidRequest, QualityFailed
from exchange.minimise import Minimiser
from exchange.quality import KeyHashes, QualityGate, ValidationWorkerFailed, repeats
from exchange.settings import Settings
from validators import worker

ROWS = 300


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(SAMPLE)


@pytest.fixture(scope="module")
def clean(contract: Contract) -> pa.Table:
    """Outgoing rows as the minimiser makes them from synthetic source data."""
    minimise = Minimiser(contract, pseudonym_key=PSEUDONYM_KEY)
    batches = [minimise(b) for b in synth.batches(ROWS + 20, seed=5, batch_rows=60)]
    return pa.Table.from_batches(batches).slice(0, ROWS)


def with_cell(table: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    kind = table.schema.field(column).type
    array = pa.array(values) if isinstance(value, str) else pa.array(values, type=kind)
    return table.set_column(table.column_names.index(column), column, array)


def feed(gate: QualityGate, table: pa.Table, chunk: int = 30) -> list[pa.RecordBatch]:
    released: list[pa.RecordBatch] = []
    for batch in table.combine_chunks().to_batches(max_chunksize=chunk):
        released += gate.add(batch)
    return released + gate.finish()


def fresh_worker() -> None:
    """Stop the idle worker, so the next gate starts a new child."""
    worker._close_idle()


def test_worker_and_in_process_give_the_same_verdicts(contract: Contract, clean: pa.Table) -> None:
    """Every rule on every row: the worker's failures equal those of in-process validation."""
    bad = with_cell(clean, "attendance_rate", 40, 987.5)
    bad = with_cell(bad, "gender", 250, "SENTINEL-Q")
    bad = with_cell(bad, "exclusions", 251, -4)
    outcomes = []
    for in_worker in (True, False):
        gate = QualityGate(contract, window_rows=100, worker=in_worker)
        assert gate.in_worker is in_worker
        with pytest.raises(QualityFailed) as caught:
            feed(gate, bad)
        outcomes.append(caught.value.failures)
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0]) == 1
    assert outcomes[0][0].startswith("attendance_rate: between failed for 1 of ")
    assert "987" not in str(outcomes[0])


def test_pipelined_gate_releases_a_window_only_after_its_verdict(
    contract: Contract, clean: pa.Table
) -> None:
    """Pipelined, a window's rows wait for its verdict; a failing window's rows never leave,
    and no more than two windows are held."""
    gate = QualityGate(contract, window_rows=60, pipelined=True, worker=True)
    assert gate.in_worker
    bad = with_cell(clean, "birth_month", 200, "SENTINEL-B")  # the fourth window of 60
    released: list[pa.RecordBatch] = []
    held_most = 0
    with pytest.raises(QualityFailed) as caught:
        for batch in bad.combine_chunks().to_batches(max_chunksize=30):
            released += gate.add(batch)
            waiting = (gate._pending[1] if gate._pending else 0) + gate._window_rows
            held_most = max(held_most, waiting)
        released += gate.finish()
    assert "birth_month: regex failed for 1 of 60 rows" in caught.value.failures[0]
    sent = sum(b.num_rows for b in released)
    assert sent <= 180  # the three windows before the bad one, at most
    assert pa.Table.from_batches(released).equals(bad.slice(0, sent))
    assert held_most <= 120


def test_pipelined_gate_passes_every_row_in_order(contract: Contract, clean: pa.Table) -> None:
    with QualityGate(contract, window_rows=70, pipelined=True, worker=True) as gate:
        released = feed(gate, clean, chunk=35)
    assert pa.Table.from_batches(released).equals(clean)
    assert gate.rows == ROWS


def test_a_killed_worker_fails_the_run(contract: Contract, clean: pa.Table) -> None:
    """A worker killed mid-run (out of memory, an operator) stops the run: never a pass."""
    fresh_worker()
    gate = QualityGate(contract, window_rows=100, pipelined=True, worker=True)
    assert gate._worker is not None
    batches = clean.combine_chunks().to_batches(max_chunksize=100)
    gate.add(batches[0])  # sent; its verdict is pending
    os.kill(gate._worker._process.pid, signal.SIGKILL)
    with pytest.raises(ValidationWorkerFailed, match="killed by signal 9") as caught:
        for batch in batches[1:]:
            gate.add(batch)
        gate.finish()
    assert "nothing was sent" in str(caught.value)
    assert caught.value.exit_code == 1


def test_a_worker_that_cannot_start_means_validation_here(
    contract: Contract, clean: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_worker()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    gate = QualityGate(contract, window_rows=100, pipelined=True, worker=True)
    assert not gate.in_worker
    assert pa.Table.from_batches(feed(gate, clean)).equals(clean)


def test_a_planted_package_in_the_working_folder_is_not_run(
    contract: Contract, clean: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker starts from / with -P: a validators/worker.py where the run was started is
    never imported (it would be handed every row)."""
    fresh_worker()
    marker = tmp_path / "ran"
    planted = tmp_path / "validators"
    planted.mkdir()
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "worker.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    gate = QualityGate(contract, window_rows=100, worker=True)
    assert gate.in_worker
    assert pa.Table.from_batches(feed(gate, clean)).equals(clean)
    assert gate.rows == ROWS
    assert not marker.exists()


def test_another_validators_package_on_the_path_is_refused(
    contract: Contract, clean: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that imports another copy of the package (say, hello) gets no rows: the
    windows are validated here instead."""
    fresh_worker()
    planted = tmp_path / "validators"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    (planted / "worker.py").write_text(
        "import json, struct, sys\n"
        "body = json.dumps({'hello': '/elsewhere'}).encode()\n"
        "sys.stdout.buffer.write(struct.pack('<Q', len(body)) + body)\n"
        "sys.stdout.buffer.flush()\n"
        "sys.stdin.buffer.read()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    gate = QualityGate(contract, window_rows=100, worker=True)
    released = feed(gate, clean)
    assert not gate.in_worker
    assert pa.Table.from_batches(released).equals(clean)


def test_the_worker_gets_no_secrets_in_its_environment(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_worker()
    monkeypatch.setenv("EXCHANGE_SECRETS", "/somewhere/secrets.json")
    monkeypatch.setenv("AIRFLOW_CONN_PARTNER", "sftp://user:hunter2@host")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["relative/dir", "/abs/dir"]))
    with QualityGate(contract, worker=True) as gate:
        assert gate._worker is not None
        pid = gate._worker._process.pid
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0] for entry in environ if entry}
        assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
    assert b"EXCHANGE_SECRETS" not in names
    assert b"AIRFLOW_CONN_PARTNER" not in names
    assert b"PYTHONPATH=/abs/dir" in environ
    assert worker.child_environment({"PYTHONPATH": "rel"}).get("PYTHONPATH") is None
    fresh_worker()


def test_the_worker_hands_freed_memory_back_at_once_unless_told_otherwise() -> None:
    """Its allocator returns a window's memory once it is answered; an operator's own
    setting of the purge delay is kept."""
    given = worker.child_environment({})
    assert (given["MIMALLOC_PURGE_DELAY"], given["MIMALLOC_ALLOW_THP"]) == ("0", "0")
    kept = worker.child_environment({"MIMALLOC_PURGE_DELAY": "250", "MIMALLOC_ALLOW_THP": "1"})
    assert (kept["MIMALLOC_PURGE_DELAY"], kept["MIMALLOC_ALLOW_THP"]) == ("250", "1")


def test_by_default_a_worker_unless_great_expectations_is_loaded_here(
    contract: Contract,
) -> None:
    """A process that has Great Expectations already (a preloading Celery worker) validates
    itself; a new `exchange run` process gets a worker."""
    import validators.suite  # noqa: F401 - loaded, as in a preloading Celery worker

    with QualityGate(contract) as gate:
        assert not gate.in_worker
    code = (
        "import sys; from exchange.contract import load_contract; "
        "from exchange.quality import QualityGate; "
        f"gate = QualityGate(load_contract({str(SAMPLE)!r})); "
        "print(gate.in_worker, 'great_expectations' in sys.modules); gate.close()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]


def test_one_worker_serves_gate_after_gate(contract: Contract, clean: pa.Table) -> None:
    """A gate that finished cleanly (or failed a rule) leaves its worker for the next one."""
    with QualityGate(contract, window_rows=150, worker=True) as first:
        feed(first, clean)
    bad = with_cell(clean, "gender", 5, "SENTINEL-G")
    with (
        QualityGate(contract, window_rows=150, worker=True) as second,
        pytest.raises(QualityFailed),
    ):
        feed(second, bad)
    kept = worker._IDLE
    assert kept is not None
    with QualityGate(contract, window_rows=150, worker=True) as third:
        assert third._worker is kept
        assert pa.Table.from_batches(feed(third, clean)).equals(clean)


def test_a_worker_started_early_imports_great_expectations_before_any_rules_come(
    contract: Contract, clean: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`start_early` parks one worker (a second call starts no other) whose child imports
    Great Expectations at once; the next gate takes that very worker."""
    fresh_worker()
    with monkeypatch.context() as loaded:
        loaded.setitem(sys.modules, "great_expectations", types.ModuleType("great_expectations"))
        worker.start_early()
        assert worker._IDLE is None  # loaded here: the gate would validate here, not use one
    monkeypatch.delitem(sys.modules, "great_expectations", raising=False)  # as in `exchange run`
    worker.start_early()
    early = worker._IDLE
    assert early is not None
    worker.start_early()
    assert worker._IDLE is early
    maps = Path(f"/proc/{early._process.pid}/maps")
    deadline = time.monotonic() + 120
    # pydantic's compiled core: loaded by Great Expectations, by nothing else in the child.
    while "pydantic_core" not in maps.read_text():
        assert time.monotonic() < deadline, "the early worker never imported Great Expectations"
        time.sleep(0.1)
    with QualityGate(contract, window_rows=150, worker=True) as gate:
        assert gate._worker is early
        assert pa.Table.from_batches(feed(gate, clean)).equals(clean)
    assert early.imported_early  # the early import worked: not done again for the rules


def test_a_worker_started_early_and_never_used_is_stopped_as_the_process_exits() -> None:
    """A command refused before it validates leaves no child behind, though the child is
    still importing Great Expectations (seconds) when the command ends."""
    code = (
        "import atexit\n"
        "ended = []\n"
        "atexit.register(lambda: print(ended[0]._process.returncode))  # runs after the kill\n"
        "from validators import worker\n"
        "worker.start_early()\n"
        "ended.append(worker._IDLE)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(-signal.SIGKILL)  # killed and reaped, not left to end


# --- whole-run uniqueness in flat memory ----------------------------------------------------


@pytest.mark.parametrize("memory_bytes", [0, 64, 1 << 30])
def test_key_hashes_count_repeats_as_one_sort_does(memory_bytes: int) -> None:
    """In memory or in a temporary file, the count equals a sort of every hash at once."""
    rng = np.random.default_rng(7)
    windows = [rng.integers(0, 2**64, size=n, dtype=np.uint64) for n in (500, 1, 0, 800, 300)]
    windows[3][:40] = windows[0][100:140]  # repeats across windows
    windows[4][10:13] = windows[4][20]  # and within one
    windows[1][0] = np.uint64(2**64 - 1)  # the last leading byte
    windows[0][0] = np.uint64(0)  # and the first
    windows[4][0] = np.uint64(0)
    store = KeyHashes(memory_bytes=memory_bytes)
    for window in windows:
        store.add(window)
    expected = repeats(np.concatenate(windows))
    assert expected == 44
    assert store.repeats() == expected
    assert store.count == 1601
    assert (store._file is not None) == (memory_bytes < 1 << 30)
    if store._file is not None:
        status = os.fstat(store._file.fileno())
        assert status.st_mode & 0o777 == 0o600
        assert status.st_nlink == 0  # unnamed: nothing to find, gone when closed
        # Encrypted: no hash of a public function, which a short key could be found from, is on
        # disk as it is (the parts are written sorted, so look for every window's, sorted).
        on_disk = os.pread(store._file.fileno(), 1 << 20, 0)
        assert len(on_disk) == 8 * sum(len(w) for w in store_written(windows, memory_bytes))
        for window in windows:
            for value in np.sort(window)[:50]:
                assert value.tobytes() not in on_disk
    store.close()
    assert store._file is None


def store_written(windows: list[np.ndarray], memory_bytes: int) -> list[np.ndarray]:
    """The windows a store with this memory writes out (all but those held after the last)."""
    written, held, waiting = [], 0, []
    for window in windows:
        if not len(window):
            continue
        waiting.append(window)
        held += window.nbytes
        if held > memory_bytes:
            written += waiting
            waiting, held = [], 0
    return written


def test_gate_catches_duplicates_across_spilled_windows(
    contract: Contract, clean: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quality, "KEY_HASHES_IN_MEMORY", 16)
    table = with_cell(clean, "person_ref", 280, clean["person_ref"][3].as_py())
    gate = QualityGate(contract, window_rows=50)
    assert all(h._memory_bytes == 16 for h in gate._hashes.values())
    with pytest.raises(QualityFailed) as caught:
        feed(gate, table)
    assert caught.value.failures == ("person_ref: unique failed for 1 of 300 rows (whole run)",)


@pytest.mark.parametrize(("given", "wanted"), [(None, True), ("", True), ("1", True), ("0", False)])
def test_the_worker_is_chosen_by_exchange_validation_worker(
    given: str | None, wanted: bool
) -> None:
    """On unless turned off: started as `exchange run` begins, it made a 1M-row run 17-20%
    faster on the 2-core project machine (BENCHMARKS.md, eighth round)."""
    env = {} if given is None else {"EXCHANGE_VALIDATION_WORKER": given}
    assert Settings.from_env(env).validation_worker is wanted


def test_a_misspelt_validation_worker_switch_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="EXCHANGE_VALIDATION_WORKER must be 1 or 0"):
        Settings.from_env({"EXCHANGE_VALIDATION_WORKER": "yes"})


def test_the_child_imports_great_expectations_without_its_sql_and_s3_extras() -> None:
    """In the worker's process SQLAlchemy and boto are left out, as if not installed (a setup
    Great Expectations supports), and it still validates: a failing rule is found."""
    code = (
        "import io, sys, pandas as pd; from validators import worker\n"
        "worker._serve(io.BytesIO(b''), io.BytesIO())\n"  # hello, then the end of its input
        "worker._IMPORTED.wait()\n"
        "from validators.rules import Rule\n"
        "from validators.suite import BatchValidator\n"
        "rules = [Rule('regex', 'ref', (('pattern', '^P[0-9]+$'),), 'test')]\n"
        "failures = BatchValidator('t', rules).validate(pd.DataFrame({'ref': ['P1', 'Q2']}))\n"
        "print(worker._IMPORTED_EARLY, [f.unexpected_count for f in failures])\n"
        "print(sorted(m for m in worker.NOT_IN_WORKER if sys.modules.get(m) is not None))\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        env=worker.child_environment(),
    )
    assert done.stdout.splitlines() == ["[True] [1]", "[]"]
    import sqlalchemy  # noqa: F401 - this process (the gateway's) keeps it


def test_a_window_cut_short_writes_nothing_more() -> None:
    """An interrupt while a window goes into the pipe leaves the stream as it is: no end
    marker is written after it (which would wait on a full pipe), and the interrupt is raised."""
    import pyarrow as pa

    calls: list[int] = []

    class Interrupted:
        closed = False

        def write(self, data: object) -> int:
            calls.append(memoryview(data).nbytes)  # type: ignore[arg-type]
            if len(calls) == 3:
                raise KeyboardInterrupt
            return calls[-1]

    batches = pa.table({"a": list(range(1000)), "b": ["x"] * 1000}).to_batches(max_chunksize=100)
    with pytest.raises(KeyboardInterrupt):
        worker._write_stream(Interrupted(), batches)
    assert len(calls) == 3
