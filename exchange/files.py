"""Files the gateway writes with sensitive content: 0600 files in 0700 folders."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create (if needed) a folder only its owner can enter."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def open_private(path: Path, *, overwrite: bool = False):
    """Open a new file for binary writing with mode 0600 from the first byte."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # a pre-existing file keeps its old mode unless told
    return os.fdopen(fd, "wb")


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write bytes to a 0600 file; FileExistsError unless `overwrite`."""
    with open_private(path, overwrite=overwrite) as handle:
        handle.write(data)
    return path
