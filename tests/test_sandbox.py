"""Tests for the local partner SFTP server: real sshd, real paramiko, no mocks."""

from __future__ import annotations

import io
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from exchange.sandbox import SSHD_PATH, PartnerSftpServer, SandboxError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SSHD_PATH.is_file(), reason=f"OpenSSH server not at {SSHD_PATH}"),
]

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PartnerSftpServer]:
    """A started sandbox server, stopped after the test."""
    with PartnerSftpServer(tmp_path / "partner") as srv:
        yield srv


def connect(
    srv: PartnerSftpServer, known_hosts: Path | None = None, **kwargs: object
) -> paramiko.SSHClient:
    """Connect the way the gateway does: pinned host key, one explicit client key."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or srv.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    options: dict[str, object] = {"key_filename": str(srv.client_key_path)}
    options.update(kwargs)
    try:
        client.connect(
            srv.host,
            port=srv.port,
            username=srv.username,
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
            **options,  # type: ignore[arg-type]
        )
    except BaseException:
        client.close()
        raise
    return client


def port_is_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_relative_put_lands_under_root(server: PartnerSftpServer) -> None:
    client = connect(server)
    try:
        sftp = client.open_sftp()
        assert sftp.normalize(".") == str(server.root)
        sftp.mkdir("inbox")
        sftp.putfo(io.BytesIO(b"\x00payload\xff"), "inbox/x.bin")
        sftp.close()
    finally:
        client.close()
    assert (server.root / "inbox" / "x.bin").read_bytes() == b"\x00payload\xff"


def test_password_auth_is_refused(server: PartnerSftpServer) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, key_filename=None, password="not-a-key")


def test_foreign_client_key_is_refused(server: PartnerSftpServer, tmp_path: Path) -> None:
    other = PartnerSftpServer(tmp_path / "other")
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, key_filename=str(other.client_key_path))


def test_session_is_sftp_only(server: PartnerSftpServer) -> None:
    client = connect(server)
    try:
        transport = client.get_transport()
        assert transport is not None
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", server.port), ("127.0.0.1", 0))
        _, stdout, _ = client.exec_command("echo escaped")
        assert b"escaped" not in stdout.read()
    finally:
        client.close()


def test_rotated_host_key_is_rejected_by_old_known_hosts(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    old_key = server.host_public_key
    server.rotate_host_key()
    assert server.host_public_key == old_key, "rotation must wait for the next start()"
    connect(server).close()
    server.stop()
    server.start()
    assert server.host_public_key != old_key

    # Same host and port as now served, but the key the gateway pinned before rotation.
    stale = tmp_path / "stale_known_hosts"
    stale.write_text(f"[{server.host}]:{server.port} {old_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(server, known_hosts=stale)
    connect(server).close()


def test_stop_frees_port_and_is_idempotent(server: PartnerSftpServer) -> None:
    port = server.port
    assert port_is_open(server.host, port)
    server.stop()
    server.stop()
    assert not server.is_running
    with pytest.raises(OSError):
        socket.create_connection((server.host, port), timeout=1).close()


def test_stop_ends_open_sessions(server: PartnerSftpServer) -> None:
    client = connect(server)
    try:
        sftp = client.open_sftp()
        server.stop()
        # Which of these paramiko raises depends on how far it got reading the teardown.
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            sftp.listdir(".")
    finally:
        client.close()


def test_start_is_idempotent(server: PartnerSftpServer) -> None:
    port = server.port
    assert server.start() is server
    assert server.port == port
    connect(server).close()


def test_key_files_are_private_ed25519(server: PartnerSftpServer) -> None:
    for private in (server.client_key_path, server.keys_dir / "host_ed25519"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
        assert private.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert server.host_public_key.startswith("ssh-ed25519 AAAA")
    assert server.known_hosts_path.read_text() == (
        f"[127.0.0.1]:{server.port} {server.host_public_key}\n"
    )


def test_keys_are_reused_by_a_new_instance(server: PartnerSftpServer) -> None:
    client_key = server.client_key_path.read_bytes()
    server.stop()
    again = PartnerSftpServer(server.base_dir)
    assert again.host_public_key == server.host_public_key
    assert again.client_key_path.read_bytes() == client_key


def test_busy_fixed_port_fails_with_log_tail(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        srv = PartnerSftpServer(tmp_path / "partner", port=port)
        with pytest.raises(SandboxError, match="Address already in use"):
            srv.start()
        assert not srv.is_running


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange.sandbox", "serve", str(tmp_path / "cli")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("serving"):
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
        port = int(info["port"])
        assert info["host"] == "127.0.0.1"
        assert Path(info["client key"]).is_file()
        assert port_is_open("127.0.0.1", port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not port_is_open("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
