"""The checkpoints the gateway has handed out, kept outside the ledger database.

Whoever can write the ledger database can delete its checkpoint rows, edit an entry and
recompute every hash: the database alone then verifies. Checkpoints already handed out (each
manifest carries one) bind that history, so the gateway keeps its own copy of them where the
database cannot reach, by default ``EXCHANGE_HOME/checkpoints`` (a 0700 folder):

``log.jsonl``
    append-only, one JSON line per checkpoint signed: ``{"note", "size", "root", "head",
    "edge", "at"}`` (`head`: the hash of the newest entry it covers; `edge`: the right edge of
    its Merkle tree, see `merkle.RootBuilder.edge`). `exchange audit verify` checks every line.
``latest.json``
    the newest of them, the same fields, replaced atomically: what the next checkpoint must
    extend. The note is the checkpoint as partners received it (``jq -r .note latest.json``).
``lock``
    held while a checkpoint is verified, signed and recorded, so concurrent runs queue.

Every file is 0600 and written without following symlinks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.audit import merkle
from exchange.audit.checkpoint import Checkpoint
from exchange.errors import LedgerError

FOLDER = "checkpoints"
LOG = "log.jsonl"
LATEST = "latest.json"
LOCK = "lock"
MAX_LINE = 100_000  # a checkpoint line is a few hundred bytes


def anchor_folder(home: Path) -> Path:
    """Where a gateway with this state folder keeps the checkpoints it handed out."""
    return home / FOLDER


@dataclass(frozen=True)
class Anchored:
    """A checkpoint handed out, with what is needed to extend it from the new entries alone."""

    checkpoint: Checkpoint
    head: str  # entry_hash of entry `checkpoint.size` (GENESIS for an empty tree)
    edge: tuple[bytes, ...]  # the tree's right edge at that size

    def as_dict(self, at: str) -> dict[str, Any]:
        """One line of the log."""
        return {
            "note": self.checkpoint.note,
            "size": self.checkpoint.size,
            "root": self.checkpoint.root_hex,
            "head": self.head,
            "edge": [node.hex() for node in self.edge],
            "at": at,
        }


def _read(path: Path) -> str:
    """A file's text, never through a symlink (FileNotFoundError if absent)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        return handle.read()


