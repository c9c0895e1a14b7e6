"""SFTP delivery with paramiko: pinned host key, key login, temporary name, verify, rename.

A drop is uploaded into `.<drop>.partial`, each file's size is checked, and the folder is renamed
to its final name, with `posix-rename@openssh.com` where the server offers it. Transient faults
(refused, dropped, timed out) are retried with backoff; nothing else is. Writes are pipelined and
every write reply is checked: paramiko's own pipelined files drop the replies of the last
writes, so a full disk could otherwise pass unnoticed until the size check.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from exchange.errors import ConnectionLost, ExchangeError, HostKeyRejected, TransferError
from exchange.files import UnsafePath, read_private
from exchange.lazy import refused
from exchange.manifest import MANIFEST_NAME
from exchange.secrets import SftpConnection
from exchange.transport.base import Delivery, OnAttempt, RemoteEntry
from exchange.transport.retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BASE,
    DEFAULT_CAP,
    RetryPolicy,
    with_attempts,
)

# paramiko imports `invoke` only to run the `Match exec` lines of an OpenSSH client config, which
# the gateway never reads (host keys and algorithms come from the contract and its settings):
# left out, importing paramiko takes 7 MB and about a tenth of a second less.
with refused(("invoke",)):
    import paramiko
    from paramiko.sftp import (
        CMD_EXTENDED,
        CMD_EXTENDED_REPLY,
        CMD_INIT,
        CMD_STATUS,
        CMD_VERSION,
        CMD_WRITE,
        SFTPError,
        int64,
    )

log = logging.getLogger(__name__)

# AES-GCM first: hardware-accelerated here and the fastest paramiko offers.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
# The only SSH algorithms offered (an allow-list, so one a future paramiko adds is not offered
# until it is reviewed). No CBC, 3DES, SHA-1 or MD5: OpenSSH's own defaults dropped them.
_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
ALLOWED_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ciphers": (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    ),
    "macs": (  # unused with AES-GCM, which authenticates itself
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha2-256",
        "hmac-sha2-512",
    ),
    "kex": (
        "mlkem768x25519-sha256",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384",
        "ecdh-sha2-nistp521",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group-exchange-sha256",
        "diffie-hellman-group14-sha256",
    ),
    "keys": _KEY_TYPES,  # host key types the server may prove itself with
    "pubkeys": _KEY_TYPES,  # signature types for our own login key
}
_PARAMIKO_LISTS = {
    "ciphers": "_preferred_ciphers",
    "macs": "_preferred_macs",
    "kex": "_preferred_kex",
    "keys": "_preferred_keys",
    "pubkeys": "_preferred_pubkeys",
}
READ_CHUNK = 1 << 20
WINDOW_SIZE = 16 << 20  # what we let the server send before it must wait (replies, reads)
MAX_PACKET_SIZE = 1 << 15
POSIX_RENAME = "posix-rename@openssh.com"
LIMITS = "limits@openssh.com"
SMALL_REQUEST = 1 << 15  # every SFTP server accepts 32 KiB writes
MAX_REQUEST = 255 << 10  # the largest write OpenSSH's sftp-server accepts (its limits reply)
IN_FLIGHT_BYTES = 8 << 20  # unanswered write data allowed at once
MAX_MANIFEST_BYTES = 1 << 20
ABANDON_SECONDS = 2.0  # how long a run that failed waits for a session opened ahead
ALIVE_SECONDS = 5.0  # how long a session opened ahead has to answer before another is opened
KEEPALIVE_SECONDS = 15  # keeps a session opened ahead known to NATs while the drop is prepared
# paramiko's own log of a session opened ahead: what it met is raised where the delivery takes
# it, so its lines (a traceback for a server that never answers) go nowhere.
AHEAD_LOG = "exchange.transport.sftp.ahead"
logging.getLogger(AHEAD_LOG).addHandler(logging.NullHandler())
logging.getLogger(AHEAD_LOG).propagate = False
_SFTP_VERSION = 3


class SftpSession(paramiko.SFTPClient):
    """paramiko's SFTP client that also keeps the server's extensions and checks every write."""

    extensions: dict[str, bytes]
    _write_limit: int | None = None

    def _send_version(self) -> int:
        # paramiko reads the server's version packet but discards the extensions it lists.
        core: Any = self  # paramiko's packet layer is not in its type stubs
        request = paramiko.Message()
        request.add_int(_SFTP_VERSION)
        core._send_packet(CMD_INIT, request)
        kind, data = core._read_packet()
        if kind != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        reply = paramiko.Message(data)
        version = reply.get_int()
        self.extensions = {}
        while len(reply.get_remainder()) >= 8:
            name = reply.get_text()
            self.extensions[name] = reply.get_binary()
        return int(version)

    def _write_all(self, out: bytes) -> None:
        # paramiko slices `bytes` here, copying the rest of a large write once per SSH packet.
        view = memoryview(out)
        while view:
            sent = self.sock.send(view)  # type: ignore[arg-type]  # a memoryview is fine
            if sent <= 0:
                raise EOFError
            view = view[sent:]

    def write_limit(self) -> int:
        """The largest write request the server accepts (its `limits@openssh.com`, or 32 KiB)."""
        if self._write_limit is None:
            self._write_limit = SMALL_REQUEST
            if LIMITS in self.extensions:
                core: Any = self
                kind, reply = core._request(CMD_EXTENDED, LIMITS)
                if kind == CMD_EXTENDED_REPLY:
                    reply.get_int64()  # max packet length
                    reply.get_int64()  # max read length
                    max_write = int(reply.get_int64())
                    if max_write > 0:
                        self._write_limit = min(max_write, MAX_REQUEST)
        return self._write_limit

    def upload(
        self,
        source: BinaryIO,
        path: str,
        *,
        request_size: int = SMALL_REQUEST,
        in_flight: int = IN_FLIGHT_BYTES,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write `source` to a new remote file with pipelined requests; every reply is checked."""
        core: Any = self
        window = max(1, in_flight // request_size)
        waiting: set[int] = set()
        sent = 0
        with self.open(path, "wb") as remote:
            handle = remote.handle
            while chunk := source.read(request_size):
                number = core._async_request(type(None), CMD_WRITE, handle, int64(sent), chunk)
                waiting.add(number)
                sent += len(chunk)
                while len(waiting) >= window:
                    self._reap(waiting)
                if progress is not None:
                    progress(sent)
            while waiting:
                self._reap(waiting)
        return sent

    def _reap(self, waiting: set[int]) -> None:
        """Read one reply; raise if it reports a failed write (replies may come in any order)."""
        core: Any = self
        kind, data = core._read_packet()
        reply = paramiko.Message(data)
        number = reply.get_int()
        with core._lock:
            core._expecting.pop(number, None)
        if number not in waiting:
            return  # a late reply to a request made before this upload
        waiting.discard(number)
        if kind != CMD_STATUS:
            raise SFTPError("the server answered a write with something other than a status")
        core._convert_status(reply)

    def rename_into_place(self, source: str, target: str, *, replace: bool = False) -> str:
        """Rename atomically where the server can; returns the method used."""
        if POSIX_RENAME in self.extensions:
            self.posix_rename(source, target)
            return POSIX_RENAME
        log.warning("the SFTP server offers no %s: using a plain rename", POSIX_RENAME)
        if replace and _exists(self, target):
            self.remove(target)  # not atomic: a reader may briefly find nothing
        self.rename(source, target)
        return "rename"


class SftpRemote:
    """The `Remote` operations over one SFTP session; paramiko's errors are translated here."""

    def __init__(self, sftp: paramiko.SFTPClient, where: str) -> None:
        self.sftp = sftp
        self.where = where

    def list(self, folder: str) -> list[RemoteEntry]:
        """The folder's entries by name. Raises TransferError, ConnectionLost."""
        with self._translated(f"listing {folder}"):
            found = self.sftp.listdir_attr(folder)
        entries = [
            RemoteEntry(e.filename, stat.S_ISDIR(e.st_mode or 0), e.st_size or 0, e.st_mtime or 0)
            for e in found
        ]
        return sorted(entries, key=lambda e: e.name)

    def read(self, path: str, limit: int) -> bytes:
        """Up to `limit` + 1 bytes of a file. Raises TransferError, ConnectionLost."""
        with self._translated(f"reading {path}"), self.sftp.open(path, "rb") as remote:
            return bytes(remote.read(limit + 1))

    def rename(self, source: str, target: str) -> None:
        """Rename a file or folder. Raises TransferError, ConnectionLost."""
        with self._translated(f"renaming {source}"):
            self.sftp.rename(source, target)

    def remove(self, path: str) -> None:
        """Remove a file or folder tree; nothing if gone. Raises TransferError, ConnectionLost."""
        with self._translated(f"removing {path}"):
            _remove_tree(self.sftp, path)

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """ConnectionLost if the link died, else TransferError naming what was being done."""
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException, SFTPError) as exc:
            if isinstance(exc, EOFError | paramiko.SSHException) or not _alive(self.sftp):
                raise ConnectionLost(f"connection to {self.where} lost while {doing}") from exc
            if isinstance(exc, FileNotFoundError):
                raise TransferError(f"nothing to find while {doing}: it does not exist") from None
            if isinstance(exc, PermissionError):
                raise TransferError(f"permission denied while {doing}") from None
            raise TransferError(f"the server refused {doing}") from exc


