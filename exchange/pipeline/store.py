"""A shared staging store, so `deliver` may run on another worker than `prepare`.

EXCHANGE_STAGING names it: unset, a drop waits in the local staging folder as it always has;
`s3://bucket/prefix` (any S3-compatible store, through fsspec and s3fs) or `file:///shared/path`
(a filesystem every worker mounts) hold it between the two stages. Objects are keyed
`<root>/<contract id>/<drop id>/<name>`, the drop id being derived from the contract and the run
(`naming.drop_id_for`), never from task state. Only a drop's ciphertext, manifest and its two
signatures are ever written or read back; anything else under a drop's key is refused.

The store is not trusted: what comes back is verified exactly like a local staged drop
(`staging.staged`: the file set, the gateway's signatures, the payload's size and SHA-256, the
ledger's record of this run). Credentials and the endpoint come from the environment (the AWS_*
variables botocore reads: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, or its
other usual sources), never from the URL, a contract or a log line.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exchange.errors import ExchangeError, InvalidRequest, NotRunnable, Retryable
from exchange.files import open_private
from exchange.manifest import MANIFEST_NAME

SCHEMES = ("s3", "file")
SMALL_OBJECT = 1 << 20  # a manifest or signature is a few KiB; anything larger is refused
_CHUNK = 1 << 20
_DROP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{16}")  # `naming.drop_id_for`
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW

log = logging.getLogger(__name__)


class StagingUnavailable(ExchangeError, Retryable):
    """The staging store could not be reached or written (transient: the task retries)."""


def _translated() -> tuple[type[BaseException], ...]:
    """The errors a store's client raises for an unreachable or failing store."""
    errors: list[type[BaseException]] = [OSError]
    try:  # botocore raises its own connection errors, not OSError
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    except ImportError:
        pass
    return tuple(errors)


