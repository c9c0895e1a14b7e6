"""Known answers pinned before the hashing was made faster: pseudonyms and disclosure hashes
must never change, or a partner's records stop matching and "who has my data?" misses people."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from exchange import transforms
from exchange.audit.subjects import sorted_hashes
from exchange.crypto import keyed

KEY = bytes(range(32))
LONG_KEY = bytes(range(100))  # longer than a SHA-256 block: HMAC hashes it first
VALUES = ["P00000001", "9434765919", "", "Zoë Ådams", "x" * 200]


def in_a_forked_child(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Run `check` in a forked child; True if it returned True and exited in time (a child
    still waiting then is killed and counts as False)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + seconds
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    try:
        return os.read(read_end, 1) == b"1" and done[0] != 0 and done[1] == 0
    finally:
        os.close(read_end)


def test_pseudonyms_are_pinned() -> None:
    """Today's pseudonyms for a few values, under a short key, a long key and a scoped key."""
    assert transforms.pseudonymise(KEY)(pa.array(VALUES)).to_pylist() == [
        "fa44fc0c01626a90eb117fd6b24d1aac",
        "dd5c602eeb31d60c7c0d662c897231dd",
        "d38b42096d80f45f826b44a9d5607de7",
        "af7ced6438b08e2b7a9c81b734d41189",
        "7b48ae507721b7feb27d8403d20568ca",
    ]
    assert transforms.pseudonymise(LONG_KEY)(pa.array(VALUES)).to_pylist() == [
        "9ec997abef3ace6e040329191c3616f4",
        "e9c27f4809e41060382f7e2ae90cdba5",
        "d3a5bd70c0b5394e7eb7b08662b7b8d8",
        "a32337bb9355628f871b5f812c0e80a3",
        "eb1eaa2b0ee920eeb091891dcf75936d",
    ]
    scoped = transforms.scoped_key(KEY, "school-attendance-to-early-help", "agreement")
    assert transforms.pseudonymise(scoped)(pa.array(VALUES[:2])).to_pylist() == [
        "e2bd7d3ddc5a483bbdff9672b692b4c2",
        "166ca58c64c6eb8aad93c762fc990250",
    ]


def test_pseudonyms_keep_nulls_and_chunk_edges() -> None:
    """A null stays null, and a value hashes alike wherever it falls in a long column."""
    values = pa.array(["P00000001", None] * 40_000 + ["9434765919"])
    out = transforms.pseudonymise(KEY)(values)
    assert out.null_count == 40_000
    assert out[0].as_py() == out[79_998].as_py() == "fa44fc0c01626a90eb117fd6b24d1aac"
    assert out[80_000].as_py() == "dd5c602eeb31d60c7c0d662c897231dd"


def test_disclosure_hashes_are_pinned() -> None:
    """Distinct subjects' hashes, in ascending byte order; nulls counted, duplicates dropped."""
    subjects = pa.array(["P00000001", "9434765919", None, "P00000001", "x" * 200])
    hashes, nulls = sorted_hashes(KEY, subjects)
    assert nulls == 1
    assert hashes.tobytes().hex() == (
        "7b48ae507721b7feb27d8403d20568ca"
        "dd5c602eeb31d60c7c0d662c897231dd"
        "fa44fc0c01626a90eb117fd6b24d1aac"
    )
    numbers, _ = sorted_hashes(KEY, pa.array([9434765919, 1]))  # integers hash as decimal text
    assert numbers.tobytes().hex() == (
        "7761b1cc25227dfca0bd6d972acc52abdd5c602eeb31d60c7c0d662c897231dd"
    )


