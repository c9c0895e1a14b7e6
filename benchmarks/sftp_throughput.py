"""SFTP upload throughput: OpenSSH's `sftp` against paramiko variants and our SftpTransport.

Every variant puts the same random file to the same sandbox sshd over loopback, in the same
run, interleaved round by round so that background load hits them alike. Prints MB/s per
variant (median and each round) and the ratio of SftpTransport.deliver to OpenSSH.

    .venv/bin/python benchmarks/sftp_throughput.py [--mb 256] [--rounds 3] [--only NAME ...]

`--only SftpTransport.deliver` is the short run: OpenSSH (AES-GCM and its defaults) and ours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from exchange.sandbox import PartnerSftpServer
from exchange.secrets import SftpConnection
from exchange.transport.sftp import MAX_REQUEST, SMALL_REQUEST, SftpTransport

MB = 1 << 20
GCM = "aes128-gcm@openssh.com"
FOLDER = "bench"


@dataclass
class Setup:
    """The server, the file to send and the connection to use."""

    server: PartnerSftpServer
    source: Path
    connection: SftpConnection

    @property
    def remote_dir(self) -> Path:
        return self.server.root / FOLDER


def openssh(setup: Setup, *extra: str) -> float:
    """OpenSSH's own client, AES-128-GCM, default buffer and request count."""
    return _openssh(setup, "-o", f"Ciphers={GCM}", *extra)


def openssh_defaults(setup: Setup) -> float:
    """OpenSSH's own client as a user types it: its default cipher (chacha20-poly1305 first)."""
    return _openssh(setup)


def _openssh(setup: Setup, *extra: str) -> float:
    server = setup.server
    command = [
        "sftp",
        *extra,
        "-q",
        "-b",
        "-",
        "-i",
        str(server.client_key_path),
        "-o",
        f"UserKnownHostsFile={server.known_hosts_path}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-P",
        str(server.port),
        f"{server.username}@{server.host}",
    ]
    batch = f"put {setup.source} {FOLDER}/openssh.bin\n".encode()
    started = time.perf_counter()
    subprocess.run(command, input=batch, check=True, capture_output=True)
    return time.perf_counter() - started


def raw_client(
    setup: Setup, window: int = 2 * MB, packet: int = 32768
) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """A plain paramiko SFTP client (no subclass), AES-128-GCM first, host key checked."""
    server = setup.server
    sock = socket.create_connection((server.host, server.port))
    transport = paramiko.Transport(sock, default_window_size=window, default_max_packet_size=packet)
    options = transport.get_security_options()
    options.ciphers = (GCM, *(c for c in options.ciphers if c != GCM))
    transport.start_client()
    expected = server.host_public_key.split()[1]
    if transport.get_remote_server_key().get_base64() != expected:
        raise RuntimeError("sandbox host key mismatch")
    transport.auth_publickey(server.username, paramiko.PKey.from_path(server.client_key_path))
    client = paramiko.SFTPClient.from_transport(transport)
    assert client is not None
    return transport, client


def paramiko_putfo(window: int = 2 * MB) -> Callable[[Setup], float]:
    """paramiko's putfo: pipelined 32 KiB writes, drained every 100 requests."""

    def run(setup: Setup) -> float:
        transport, client = raw_client(setup, window)
        try:
            started = time.perf_counter()
            with setup.source.open("rb") as handle:
                client.putfo(handle, f"{FOLDER}/putfo.bin")
            return time.perf_counter() - started
        finally:
            transport.close()

    return run


def paramiko_loop(chunk: int, request: int = SMALL_REQUEST) -> Callable[[Setup], float]:
    """open('wb') + set_pipelined(True) + large writes; `request` bytes per SFTP write."""

    def run(setup: Setup) -> float:
        transport, client = raw_client(setup)
        try:
            started = time.perf_counter()
            with setup.source.open("rb") as handle, client.open(f"{FOLDER}/loop.bin", "wb") as out:
                out.set_pipelined(True)
                out.MAX_REQUEST_SIZE = request
                while data := handle.read(chunk):
                    out.write(data)
            client.stat(f"{FOLDER}/loop.bin")
            return time.perf_counter() - started
        finally:
            transport.close()

    return run


def session_upload(
    request: int, window: int = 16 * MB, packet: int = 32768
) -> Callable[[Setup], float]:
    """Our SftpSession.upload alone: bounded in-flight writes, every reply checked."""

    def run(setup: Setup) -> float:
        transport = SftpTransport(
            setup.connection,
            [setup.server.host_public_key],
            window_size=window,
            max_packet_size=packet,
        )
        with transport.session() as sftp:
            started = time.perf_counter()
            with setup.source.open("rb") as handle:
                sftp.upload(handle, f"{FOLDER}/upload.bin", request_size=request)
            return time.perf_counter() - started

    return run


