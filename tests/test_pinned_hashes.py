"""Known answers pinned before the hashing was made faster: pseudonyms and disclosure hashes
must never change, or a partner's records stop matching and "who has my data?" misses people."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

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


def test_the_helper_process_and_the_in_process_path_agree(monkeypatch: Any) -> None:
    """Large columns are hashed by a helper process, small ones here: the same HMAC."""
    values = pa.array([f"P{i:08d}" for i in range(5000)] + ["Zoë Ådams", ""])
    on_helper = transforms.pseudonymise(KEY)(values).to_pylist()
    monkeypatch.setattr(keyed, "WORKER_MIN_ITEMS", 10**9)
    in_process = transforms.pseudonymise(KEY)(values).to_pylist()
    assert on_helper == in_process
    assert on_helper[1] == "fa44fc0c01626a90eb117fd6b24d1aac"  # P00000001, as pinned above
    assert keyed._helper()._process is not None  # the helper did the first run


def test_a_helper_that_dies_falls_back_to_hashing_here(monkeypatch: Any) -> None:
    helper = keyed._Helper()
    monkeypatch.setattr(keyed, "_HELPER", helper)
    process = helper._start()
    assert process is not None
    process.kill()
    process.wait()
    values = pa.array([f"P{i:08d}" for i in range(5000)])
    out = transforms.pseudonymise(KEY)(values).to_pylist()
    assert out[1] == "fa44fc0c01626a90eb117fd6b24d1aac"
    assert helper._broken


def test_a_helper_that_stops_answering_costs_a_fallback_not_a_hang(monkeypatch: Any) -> None:
    helper = keyed._Helper()
    monkeypatch.setattr(keyed, "_HELPER", helper)
    monkeypatch.setattr(keyed, "_DEADLINE_SECONDS", 0.5)
    monkeypatch.setattr(keyed, "_SECONDS_PER_VALUE", 0.0)
    process = helper._start()
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # alive, holding its pipes, never answering
    try:
        started = time.monotonic()
        out = transforms.pseudonymise(KEY)(pa.array([f"P{i:08d}" for i in range(5000)]))
        assert time.monotonic() - started < 10
    finally:
        process.kill()
        process.wait()
    assert out[1].as_py() == "fa44fc0c01626a90eb117fd6b24d1aac"
    assert helper._broken


def test_the_hashing_helper_ignores_code_planted_in_the_working_folder(tmp_path: Path) -> None:
    """A planted exchange/crypto/keyed.py where the command is started never runs: it would be
    handed the key and every subject id."""
    planted = tmp_path / "exchange" / "crypto"
    planted.mkdir(parents=True)
    (tmp_path / "exchange" / "__init__.py").write_text("")
    (planted / "__init__.py").write_text("")
    stolen = tmp_path / "stolen"
    (planted / "keyed.py").write_text(f"open({str(stolen)!r}, 'w').write('key')\n")
    script = (
        "import pyarrow as pa\n"
        "from exchange.crypto import keyed\n"
        f"values = pa.array([b'%d' % i for i in range({keyed.WORKER_MIN_ITEMS})], pa.binary())\n"
        "h = keyed.KeyedHash(bytes(range(32)))\n"
        "print(h.array(values) == h.joined(values.to_pylist()))\n"
    )
    # -P for the parent only, as the `exchange` command has: its own path is the venv's bin.
    done = subprocess.run(
        [sys.executable, "-P", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert not stolen.exists()
