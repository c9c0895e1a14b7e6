"""`exchange receive` shows its progress on a terminal, and nothing of it anywhere else.

The command runs as a partner types it: a real `exchange` process, its standard error a
pseudo-terminal (a terminal as far as it can tell) or a pipe (a log, a scheduler)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import receive_args
from large_drop import large_drop, under_a_terminal
from test_receive_hostile import Parties

pytestmark = pytest.mark.integration  # real `exchange` processes

receive = importlib.import_module("exchange.receive")
EXCHANGE = Path(sys.executable).with_name("exchange")
ROWS = 300_000


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Parties, Path]:
    return large_drop(tmp_path_factory.mktemp("progress"), ROWS)


def command(parties: Parties, drop: Path, out: Path) -> list[str]:
    return [str(EXCHANGE), *receive_args(drop, parties.identity, parties.sender_public, out)]


def test_a_receive_on_a_terminal_shows_its_stages_amounts_and_throughput(
    drop: tuple[Parties, Path], tmp_path: Path
) -> None:
    parties, folder = drop
    code, shown = under_a_terminal(command(parties, folder, tmp_path / "out"))
    assert code == 0, shown
    size = (folder / "data.csv.age").stat().st_size
    for stage in ("receive: verifying", "receive: decrypting", "receive: counting rows"):
        assert stage in shown
    megabytes = f"{size / 1e6:.1f} MB"
    assert f"of {megabytes}" in shown  # bytes of the payload, as it is verified and decrypted
    assert f"{ROWS:,} of {ROWS:,} rows" in shown
    assert "rows/s" in shown  # the throughput
    assert "\r\x1b[2K" in shown  # redrawn in place, one line, not scrolled
    # The display is gone before the summary, which is printed once, as without a terminal.
    summary = shown.rindex("verified (signature, checksum")
    assert shown.count("verified (signature, checksum") == 1
    assert "receive: " not in shown[summary:]
    assert "P0000" not in shown  # never a value from the data


def test_without_a_terminal_there_is_no_progress_only_the_summary(
    drop: tuple[Parties, Path], tmp_path: Path
) -> None:
    parties, folder = drop
    done = subprocess.run(
        command(parties, folder, tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    assert done.returncode == 0, done.stderr
    assert "receive: " not in done.stdout + done.stderr
    assert "\x1b[" not in done.stdout + done.stderr
    assert f"verified (signature, checksum, {ROWS} rows)" in done.stdout
    assert "rich" not in done.stderr


def test_the_core_reports_each_stage_to_its_end_in_bytes_then_rows(
    drop: tuple[Parties, Path], tmp_path: Path
) -> None:
    parties, folder = drop
    steps: list[receive.Step] = []
    got = receive.receive(
        folder,
        identity=parties.identity,
        sender_key=parties.sender_public,
        out_dir=tmp_path / "out",
        ack_key=parties.ack_key,
        progress=steps.append,
    )
    assert got.rows == ROWS
    stages = list(dict.fromkeys(step.stage for step in steps))
    assert stages == ["verifying", "decrypting", "counting rows", "acknowledging"]
    size = (folder / "data.csv.age").stat().st_size
    for stage, total, unit in (
        ("verifying", size, "bytes"),
        ("decrypting", size, "bytes"),
        ("counting rows", ROWS, "rows"),
    ):
        done = [s.done for s in steps if s.stage == stage]
        assert done[0] == 0 and done[-1] == total
        assert done == sorted(done)  # only forward
        assert {(s.total, s.unit) for s in steps if s.stage == stage} == {(total, unit)}
    # Told about once a MiB, not once per 8 KiB read: the display costs next to nothing.
    decrypting = [s for s in steps if s.stage == "decrypting"]
    assert len(decrypting) <= size // receive.READ_CHUNK + 4  # the start and the end
