"""Known answers pinned before the hashing was made faster: pseudonyms and disclosure hashes
must never change, or a partner's records stop matching and "who has my data?" misses people."""

from __future__ import annotations

import hmac
import os
import sys
import threading
import time
from typing import Any

import pyarrow as pa
import pytest

from exchange import transforms
from exchange.audit.subjects import sorted_hashes
from exchange.crypto import keyed

KEY = bytes(range(32))
LONG_KEY = bytes(range(100))  # longer than a SHA-256 block: HMAC hashes it first
VALUES = ["P00000001", "9434765919", "", "Zoë Ådams", "x" * 200]


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
        mac = keyed.KeyedHash(key, 32)
        expected = [hmac.digest(key, v, "sha256") for v in values]
        assert mac.array(pa.array(values, pa.binary())) == b"".join(expected)
        sliced = pa.array(values, pa.large_binary()).slice(3, 4500)
        assert keyed.KeyedHash(key, 16).array(sliced) == b"".join(e[:16] for e in expected[3:4503])
    on_datafusion = transforms.pseudonymise(KEY)(pa.array([v.decode() for v in values[:5000]]))
    monkeypatch.setattr(keyed, "COLUMNAR_MIN_ITEMS", 10**9)
    by_loop = transforms.pseudonymise(KEY)(pa.array([v.decode() for v in values[:5000]]))
    assert on_datafusion.to_pylist() == by_loop.to_pylist()
    assert on_datafusion[1].as_py() == "fa44fc0c01626a90eb117fd6b24d1aac"  # as pinned above


def test_keyed_hashing_takes_no_nulls() -> None:
    """DataFusion's concat would hash a null as the empty value: refused, never guessed."""
    with pytest.raises(ValueError, match="no nulls"):
        keyed.KeyedHash(KEY).array(pa.array([b"a", None] * 2000, pa.binary()))


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
    values = pa.array([f"P{i:08d}" for i in range(5000)])
    with caplog.at_level("WARNING"):
        out = transforms.pseudonymise(KEY)(values)
    assert out[1].as_py() == "fa44fc0c01626a90eb117fd6b24d1aac"
    assert not columnar.usable()  # given up on for this process
    assert "plan" not in caplog.text and "value by value" in caplog.text


def test_a_forked_child_hashes_by_the_loop() -> None:
    """DataFusion's threads do not survive a fork: a child of a process that used it hashes by
    the loop, with the same result, instead of waiting on a pool that is not there."""
    values = pa.array([f"P{i:08d}".encode() for i in range(5000)], pa.binary())
    mac = keyed.KeyedHash(KEY, 16)
    assert mac.array(values) == mac.joined(values.to_pylist())  # DataFusion started here
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it would use DataFusion, and the result
        try:
            ok = not keyed._columnar.usable() and mac.array(values) == mac.joined(
                values.to_pylist()
            )
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1"
    os.close(read_end)
    assert status == 0


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
    assert ticks / elapsed > 200, (ticks, elapsed)
