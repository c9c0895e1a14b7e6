"""SFTP delivery with paramiko: pinned host key, key login, temporary name, verify, rename."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import paramiko

from exchange.errors import ConnectionLost, HostKeyRejected, TransferError
from exchange.manifest import MANIFEST_NAME
from exchange.secrets import SftpConnection
from exchange.transport.base import Delivery

# AES-GCM first: hardware-accelerated here and the fastest paramiko offers.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
WINDOW_SIZE = 16 << 20


class SftpTransport:
    """Delivers drops to one partner SFTP server."""

    def __init__(
        self,
        connection: SftpConnection,
        host_keys: Sequence[str] = (),
        *,
        timeout: float = 30.0,
    ) -> None:
        self.connection = connection
        self.host_keys = tuple(host_keys)
        self.timeout = timeout

    @contextmanager
    def session(self) -> Iterator[paramiko.SFTPClient]:
        """An authenticated SFTP session to a server whose host key matches the pinned one."""
        conn = self.connection
        try:
            sock = socket.create_connection((conn.host, conn.port), timeout=self.timeout)
        except OSError as exc:
            raise ConnectionLost(
                f"cannot reach {conn.host}:{conn.port}: {exc.strerror or exc}"
            ) from exc
        transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE)
        try:
            options = transport.get_security_options()
            offered = [c for c in PREFERRED_CIPHERS if c in options.ciphers]
            options.ciphers = tuple(offered) + tuple(c for c in options.ciphers if c not in offered)
            try:
                transport.start_client(timeout=self.timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ConnectionLost(f"SSH handshake with {conn.host}:{conn.port} failed") from exc
            self._check_host_key(transport.get_remote_server_key())
            self._authenticate(transport)
            client = paramiko.SFTPClient.from_transport(transport)
            if client is None:
                raise ConnectionLost("the server did not open an SFTP session")
            with client:
                yield client
        finally:
            transport.close()

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
            key = paramiko.PKey.from_path(conn.key_file, conn.key_passphrase)
        except (OSError, paramiko.SSHException) as exc:
            raise TransferError(f"cannot load the login key {conn.key_file.name}") from exc
        try:
            transport.auth_publickey(conn.username, key)
        except paramiko.AuthenticationException as exc:
            raise TransferError(f"login to {conn.host} as {conn.username} was refused") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLost(f"connection to {conn.host} dropped during login") from exc

    def deliver(self, drop: Path, folder: str, drop_id: str) -> Delivery:
        """Upload `drop` into `folder/.drop_id.partial`, verify sizes, then rename to `drop_id`."""
        files = sorted(p for p in drop.iterdir() if p.is_file())
        # The manifest goes last, so its presence means the rest arrived.
        files.sort(key=lambda p: p.name == MANIFEST_NAME)
        final, temp = f"{folder}/{drop_id}", f"{folder}/.{drop_id}.partial"
        try:
            with self.session() as sftp:
                _require_dir(sftp, folder)
                if _exists(sftp, final):
                    return self._already(sftp, drop, final, files)
                _remove_tree(sftp, temp)
                sftp.mkdir(temp, mode=0o700)
                total = 0
                for path in files:
                    size = path.stat().st_size
                    with path.open("rb") as handle:
                        attrs = sftp.putfo(handle, f"{temp}/{path.name}", file_size=size)
                    sftp.chmod(f"{temp}/{path.name}", 0o600)
                    if attrs.st_size != size:
                        raise TransferError(f"{path.name} arrived with the wrong size")
                    total += size
                sftp.posix_rename(temp, final)
                return Delivery(final, tuple(p.name for p in files), total)
        except (TimeoutError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"connection lost while delivering {drop_id}") from exc
        except PermissionError as exc:
            raise TransferError(f"permission denied in {folder} on the partner server") from exc
        except OSError as exc:
            raise TransferError(f"delivery of {drop_id} failed: {exc.strerror or exc}") from exc

    def _already(
        self, sftp: paramiko.SFTPClient, drop: Path, final: str, files: list[Path]
    ) -> Delivery:
        """A drop of this name arrived before (renamed into place, so whole): do not resend."""
        try:
            with sftp.open(f"{final}/{MANIFEST_NAME}", "rb") as remote:
                theirs = json.loads(remote.read())
            ours = json.loads((drop / MANIFEST_NAME).read_bytes())
        except (OSError, ValueError):
            raise TransferError(f"{final} exists but holds no readable manifest") from None
        if theirs.get("drop_id") != ours.get("drop_id"):
            raise TransferError(f"{final} already exists and holds another drop")
        size = sum(p.stat().st_size for p in files)
        return Delivery(final, tuple(p.name for p in files), size, already_delivered=True)


def _key_blob(line: str) -> bytes:
    """The wire form of an OpenSSH public key line ("ssh-ed25519 AAAA... comment")."""
    parts = line.split()
    try:
        return base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        raise HostKeyRejected("a pinned host key in the contract is malformed") from None


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
    """Remove a leftover temporary drop folder from an interrupted attempt."""
    if not _exists(sftp, path):
        return
    for name in sftp.listdir(path):
        sftp.remove(f"{path}/{name}")
    sftp.rmdir(path)
