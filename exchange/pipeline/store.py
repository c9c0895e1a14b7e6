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
import re
import shutil
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
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

    def publish(self, contract_id: str, drop_id: str, folder: Path, names: Collection[str]) -> None:
        """Copy exactly `names` from the local staged folder into the store, payload first."""
        key = self._key(contract_id, drop_id)
        with self._edge("publishing a drop"):
            self.fs.makedirs(key, exist_ok=True)
            if self.local:
                self._private(self.root, key)
            # The manifest goes last: a drop without one is never taken for a whole one.
            for name in sorted(names, key=lambda n: n == MANIFEST_NAME):
                target = f"{key}/{name}"
                with (folder / name).open("rb") as source, self.fs.open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
                if self.local:
                    Path(target).chmod(0o600)

    def fetch(
        self, contract_id: str, drop_id: str, folder: Path, allowed: Collection[str], payload: str
    ) -> bool:
        """Copy a staged drop into the empty local `folder`; False if the store has none.

        Raises NotRunnable (reason staging-invalid) if the drop holds anything but `allowed`
        regular objects, or a manifest or signature over 1 MiB; StagingUnavailable."""
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
        with self._edge("fetching a drop"):
            for name in found:
                source_key = self._key(contract_id, drop_id, name)
                with self.fs.open(source_key, "rb") as source, open_private(folder / name) as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
        return True

    def remove(self, contract_id: str, drop_id: str) -> None:
        """Delete a drop's objects (after delivery, or when it expires)."""
        key = self._key(contract_id, drop_id)
        with self._edge("deleting a drop"):
            self.fs.invalidate_cache()
            if self.fs.exists(key):
                self.fs.rm(key, recursive=True)

    def drops(self, contract_id: str | None = None) -> dict[tuple[str, str], dt.datetime]:
        """Every staged drop (contract id, drop id) with its newest object's time."""
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

    def _private(self, root: str, key: str) -> None:
        """A shared folder's drop folders are 0700, like the local staging folder."""
        path = Path(key)
        while str(path) != root and len(str(path)) > len(root):
            path.chmod(0o700)
            path = path.parent


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
