"""Writing and reading exact sizes on a child process's pipes by a deadline.

The parent's side of the validation worker's pipes (`validators.worker`): the pipes are
non-blocking, so a child that stops reading or answering costs a TimeoutError at the deadline,
never a hang. Standard library only.
"""

from __future__ import annotations

import math
import os
import select
import time
from typing import Any

_CHUNK = 1 << 20


def write_all(fd: int, data: Any, deadline: float) -> None:
    """Write all of `data` (any buffer) to a non-blocking pipe by `deadline` (a
    `time.monotonic()` value). Raises TimeoutError (an OSError) if not, OSError if the pipe
    breaks."""
    view = memoryview(data).cast("B")
    while view:
        _wait(fd, deadline, write=True)
        view = view[os.write(fd, view) :]


def read_exactly(fd: int, size: int, deadline: float) -> bytes | None:
    """Exactly `size` bytes from a non-blocking pipe by `deadline`; None at end of input.
    Raises TimeoutError (an OSError) if they have not come by then."""
    parts: list[bytes] = []
    left = size
    while left:
        _wait(fd, deadline, write=False)
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _wait(fd: int, deadline: float, *, write: bool) -> None:
    # poll, not select: select raises ValueError for a descriptor of 1024 or more, which a
    # process with many files open hands out, and callers catch only OSError.
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    remaining = max(deadline - time.monotonic(), 0)
    # Rounded up, so a wait never ends just short of the deadline and spins.
    if not poller.poll(math.ceil(remaining * 1000)):
        raise TimeoutError("the other end of the pipe did not answer in time")