def test_the_columnar_path_and_the_loop_agree(monkeypatch: Any) -> None:
    """Large columns are hashed by DataFusion, small ones by the loop: the same HMAC, for
    short and long keys, empty, long and non-UTF-8 values, and a sliced column."""
    values = [f"P{i:08d}".encode() for i in range(5000)] + [b"", b"x" * 300, bytes(range(256))]
    for key in (KEY, LONG_KEY, b"k"):
        expected = [hmac.digest(key, v, "sha256") for v in values]
        columnar = keyed._columnar.digests(pa.array(values, pa.binary()), keyed.KeyedHash(key))
        assert columnar is not None  # DataFusion itself, not a fallback
        assert columnar.tobytes() == b"".join(expected)
        sliced = pa.array(values, pa.large_binary()).slice(3, 4500)
        assert keyed.KeyedHash(key, 16).macs(sliced).tobytes() == b"".join(
            e[:16] for e in expected[3:4503]
        )
    assert keyed._columnar.usable()
    text = pa.array([v.decode() for v in values[:5000]])
    on_datafusion = transforms.pseudonymise(KEY)(text)
    monkeypatch.setattr(keyed, "COLUMNAR_MIN_ITEMS", 10**9)
    assert on_datafusion.to_pylist() == transforms.pseudonymise(KEY)(text).to_pylist()
    assert on_datafusion[1].as_py() == "fa44fc0c01626a90eb117fd6b24d1aac"  # as pinned above


def test_pinned_pseudonyms_and_disclosure_hashes_hold_on_the_columnar_path() -> None:
    """The pinned values again, in columns long enough for DataFusion."""
    many = pa.array(VALUES * 500)  # 2,500 values
    assert len(many) >= keyed.COLUMNAR_MIN_ITEMS
    out = transforms.pseudonymise(KEY)(many).to_pylist()
    assert (
        out[:5]
        == out[-5:]
        == [
            "fa44fc0c01626a90eb117fd6b24d1aac",
            "dd5c602eeb31d60c7c0d662c897231dd",
            "d38b42096d80f45f826b44a9d5607de7",
            "af7ced6438b08e2b7a9c81b734d41189",
            "7b48ae507721b7feb27d8403d20568ca",
        ]
    )
    ids = pa.array([f"id-{i}" for i in range(3000)] + ["P00000001", "9434765919"])
    hashes, _ = sorted_hashes(KEY, ids)
    assert len(hashes) == 3002
    rows = {bytes(row) for row in hashes.view("u1").reshape(-1, 16)}
    assert bytes.fromhex("dd5c602eeb31d60c7c0d662c897231dd") in rows  # 9434765919, as pinned
    assert bytes.fromhex("fa44fc0c01626a90eb117fd6b24d1aac") in rows  # P00000001
    assert keyed._columnar.usable() and keyed._columnar._started_in == os.getpid()


def test_datafusion_debug_logging_never_shows_the_padded_key() -> None:
    """DataFusion logs its plans, padded key literal included, at DEBUG: in a new process with
    every logger at DEBUG, nothing of either padded key is logged (its loggers are held at
    WARNING, and while one is lowered the loop hashes instead, tested below)."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
        "import pyarrow as pa\n"
        "from exchange.crypto import keyed\n"
        "values = pa.array([b'P%08d' % i for i in range(3000)], pa.binary())\n"
        f"mac = keyed.KeyedHash({KEY!r})\n"
        "assert mac.macs(values).tobytes() == mac.joined(values.to_pylist())\n"
        "print(keyed._columnar.usable(), keyed._columnar._started_in is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    inner, outer = keyed.padded_keys(KEY)
    for pad in (inner, outer):
        assert ",".join(str(b) for b in pad[:12]) not in done.stderr
        assert pad[:12].hex() not in done.stderr
    # DataFusion did the hashing (the root at DEBUG is not one of its loggers being lowered).
    assert done.stdout.split() == ["True", "True"]


def test_a_datafusion_logger_set_low_but_disabled_still_costs_the_loop() -> None:
    """A second logging set-up disables a logger it does not name and leaves its level: the
    child loggers DataFusion makes on first use inherit that level and are not disabled."""
    parent = logging.getLogger("datafusion_optimizer")
    level, disabled = parent.level, parent.disabled
    parent.setLevel(logging.DEBUG)
    parent.disabled = True
    try:
        assert not keyed._columnar.usable()
    finally:
        parent.setLevel(level)
        parent.disabled = disabled
    assert keyed._columnar.usable()


def test_a_large_column_matches_the_hmac_module_row_for_row() -> None:
    """Past DataFusion's 8,192-row batches: every row, not only the spot checks."""
    values = [f"S{i:09d}".encode() for i in range(50_000)]
    binary = pa.array(values, pa.binary())
    columnar = keyed._columnar.digests(binary, keyed.KeyedHash(LONG_KEY))
    assert columnar is not None
    assert columnar.tobytes() == b"".join(hmac.digest(LONG_KEY, v, "sha256") for v in values)


