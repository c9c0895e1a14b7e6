"""Delivery under faults, against a real OpenSSH sshd: retries, atomic placement, clean errors.

Faults are real: the server is stopped mid-upload, the port refuses, the host key changes, a
silent server times out, and the partner folder is a tiny or read-only tmpfs or immutable
(mounting and chattr need root; those tests are skipped, saying why, where it is missing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.errors import ConnectionLost, HostKeyRejected, TransferError
from exchange.manifest import MANIFEST_NAME, SIGNATURE_NAME
from exchange.operations.retention import remove_expired
from exchange.sandbox import PartnerSftpServer
from exchange.secrets import SftpConnection
from exchange.transport import sftp as sftp_module
from exchange.transport.retry import Attempt, backoff, with_retries
from exchange.transport.sftp import POSIX_RENAME, SftpTransport

pytestmark = pytest.mark.integration

FOLDER = "inbox/attendance"
MB = 1 << 20


class Sleeps:
    """A stand-in for time.sleep that records the waits (and can act during one)."""

    def __init__(self, during=None) -> None:
        self.waits: list[float] = []
        self.during = during

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.during is not None:
            self.during()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PartnerSftpServer]:
    """A partner sshd on a fixed port, so that a restarted server is found at the same place."""
    partner = PartnerSftpServer(tmp_path / "partner", port=free_port()).start()
    (partner.root / FOLDER).mkdir(parents=True)
    yield partner
    partner.stop()


def connection(server: PartnerSftpServer) -> SftpConnection:
    return SftpConnection(
        server.host, server.port, server.username, server.client_key_path, server.known_hosts_path
    )


def transport(server: PartnerSftpServer, **options) -> SftpTransport:
    """A transport pinned to the server's key; waits are recorded, never slept."""
    options.setdefault("sleep", Sleeps())
    options.setdefault("rng", lambda: 0.5)
    return SftpTransport(connection(server), [server.host_public_key], **options)


def rotated_key(server: PartnerSftpServer) -> str:
    """Another server's host key line: a pin this server does not match."""
    return PartnerSftpServer(server.base_dir.parent / "other-key").host_public_key  # not started


def rotated(server: PartnerSftpServer) -> str:
    """Restart the server with a new host key; the key pinned before, now wrong."""
    pinned = server.host_public_key
    server.stop()
    server.rotate_host_key()
    server.start()
    return pinned


def make_drop(root: Path, drop_id: str, payload_bytes: int) -> Path:
    """A staged drop: random ciphertext-like payload, a manifest naming the drop, a signature."""
    drop = root / "staging" / drop_id
    drop.mkdir(parents=True)
    with (drop / "data.csv.age").open("wb") as handle:
        left = payload_bytes
        while left:
            step = min(left, 4 * MB)
            handle.write(os.urandom(step))
            left -= step
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    body = {"drop_id": drop_id, "created_at": created, "contract": {"id": "c"}}
    (drop / MANIFEST_NAME).write_text(json.dumps(body))
    (drop / SIGNATURE_NAME).write_text("c2lnbmF0dXJl\n")
    return drop


def inbox(server: PartnerSftpServer, folder: str = FOLDER) -> list[str]:
    return sorted(p.name for p in (server.root / folder).iterdir())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_files(drop: Path, landed: Path) -> None:
    assert sorted(p.name for p in landed.iterdir()) == sorted(p.name for p in drop.iterdir())
    for path in drop.iterdir():
        assert digest(landed / path.name) == digest(path), path.name


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs at `path` for the block, or skip the test saying why it cannot be done."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


# -- retry policy (no server needed) -----------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    assert [backoff(n, 2.0, 30.0, lambda: 1.0) for n in range(1, 6)] == [2, 4, 8, 16, 30]
    assert [backoff(n, 2.0, 30.0, lambda: 0.25) for n in range(1, 4)] == [0.5, 1.0, 2.0]
    assert backoff(3, 2.0, 30.0, lambda: 0.0) == 0.0