class SftpTransport:
    """Delivers drops to one partner SFTP server."""

    def __init__(
        self,
        connection: SftpConnection,
        host_keys: Sequence[str] = (),
        *,
        timeout: float = 30.0,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_base: float = DEFAULT_BASE,
        backoff_cap: float = DEFAULT_CAP,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        window_size: int = WINDOW_SIZE,
        max_packet_size: int = MAX_PACKET_SIZE,
        request_size: int | None = None,
        in_flight: int = IN_FLIGHT_BYTES,
    ) -> None:
        self.connection = connection
        self.host_keys = tuple(host_keys)
        self.timeout = timeout
        self.retry = RetryPolicy(attempts, backoff_base, backoff_cap, sleep, rng)
        self.window_size = window_size
        self.max_packet_size = max_packet_size
        self.request_size = request_size  # None: the server's own limit
        self.in_flight = in_flight
        self._warm: Future[tuple[paramiko.Transport, SftpSession]] | None = None
        self._lock = threading.Lock()  # guards _warm

    @property
    def where(self) -> str:
        """host:port, for messages."""
        return f"{self.connection.host}:{self.connection.port}"

    @contextmanager
    def session(self) -> Iterator[SftpSession]:
        """An authenticated SFTP session to a server whose host key matches the pinned one
        (the one `warmed` opened ahead, if it is still up)."""
        transport, client = self._take_warm() or self._open()
        try:
            yield client
        finally:
            _close(transport, client)

    def _open(self, log_channel: str | None = None) -> tuple[paramiko.Transport, SftpSession]:
        conn = self.connection
        try:
            sock = socket.create_connection((conn.host, conn.port), timeout=self.timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot reach {self.where}: {exc.strerror or exc}") from exc
        transport = paramiko.Transport(
            sock,
            default_window_size=self.window_size,
            default_max_packet_size=self.max_packet_size,
            disabled_algorithms=disabled_algorithms(),
        )
        if log_channel is not None:
            transport.set_log_channel(log_channel)
        transport.banner_timeout = transport.handshake_timeout = self.timeout
        transport.auth_timeout = self.timeout
        try:
            options = transport.get_security_options()
            allowed = [c for c in options.ciphers if c in ALLOWED_ALGORITHMS["ciphers"]]
            offered = [c for c in PREFERRED_CIPHERS if c in allowed]
            options.ciphers = tuple(offered) + tuple(c for c in allowed if c not in offered)
            try:
                transport.start_client(timeout=self.timeout)
                # start_client returns quietly when its timeout ends the handshake early.
                server_key = transport.get_remote_server_key()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ConnectionLost(
                    f"SSH handshake with {self.where} failed or timed out"
                ) from exc
            self._check_host_key(server_key)
            self._authenticate(transport)
            try:
                client = SftpSession.from_transport(transport)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ConnectionLost(f"{self.where} did not open an SFTP session") from exc
            if client is None:
                raise ConnectionLost(f"{self.where} did not open an SFTP session")
            client.get_channel().settimeout(self.timeout)  # type: ignore[union-attr]
        except BaseException:
            transport.close()
            raise
        return transport, client

    @contextmanager
    def warmed(self) -> Iterator[None]:
        """Open the next session on a thread of its own now: a delivery inside the block takes
        it instead of connecting then (about 0.1-0.2 s on loopback). What opening it met (a
        host key the contract does not pin, a refused login, a lost connection) is the
        delivery's first attempt's outcome. One not taken is closed, and a host key it was
        refused is logged (the caller is leaving with an error of its own)."""
        opening: Future[tuple[paramiko.Transport, SftpSession]] = Future()
        with self._lock:
            ahead = self._warm is None  # one block at a time: an inner one opens nothing
            if ahead:
                self._warm = opening
        if ahead:
            try:
                threading.Thread(
                    target=self._open_ahead,
                    args=(opening,),
                    name="exchange-sftp-ahead",
                    daemon=True,
                ).start()
            except RuntimeError:  # no thread to be had: the delivery connects then
                ahead = False
                with self._lock:
                    self._warm = None
        try:
            yield
        finally:
            if ahead:
                with self._lock:
                    untaken = self._warm is opening
                    if untaken:
                        self._warm = None
                if untaken:
                    self._abandon(opening)

    def _open_ahead(self, opening: Future[tuple[paramiko.Transport, SftpSession]]) -> None:
        try:
            transport, client = self._open(log_channel=AHEAD_LOG)
            transport.set_keepalive(KEEPALIVE_SECONDS)  # idle while the drop is prepared
            opening.set_result((transport, client))
        except BaseException as exc:  # raised where the delivery takes it
            opening.set_exception(exc)

    def _abandon(self, opening: Future[tuple[paramiko.Transport, SftpSession]]) -> None:
        """Close a session opened ahead and not taken, once it has opened (waited for briefly:
        a handshake cut off by the process ending makes paramiko print a traceback)."""
        try:
            with contextlib.suppress(Exception):
                opening.result(timeout=min(self.timeout, ABANDON_SECONDS))
        finally:
            _close_when_open(opening, self.where)

    def _take_warm(self) -> tuple[paramiko.Transport, SftpSession] | None:
        """The session opened ahead, once, if it still answers (None: connect now). A host key
        it was refused is raised here, as if met now; so is any failure met while waiting for
        it here. An older failure (the server was away while the drop was prepared) is left
        to a connection made now."""
        with self._lock:
            opening, self._warm = self._warm, None
        if opening is None:
            return None
        try:
            settled = opening.done()
            try:
                transport, client = opening.result(timeout=self.timeout)
            except FutureTimeout:
                raise ConnectionLost(
                    f"SSH handshake with {self.where} failed or timed out"
                ) from None
            except HostKeyRejected:
                raise  # never connected around: an interceptor may answer only some connections
            except Exception:
                if settled:
                    return None
                raise
            channel = client.get_channel()
            assert channel is not None  # an open session has its channel
            try:
                offered = transport.get_remote_server_key()
                channel.settimeout(min(self.timeout, ALIVE_SECONDS))
                client.stat(".")  # idle while the drop was prepared: is it still there?
            except (TimeoutError, EOFError, paramiko.SSHException, SFTPError):
                _close(transport, client)
                return None  # dropped while idle (a NAT, a restart): connect again
            except OSError:  # the server answered, with an error of its own
                if not _alive(client):
                    _close(transport, client)
                    return None
            channel.settimeout(self.timeout)
            self._check_host_key(offered)  # the pins as they are now
            # From here on it is the delivery's session: paramiko's own log as for any other.
            transport.set_log_channel("paramiko.transport")
            channel.logger = paramiko.util.get_logger("paramiko.transport")
            client.logger = paramiko.util.get_logger("paramiko.transport.sftp")
        except BaseException:
            if not opening.done() or opening.exception() is None:  # a session, or one to come
                _close_when_open(opening, self.where)
            raise
        return transport, client

    @contextmanager
    def connect(self) -> Iterator[SftpRemote]:
        """An open connection for listing, reading and removing on the partner's server."""
        with self.session() as sftp:
            yield SftpRemote(sftp, self.where)

    def _check_host_key(self, offered: paramiko.PKey) -> None:
        """The offered key must be pinned by the contract and, if it names one, the connection."""
        conn = self.connection
        name = conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"
        # OpenSSH's fingerprint form, so it can be compared with what `ssh-keygen -l` prints.
        digest = base64.b64encode(hashlib.sha256(offered.asbytes()).digest()).decode()
        fingerprint = "SHA256:" + digest.rstrip("=")
        pins = [_key_blob(line) for line in self.host_keys]
        if conn.known_hosts is not None:
            try:
                known = paramiko.HostKeys(str(conn.known_hosts))
            except OSError as exc:
                raise HostKeyRejected(f"pinned host keys file unreadable: {exc.strerror}") from exc
            entry = known.lookup(name)
            if not entry:
                raise HostKeyRejected(f"no pinned host key for {name}: refusing an unknown server")
            if offered.get_name() not in entry or entry[offered.get_name()] != offered:
                raise HostKeyRejected(
                    f"host key of {name} does not match the pinned key (offered {fingerprint})"
                )
        if not pins and conn.known_hosts is None:
            raise HostKeyRejected(f"no pinned host key for {name}: refusing an unknown server")
        if pins and offered.asbytes() not in pins:
            raise HostKeyRejected(
                f"host key of {name} does not match the contract's pinned key "
                f"(offered {fingerprint})"
            )

    def _authenticate(self, transport: paramiko.Transport) -> None:
        conn = self.connection
        try:
            read_private(conn.key_file, "SFTP login key")  # refuse one others may read
        except UnsafePath as exc:
            raise TransferError(str(exc)) from None
        except OSError:
            pass  # paramiko's own load below says what is wrong
        try:
            key = paramiko.PKey.from_path(conn.key_file, conn.key_passphrase)
        except (OSError, paramiko.SSHException) as exc:
            raise TransferError(f"cannot load the login key {conn.key_file.name}") from exc
        try:
            transport.auth_publickey(conn.username, key)
        except paramiko.AuthenticationException as exc:
            raise TransferError(f"login to {conn.host} as {conn.username} was refused") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLost(f"connection to {conn.host} dropped during login") from exc

    def _retrying(self, fn: Callable[[], Delivery], on_attempt: OnAttempt) -> Delivery:
        """Run one delivery step with this transport's retry policy; attempts go on the result."""
        result, attempts = with_attempts(fn, self.retry, on_attempt)
        return replace(result, attempts=attempts)

    def deliver(
        self, drop: Path, folder: str, drop_id: str, *, on_attempt: OnAttempt = None
    ) -> Delivery:
        """Upload `drop` into `folder/.drop_id.partial`, verify sizes, then rename to `drop_id`.

        Transient faults are retried; `on_attempt` hears of each try. Raises ConnectionLost
        (retryable) once the attempts are spent, HostKeyRejected or TransferError at once.
        """
        files = sorted(p for p in drop.iterdir() if p.is_file())
        # The manifest goes last, so its presence means the rest arrived.
        files.sort(key=lambda p: p.name == MANIFEST_NAME)
        return self._retrying(lambda: self._deliver_once(drop, folder, drop_id, files), on_attempt)

    def _deliver_once(self, drop: Path, folder: str, drop_id: str, files: list[Path]) -> Delivery:
        final, temp = f"{folder}/{drop_id}", f"{folder}/.{drop_id}.partial"
        with self.session() as sftp:
            try:
                _require_dir(sftp, folder)
                if _exists(sftp, final):
                    return self._already(sftp, drop, final, files)
                _remove_tree(sftp, temp)  # left by an interrupted attempt
                sftp.mkdir(temp, mode=0o700)
                total = 0
                for path in files:
                    total += self._put(sftp, path, f"{temp}/{path.name}")
                method = sftp.rename_into_place(temp, final)
                return Delivery(final, tuple(p.name for p in files), total, rename=method)
            except TransferError:
                _discard(sftp, temp)
                raise
            except (OSError, EOFError, paramiko.SSHException, SFTPError) as exc:
                raise self._translate(sftp, exc, f"delivering {drop_id}", folder, temp) from exc

    def _put(self, sftp: SftpSession, path: Path, remote: str) -> int:
        """Upload one file, make it 0600 and check its size on the server."""
        size = path.stat().st_size
        request = self.request_size or sftp.write_limit()
        with path.open("rb") as handle:
            sftp.upload(handle, remote, request_size=request, in_flight=self.in_flight)
        sftp.chmod(remote, 0o600)
        arrived = sftp.stat(remote).st_size
        if arrived != size:
            raise TransferError(f"{path.name} arrived with {arrived} bytes of {size}")
        return size

    def _translate(
        self,
        sftp: SftpSession,
        exc: BaseException,
        doing: str,
        folder: str,
        temp: str,
    ) -> ExchangeError:
        """One error for a paramiko failure: ConnectionLost if the link died, else TransferError."""
        if isinstance(exc, EOFError | paramiko.SSHException | TimeoutError) or not _alive(sftp):
            return ConnectionLost(f"connection to {self.where} lost while {doing}")
        removed = _discard(sftp, temp)
        left = "the partial upload was removed" if removed else f"{temp} may remain"
        if isinstance(exc, PermissionError):
            return TransferError(f"permission denied in {folder} while {doing}; {left}")
        if isinstance(exc, SFTPError):
            return TransferError(f"SFTP protocol error while {doing}; {left}")
        reason = getattr(exc, "strerror", None) or (exc.args[0] if exc.args else type(exc).__name__)
        return TransferError(
            f"the server refused a write in {folder} while {doing} ({reason}): its disk may be "
            f"full or the folder read-only; {left}"
        )

    def _already(
        self, sftp: paramiko.SFTPClient, drop: Path, final: str, files: list[Path]
    ) -> Delivery:
        """A drop of this name arrived before (renamed into place, so whole): do not resend.

        Only if it is this very drop: the remote manifest must be byte-identical, and every
        staged file present with the same size and SHA-256 (read back, a rare path: a re-run
        after a delivery whose outcome was lost). Anything else in a folder of that name is
        refused, never reported as delivered: someone else may have put it there.
        """
        ours = (drop / MANIFEST_NAME).read_bytes()
        theirs = _read_bounded(sftp, f"{final}/{MANIFEST_NAME}", MAX_MANIFEST_BYTES)
        if theirs is None:
            raise TransferError(f"{final} exists but holds no readable manifest: not delivered")
        if theirs != ours:
            raise TransferError(
                f"{final} already exists but its manifest is not this drop's "
                f"(sha256 {hashlib.sha256(theirs).hexdigest()[:16]}, expected "
                f"{hashlib.sha256(ours).hexdigest()[:16]}): refusing to report it delivered"
            )
        for path in files:
            if not self._same_file(sftp, path, f"{final}/{path.name}"):
                raise TransferError(
                    f"{final} exists but its {path.name} is missing or differs from the staged "
                    "one: refusing to report it delivered"
                )
        total = sum(p.stat().st_size for p in files)
        return Delivery(final, tuple(p.name for p in files), total, already_delivered=True)

    @staticmethod
    def _same_file(sftp: paramiko.SFTPClient, path: Path, remote: str) -> bool:
        """Whether the remote file has the local file's size and SHA-256."""
        try:
            attrs = sftp.stat(remote)
        except FileNotFoundError:
            return False
        size = path.stat().st_size
        if attrs.st_size != size or not stat.S_ISREG(attrs.st_mode or 0):
            return False
        local, there = hashlib.sha256(), hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                local.update(chunk)
        with sftp.open(remote, "rb") as handle:
            handle.prefetch(size)
            while chunk := handle.read(READ_CHUNK):
                there.update(chunk)
        return local.digest() == there.digest()

    def put_bytes(
        self, folder: str, name: str, data: bytes, *, on_attempt: OnAttempt = None
    ) -> Delivery:
        """Place one small file at `folder/name` (temporary name, size check, rename; replaces)."""
        return self._retrying(lambda: self._put_bytes_once(folder, name, data), on_attempt)

    def _put_bytes_once(self, folder: str, name: str, data: bytes) -> Delivery:
        final, temp = f"{folder}/{name}", f"{folder}/.{name}.partial"
        with self.session() as sftp:
            try:
                _require_dir(sftp, folder)
                with contextlib.suppress(FileNotFoundError):
                    sftp.remove(temp)
                with sftp.open(temp, "wb") as remote:
                    remote.write(data)
                sftp.chmod(temp, 0o600)
                if sftp.stat(temp).st_size != len(data):
                    raise TransferError(f"{name} arrived with the wrong size")
                method = sftp.rename_into_place(temp, final, replace=True)
                return Delivery(final, (name,), len(data), rename=method)
            except TransferError:
                _discard(sftp, temp)
                raise
            except (OSError, EOFError, paramiko.SSHException, SFTPError) as exc:
                raise self._translate(sftp, exc, f"writing {name}", folder, temp) from exc


def disabled_algorithms() -> dict[str, list[str]]:
    """paramiko's `disabled_algorithms`: everything it knows that is not allowed above."""
    return {
        kind: [a for a in getattr(paramiko.Transport, attr) if a not in ALLOWED_ALGORITHMS[kind]]
        for kind, attr in _PARAMIKO_LISTS.items()
    }


def _read_bounded(sftp: paramiko.SFTPClient, path: str, size: int) -> bytes | None:
    """A remote file's bytes if it has no more than `size` (one more is read to tell); else None."""
    try:
        with sftp.open(path, "rb") as remote:
            data = remote.read(size + 1)
    except OSError:
        return None
    return data if len(data) <= size else None


def _key_blob(line: str) -> bytes:
    """The wire form of an OpenSSH public key line ("ssh-ed25519 AAAA... comment")."""
    parts = line.split()
    try:
        return base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        raise HostKeyRejected("a pinned host key in the contract is malformed") from None


def _close(transport: paramiko.Transport, client: paramiko.SFTPClient) -> None:
    # Closing sends a message: on a dropped link that fails, and must not replace the error
    # that is already on its way out.
    with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
        client.close()
    transport.close()


def _close_when_open(opening: Future[tuple[paramiko.Transport, SftpSession]], where: str) -> None:
    """Close a session opened ahead and not used, now or once it has opened; log a host key it
    was refused (nothing was sent: the run that opened it failed, or connected again)."""

    def closed(done: Future[tuple[paramiko.Transport, SftpSession]]) -> None:
        error = done.exception()
        if error is None:
            _close(*done.result())
        elif isinstance(error, HostKeyRejected):
            log.warning(
                "the SFTP server at %s offered a host key the contract does not pin, to a "
                "connection opened while the drop was prepared; nothing was sent over it",
                where,
            )

    opening.add_done_callback(closed)


def _alive(sftp: paramiko.SFTPClient) -> bool:
    """Whether the SSH connection under the session still works."""
    channel = sftp.get_channel()
    return channel is not None and not channel.closed and channel.get_transport().is_active()


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def _require_dir(sftp: paramiko.SFTPClient, folder: str) -> None:
    try:
        mode = sftp.stat(folder).st_mode or 0
    except FileNotFoundError:
        raise TransferError(f"the partner folder {folder} does not exist") from None
    if not stat.S_ISDIR(mode):
        raise TransferError(f"the partner folder {folder} is not a folder")


def _remove_tree(sftp: paramiko.SFTPClient, path: str) -> None:
    """Remove a temporary or expired folder (or file) and everything in it."""
    try:
        mode = sftp.lstat(path).st_mode or 0
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        sftp.remove(path)
        return
    for entry in sftp.listdir_attr(path):
        _remove_tree(sftp, f"{path}/{entry.filename}")
    sftp.rmdir(path)


def _discard(sftp: paramiko.SFTPClient, temp: str) -> bool:
    """Best effort removal of a partial upload after a failure; whether it is gone."""
    if not _alive(sftp):
        return False
    try:
        _remove_tree(sftp, temp)
    except (OSError, EOFError, paramiko.SSHException):
        return False
    return True
