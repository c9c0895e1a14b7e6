"""An in-memory partner server that fails on purpose, for fast tests of the whole gateway.

Like httpx's MockTransport or dlt's dummy destination: `MemoryTransport` keeps the promises of
`Transport` (temporary name, size check, rename into place, the already-delivered check, the
same retry policy) against a `MemoryServer`, a dict of folders and files. `Fault`s make it fail
as a real server does: the connection lost on attempt N, a changed host key, a refused login;
the server itself can have a full disk, keep only part of each write, or run a hook on every
write (a slow write, or a change made while an upload is under way).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from exchange.errors import ConnectionLost, ExchangeError, HostKeyRejected, TransferError
from exchange.manifest import MANIFEST_NAME
from exchange.transport.base import Delivery, OnAttempt, RemoteEntry
from exchange.transport.retry import RetryPolicy, with_attempts

STEPS = ("connect", "list", "read", "write", "rename", "remove")
WHERE = "memory:22"


@dataclass(frozen=True)
class Fault:
    """Raise `error` at `step` on connection number `on` (1-based; None: on every one)."""

    step: str
    error: ExchangeError
    on: int | None = None

    @classmethod
    def connection_lost(cls, on: int | None = 1, step: str = "write") -> Fault:
        """The link drops at `step` of connection `on` (retryable)."""
        return cls(step, ConnectionLost(f"connection to {WHERE} lost while {step}"), on)

    @classmethod
    def host_key_rejected(cls) -> Fault:
        """The server offers a host key that is not the pinned one."""
        message = f"host key of {WHERE} does not match the pinned key (offered SHA256:other)"
        return cls("connect", HostKeyRejected(message))

    @classmethod
    def login_refused(cls) -> Fault:
        """The server refuses the gateway's login key."""
        return cls("connect", TransferError(f"login to {WHERE} as gateway was refused"))


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@dataclass
class MemoryServer:
    """A partner's file system in memory: folders and files, with modification times."""

    folders: dict[str, float] = field(default_factory=dict)  # path -> modified (epoch seconds)
    files: dict[str, tuple[bytes, float]] = field(default_factory=dict)
    capacity: int | None = None  # bytes the disk holds: a write beyond them fails (disk full)
    keep_bytes: int | None = None  # each write keeps only this many bytes (a short write)
    on_write: Callable[[str, int], None] | None = None  # told (path, size) before each write
    clock: Callable[[], float] = time.time

    def makedirs(self, path: str, *, modified: float | None = None) -> None:
        """Create a folder and its parents (set-up for tests; the gateway never creates one)."""
        while path and path not in self.folders:
            self.folders[path] = self.clock() if modified is None else modified
            path = _parent(path)

    def put(self, path: str, data: bytes, *, modified: float | None = None) -> None:
        """Place a file as the partner would (set-up for tests)."""
        self.makedirs(_parent(path))
        self.files[path] = (data, self.clock() if modified is None else modified)

    def read(self, path: str) -> bytes:
        """A file's bytes (for assertions); KeyError if there is none."""
        return self.files[path][0]

    def names(self, folder: str) -> list[str]:
        """Everything directly in `folder`, hidden names included, sorted."""
        inside = [p for p in (*self.folders, *self.files) if _parent(p) == folder]
        return sorted(p.rpartition("/")[2] for p in inside)

    def exists(self, path: str) -> bool:
        """Whether a file or folder is at `path`."""
        return path in self.files or path in self.folders

    def used(self) -> int:
        """Bytes stored."""
        return sum(len(data) for data, _ in self.files.values())

    def subtree(self, path: str) -> list[str]:
        """`path` and everything under it."""
        return [p for p in (*self.files, *self.folders) if p == path or p.startswith(path + "/")]


class MemoryRemote:
    """One connection to a `MemoryServer`, failing where a `Fault` says."""

    def __init__(self, server: MemoryServer, number: int, faults: Sequence[Fault]) -> None:
        self.server = server
        self.number = number
        self.faults = faults

    def fail_if_told(self, step: str) -> None:
        """Raise the fault planned for this step of this connection, if any."""
        for fault in self.faults:
            if fault.step == step and fault.on in (None, self.number):
                raise fault.error

    def list(self, folder: str) -> list[RemoteEntry]:
        """The folder's entries by name. Raises TransferError, ConnectionLost."""
        self.fail_if_told("list")
        if folder not in self.server.folders:
            raise TransferError(f"nothing to find while listing {folder}: it does not exist")
        entries = []
        for name in self.server.names(folder):
            path = f"{folder}/{name}"
            if path in self.server.folders:
                entries.append(RemoteEntry(name, True, 0, self.server.folders[path]))
            else:
                data, modified = self.server.files[path]
                entries.append(RemoteEntry(name, False, len(data), modified))
        return entries

    def read(self, path: str, limit: int) -> bytes:
        """Up to `limit` + 1 bytes of a file. Raises TransferError, ConnectionLost."""
        self.fail_if_told("read")
        if path not in self.server.files:
            raise TransferError(f"nothing to find while reading {path}: it does not exist")
        return self.server.files[path][0][: limit + 1]

    def rename(self, source: str, target: str) -> None:
        """Move a file or folder tree; refused if the target exists. Raises TransferError."""
        self.fail_if_told("rename")
        if not self.server.exists(source) or self.server.exists(target):
            raise TransferError(f"the server refused renaming {source}")
        for path in self.server.subtree(source):
            moved = target + path[len(source) :]
            if path in self.server.files:
                self.server.files[moved] = self.server.files.pop(path)
            else:
                self.server.folders[moved] = self.server.folders.pop(path)

    def remove(self, path: str) -> None:
        """Remove a file or folder tree; nothing if it is gone. Raises TransferError."""
        self.fail_if_told("remove")
        for doomed in self.server.subtree(path):
            self.server.files.pop(doomed, None)
            self.server.folders.pop(doomed, None)

    def mkdir(self, path: str) -> None:
        """Create one folder inside an existing one."""
        self.require_folder(_parent(path))
        self.server.folders[path] = self.server.clock()

    def require_folder(self, folder: str) -> None:
        """Refuse a partner folder that is missing (it is never created)."""
        if folder not in self.server.folders:
            raise TransferError(f"the partner folder {folder} does not exist")

    def write(self, path: str, data: bytes) -> int:
        """Write a new file and check its size on the server. Raises TransferError."""
        self.fail_if_told("write")
        server = self.server
        if server.on_write is not None:
            server.on_write(path, len(data))
        if server.capacity is not None and server.used() + len(data) > server.capacity:
            raise TransferError(
                f"the server refused a write in {_parent(path)} (No space left on device): its "
                "disk may be full or the folder read-only; the partial upload was removed"
            )
        kept = data if server.keep_bytes is None else data[: server.keep_bytes]
        server.files[path] = (kept, server.clock())
        if len(kept) != len(data):
            raise TransferError(
                f"{path.rpartition('/')[2]} arrived with {len(kept)} bytes of {len(data)}"
            )
        return len(data)