def test_with_retries_retries_only_transient_faults_and_reports_every_attempt() -> None:
    calls: list[int] = []
    seen: list[Attempt] = []
    sleeps = Sleeps()

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionLost(f"drop d1: dropped after {len(calls)} MiB")
        return "done"

    result = with_retries(flaky, 5, 1.0, 10.0, sleeps, lambda: 0.5, on_attempt=seen.append)
    assert result == "done"
    assert sleeps.waits == [0.5, 1.0]
    assert [(a.number, a.ok, a.error, a.retryable) for a in seen] == [
        (1, False, "ConnectionLost", True),
        (2, False, "ConnectionLost", True),
        (3, True, None, False),
    ]
    assert seen[0].as_dict()["wait_seconds"] == 0.5

    refused: list[Attempt] = []

    def bad_key() -> None:
        raise HostKeyRejected("host key of [h]:1 does not match")

    with pytest.raises(HostKeyRejected):
        with_retries(bad_key, 5, 1.0, 10.0, sleeps, lambda: 0.5, on_attempt=refused.append)
    assert [(a.number, a.retryable, a.wait) for a in refused] == [(1, False, 0.0)]
    assert sleeps.waits == [0.5, 1.0]  # no wait was added
    with pytest.raises(ValueError, match="at least 1"):
        with_retries(lambda: None, 0)


# -- against the real sshd ----------------------------------------------------------------------


def test_delivers_whole_with_posix_rename_and_one_attempt(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    drop = make_drop(tmp_path, "c-00000000000000a1", 3 * MB + 17)
    done = transport(server).deliver(drop, FOLDER, drop.name)
    assert done.rename == POSIX_RENAME
    assert done.attempts == (Attempt(1, True),)
    assert done.bytes == sum(p.stat().st_size for p in drop.iterdir())
    assert inbox(server) == [drop.name]
    landed = server.root / FOLDER / drop.name
    assert_same_files(drop, landed)
    assert landed.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in landed.iterdir())
    again = transport(server).deliver(drop, FOLDER, drop.name)
    assert again.already_delivered and inbox(server) == [drop.name]


def test_plain_rename_is_used_and_said_when_posix_rename_is_not_offered(
    server: PartnerSftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sftp_module, "POSIX_RENAME", "posix-rename@example.invalid")
    drop = make_drop(tmp_path, "c-00000000000000a2", 100_000)
    done = transport(server).deliver(drop, FOLDER, drop.name)
    assert done.rename == "rename"
    assert_same_files(drop, server.root / FOLDER / drop.name)