def test_a_datafusion_logger_lowered_again_costs_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    values = pa.array([f"P{i:08d}".encode() for i in range(3000)], pa.binary())
    assert keyed._columnar.usable()
    with caplog.at_level(logging.DEBUG, logger="datafusion.execution.session_state"):
        assert not keyed._columnar.usable()
        mac = keyed.KeyedHash(KEY)
        assert mac.macs(values).tobytes() == mac.joined(values.to_pylist())
    assert keyed._columnar.usable()


@pytest.fixture
def reordering(monkeypatch: Any) -> tuple[keyed._Columnar, pa.Array]:
    """A fresh columnar path whose DataFusion gives its rows back in reverse, and values."""
    import datafusion

    columnar = keyed._Columnar()
    monkeypatch.setattr(keyed, "_columnar", columnar)
    real = datafusion.DataFrame.to_arrow_table
    values = pa.array([f"P{i:08d}".encode() for i in range(2)] * 2000, pa.binary())
    monkeypatch.setattr(
        datafusion.DataFrame,
        "to_arrow_table",
        lambda self: real(self).take(pa.array(range(len(values) - 1, -1, -1))),
    )
    return columnar, values


def test_rows_returned_in_another_order_are_caught(
    reordering: tuple[keyed._Columnar, pa.Array],
) -> None:
    """Pseudonyms attached to the wrong people would be silent: after each call the first, the
    last and one row in every 4,096 are checked against the loop, and a mismatch costs the
    loop for the process."""
    columnar, values = reordering
    mac = keyed.KeyedHash(KEY, 16)
    assert mac.macs(values).tobytes() == mac.joined(values.to_pylist())
    assert not columnar.usable()


def test_digests_returned_in_another_order_are_caught(
    reordering: tuple[keyed._Columnar, pa.Array],
) -> None:
    """The quality gate's text hashes are spot-checked the same way: a window's keys hashed
    out of order would hide a duplicate."""
    columnar, values = reordering
    want = [hashlib.sha256(v).digest() for v in values.to_pylist()]
    assert [bytes(row) for row in keyed.sha256_digests(values)] == want
    assert not columnar.usable()


def test_datafusion_that_will_not_import_costs_the_loop(monkeypatch: Any) -> None:
    columnar = keyed._Columnar()
    monkeypatch.setattr(keyed, "_columnar", columnar)
    monkeypatch.setitem(sys.modules, "datafusion", None)  # an import of it now fails
    values = pa.array([f"P{i:08d}".encode() for i in range(3000)], pa.binary())
    mac = keyed.KeyedHash(KEY, 16)
    assert mac.macs(values).tobytes() == mac.joined(values.to_pylist())
    assert not columnar.usable()


def test_a_child_forked_while_datafusion_is_being_imported_does_not_wait_for_it(
    monkeypatch: Any,
) -> None:
    """A fork while another thread holds the first import's lock: the child hashes by the loop
    instead of waiting for a lock nobody in it will ever release."""
    columnar = keyed._Columnar()
    monkeypatch.setattr(keyed, "_columnar", columnar)
    columnar._started_in = os.getpid()  # as `macs` sets it before taking the lock
    values = pa.array([f"P{i:08d}".encode() for i in range(3000)], pa.binary())
    mac = keyed.KeyedHash(KEY, 16)
    with columnar._lock:  # held across the fork, as by the importing thread
        assert in_a_forked_child(
            lambda: mac.macs(values).tobytes() == mac.joined(values.to_pylist())
        )


def test_keyed_hashing_takes_no_nulls() -> None:
    """DataFusion's concat would hash a null as the empty value: refused, never guessed."""
    with pytest.raises(ValueError, match="no nulls"):
        keyed.KeyedHash(KEY).macs(pa.array([b"a", None] * 2000, pa.binary()))