def _open_write(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


class Anchor:
    """The folder of handed-out checkpoints (see the module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def log_path(self) -> Path:
        """The append-only log."""
        return self.folder / LOG

    @property
    def latest_path(self) -> Path:
        """The newest checkpoint handed out."""
        return self.folder / LATEST

    def exists(self) -> bool:
        """True when any checkpoint was recorded here."""
        return self.latest_path.is_file() or self.log_path.is_file()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (created if needed) for the duration of the block."""
        try:
            self._folder()
            fd = _open_write(self.folder / LOCK, os.O_CREAT)
        except OSError as exc:
            raise _unwritable(self.folder, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- reading --------------------------------------------------------------------------------

    def latest(self, public_key: Ed25519PublicKey, origin: str) -> Anchored | None:
        """The newest checkpoint handed out, its signature and origin checked; None if none.

        LedgerError if the file is there but unreadable or does not verify: never fall back to
        trusting the database.
        """
        try:
            text = _read(self.latest_path)
        except FileNotFoundError:
            if self.log_path.is_file():  # the log survives a lost latest.json
                lines = list(self._log_lines(public_key, origin))
                return max(lines, key=lambda a: a.checkpoint.size) if lines else None
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerError(f"cannot read the last checkpoint handed out: {exc}") from None
        return _parse(text, public_key, origin, f"{self.latest_path.name}")

    def all(self, public_key: Ed25519PublicKey | None, origin: str | None) -> list[Anchored]:
        """Every checkpoint handed out (log and latest), signatures checked given a key."""
        found = {
            (a.checkpoint.size, a.checkpoint.root): a for a in self._log_lines(public_key, origin)
        }
        if self.latest_path.is_file():
            try:
                text = _read(self.latest_path)
            except (OSError, UnicodeDecodeError) as exc:
                raise LedgerError(f"cannot read the last checkpoint handed out: {exc}") from None
            latest = _parse(text, public_key, origin, self.latest_path.name)
            found.setdefault((latest.checkpoint.size, latest.checkpoint.root), latest)
        return sorted(found.values(), key=lambda a: a.checkpoint.size)

    def handed_at(self, size: int) -> Anchored | None:
        """The checkpoint of `size` handed out, if any, found from the newest end of the log.

        Its edge is checked to give its root but its signature is not: a wrong one only makes
        a proof that the partner, who holds the signed checkpoint, rejects. Reading stops at
        the first line of that size, so recent checkpoints cost little however long the log.
        """
        try:
            fd = os.open(self.log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerError(f"cannot read the checkpoints handed out: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            for line in lines_newest_first(handle):
                try:
                    value = json.loads(line)
                except ValueError:
                    continue  # `audit verify` names a malformed line; here it is just not it
                if isinstance(value, dict) and value.get("size") == size:
                    return _parse(line.decode("utf-8"), None, None, f"{LOG} (size {size})")
        return None

    def _log_lines(
        self, public_key: Ed25519PublicKey | None, origin: str | None
    ) -> Iterator[Anchored]:
        try:
            text = _read(self.log_path)
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerError(f"cannot read the checkpoints handed out: {exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield _parse(line, public_key, origin, f"{self.log_path.name} line {number}")

    # -- writing --------------------------------------------------------------------------------

    def record(self, anchored: Anchored, *, at: dt.datetime) -> None:
        """Append the checkpoint to the log, then make it the latest; durable on return.

        Call with the lock held. A smaller checkpoint than the latest (a slower concurrent
        signer) is logged but does not replace it. LedgerError if it cannot be written (a
        symlink in the way, a full disk): then the checkpoint must not be handed out.
        """
        try:
            self._record(anchored, at)
        except OSError as exc:
            raise _unwritable(self.folder, exc) from None

    def _record(self, anchored: Anchored, at: dt.datetime) -> None:
        self._folder()
        line = json.dumps(anchored.as_dict(at.isoformat(timespec="microseconds")), sort_keys=True)
        data = (line + "\n").encode("utf-8")
        fd = _open_write(self.log_path, os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        current = self._latest_size()
        if current is not None and current > anchored.checkpoint.size:
            return
        temporary = self.folder / f".{LATEST}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        fd = _open_write(temporary, os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.latest_path)
        self._sync_folder()

    def _latest_size(self) -> int | None:
        try:
            value = json.loads(_read(self.latest_path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable: replace it with a good one
        size = value.get("size") if isinstance(value, dict) else None
        return size if type(size) is int else None

    def _folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.chmod(0o700)

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def lines_newest_first(handle: BinaryIO, block: int = 1 << 16) -> Iterator[bytes]:
    """The non-empty lines of a file, last first, read a block at a time from the end (for
    append-only logs whose newest lines are the ones wanted)."""
    position = handle.seek(0, os.SEEK_END)
    rest = b""
    while position > 0:
        step = min(block, position)
        position -= step
        handle.seek(position)
        rest = handle.read(step) + rest
        *lines, rest = _split_tail(rest)
        yield from lines
    if rest.strip():
        yield rest


def _split_tail(data: bytes) -> list[bytes]:
    """Complete lines at the end of `data` (last first), then the possibly partial first one."""
    parts = data.split(b"\n")
    head, complete = parts[0], [p for p in reversed(parts[1:]) if p.strip()]
    return [*complete, head]


def _unwritable(folder: Path, exc: OSError) -> LedgerError:
    return LedgerError(
        f"cannot record the checkpoint handed out in {folder}: {exc.strerror or exc}"
    )


def _parse(
    text: str, public_key: Ed25519PublicKey | None, origin: str | None, where: str
) -> Anchored:
    """One log line or latest.json; LedgerError naming `where` if malformed or not ours."""
    problem = f"handed-out checkpoint {where} is malformed"
    if len(text) > MAX_LINE:
        raise LedgerError(problem)
    try:
        value = json.loads(text)
    except ValueError:
        raise LedgerError(problem) from None
    if not isinstance(value, dict) or not isinstance(value.get("note"), str):
        raise LedgerError(problem)
    try:
        if public_key is None:
            checkpoint = Checkpoint.parse(value["note"], created_at=str(value.get("at", "")))
            if origin is not None and checkpoint.origin != origin:
                raise LedgerError(
                    f"checkpoint is from origin {checkpoint.origin!r}, not {origin!r}"
                )
        else:
            checkpoint = Checkpoint.open(
                value["note"], public_key, origin=origin, created_at=str(value.get("at", ""))
            )
        head, edge = value.get("head"), value.get("edge")
        if not isinstance(head, str) or len(head) != 64 or not isinstance(edge, list):
            raise ValueError
        nodes = tuple(bytes.fromhex(node) for node in edge)
        builder = merkle.RootBuilder.from_edge(checkpoint.size, nodes)
    except LedgerError as exc:
        raise LedgerError(f"handed-out checkpoint {where}: {exc}") from None
    except (TypeError, ValueError):
        raise LedgerError(problem) from None
    if builder.root() != checkpoint.root:
        raise LedgerError(f"handed-out checkpoint {where}: its edge does not give its root")
    return Anchored(checkpoint, head, nodes)