class MemoryTransport:
    """A `Transport` to a `MemoryServer`, with planned faults and no waiting between retries."""

    def __init__(
        self,
        server: MemoryServer,
        faults: Sequence[Fault] = (),
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.server = server
        self.faults = list(faults)
        self.waits: list[float] = []  # backoff waits, recorded instead of slept
        self.retry = retry or RetryPolicy(sleep=self.waits.append, rng=lambda: 0.5)
        self.connections = 0

    @contextmanager
    def warmed(self) -> Iterator[None]:
        """Nothing to open ahead in memory."""
        yield

    @contextmanager
    def connect(self) -> Iterator[MemoryRemote]:
        """A new connection (numbered from 1, for faults). Raises what a connect fault says."""
        self.connections += 1
        remote = MemoryRemote(self.server, self.connections, self.faults)
        remote.fail_if_told("connect")
        yield remote

    def deliver(
        self, drop: Path, folder: str, drop_id: str, *, on_attempt: OnAttempt = None
    ) -> Delivery:
        """Place `drop` at `folder/drop_id` through `.drop_id.partial`; retries transient faults."""
        files = sorted((p for p in drop.iterdir() if p.is_file()), key=_manifest_last)
        result, attempts = with_attempts(
            lambda: self._deliver_once(folder, drop_id, files), self.retry, on_attempt
        )
        return replace(result, attempts=attempts)

    def _deliver_once(self, folder: str, drop_id: str, files: list[Path]) -> Delivery:
        final, temp = f"{folder}/{drop_id}", f"{folder}/.{drop_id}.partial"
        with self.connect() as remote:
            remote.require_folder(folder)
            if self.server.exists(final):
                return _already(self.server, final, files)
            remote.remove(temp)  # left by an interrupted attempt
            remote.mkdir(temp)
            try:
                total = sum(remote.write(f"{temp}/{p.name}", p.read_bytes()) for p in files)
                remote.rename(temp, final)
            except ConnectionLost:
                raise  # a dropped link leaves the partial upload, as a real one does
            except TransferError:
                remote.remove(temp)
                raise
        return Delivery(final, tuple(p.name for p in files), total, rename="rename")

    def put_bytes(
        self, folder: str, name: str, data: bytes, *, on_attempt: OnAttempt = None
    ) -> Delivery:
        """Place one small file at `folder/name` (temporary name, size check, rename)."""
        result, attempts = with_attempts(
            lambda: self._put_bytes_once(folder, name, data), self.retry, on_attempt
        )
        return replace(result, attempts=attempts)

    def _put_bytes_once(self, folder: str, name: str, data: bytes) -> Delivery:
        final, temp = f"{folder}/{name}", f"{folder}/.{name}.partial"
        with self.connect() as remote:
            remote.require_folder(folder)
            remote.remove(temp)
            remote.write(temp, data)
            remote.remove(final)
            remote.rename(temp, final)
        return Delivery(final, (name,), len(data), rename="rename")


def _manifest_last(path: Path) -> tuple[bool, str]:
    """Order files so the manifest goes last: its presence means the rest arrived."""
    return path.name == MANIFEST_NAME, path.name


def _already(server: MemoryServer, final: str, files: list[Path]) -> Delivery:
    """A drop of this name is there: report it delivered only if it is byte for byte this one."""
    for path in files:
        there = server.files.get(f"{final}/{path.name}")
        theirs = hashlib.sha256(there[0]).digest() if there else None
        if theirs != hashlib.sha256(path.read_bytes()).digest():
            raise TransferError(
                f"{final} already exists but its {path.name} is missing or differs from the "
                "staged one: refusing to report it delivered"
            )
    total = sum(p.stat().st_size for p in files)
    return Delivery(final, tuple(p.name for p in files), total, already_delivered=True)