def test_a_datafusion_failure_falls_back_to_the_loop_without_its_message(
    monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An error inside DataFusion (its text could quote the plan, and so the padded key) costs
    the loop, not the run; the warning says nothing of the key or the values."""
    import datafusion

    columnar = keyed._Columnar()
    monkeypatch.setattr(keyed, "_columnar", columnar)

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"plan: {keyed.padded_keys(KEY)[0]!r}")

    monkeypatch.setattr(datafusion.SessionContext, "from_arrow", broken)
    active: list[Any] = []

    class Handler(logging.Handler):
        """What a handler could read while the warning is logged: no exception is active."""

        def emit(self, record: logging.LogRecord) -> None:
            active.append(sys.exc_info()[1])

    handler = Handler()
    logging.getLogger(keyed.__name__).addHandler(handler)
    values = pa.array([f"P{i:08d}" for i in range(5000)])
    try:
        with caplog.at_level("WARNING"):
            out = transforms.pseudonymise(KEY)(values)
    finally:
        logging.getLogger(keyed.__name__).removeHandler(handler)
    assert out[1].as_py() == "fa44fc0c01626a90eb117fd6b24d1aac"
    assert not columnar.usable()  # given up on for this process
    assert "plan" not in caplog.text and "value by value" in caplog.text
    assert active == [None]  # logged outside the handler: nothing to chain or print


def test_a_forked_child_hashes_by_the_loop() -> None:
    """DataFusion's thread pool is not relied on after a fork: a child of a process that used
    it hashes by the loop, with the same result."""
    values = pa.array([f"P{i:08d}".encode() for i in range(5000)], pa.binary())
    mac = keyed.KeyedHash(KEY, 16)
    assert mac.macs(values).tobytes() == mac.joined(values.to_pylist())  # DataFusion started here
    assert in_a_forked_child(
        lambda: (
            not keyed._columnar.usable()
            and mac.macs(values).tobytes() == mac.joined(values.to_pylist())
        )
    )


def test_pseudonymising_a_large_column_leaves_the_gil_free() -> None:
    """The point of the columnar path: while a thread hashes a large column, other threads run.

    With a 5 s switch interval a thread holding the GIL keeps it until it blocks, so this
    thread's 1 ms waits return only when the hashing lets go: hundreds of times a second if it
    runs without the GIL, a few dozen times in all for the Python loop (measured: 520-620 in
    0.7-0.8 s against 23-52 in 1.9-2.7 s)."""
    values = pa.array([f"P{i:08d}" for i in range(400_000)])
    pseudonymise = transforms.pseudonymise(KEY)
    pseudonymise(values.slice(0, 5000))  # DataFusion imported before timing
    done = threading.Event()

    def hashing() -> None:
        for _ in range(3):
            pseudonymise(values)
        done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        worker = threading.Thread(target=hashing)
        started = time.perf_counter()
        worker.start()
        ticks = 0
        while not done.wait(0.001):
            ticks += 1
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    elapsed = time.perf_counter() - started
    assert ticks / elapsed > 100, (ticks, elapsed)  # a margin for a loaded machine


def test_sha256_digests_are_the_same_on_the_columnar_path_and_the_loop(monkeypatch: Any) -> None:
    """The digests the quality gate takes of long key values: SHA-256 whichever path takes
    them (a window's keys must hash alike in every window)."""

    def digests(array: pa.Array) -> list[bytes]:
        return [bytes(row) for row in keyed.sha256_digests(array)]

    values = [f"P{i:08d}".encode() for i in range(5000)] + [b"", b"x" * 300, bytes(range(256))]
    want = [hashlib.sha256(v).digest() for v in values]
    columnar = keyed._columnar.digests(pa.array(values, pa.binary()))
    assert columnar is not None  # DataFusion itself, not a fallback
    assert digests(pa.array(values, pa.binary())) == want
    sliced = pa.array(values, pa.large_binary()).slice(3, 4500)
    assert digests(sliced) == want[3:4503]
    monkeypatch.setattr(keyed, "COLUMNAR_MIN_ITEMS", 10**9)  # the loop throughout
    assert digests(pa.array(values, pa.binary())) == want
    assert keyed.sha256_digests(pa.array([], pa.binary())).shape == (0, 32)
    with pytest.raises(ValueError, match="no nulls"):
        keyed.sha256_digests(pa.array([b"a", None]))
