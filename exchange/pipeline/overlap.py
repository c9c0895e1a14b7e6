"""Run a producer of items in a background thread, handing them over through a bounded queue.

Reading, minimising, hashing and encoding (pyarrow's reader and compute kernels and DataFusion
release the GIL) then overlap with validating and encrypting, so a run uses a second core.
The queue is bounded, so memory stays at `depth` items however large the input. An exception
in the producer is raised again, unchanged, in the consumer; a consumer that stops early (a
quality failure, a cancelled run) stops the producer at its next item. With `weigh`, the items
waiting are also bounded in bytes (Arrow batches differ in size with the source's rows), one
item always passes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1  # how often a blocked producer checks whether the consumer has gone


class _End:
    """Put after the last item."""


class _Failed:
    """Put instead of the next item when the producer raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Handover(Generic[T]):
    def __init__(
        self,
        produce: Callable[[], Iterable[T]],
        depth: int,
        weigh: Callable[[T], int] | None = None,
        max_bytes: int = 0,
    ) -> None:
        self._queue: queue.Queue[tuple[T | _End | _Failed, int]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._produce = produce
        self._weigh = weigh
        self._max_bytes = max_bytes
        self._waiting_bytes = 0  # bytes of the items queued, guarded by _room
        self._room = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="exchange-producer", daemon=True)

    def _put(self, item: T | _End | _Failed) -> bool:
        size = 0
        if self._weigh is not None and not isinstance(item, (_End, _Failed)):
            size = self._weigh(item)
            with self._room:
                while (
                    self._waiting_bytes
                    and self._waiting_bytes + size > self._max_bytes
                    and not self._stop.is_set()
                ):
                    self._room.wait(_POLL_SECONDS)
                self._waiting_bytes += size
        while not self._stop.is_set():
            try:
                self._queue.put((item, size), timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        produced: Iterator[Any] = iter(())
        try:
            produced = iter(self._produce())
            for item in produced:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(_Failed(exc))
            return
        finally:
            close = getattr(produced, "close", None)
            if close is not None:  # a generator's own clean-up (a source's cursor) runs here
                close()
        self._put(_End())

    def items(self) -> Iterator[T]:
        while True:
            item, size = self._queue.get()
            if size:
                with self._room:
                    self._waiting_bytes -= size
                    self._room.notify()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def background(
    produce: Callable[[], Iterable[T]],
    *,
    depth: int = 8,
    weigh: Callable[[T], int] | None = None,
    max_bytes: int = 0,
) -> Iterator[Iterator[T]]:
    """Iterate over `produce()` run in a thread, at most `depth` items ahead of the consumer,
    and, given `weigh` (an item's size), at most `max_bytes` of them (or one bigger item).

    On leaving the block the producer is stopped and joined, so nothing runs on after it."""
    handover = _Handover(produce, depth, weigh, max_bytes)
    handover._thread.start()
    try:
        yield handover.items()
    finally:
        handover.close()