def parse_url(url: str) -> tuple[str, str]:
    """The scheme and root of EXCHANGE_STAGING. Raises InvalidRequest naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidRequest(
            "EXCHANGE_STAGING must be s3://bucket/prefix or file:///shared/path "
            "(leave it unset for the local staging folder)"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequest(
            "EXCHANGE_STAGING must not carry credentials or options: give them in the "
            "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)"
        )
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/") or parts.path.rstrip("/") == "":
            raise InvalidRequest("EXCHANGE_STAGING file:// needs an absolute folder: file:///path")
        return "file", parts.path.rstrip("/")
    if not parts.netloc:
        raise InvalidRequest("EXCHANGE_STAGING s3:// needs a bucket: s3://bucket/prefix")
    return "s3", f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")


@dataclass
class StagingStore:
    """Drops between prepare and deliver, in an object store or a shared folder."""

    url: str  # as configured, for messages (it holds no credentials: `parse_url`)
    fs: Any  # an fsspec filesystem
    root: str
    local: bool  # a shared POSIX folder: objects are made 0600 in 0700 folders

    @classmethod
    def open(cls, url: str) -> StagingStore:
        """The store EXCHANGE_STAGING names. Raises InvalidRequest if it cannot be used here."""
        scheme, root = parse_url(url)
        try:
            import fsspec
        except ImportError:
            raise InvalidRequest(
                "EXCHANGE_STAGING needs fsspec: install the gateway with its `s3` extra"
            ) from None
        try:
            # A fresh instance each time: a cached one would serve a stale listing.
            fs = fsspec.filesystem(scheme, skip_instance_cache=True)
        except ImportError:
            raise InvalidRequest(
                f"EXCHANGE_STAGING {scheme}:// needs s3fs: install the gateway with its `s3` extra"
            ) from None
        return cls(url, fs, root, scheme == "file")

    def _unsafe(self, where: str) -> NotRunnable:
        return NotRunnable(
            f"staging store {self.url}: {where} is a symbolic link, not a folder, or not owned "
            "by this user: remove it from the shared folder and prepare the run again",
            reason="staging-invalid",
        )

    def _open_dir(self, names: list[str], *, create: bool = False) -> int | None:
        """A descriptor on `<root>/<names...>` (shared folder only); None if it does not exist.

        Each level below the root is opened relative to its parent without following a link
        and must be a folder owned by this user: anyone who can write the shared root could
        otherwise point `<root>/<contract>` at a folder of the gateway's (its keys, its home),
        and listing, writing or deleting would go through. Raises NotRunnable (staging-invalid)."""
        if create:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            for depth, name in enumerate(names, 1):
                if create:
                    with suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=fd)
                try:
                    child = os.open(name, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    os.close(fd)
                    return None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self._unsafe("/".join(names[:depth])) from None
                    raise
                os.close(fd)
                fd = child
                if os.fstat(fd).st_uid != os.geteuid():
                    raise self._unsafe("/".join(names[:depth]))
                if create:
                    os.fchmod(fd, 0o700)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _key(self, contract_id: str, drop_id: str, name: str = "") -> str:
        base = f"{self.root}/{contract_id}/{drop_id}"
        return f"{base}/{name}" if name else base

    @contextmanager
    def _edge(self, doing: str) -> Iterator[None]:
        """Translate the client's errors once, without its message (it may name the endpoint)."""
        try:
            yield
        except ExchangeError:
            raise
        except _translated() as exc:
            raise StagingUnavailable(
                f"staging store {self.url}: {doing} failed ({type(exc).__name__}): check "
                "EXCHANGE_STAGING, the store's credentials and that it is reachable"
            ) from None

    def check(self) -> None:
        """Reach the store and list its root (for `exchange doctor`). Raises StagingUnavailable."""
        with self._edge("listing its root"):
            self.fs.invalidate_cache()
            if not self.fs.exists(self.root) and not self.local:
                self.fs.ls(self.root.split("/", 1)[0])  # an empty prefix is fine; a bucket not

    def names(self, contract_id: str, drop_id: str) -> dict[str, int]:
        """The objects staged for a drop, by name, with their sizes (empty: nothing staged)."""
        if self.local:
            return self._local_names(contract_id, drop_id)
        key = self._key(contract_id, drop_id)
        with self._edge("listing a drop"):
            self.fs.invalidate_cache()
            try:
                entries = self.fs.ls(key, detail=True)
            except FileNotFoundError:
                return {}
        found: dict[str, int] = {}
        for entry in entries:
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            found[name] = -1 if entry.get("type") != "file" else int(entry.get("size") or 0)
        return found

    def _local_names(self, contract_id: str, drop_id: str) -> dict[str, int]:
        with self._edge("listing a drop"):
            fd = self._open_dir([contract_id, drop_id])
            if fd is None:
                return {}
            try:
                found: dict[str, int] = {}
                for name in os.listdir(fd):
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    found[name] = info.st_size if stat.S_ISREG(info.st_mode) else -1
                return found
            finally:
                os.close(fd)

    def publish(self, contract_id: str, drop_id: str, folder: Path, names: Collection[str]) -> None:
        """Copy exactly `names` from the local staged folder into the store, payload first."""
        key = self._key(contract_id, drop_id)
        # The manifest goes last: a drop without one is never taken for a whole one.
        ordered = sorted(names, key=lambda n: n == MANIFEST_NAME)
        with self._edge("publishing a drop"):
            if self.local:
                fd = self._open_dir([contract_id, drop_id], create=True)
                assert fd is not None  # created above
                try:
                    for name in ordered:
                        # Never through a planted link; 0600 from the first byte.
                        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                        try:
                            out = os.open(name, flags, 0o600, dir_fd=fd)
                        except OSError as exc:
                            if exc.errno == errno.ELOOP:
                                raise self._unsafe(f"{contract_id}/{drop_id}/{name}") from None
                            raise
                        os.fchmod(out, 0o600)
                        with (folder / name).open("rb") as source, open(out, "wb") as sink:
                            shutil.copyfileobj(source, sink, _CHUNK)
                finally:
                    os.close(fd)
                return
            self.fs.makedirs(key, exist_ok=True)
            for name in ordered:
                target = f"{key}/{name}"
                with (folder / name).open("rb") as source, self.fs.open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)

    def fetch(
        self,
        contract_id: str,
        drop_id: str,
        folder: Path,
        allowed: Collection[str],
        payload: str,
        payload_size: Callable[[], int],
    ) -> bool:
        """Copy a staged drop into the empty local `folder`; False if the store has none.

        The manifest and signatures come first; `payload_size` then verifies them and gives
        the payload's size from the signed manifest, and the payload is copied only if the
        store lists exactly that size, and never more than it: a planted huge payload cannot
        fill this worker's disk before anything is checked.

        Raises NotRunnable (reason staging-invalid) if the drop holds anything but `allowed`
        regular objects, a manifest or signature over 1 MiB, or a payload of another size
        than its manifest's; StagingUnavailable."""
        found = self.names(contract_id, drop_id)
        if not found:
            return False
        refuse = f"staged drop {drop_id} in the staging store"
        if not set(found) <= set(allowed) or any(size < 0 for size in found.values()):
            raise NotRunnable(
                f"{refuse} holds other objects than its manifest, signatures and payload: "
                "prepare the run again",
                reason="staging-invalid",
            )
        if any(size > SMALL_OBJECT for name, size in found.items() if name != payload):
            raise NotRunnable(
                f"{refuse} has an oversized manifest or signature: prepare the run again",
                reason="staging-invalid",
            )
        small = [name for name in found if name != payload]
        with self._edge("fetching a drop"):
            for name in small:
                self._copy(contract_id, drop_id, name, folder, SMALL_OBJECT, refuse)
        size = payload_size()  # raises unless the manifest verifies
        if payload not in found:
            return True  # the verification of the whole drop names what is missing
        if found[payload] != size:
            raise NotRunnable(
                f"{refuse} has a payload whose size differs from its manifest: "
                "prepare the run again",
                reason="staging-invalid",
            )
        with self._edge("fetching a drop"):
            self._copy(contract_id, drop_id, payload, folder, size, refuse)
        return True

    def _copy(
        self, contract_id: str, drop_id: str, name: str, folder: Path, limit: int, refuse: str
    ) -> None:
        """Copy one object into `folder`, refusing it once it grows past `limit` bytes."""
        with (
            self._source(contract_id, drop_id, name) as source,
            open_private(folder / name) as sink,
        ):
            copied = 0
            while chunk := source.read(min(_CHUNK, limit + 1 - copied)):
                copied += len(chunk)
                if copied > limit:
                    raise NotRunnable(
                        f"{refuse} has an object larger than listed or stated: "
                        "prepare the run again",
                        reason="staging-invalid",
                    )
                sink.write(chunk)

    @contextmanager
    def _source(self, contract_id: str, drop_id: str, name: str) -> Iterator[Any]:
        if not self.local:
            with self.fs.open(self._key(contract_id, drop_id, name), "rb") as source:
                yield source
            return
        fd = self._open_dir([contract_id, drop_id])
        if fd is None:
            raise FileNotFoundError(name)
        try:
            try:
                handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._unsafe(f"{contract_id}/{drop_id}/{name}") from None
                raise
        finally:
            os.close(fd)
        with open(handle, "rb") as source:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                raise self._unsafe(f"{contract_id}/{drop_id}/{name}")
            yield source

    def remove(self, contract_id: str, drop_id: str) -> None:
        """Delete a drop's objects (after delivery, or when it expires)."""
        key = self._key(contract_id, drop_id)
        with self._edge("deleting a drop"):
            if self.local:
                self._local_remove(contract_id, drop_id)
                return
            self.fs.invalidate_cache()
            if self.fs.exists(key):
                self.fs.rm(key, recursive=True)

    def _local_remove(self, contract_id: str, drop_id: str) -> None:
        """Delete a drop folder, never through a link nor one that is not this user's."""
        try:
            parent = self._open_dir([contract_id])
            if parent is None:
                return
        except NotRunnable:
            log.warning("staging store: not deleting through an unsafe contract folder")
            return
        try:
            try:
                child = os.open(drop_id, _DIR, dir_fd=parent)
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    log.warning("staging store: not deleting an unsafe drop entry")
                    return
                raise
            try:
                mine = os.fstat(child).st_uid == os.geteuid()
            finally:
                os.close(child)
            if not mine:
                log.warning("staging store: not deleting a drop folder owned by another user")
                return
            shutil.rmtree(drop_id, dir_fd=parent)  # fd-based: never follows a link inside
        finally:
            os.close(parent)

    def drops(self, contract_id: str | None = None) -> dict[tuple[str, str], dt.datetime]:
        """Every staged drop (contract id, drop id) with its newest object's time."""
        if self.local:
            return self._local_drops(contract_id)
        base = self.root if contract_id is None else f"{self.root}/{contract_id}"
        with self._edge("listing drops"):
            self.fs.invalidate_cache()
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return {}
        newest: dict[tuple[str, str], dt.datetime] = {}
        prefix = self.root.rstrip("/") + "/"
        for name, info in found.items():
            parts = str(name).removeprefix(prefix).split("/")
            if len(parts) != 3:  # not <contract>/<drop>/<object>: not the gateway's
                continue
            when = _modified(info)
            key = (parts[0], parts[1])
            newest[key] = max(newest.get(key, when), when)
        return newest

    def _local_drops(self, contract_id: str | None) -> dict[tuple[str, str], dt.datetime]:
        """`drops` in a shared folder: a link or a folder not this user's is skipped, warned."""
        newest: dict[tuple[str, str], dt.datetime] = {}
        with self._edge("listing drops"):
            if contract_id is None:
                root = self._open_dir([])
                if root is None:
                    return {}
                try:
                    contracts = sorted(os.listdir(root))
                finally:
                    os.close(root)
            else:
                contracts = [contract_id]
            for contract in contracts:
                for drop, when in self._local_contract_drops(contract).items():
                    newest[(contract, drop)] = when
        return newest

    def _local_contract_drops(self, contract: str) -> dict[str, dt.datetime]:
        try:
            parent = self._open_dir([contract])
        except NotRunnable:
            log.warning("staging store: skipped a contract folder that is a link or not ours")
            return {}
        if parent is None:
            return {}
        found: dict[str, dt.datetime] = {}
        try:
            for drop in sorted(os.listdir(parent)):
                try:
                    child = os.open(drop, _DIR, dir_fd=parent)
                except OSError:
                    log.warning("staging store: skipped a drop entry that is a link or a file")
                    continue
                try:
                    if os.fstat(child).st_uid != os.geteuid():
                        log.warning("staging store: skipped a drop folder owned by another user")
                        continue
                    times = [
                        info.st_mtime
                        for name in os.listdir(child)
                        if stat.S_ISREG(
                            (info := os.stat(name, dir_fd=child, follow_symlinks=False)).st_mode
                        )
                    ]
                finally:
                    os.close(child)
                if times:
                    found[drop] = dt.datetime.fromtimestamp(max(times), dt.UTC)
        finally:
            os.close(parent)
        return found

    def purge_expired(
        self,
        max_age: dt.timedelta,
        now: dt.datetime,
        *,
        contract_id: str | None = None,
        keep: str | None = None,
    ) -> list[str]:
        """Delete drops whose newest object is older than `max_age`; their drop ids."""
        removed = []
        for (contract, drop), when in sorted(self.drops(contract_id).items()):
            if drop != keep and now - when > max_age:
                self.remove(contract, drop)
                removed.append(drop)
        return removed


def _modified(info: dict[str, Any]) -> dt.datetime:
    """An object's last-modified time: S3's LastModified, or a file's mtime."""
    last = info.get("LastModified")
    if isinstance(last, dt.datetime):
        return last if last.tzinfo else last.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(float(info.get("mtime") or 0), dt.UTC)


def purge_local(
    folder: Path,
    max_age: dt.timedelta,
    now: dt.datetime,
    *,
    contract_id: str | None = None,
    keep: str | None = None,
) -> list[str]:
    """Delete abandoned drop folders in the local staging folder; their drop ids.

    Only folders named like a drop (`<contract id>-<16 hex>`) are touched, never a link."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if not _DROP.fullmatch(entry.name) or entry.name == keep:
            continue
        if contract_id is not None and entry.name.rsplit("-", 1)[0] != contract_id:
            continue
        info = entry.lstat()
        if not stat.S_ISDIR(info.st_mode):
            continue
        newest = max([info.st_mtime, *(p.lstat().st_mtime for p in entry.iterdir())])
        if now - dt.datetime.fromtimestamp(newest, dt.UTC) > max_age:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed
