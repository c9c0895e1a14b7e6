"""Where a run reads from: a file in the source folder, or a named database connection.

Nothing else: a source is never taken from a DAG param or the command line beyond choosing
among what the operator configured. What was read is recorded (path and digest, or the
connection and the digest of its query); a file's digest is taken while it is read, and
`settled` waits for it and checks the file did not change meanwhile.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from exchange.contract import Contract
from exchange.errors import SourceError
from exchange.secrets import SecretStore
from exchange.settings import Settings
from exchange.sources import Source, open_source

Provenance = dict[str, Any]


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class SourceDigest:
    """The SHA-256 of a source file, taken on another thread while the run reads the file
    (hashlib lets go of the GIL on large reads: about 3 s of a 10M-row run moves off its path).

    The file is opened once, before the reader opens it; `result` refuses the digest if the
    path names another file by then or the file changed meanwhile, so what is recorded is the
    digest of the bytes the run read."""

    def __init__(self, path: Path) -> None:
        self._path = path
        handle = path.open("rb")
        self._before = os.fstat(handle.fileno())
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-digest")
        try:
            self._future = executor.submit(self._digest, handle)
        finally:
            executor.shutdown(wait=False)

    @staticmethod
    def _digest(handle: BinaryIO) -> tuple[str, os.stat_result]:
        with handle:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            return digest.hexdigest(), os.fstat(handle.fileno())

    def result(self) -> str:
        """The hex digest, once taken; SourceError if the file changed while it was read."""
        digest, after = self._future.result()
        try:
            now = os.stat(self._path)
        except OSError:
            now = None
        if now is None or not (_same(self._before, after) and _same(after, now)):
            raise SourceError(
                f"source {self._path.name} changed while it was read: nothing was sent; "
                "run again once the file is complete"
            )
        return digest


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    # The change time too: a rewrite that restores the modification time still moves it.
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


def settled(provenance: Provenance) -> Provenance:
    """Provenance as recorded: a digest still being taken is waited for (SourceError if the
    file changed while it was read)."""
    return {k: v.result() if isinstance(v, SourceDigest) else v for k, v in provenance.items()}


def resolve(
    settings: Settings,
    secrets: SecretStore,
    contract: Contract,
    source: str | Path | Source | None,
    *,
    digest: bool = True,
) -> tuple[Source, Provenance]:
    """The source and what exactly it is (a file's digest only if `digest`).

    `None` means the contract's physicalName in the source folder; a file name or path must
    resolve inside that folder; `postgres:NAME` names a connection in the secrets store (URL,
    password and optional query stay there). Raises SourceError for anything else."""
    if source is not None and not isinstance(source, str | Path):
        return source, {"kind": "given", "name": source.name}
    if isinstance(source, str) and source.startswith("postgres:"):
        return _database(secrets, contract, source.removeprefix("postgres:"))
    if isinstance(source, str) and "://" in source:
        raise SourceError(
            "a database source is named, not given as a URL: add it to the secrets store "
            "and use --source postgres:NAME (see docs/operators.md)"
        )
    return _file(settings, contract, source, digest)


def _database(secrets: SecretStore, contract: Contract, name: str) -> tuple[Source, Provenance]:
    from exchange.sources.postgres import PostgresSource  # psycopg only when a database is used

    database = secrets.database_connection(name)
    described: Provenance = {"kind": "database", "connection": name}
    if database.query:
        described["query_sha256"] = hashlib.sha256(database.query.encode()).hexdigest()
        pg = PostgresSource(database.url, query=database.query, password=database.password)
    else:
        described["table"] = contract.source_name
        pg = PostgresSource(database.url, table=contract.source_name, password=database.password)
    return pg, described


def _file(
    settings: Settings, contract: Contract, source: str | Path | None, digest: bool
) -> tuple[Source, Provenance]:
    folder = settings.source_dir
    if folder is None:
        raise SourceError("EXCHANGE_SOURCE_DIR is not set: sources are read only from there")
    folder = folder.resolve()
    if source is None:
        matches = sorted(folder.glob(f"{contract.source_name}.*"))
        if not matches:
            raise SourceError(f"no file named {contract.source_name}.* in {folder}")
        source = matches[0]
    given = Path(source)
    path = (given if given.is_absolute() else folder / given).resolve()
    if not path.is_relative_to(folder) or path == folder:
        raise SourceError(
            f"source {given.name} is outside the source folder {folder} "
            "(EXCHANGE_SOURCE_DIR): sources are read only from there"
        )
    if not path.is_file():
        raise SourceError(f"source {given.name} does not exist in {folder}")
    opened = open_source(path, csv_block_size=settings.csv_block_size)  # opens on first read
    described: Provenance = {"kind": "file", "path": str(path)}
    if digest:
        described["sha256"] = SourceDigest(path)  # opened now, before the reader opens it
    return opened, described
