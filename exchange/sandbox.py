"""A local partner SFTP server (a real OpenSSH sshd) for demos and tests."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_ssh_private_key,
)

__all__ = ["SSHD_PATH", "PartnerSftpServer", "SandboxError", "main"]

SSHD_PATH = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
LOG_TAIL_LINES = 20

# sshd_config tokenises on whitespace and quotes and %-expands several paths.
_UNSAFE_PATH_CHARS = frozenset(" \t\n\r\"'%#\\")


class SandboxError(RuntimeError):
    """The sandbox sshd could not be started or behaved unexpectedly."""


def _free_port(host: str) -> int:
    """Return a TCP port on host that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _write_private(path: Path, data: bytes) -> None:
    """Atomically write data to path with mode 0600 from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    path.chmod(0o600)


def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomically write text to path with the given mode."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def _new_ed25519_key() -> bytes:
    """Return a fresh Ed25519 private key in OpenSSH PEM format."""
    return Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()
    )


def _public_line(private_path: Path) -> str:
    """Return the 'ssh-ed25519 AAAA...' public key of an OpenSSH private key file."""
    try:
        key = load_ssh_private_key(private_path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise SandboxError(f"{private_path} is not a usable OpenSSH private key: {err}") from err
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode("ascii")


def _ensure_key(path: Path) -> str:
    """Create an Ed25519 key at path unless one exists; return its public line."""
    if not path.exists():
        _write_private(path, _new_ed25519_key())
    # Reused keys may have been copied around with looser permissions.
    path.chmod(0o600)
    public = _public_line(path)
    _write_text(path.with_name(path.name + ".pub"), public + "\n")
    return public


class PartnerSftpServer:
    """A real OpenSSH sshd serving SFTP from a local folder, for demos and tests."""

    host: str = "127.0.0.1"

    def __init__(self, base_dir: Path, *, port: int | None = None) -> None:
        """Prepare base_dir (keys, SFTP root) without starting sshd."""
        self.base_dir = Path(base_dir).resolve()
        unsafe = _UNSAFE_PATH_CHARS.intersection(str(self.base_dir))
        if unsafe:
            raise ValueError(
                f"base_dir {self.base_dir} contains characters sshd_config cannot carry: "
                f"{''.join(sorted(unsafe))!r}"
            )
        self._fixed_port = port
        self.port: int = port or 0
        self.username: str = getpass.getuser()
        self.keys_dir = self.base_dir / "keys"
        self.root = self.base_dir / "root"
        self.config_path = self.base_dir / "sshd_config"
        self.log_path = self.base_dir / "sshd.log"
        self.host_key_path = self.keys_dir / "host_ed25519"
        self._pending_host_key_path = self.keys_dir / "host_ed25519.next"
        self.client_key_path = self.keys_dir / "client_ed25519"
        self.authorized_keys_path = self.keys_dir / "authorized_keys"
        self.known_hosts_path = self.keys_dir / "known_hosts"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.keys_dir.mkdir(mode=0o700, exist_ok=True)
        self.keys_dir.chmod(0o700)
        self.root.mkdir(mode=0o755, exist_ok=True)
        self.host_public_key: str = _ensure_key(self.host_key_path)
        self.client_public_key: str = _ensure_key(self.client_key_path)
        if self._pending_host_key_path.exists():
            self._pending_host_key_path.chmod(0o600)
        # restrict: no forwarding, pty or rc even if sshd_config were loosened.
        _write_text(self.authorized_keys_path, f"restrict {self.client_public_key}\n", 0o600)

    @property
    def is_running(self) -> bool:
        """Whether the sshd process started by this object is still alive."""
        return self._process is not None and self._process.poll() is None

    def rotate_host_key(self) -> None:
        """Generate a new host key that replaces the current one at the next start()."""
        # Staged rather than written in place: sshd 9.2 re-reads HostKey on every connection.
        _write_private(self._pending_host_key_path, _new_ed25519_key())

    def start(self) -> PartnerSftpServer:
        """Start sshd (no-op if running) and wait until it speaks SSH on the port."""
        if self.is_running:
            return self
        self._process = None
        if not SSHD_PATH.is_file():
            raise SandboxError(f"OpenSSH server not found at {SSHD_PATH}")
        self._ensure_privsep_dir()
        self._promote_pending_host_key()

        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self.port = self._fixed_port or _free_port(self.host)
            self._write_runtime_files()
            try:
                self._spawn_and_wait()
                return self
            except _PortTakenError:
                if attempt == attempts:
                    raise SandboxError(
                        f"sshd could not bind {self.host}:{self.port} "
                        f"after {attempts} attempt(s)\n{self._log_tail()}"
                    ) from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Terminate sshd and wait for it; safe to call when already stopped."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # Sessions run in their own sessions (setsid) and outlive the listener, so end them
        # first, while the listener is still there to reap them and their pids stay ours.
        _end_children(process.pid)
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        # A connection accepted while we were stopping may have a freshly forked handler that
        # still holds the listening socket; until it calls setsid it is in the listener's group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        _wait_port_released(self.host, self.port)

    def __enter__(self) -> PartnerSftpServer:
        """Start the server for the duration of a with-block."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server when the with-block ends."""
        self.stop()

    def __del__(self) -> None:
        """Avoid leaking an sshd listener if the owner forgot to stop()."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.terminate()

    def _ensure_privsep_dir(self) -> None:
        """Create sshd's privilege-separation directory, which it refuses to run without."""
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        except PermissionError as err:
            raise SandboxError(
                f"sshd needs {PRIVSEP_DIR}; create it as root (mkdir -p -m0755 {PRIVSEP_DIR})"
            ) from err

    def _promote_pending_host_key(self) -> None:
        """Make a key staged by rotate_host_key() the live host key."""
        if self._pending_host_key_path.exists():
            os.replace(self._pending_host_key_path, self.host_key_path)
            self.host_public_key = _ensure_key(self.host_key_path)

    def _write_runtime_files(self) -> None:
        """Write the port-dependent known_hosts and sshd_config."""
        _write_text(self.known_hosts_path, f"[{self.host}]:{self.port} {self.host_public_key}\n")
        sftp = f"internal-sftp -d {self.root}"
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            "AddressFamily inet",
            f"HostKey {self.host_key_path}",
            "PidFile none",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            # The sandbox lives under /tmp or similar, which strict mode rejects.
            "StrictModes no",
            "PubkeyAuthentication yes",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.username}",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "AllowStreamLocalForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "PermitTTY no",
            "PermitUserEnvironment no",
            f"Subsystem sftp {sftp}",
            f"ForceCommand {sftp}",
            "",
        ]
        _write_text(self.config_path, "\n".join(lines))

    def _spawn_and_wait(self) -> None:
        """Launch sshd once and block until it serves SSH, or raise."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(SSHD_PATH), "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
                # Own process group: Ctrl-C in a terminal reaches only us, and stop() can
                # signal the listener's not-yet-detached children as a group.
                start_new_session=True,
            )
        self._process = process
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._process = None
                tail = self._log_tail()
                if "Address already in use" in tail:
                    raise _PortTakenError
                raise SandboxError(
                    f"sshd exited with status {process.returncode} during start-up\n{tail}"
                )
            if self._speaks_ssh():
                return
            time.sleep(0.02)
        self.stop()
        raise SandboxError(
            f"sshd did not accept connections on {self.host}:{self.port} "
            f"within {START_TIMEOUT:.0f} s\n{self._log_tail()}"
        )

    def _speaks_ssh(self) -> bool:
        """Whether the port answers with an SSH banner, i.e. it is sshd and not a port thief."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                banner = b""
                # Read the whole line so closing does not reset the connection mid-banner.
                while b"\n" not in banner and len(banner) < 256:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    banner += chunk
                return banner.startswith(b"SSH-")
        except OSError:
            return False

    def _log_tail(self) -> str:
        """Return the last lines sshd logged since the latest launch."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return f"(no sshd log at {self.log_path})"
        lines = text.strip().splitlines()[-LOG_TAIL_LINES:]
        body = "\n".join(lines) if lines else "(empty)"
        return f"--- tail of {self.log_path} ---\n{body}"


def _child_pids(parent: int) -> list[int]:
    """Return the live (non-zombie) children of parent, from /proc (empty without /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if ppid == str(parent) and state != "Z":
            children.append(int(stat.parent.name))
    return children


def _end_children(parent: int) -> None:
    """SIGTERM parent's children until they exit; SIGKILL whatever is left at the deadline."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while children := _child_pids(parent):
        # Repeated: a session can miss a SIGTERM sent while it is still setting up (OpenSSH 9.2).
        sig = signal.SIGKILL if time.monotonic() >= deadline else signal.SIGTERM
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            return
        time.sleep(0.05)


def _wait_port_released(host: str, port: int) -> None:
    """Wait briefly until nothing listens on host:port any more."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Lingering TIME_WAIT connections must not count as "still listening".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                time.sleep(0.01)
                continue
            return


class _PortTakenError(Exception):
    """sshd lost the race for the port chosen for it."""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into the same clean shutdown path as Ctrl-C."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run `python -m exchange.sandbox serve DIR` in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m exchange.sandbox", description="Local partner SFTP server (OpenSSH)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve SFTP from DIR until Ctrl-C or SIGTERM")
    serve.add_argument("dir", type=Path, help="base directory for keys, config, log and root/")
    serve.add_argument("--port", type=int, default=None, help="fixed port (default: a free one)")
    args = parser.parse_args(argv)

    server = PartnerSftpServer(args.dir, port=args.port)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.start()
        print(f"host:        {server.host}")
        print(f"port:        {server.port}")
        print(f"user:        {server.username}")
        print(f"client key:  {server.client_key_path}")
        print(f"known_hosts: {server.known_hosts_path}")
        print(f"sftp root:   {server.root}")
        print(f"sshd log:    {server.log_path}")
        print(
            f"try:         sftp -i {server.client_key_path} "
            f"-o UserKnownHostsFile={server.known_hosts_path} -o IdentitiesOnly=yes "
            f"-P {server.port} {server.username}@{server.host}"
        )
        print("serving; Ctrl-C to stop", flush=True)
        while server.is_running:
            time.sleep(0.5)
        print(f"sshd exited unexpectedly; see {server.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except SandboxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
