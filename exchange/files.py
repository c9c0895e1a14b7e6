"""Files the gateway writes with sensitive content: 0600 files in 0700 folders.

Nothing here follows a symbolic link at the path it is given: a link planted where a key, a
staged drop or the secrets file will be written would otherwise redirect the write (over
`~/.ssh/authorized_keys`, say) or leak the content to a place others can read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from exchange.errors import ExchangeError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class UnsafePath(ExchangeError, OSError):
    """A path the gateway will not write through (a symbolic link, or not what it should be)."""


def private_dir(path: Path) -> Path:
    """Create (if needed) a folder only its owner can enter; refuse a symbolic link."""
    if path.is_symlink():
        raise UnsafePath(f"refusing {path}: it is a symbolic link, not a folder")
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if not stat.S_ISDIR(os.lstat(path).st_mode):  # replaced by a link since the check above
        raise UnsafePath(f"refusing {path}: it is not a folder")
    path.chmod(PRIVATE_DIR)
    return path


def open_private(path: Path, *, overwrite: bool = False) -> BinaryIO:
    """Open a new file for binary writing with mode 0600 from the first byte; never via a link."""
    return _open_nofollow(path, PRIVATE_FILE, overwrite=overwrite)


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write bytes to a 0600 file; FileExistsError unless `overwrite`."""
    with open_private(path, overwrite=overwrite) as handle:
        handle.write(data)
    return path


def write_public(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write bytes to a 0644 file (a public key); never through a symbolic link."""
    with _open_nofollow(path, 0o644, overwrite=overwrite) as handle:
        handle.write(data)
    return path


def replace_private(path: Path, data: bytes) -> Path:
    """Atomically replace `path` with a 0600 file holding `data` (temp file, fsync, rename).

    The temporary file is made with O_EXCL in the same folder, so a stale or planted file of
    that name can neither lend its mode nor redirect the write; readers see old or new, whole.
    """
    if path.is_symlink():
        raise UnsafePath(f"refusing to write {path}: it is a symbolic link")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    done = False
    try:
        os.fchmod(fd, PRIVATE_FILE)  # mkstemp says 0600 already; the umask cannot widen it
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        done = True
    finally:
        if not done:  # never leave a copy of the secrets behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    _fsync_dir(path.parent)
    return path


def read_private(path: Path, what: str) -> bytes:
    """Read a private key file, refusing one that group or others may read or write.

    Raises UnsafePath naming the path and the fix (like OpenSSH's "permissions too open"):
    a key others can read is a key that may already be copied.
    """
    with path.open("rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise UnsafePath(
                f"{what} {path} is open to group or others (mode {mode:04o}): "
                f"run `chmod 600 {path}`"
            )
        return handle.read()


def _open_nofollow(path: Path, mode: int, *, overwrite: bool) -> BinaryIO:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if overwrite else os.O_EXCL)
    flags |= os.O_NONBLOCK  # a FIFO planted at the path fails at once instead of hanging
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        # O_EXCL refuses an existing link as "exists"; say what it really is.
        if exc.errno == errno.ELOOP or (exc.errno == errno.EEXIST and path.is_symlink()):
            raise UnsafePath(f"refusing to write {path}: it is a symbolic link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"refusing to write {path}: it is not a regular file")
    os.fchmod(fd, mode)  # a pre-existing file keeps its old mode unless told
    return os.fdopen(fd, "wb")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
