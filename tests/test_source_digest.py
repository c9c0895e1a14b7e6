"""The source file's digest, taken on another thread while the run reads it, is of the bytes
the run read: a file changed or replaced meanwhile is refused, never recorded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from exchange.errors import SourceError
from exchange.pipeline.source import SourceDigest, settled


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "extract.csv"
    path.write_bytes(b"id,name\n" + b"".join(b"%d,x\n" % i for i in range(300_000)))
    return path


def test_the_digest_is_the_files_sha256(source: Path) -> None:
    provenance = {"kind": "file", "path": str(source), "sha256": SourceDigest(source)}
    assert settled(provenance) == {
        "kind": "file",
        "path": str(source),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }


def test_a_file_replaced_under_the_same_name_is_refused(source: Path) -> None:
    digest = SourceDigest(source)
    other = source.with_name("other.csv")
    other.write_bytes(source.read_bytes())  # the same bytes, another file
    os.replace(other, source)
    with pytest.raises(SourceError, match="changed while it was read") as caught:
        digest.result()
    assert str(source.parent) not in str(caught.value)  # the name, not where it lives


def test_a_file_written_to_while_read_is_refused(source: Path) -> None:
    digest = SourceDigest(source)
    with source.open("ab") as handle:
        handle.write(b"999999,late\n")
    with pytest.raises(SourceError, match="changed while it was read"):
        digest.result()


def test_a_file_removed_before_the_end_is_refused(source: Path) -> None:
    digest = SourceDigest(source)
    source.unlink()
    with pytest.raises(SourceError, match="changed while it was read"):
        digest.result()


def test_a_rewrite_that_restores_the_modification_time_is_refused(source: Path) -> None:
    digest = SourceDigest(source)
    digest._future.result()  # the digest is taken; then the file is rewritten in place
    kept = source.stat()
    data = bytearray(source.read_bytes())
    data[10:12] = b"99"
    source.write_bytes(bytes(data))  # the same size
    os.utime(source, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert source.stat().st_mtime_ns == kept.st_mtime_ns
    with pytest.raises(SourceError, match="changed while it was read"):
        digest.result()
