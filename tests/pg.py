"""A private, throw-away PostgreSQL server for tests (PostgreSQL source, audit ledger).

Use the session fixture `postgres` (add ``from pg import postgres`` to conftest.py) or the class::

    with PrivatePostgres(tmp_dir) as server:
        engine = sqlalchemy.create_engine(server.url())

The server listens on 127.0.0.1 only, on a free port, with its Unix socket in its own folder.
The superuser `postgres` logs in without a password (trust) from this host only; every other
role needs its password (scram-sha-256), so tests can exercise real password checks.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["PostgresUnavailable", "PrivatePostgres", "postgres"]

OS_USER = "postgres"
SUPERUSER = "postgres"
DATABASE = "exchange_test"
START_TIMEOUT = 30
PORT_ATTEMPTS = 5
LOG_TAIL_LINES = 20
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_NEEDED = ("initdb", "pg_ctl", "pg_isready", "postgres", "createdb", "psql")

# Only the superuser is trusted, and only from this host; any other role must give a password.
_PG_HBA = """\
local   all   postgres                   trust
host    all   postgres    127.0.0.1/32   trust
local   all   all                        scram-sha-256
host    all   all         127.0.0.1/32   scram-sha-256
"""

# Durability is pointless for a throw-away test server and fsync makes start-up slow.
_SETTINGS = """
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
shared_buffers = 32MB
logging_collector = off
"""


class PostgresUnavailable(RuntimeError):
    """The private PostgreSQL server could not be set up or started."""


def bin_dir() -> Path | None:
    """The folder holding the PostgreSQL server binaries, or None.

    PG_BIN_DIR wins; then the newest Debian /usr/lib/postgresql/<major>/bin; then initdb on PATH.
    """
    override = os.environ.get("PG_BIN_DIR")
    if override:
        return Path(override)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_root() -> bool:
    return os.geteuid() == 0


class PrivatePostgres:
    """A PostgreSQL cluster in `base_dir`, started and stopped by this object."""

    host = "127.0.0.1"

    def __init__(self, base_dir: Path, *, database: str = DATABASE) -> None:
        """Prepare paths under base_dir; nothing runs until start()."""
        self.base_dir = Path(base_dir).resolve()
        if "'" in str(self.base_dir) or "\\" in str(self.base_dir):
            raise ValueError(f"base_dir {self.base_dir} must not contain a quote or backslash")
        if not _NAME.fullmatch(database):
            raise ValueError(f"database name {database!r} must match {_NAME.pattern}")
        self.database = database
        self.superuser = SUPERUSER
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_path = self.base_dir / "postgres.log"
        self.port = 0
        self._bin = bin_dir()
        self._running = False

    # -- availability ------------------------------------------------------------------------

    @classmethod
    def why_unavailable(cls) -> str | None:
        """Why a private server cannot run here, or None if it can."""
        folder = bin_dir()
        if folder is None:
            return "PostgreSQL server binaries not found (set PG_BIN_DIR or install postgresql)"
        missing = [name for name in _NEEDED if not (folder / name).is_file()]
        if missing:
            return f"PostgreSQL binaries missing from {folder}: {', '.join(missing)}"
        if _is_root():
            # The server refuses to run as root.
            try:
                pwd.getpwnam(OS_USER)
            except KeyError:
                return f"running as root and there is no {OS_USER!r} OS user to run PostgreSQL"
        return None

    @classmethod
    def available(cls) -> bool:
        """Whether the server binaries (and, as root, the postgres OS user) exist."""
        return cls.why_unavailable() is None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> PrivatePostgres:
        """Create the cluster (once), start it on a free port, wait for it, create the database."""
        if self._running:
            return self
        reason = self.why_unavailable()
        if reason:
            raise PostgresUnavailable(reason)
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = _free_port()
            if self._pg_ctl_start():
                break
            if attempt == PORT_ATTEMPTS or "already in use" not in self._log_tail():
                raise PostgresUnavailable(
                    f"PostgreSQL did not start on {self.host}:{self.port}\n{self._log_tail()}"
                )
        self._running = True
        atexit.register(self.stop)
        self._wait_ready()
        self._create_database()
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended); safe when not running."""
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        self._run(
            [self._tool("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"],
            as_postgres=True,
            check=False,
        )

    def __enter__(self) -> PrivatePostgres:
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

    @property
    def is_running(self) -> bool:
        """Whether this object started the server and has not stopped it."""
        return self._running

    # -- connecting --------------------------------------------------------------------------

    def url(
        self,
        driver: str | None = "psycopg",
        *,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
    ) -> str:
        """A SQLAlchemy URL, e.g. postgresql+psycopg://postgres@127.0.0.1:PORT/exchange_test.

        driver=None gives a plain libpq URL (postgresql://...), usable by psql and psycopg.
        """
        from urllib.parse import quote

        scheme = f"postgresql+{driver}" if driver else "postgresql"
        login = quote(user or self.superuser, safe="")
        if password is not None:
            login += ":" + quote(password, safe="")
        return f"{scheme}://{login}@{self.host}:{self.port}/{database or self.database}"

    def psql(self, sql: str, *, database: str | None = None) -> str:
        """Run SQL as the superuser with psql (stops at the first error); return its output."""
        result = self._run(
            [
                self._tool("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                database or self.database,
                "-c",
                sql,
            ],
            as_postgres=False,
        )
        return result.stdout

    # -- internals ---------------------------------------------------------------------------

    def _tool(self, name: str) -> str:
        assert self._bin is not None
        return str(self._bin / name)

    def _run(
        self, argv: Sequence[str], *, as_postgres: bool, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool, as the postgres OS user when we are root."""
        command = list(argv)
        if as_postgres and _is_root():
            if shutil.which("runuser"):
                command = ["runuser", "-u", OS_USER, "--", *command]
            else:
                command = ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(command)]
        result = subprocess.run(
            command,
            cwd=self.base_dir,  # the postgres user may not be able to enter our cwd
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 10,
            check=False,
            env={**os.environ, "LC_ALL": "C", "PGCONNECT_TIMEOUT": "5"},
        )
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"{Path(argv[0]).name} failed with status {result.returncode}\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _prepare_dirs(self) -> None:
        """Create the folders; as root, hand them to the postgres user, who must reach them."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_path.touch(mode=0o600, exist_ok=True)
        if not _is_root():
            return
        owner = pwd.getpwnam(OS_USER)
        for path in (self.base_dir, self.socket_dir, self.data_dir, self.log_path):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        # Owning the folders is not enough: every parent must be searchable by that user too.
        probe = self._run(["test", "-w", str(self.base_dir)], as_postgres=True, check=False)
        if probe.returncode != 0:
            raise PostgresUnavailable(
                f"the {OS_USER!r} OS user cannot reach {self.base_dir}: a parent folder is "
                "not searchable by others (use a folder under /tmp made with tempfile.mkdtemp)"
            )

    def _initdb(self) -> None:
        self._run(
            [
                self._tool("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--auth=trust",  # replaced by our own pg_hba.conf below
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            as_postgres=True,
        )
        settings = _SETTINGS.format(socket_dir=self.socket_dir)
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(settings)
        (self.data_dir / "pg_hba.conf").write_text(_PG_HBA, encoding="utf-8")

    def _pg_ctl_start(self) -> bool:
        """Start once on self.port; False if the server did not come up."""
        result = self._run(
            [
                self._tool("pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                f"-p {self.port}",
                "-w",
                "-t",
                str(START_TIMEOUT),
            ],
            as_postgres=True,
            check=False,
        )
        return result.returncode == 0

    def _wait_ready(self) -> None:
        ready = self._run(
            [
                self._tool("pg_isready"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-t",
                str(START_TIMEOUT),
            ],
            as_postgres=False,
            check=False,
        )
        if ready.returncode != 0:
            self.stop()
            raise PostgresUnavailable(
                f"PostgreSQL on {self.host}:{self.port} is not ready\n{self._log_tail()}"
            )

    def _create_database(self) -> None:
        created = self._run(
            [
                self._tool("createdb"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                self.database,
            ],
            as_postgres=False,
            check=False,
        )
        # A restarted cluster keeps the database it made the first time.
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise PostgresUnavailable(f"createdb {self.database} failed\n{created.stderr}")

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text("utf-8", "replace").strip().splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        body = "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)"
        return f"--- tail of {self.log_path} ---\n{body}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    """One private PostgreSQL server for the whole test session; skipped where it cannot run."""
    reason = PrivatePostgres.why_unavailable()
    if reason:
        pytest.skip(reason)
    # Not pytest's tmp_path: that lives under a 0700 folder the postgres OS user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="exchange-test-pg-"))
    try:
        with PrivatePostgres(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)