def transport_deliver(setup: Setup) -> float:
    """The whole SftpTransport.deliver: connect, check key, log in, upload, check, rename."""
    drop = setup.source.parent / "drop"
    drop.mkdir(exist_ok=True)
    payload = drop / "data.csv.age"
    if not payload.exists():
        os.link(setup.source, payload)
    drop_id = f"bench-{os.urandom(8).hex()}"
    transport = SftpTransport(setup.connection, [setup.server.host_public_key], attempts=1)
    started = time.perf_counter()
    transport.deliver(drop, FOLDER, drop_id)
    return time.perf_counter() - started


def openssh_big_requests(setup: Setup) -> float:
    """OpenSSH's client with 255 KiB requests (-B), for comparison with ours (not the target)."""
    return openssh(setup, "-B", str(MAX_REQUEST))


VARIANTS: dict[str, Callable[[Setup], float]] = {
    "openssh-sftp": openssh,
    "openssh-sftp-defaults": openssh_defaults,
    "openssh-sftp-B255KiB": openssh_big_requests,
    "paramiko-putfo": paramiko_putfo(),
    "paramiko-putfo-win16M": paramiko_putfo(16 * MB),
    "paramiko-open-1MiB-writes": paramiko_loop(MB),
    "paramiko-open-4MiB-writes": paramiko_loop(4 * MB),
    "paramiko-open-1MiB-255KiB-requests": paramiko_loop(MB, MAX_REQUEST),
    "upload-32KiB-requests": session_upload(SMALL_REQUEST),
    "upload-255KiB-requests-win2M": session_upload(MAX_REQUEST, window=2 * MB),
    "upload-255KiB-requests-pkt256K": session_upload(MAX_REQUEST, packet=256 * 1024),
    "upload-255KiB-requests": session_upload(MAX_REQUEST),
    "SftpTransport.deliver": transport_deliver,
}


def random_file(path: Path, size: int) -> None:
    """Write `size` bytes of incompressible data."""
    with path.open("wb") as handle:
        for _ in range(size // MB):
            handle.write(os.urandom(MB))


def main() -> None:
    """Run every variant for a number of rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="variant names to run (openssh always runs)")
    args = parser.parse_args()
    names = list(VARIANTS)
    if args.only:
        always = ["openssh-sftp", "openssh-sftp-defaults"]
        names = [*always, *(n for n in args.only if n not in always)]
    root = Path(tempfile.mkdtemp(prefix="exchange-sftp-bench-"))
    server = PartnerSftpServer(root / "partner").start()
    try:
        (server.root / FOLDER).mkdir()
        source = root / "random.bin"
        random_file(source, args.mb * MB)
        setup = Setup(
            server,
            source,
            SftpConnection(
                server.host,
                server.port,
                server.username,
                server.client_key_path,
                server.known_hosts_path,
            ),
        )
        size = source.stat().st_size
        print(
            f"{args.mb} MiB random file, loopback sshd (OpenSSH), {os.cpu_count()} CPUs, "
            f"load average at start {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        rates: dict[str, list[float]] = {name: [] for name in names}
        for number in range(1, args.rounds + 1):
            for name in names:
                seconds = VARIANTS[name](setup)
                rates[name].append(size / seconds / 1e6)
                for leftover in setup.remote_dir.iterdir():
                    if leftover.is_dir():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink()
                print(f"  round {number} {name:38s} {rates[name][-1]:7.1f} MB/s", flush=True)
        baseline = statistics.median(rates["openssh-sftp"])
        print(f"\n{'variant':38s} {'median MB/s':>11s} {'x OpenSSH':>9s}   rounds")
        for name in names:
            median = statistics.median(rates[name])
            each = " ".join(f"{r:.0f}" for r in rates[name])
            print(f"{name:38s} {median:11.1f} {median / baseline:9.2f}   {each}")
        if "SftpTransport.deliver" in rates:
            ours_each = rates["SftpTransport.deliver"]
            for label, name in (("its defaults", "openssh-sftp-defaults"), (GCM, "openssh-sftp")):
                theirs_each = rates[name]
                ratio = statistics.median(ours_each) / statistics.median(theirs_each)
                paired = [o / b for o, b in zip(ours_each, theirs_each, strict=True)]
                print(
                    f"SftpTransport / OpenSSH sftp ({label}): {ratio:.2f}x of medians; per "
                    f"round {' '.join(f'{r:.2f}' for r in paired)} (issue 13 target >= 0.9)"
                )
        print(f"load average at end {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
