"""The transport interface: everything the gateway does on a partner's server.

A transport delivers a staged drop whole or not at all, places one small file, and opens a
`Remote` for the operations that look after the partner's folders (collecting acknowledgements,
removing drops past retention). It raises only the gateway's own errors: TransferError,
HostKeyRejected, and ConnectionLost (retryable); each backend translates its library's errors
at its edge. Backends are chosen by the contract's server type (`transport.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from exchange.transport.retry import Attempt

OnAttempt = Callable[[Attempt], None] | None  # told of every try, failed or not


@dataclass(frozen=True)
class Delivery:
    """Where a drop landed, and how many tries it took."""

    remote_path: str
    files: tuple[str, ...]
    bytes: int
    already_delivered: bool = False
    attempts: tuple[Attempt, ...] = ()
    rename: str = ""  # how the drop was put in place: "posix-rename@openssh.com" or "rename"


@dataclass(frozen=True)
class RemoteEntry:
    """One name in a folder on the partner's server."""

    name: str
    is_folder: bool
    size: int
    modified: float  # seconds since the epoch


class Remote(Protocol):
    """An open connection to the partner's server, for the operations beyond delivery."""

    def list(self, folder: str) -> list[RemoteEntry]:
        """The folder's entries by name. Raises TransferError (missing, denied), ConnectionLost."""
        ...

    def read(self, path: str, limit: int) -> bytes:
        """Up to `limit` + 1 bytes of a file (one more tells it is too large).

        Raises TransferError if the file cannot be read, ConnectionLost if the link dies."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Rename a file or folder. Raises TransferError, ConnectionLost."""
        ...

    def remove(self, path: str) -> None:
        """Remove a file or a folder and all it holds; nothing if it is gone. Raises as rename."""
        ...


class Transport(Protocol):
    """Moves drops to one partner's server and opens it for the operations that tend it."""

    def deliver(
        self, drop: Path, folder: str, drop_id: str, *, on_attempt: OnAttempt = None
    ) -> Delivery:
        """Place the files of `drop` at `folder/drop_id`, atomically; idempotent per drop_id."""
        ...

    def put_bytes(
        self, folder: str, name: str, data: bytes, *, on_attempt: OnAttempt = None
    ) -> Delivery:
        """Place one small file at `folder/name` (temporary name, check, rename; replaces)."""
        ...

    def connect(self) -> AbstractContextManager[Remote]:
        """An open connection for listing, reading and removing. Raises TransferError."""
        ...

    def warmed(self) -> AbstractContextManager[None]:
        """A block within which a delivery may take a connection opened ahead, while the drop
        is prepared (a backend may open none); raises nothing of its own."""
        ...
