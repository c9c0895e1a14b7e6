"""Deadline-bound pipe I/O of the validation worker: exact
sizes across several reads, end of input, and a deadline that holds mid-write and mid-read."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import pytest

from exchange.pipes import read_exactly, write_all


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    for fd in (read_end, write_end):
        os.set_blocking(fd, False)
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def test_exact_sizes_arrive_whole_across_many_writes(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    data = os.urandom(3 << 20)  # larger than a pipe holds: the reader must drain it as it goes
    got: list[bytes | None] = []
    reader = threading.Thread(
        target=lambda: got.append(read_exactly(read_end, len(data), time.monotonic() + 30))
    )
    reader.start()
    write_all(write_end, memoryview(data)[:1000], time.monotonic() + 30)
    write_all(write_end, bytearray(data[1000:]), time.monotonic() + 30)
    reader.join()
    assert got == [data]


def test_end_of_input_is_none_even_midway(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    write_all(write_end, b"half", time.monotonic() + 5)
    os.close(write_end)
    assert read_exactly(read_end, 8, time.monotonic() + 5) is None


def test_a_silent_writer_costs_a_timeout_at_the_deadline(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    write_all(write_end, b"abc", time.monotonic() + 5)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer in time"):
        read_exactly(read_end, 4, started + 0.2)
    assert 0.15 < time.monotonic() - started < 5


def test_a_reader_that_stops_reading_costs_a_timeout_mid_write(pipe: tuple[int, int]) -> None:
    _, write_end = pipe
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        write_all(write_end, bytes(8 << 20), started + 0.2)  # far more than the pipe holds
    assert 0.15 < time.monotonic() - started < 5


# -- descriptors of 1024 and above ------------------------------------------------------------
# select.select cannot take them (ValueError, which the callers' `except OSError` misses); a
# process with many files open gets them for its next pipe, so the helpers' pipes must work there.

HIGH = 1024


@pytest.fixture
def many_open_files() -> Iterator[None]:
    """Hold enough real descriptors open that the next pipe's ends are numbered above 1024."""
    import resource

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    if soft != resource.RLIM_INFINITY and soft < 4096:
        if hard != resource.RLIM_INFINITY and hard < 4096:
            hard = 4096  # the tests run as root, which may raise the hard limit too
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    held = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.mark.usefixtures("many_open_files")
def test_pipes_numbered_above_1024_carry_data_and_keep_their_deadline() -> None:
    read_end, write_end = os.pipe()
    try:
        assert min(read_end, write_end) >= HIGH  # what the test is about
        for fd in (read_end, write_end):
            os.set_blocking(fd, False)
        data = os.urandom(3 << 20)
        got: list[bytes | None] = []
        reader = threading.Thread(
            target=lambda: got.append(read_exactly(read_end, len(data), time.monotonic() + 30))
        )
        reader.start()
        write_all(write_end, data, time.monotonic() + 30)
        reader.join()
        assert got == [data]
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer in time"):
            read_exactly(read_end, 1, started + 0.2)
        assert 0.15 < time.monotonic() - started < 5
    finally:
        os.close(read_end)
        os.close(write_end)
