"""A stream read by pyarrow's streaming CSV reader no further ahead than the run needs.

The reader reads up to 32 blocks ahead of the batches taken from it, on its own thread, and
has no option to read fewer (ARROW-12090). A run takes batches more slowly than they can be
read, so with 1 MiB blocks 16-32 MiB sat read and waiting (BENCHMARKS.md, thirteenth round).
Handed a `Paced` stream instead (a CSV file, or PostgreSQL's COPY output), the reader's
thread waits in `read` until the run has taken enough batches: each batch comes from one block
(a row longer than a block is an error), so a few blocks ahead keep it busy.
"""

from __future__ import annotations

import threading
from typing import BinaryIO

# Blocks read beyond the last batch taken: the reader converts a block while the run takes the
# batch before it, and the reads happen on another thread (they need the GIL to return).
READ_AHEAD_BLOCKS = 4


class Paced:
    """A stream whose `read` waits while `ahead` more blocks were read than batches `taken`;
    it owns the stream and closes it."""

    def __init__(self, stream: BinaryIO, ahead: int = READ_AHEAD_BLOCKS) -> None:
        self._file = stream
        self._turn = threading.Condition()
        self._ahead = ahead
        self._reads = 0
        self._taken = 0
        self._reading = False
        self._stopped = False

    @property
    def closed(self) -> bool:
        return self._stopped

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._turn:
            self._turn.wait_for(lambda: self._stopped or self._reads - self._taken <= self._ahead)
            if self._stopped:
                return b""  # the run has stopped reading: the reader's thread ends
            self._reads += 1
            self._reading = True
        try:
            return self._file.read(size)
        finally:
            with self._turn:
                self._reading = False
                self._turn.notify_all()

    def taken(self) -> None:
        """The run has taken one more batch."""
        with self._turn:
            self._taken += 1
            self._turn.notify_all()

    def close(self) -> None:
        """End the reads: a waiting one returns nothing, and the stream is closed once none is
        under way, so nothing reads it afterwards."""
        with self._turn:
            self._stopped = True
            self._turn.notify_all()
            self._turn.wait_for(lambda: not self._reading)
        self._file.close()