def test_server_killed_mid_upload_is_retried_and_delivered_once(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    drop = make_drop(tmp_path, "c-00000000000000b1", 160 * MB)
    partial = server.root / FOLDER / f".{drop.name}.partial" / "data.csv.age"
    killed = threading.Event()
    left_behind: list[list[str]] = []

    def kill_when_half_sent() -> None:
        while not killed.is_set():
            if partial.exists() and partial.stat().st_size > 16 * MB:
                server.stop()  # sshd and its SFTP session die with the upload in flight
                killed.set()
            killed.wait(0.002)

    def restart() -> None:
        assert killed.wait(30), "the upload finished before the server could be stopped"
        left_behind.append(inbox(server))
        server.start()

    watcher = threading.Thread(target=kill_when_half_sent, daemon=True)
    watcher.start()
    sleeps = Sleeps(during=restart)
    try:
        done = transport(server, sleep=sleeps, backoff_base=1.0).deliver(drop, FOLDER, drop.name)
    finally:
        killed.set()
        watcher.join()
    assert left_behind == [[f".{drop.name}.partial"]]  # the killed attempt left a partial folder
    assert [(a.number, a.ok, a.error, a.retryable) for a in done.attempts] == [
        (1, False, "ConnectionLost", True),
        (2, True, None, False),
    ]
    assert drop.name in (done.attempts[0].message or "")
    assert sleeps.waits == [0.5]
    assert not done.already_delivered
    assert inbox(server) == [drop.name]  # once, and no partial under any name
    assert_same_files(drop, server.root / FOLDER / drop.name)


def test_connection_refused_is_retried_then_fails_listing_every_attempt(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    drop = make_drop(tmp_path, "c-00000000000000c1", 1000)
    server.stop()
    seen: list[Attempt] = []
    sleeps = Sleeps()
    mover = transport(
        server, attempts=3, backoff_base=1.0, backoff_cap=1.5, sleep=sleeps, rng=lambda: 1.0
    )
    with pytest.raises(ConnectionLost, match="cannot reach"):
        mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    assert sleeps.waits == [1.0, 1.5]
    assert [(a.number, a.ok, a.retryable, a.wait) for a in seen] == [
        (1, False, True, 1.0),
        (2, False, True, 1.5),
        (3, False, True, 0.0),
    ]
    assert all("cannot reach" in (a.message or "") for a in seen)


def test_silent_server_times_out_and_is_retried(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        conn = SftpConnection("127.0.0.1", port, "nobody", tmp_path / "no-key")
        seen: list[Attempt] = []
        mover = SftpTransport(
            conn, ["ssh-ed25519 AAAA"], timeout=0.3, attempts=2, sleep=Sleeps(), rng=lambda: 0
        )
        drop = make_drop(tmp_path, "c-00000000000000c2", 10)
        with pytest.raises(ConnectionLost, match="handshake"):
            mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    assert [(a.ok, a.retryable) for a in seen] == [(False, True), (False, True)]


def test_changed_host_key_is_refused_at_once_and_not_retried(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    pinned = rotated(server)
    drop = make_drop(tmp_path, "c-00000000000000d1", 1000)
    seen: list[Attempt] = []
    sleeps = Sleeps()
    mover = SftpTransport(connection(server), [pinned], sleep=sleeps)
    with pytest.raises(HostKeyRejected, match="does not match the contract's pinned key"):
        mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    assert [(a.number, a.error, a.retryable) for a in seen] == [(1, "HostKeyRejected", False)]
    assert sleeps.waits == []
    assert inbox(server) == []


def test_refused_login_is_not_retried(server: PartnerSftpServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    conn = SftpConnection(server.host, server.port, server.username, stranger)
    seen: list[Attempt] = []
    mover = SftpTransport(conn, [server.host_public_key], sleep=Sleeps())
    drop = make_drop(tmp_path, "c-00000000000000d2", 10)
    with pytest.raises(TransferError, match="was refused") as caught:
        mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    assert not isinstance(caught.value, ConnectionLost)
    assert len(seen) == 1 and not seen[0].retryable


def test_full_disk_is_a_clear_error_and_leaves_nothing_behind(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    with tmpfs(server.root / "inbox" / "small", "size=2m,mode=0755"):
        drop = make_drop(tmp_path, "c-00000000000000e1", 6 * MB)
        seen: list[Attempt] = []
        with pytest.raises(TransferError, match="disk may be full") as caught:
            transport(server).deliver(drop, "inbox/small", drop.name, on_attempt=seen.append)
        message = str(caught.value)
        assert "partial upload was removed" in message
        assert "arrived with" not in message  # found by the write replies, not the size check
        assert not isinstance(caught.value, ConnectionLost)
        assert len(seen) == 1
        assert inbox(server, "inbox/small") == []


def test_read_only_folder_is_a_clear_error_and_not_retried(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    # Root ignores permission bits, and sshd runs as root here: a read-only mount binds anyone.
    with tmpfs(server.root / "inbox" / "frozen", "ro,size=1m"):
        drop = make_drop(tmp_path, "c-00000000000000e2", 1000)
        seen: list[Attempt] = []
        with pytest.raises(TransferError, match="read-only") as caught:
            transport(server).deliver(drop, "inbox/frozen", drop.name, on_attempt=seen.append)
        assert not isinstance(caught.value, ConnectionLost)
        assert len(seen) == 1
        assert inbox(server, "inbox/frozen") == []


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """Make a folder immutable (chattr +i binds root too), or skip saying why it cannot be."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here (needs root on ext4/xfs): {done.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_folder_the_server_may_not_write_is_permission_denied_and_not_retried(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    # chmod 0555 would not bind sshd running as root; an immutable folder does (EPERM).
    with immutable(server.root / FOLDER):
        drop = make_drop(tmp_path, "c-00000000000000e4", 1000)
        seen: list[Attempt] = []
        with pytest.raises(TransferError, match="permission denied in inbox/attendance"):
            transport(server).deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
        assert [(a.error, a.retryable) for a in seen] == [("TransferError", False)]
        assert inbox(server) == []


def test_missing_partner_folder_is_not_created(server: PartnerSftpServer, tmp_path: Path) -> None:
    drop = make_drop(tmp_path, "c-00000000000000e3", 10)
    with pytest.raises(TransferError, match="does not exist"):
        transport(server).deliver(drop, "inbox/typo", drop.name)
    assert not (server.root / "inbox" / "typo").exists()


def test_remove_expired_deletes_only_old_drops_of_ours(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    folder = server.root / FOLDER
    now = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)

    def drop_made(name: str, days_ago: int, contract: str = "c") -> None:
        (folder / name).mkdir()
        made = (now - dt.timedelta(days=days_ago)).isoformat(timespec="seconds")
        body = {"drop_id": name, "created_at": made, "contract": {"id": contract}}
        (folder / name / MANIFEST_NAME).write_text(json.dumps(body))
        (folder / name / "data.csv.age").write_bytes(b"x" * 10)

    drop_made("c-0000000000000001", 40)
    drop_made("c-0000000000000002", 10)
    drop_made("other-0000000000000003", 40, contract="other")
    (folder / "not-a-drop").mkdir()
    stale = folder / ".c-0000000000000004.partial"
    stale.mkdir()
    (stale / "data.csv.age").write_bytes(b"y")
    old = (now - dt.timedelta(days=40)).timestamp()
    os.utime(stale, (old, old))

    with transport(server).connect() as remote:
        removed = list(remove_expired(remote, FOLDER, now - dt.timedelta(days=30), contract_id="c"))
    assert removed == [".c-0000000000000004.partial", "c-0000000000000001"]
    assert inbox(server) == ["c-0000000000000002", "not-a-drop", "other-0000000000000003"]
    with pytest.raises(ValueError, match="time zone"):
        list(remove_expired(None, FOLDER, dt.datetime(2026, 1, 1)))  # type: ignore[arg-type]


# -- only modern SSH algorithms (issue 10, defect 12) ------------------------------------------

WEAK = ("cbc", "3des", "hmac-sha1", "hmac-md5", "ssh-rsa", "ssh-dss", "sha1")


def test_only_modern_algorithms_are_offered_and_a_real_login_still_works(
    server: PartnerSftpServer,
) -> None:
    """No CBC, 3DES, SHA-1 or MD5 in what paramiko proposes; OpenSSH still accepts us."""
    with transport(server).session() as sftp:
        channel = sftp.get_channel()
        assert channel is not None
        link = channel.get_transport()
        # What paramiko puts in its KEXINIT (and accepts from the server), after filtering.
        offered = [
            *link.preferred_ciphers,
            *link.preferred_macs,
            *link.preferred_kex,
            *link.preferred_keys,
            *link.preferred_pubkeys,
        ]
        assert offered and not [a for a in offered if any(w in a for w in WEAK)]
        assert link.preferred_ciphers[0] == "aes128-gcm@openssh.com"
        assert not [c for c in link.get_security_options().ciphers if "cbc" in c]
        assert link.remote_cipher in sftp_module.ALLOWED_ALGORITHMS["ciphers"]
        assert sftp.listdir(FOLDER) == []


def test_a_server_that_offers_only_weak_ciphers_is_refused(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    """A second real sshd on the same keys, limited to CBC/3DES and SHA-1: no handshake."""
    port = free_port()
    config = tmp_path / "weak_sshd_config"
    lines = server.config_path.read_text().splitlines()
    lines = [f"Port {port}" if line.startswith("Port ") else line for line in lines]
    lines += ["Ciphers aes128-cbc,aes256-cbc,3des-cbc", "MACs hmac-sha1,hmac-md5", ""]
    config.write_text("\n".join(lines))
    weak = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            assert weak.poll() is None, weak.stderr.read() if weak.stderr else ""
            threading.Event().wait(0.025)
        pinned = SftpConnection(server.host, port, server.username, server.client_key_path)
        weak_transport = SftpTransport(
            pinned, [server.host_public_key], attempts=1, sleep=Sleeps(), timeout=5
        )
        drop = make_drop(tmp_path, "c-00000000000000d1", 1000)
        with pytest.raises(ConnectionLost, match="handshake"):
            weak_transport.deliver(drop, FOLDER, drop.name)
    finally:
        weak.terminate()
        weak.wait(10)
    assert inbox(server) == []


# -- "already delivered" means this very drop (issue 10, defect 12) ----------------------------


def plant(server: PartnerSftpServer, drop: Path, change: str | None) -> Path:
    """A folder of the drop's name in the inbox: a copy of the drop, with one thing changed."""
    planted = server.root / FOLDER / drop.name
    planted.mkdir()
    for path in drop.iterdir():
        (planted / path.name).write_bytes(path.read_bytes())
    if change == "manifest":  # same drop_id (passed the old check), other content
        body = json.loads((drop / MANIFEST_NAME).read_text())
        body["created_at"] = "2000-01-01T00:00:00+00:00"
        (planted / MANIFEST_NAME).write_text(json.dumps(body))
    elif change == "payload":  # the exact manifest, a payload of the same size
        payload = planted / "data.csv.age"
        payload.write_bytes(os.urandom(payload.stat().st_size))
    elif change == "missing":
        (planted / SIGNATURE_NAME).unlink()
    return planted


@pytest.mark.parametrize("change", ["manifest", "payload", "missing"])
def test_a_planted_folder_of_the_drops_name_is_not_reported_delivered(
    server: PartnerSftpServer, tmp_path: Path, change: str
) -> None:
    """Someone who can write the inbox pre-creates the drop's folder: refused, not 'delivered'."""
    drop = make_drop(tmp_path, "c-00000000000000e1", 2 * MB + 5)
    planted = plant(server, drop, change)
    before = {p.name: digest(p) for p in planted.iterdir()}
    with pytest.raises(TransferError, match=r"refusing to report it delivered|not delivered"):
        transport(server, attempts=1).deliver(drop, FOLDER, drop.name)
    assert {p.name: digest(p) for p in planted.iterdir()} == before  # left for a person to see


def test_an_identical_drop_already_there_is_reported_delivered_once(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    """The legitimate case (a re-run after a lost reply): every file's SHA-256 matches."""
    drop = make_drop(tmp_path, "c-00000000000000e2", 2 * MB + 5)
    plant(server, drop, None)
    done = transport(server).deliver(drop, FOLDER, drop.name)
    assert done.already_delivered and inbox(server) == [drop.name]


def test_a_login_key_open_to_others_is_refused_at_once(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    """Like OpenSSH: a 0644 login key is a clear, non-retried error naming `chmod 600 PATH`."""
    server.client_key_path.chmod(0o644)
    try:
        drop = make_drop(tmp_path, "c-00000000000000f1", 1000)
        with pytest.raises(TransferError, match=f"chmod 600 {server.client_key_path}"):
            transport(server).deliver(drop, FOLDER, drop.name)
    finally:
        server.client_key_path.chmod(0o600)
    assert inbox(server) == []


# --- a connection opened ahead, while the drop is prepared ------------------------------------


def counting_connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection the transport opens, by address."""
    opened: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(
        address: tuple[str, int], *args: object, **kwargs: object
    ) -> socket.socket:
        opened.append(address)
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sftp_module.socket, "create_connection", create_connection)
    return opened


def test_a_delivery_takes_the_connection_opened_ahead(
    server: PartnerSftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = counting_connections(monkeypatch)
    drop = make_drop(tmp_path, "c-00000000000000e1", MB)
    mover = transport(server)
    with mover.warmed():
        ahead = mover._warm
        assert ahead is not None
        ahead.result(timeout=10)  # opened while the drop was being prepared
        done = mover.deliver(drop, FOLDER, drop.name)
    assert len(opened) == 1 and done.attempts == (Attempt(1, True),)
    assert inbox(server) == [drop.name]
    assert not ahead.result()[0].is_active()  # closed after the delivery


def test_a_connection_opened_ahead_and_not_taken_is_closed(
    server: PartnerSftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run refused before its delivery leaves no session open on the partner's server."""
    opened = counting_connections(monkeypatch)
    mover = transport(server)
    with pytest.raises(RuntimeError, match="refused while preparing"), mover.warmed():
        ahead = mover._warm
        assert ahead is not None
        raise RuntimeError("refused while preparing")
    assert len(opened) == 1 and not ahead.result(timeout=10)[0].is_active()
    assert mover._warm is None


@pytest.mark.parametrize("how", ["dropped", "garbled"])
def test_a_connection_opened_ahead_that_died_is_replaced_without_a_failed_attempt(
    server: PartnerSftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Dropped while idle (a NAT, a restart), or answering its check with something that is
    not an answer: closed, and another opened, with no failed attempt."""
    opened = counting_connections(monkeypatch)
    drop = make_drop(tmp_path, "c-00000000000000e2", 1000)
    mover = transport(server)
    seen: list[Attempt] = []
    with mover.warmed():
        assert mover._warm is not None
        early, client = mover._warm.result(timeout=10)
        if how == "dropped":
            early.close()
        else:

            def garbled(path: str) -> None:
                raise sftp_module.SFTPError("Expected attributes")

            monkeypatch.setattr(client, "stat", garbled)
        done = mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    assert len(opened) == 2 and [a.ok for a in seen] == [True]
    assert done.attempts == (Attempt(1, True),) and inbox(server) == [drop.name]
    assert not early.is_active()


def test_a_server_away_while_the_drop_was_prepared_costs_no_attempt(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    """An old failure of the connection opened ahead is not the delivery's: it connects now."""
    drop = make_drop(tmp_path, "c-00000000000000e6", 1000)
    mover = transport(server)
    seen: list[Attempt] = []
    server.stop()
    with mover.warmed():
        assert mover._warm is not None
        with pytest.raises(ConnectionLost):
            mover._warm.result(timeout=10)
        server.start()
        done = mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    assert [a.ok for a in seen] == [True] and done.attempts == (Attempt(1, True),)
    assert inbox(server) == [drop.name]


def test_a_session_opened_ahead_that_answers_with_an_error_is_kept(
    server: PartnerSftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses `stat` on its root has still answered: no second connection."""
    opened = counting_connections(monkeypatch)
    drop = make_drop(tmp_path, "c-00000000000000e7", 1000)
    mover = transport(server)
    with mover.warmed():
        assert mover._warm is not None
        _, client = mover._warm.result(timeout=10)
        real = client.stat
        answers = iter([PermissionError("denied")])

        def stat(path: str) -> Any:
            for refusal in answers:
                raise refusal
            return real(path)

        monkeypatch.setattr(client, "stat", stat)
        done = mover.deliver(drop, FOLDER, drop.name)
    assert len(opened) == 1 and done.attempts == (Attempt(1, True),)
    assert inbox(server) == [drop.name]


def test_a_host_key_refused_ahead_refuses_the_delivery_though_the_next_would_pass(
    server: PartnerSftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interceptor that answers only the first connection, the one opened ahead, is met
    there: the delivery is refused as if it had met it itself, not sent over a second one."""
    impostor = PartnerSftpServer(tmp_path / "impostor", port=free_port()).start()
    real = socket.create_connection
    diverted: list[tuple[str, int]] = []

    def create_connection(
        address: tuple[str, int], *args: object, **kwargs: object
    ) -> socket.socket:
        if not diverted:
            diverted.append(address)
            address = (impostor.host, impostor.port)
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sftp_module.socket, "create_connection", create_connection)
    drop = make_drop(tmp_path, "c-00000000000000e4", 1000)
    seen: list[Attempt] = []
    mover = transport(server)
    try:
        with mover.warmed(), pytest.raises(HostKeyRejected, match="does not match"):
            mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    finally:
        impostor.stop()
    assert diverted and [(a.number, a.error) for a in seen] == [(1, "HostKeyRejected")]
    assert inbox(server) == []


def test_a_host_key_refused_ahead_by_a_run_refused_anyway_is_logged(
    server: PartnerSftpServer, caplog: pytest.LogCaptureFixture
) -> None:
    mover = transport(server)
    mover.host_keys = (rotated_key(server),)
    with caplog.at_level("WARNING"), pytest.raises(RuntimeError), mover.warmed():
        raise RuntimeError("refused while preparing")
    assert "offered a host key the contract does not pin" in caplog.text


def test_the_pins_are_checked_again_when_the_session_opened_ahead_is_taken(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    """A pin withdrawn while the drop was prepared applies to this run's delivery."""
    drop = make_drop(tmp_path, "c-00000000000000e5", 1000)
    mover = transport(server)
    with mover.warmed():
        assert mover._warm is not None
        mover._warm.result(timeout=10)
        mover.host_keys = (rotated_key(server),)
        with pytest.raises(HostKeyRejected):
            mover.deliver(drop, FOLDER, drop.name)
    assert inbox(server) == []


def test_a_changed_host_key_met_ahead_is_still_refused_by_the_delivery(
    server: PartnerSftpServer, tmp_path: Path
) -> None:
    """Opening ahead reports nothing itself: the delivery's own connection meets the changed
    key and refuses it as before, once."""
    pinned = rotated(server)
    drop = make_drop(tmp_path, "c-00000000000000e3", 1000)
    seen: list[Attempt] = []
    mover = SftpTransport(connection(server), [pinned], sleep=Sleeps())
    with mover.warmed():
        assert mover._warm is not None
        with pytest.raises(HostKeyRejected):
            mover._warm.result(timeout=10)
        with pytest.raises(HostKeyRejected, match="does not match the contract's pinned key"):
            mover.deliver(drop, FOLDER, drop.name, on_attempt=seen.append)
    assert [(a.number, a.error) for a in seen] == [(1, "HostKeyRejected")]
    assert inbox(server) == []
