"""Secrets and connections: never in a contract, only looked up by name.

On the command line they come from a 0600 JSON file named by EXCHANGE_SECRETS::

    {"connections": {"early-help-sftp": {"host": "...", "port": 22, "username": "...",
                                          "key_file": "/path/id_ed25519",
                                          "known_hosts": "/path/known_hosts"}},
     "secrets": {"early-help-pseudonym-key": "<base64 of at least 32 random bytes>"}}

or from the environment: EXCHANGE_SECRET_<NAME> (base64) and EXCHANGE_CONN_<NAME> (a JSON object
as above), where NAME is the secret's name upper-cased with '-' as '_' (read by
`exchange.settings`, like every EXCHANGE_* variable). In Airflow the DAGs use Airflow connections
and variables instead (dags/airflow_secrets.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from exchange.errors import ExchangeError
from exchange.files import replace_private
from exchange.settings import Settings


class SecretMissing(ExchangeError):
    """A named secret or connection is not configured (the name is given, never a value)."""


@dataclass(frozen=True)
class SftpConnection:
    """How to reach and log in to a partner's SFTP server."""

    host: str
    port: int
    username: str
    key_file: Path
    known_hosts: Path | None = None  # optional extra pin; the contract's hostKeys always apply
    key_passphrase: str | None = field(default=None, repr=False)

    @classmethod
    def from_mapping(cls, name: str, value: Mapping[str, Any]) -> SftpConnection:
        """Build from a JSON-like mapping; SecretMissing names what is absent."""
        missing = [k for k in ("host", "username", "key_file") if not value.get(k)]
        if missing:
            raise SecretMissing(f"connection {name!r} lacks: {', '.join(missing)}")
        return cls(
            host=str(value["host"]),
            port=int(value.get("port") or 22),
            username=str(value["username"]),
            key_file=Path(value["key_file"]),
            known_hosts=Path(value["known_hosts"]) if value.get("known_hosts") else None,
            key_passphrase=value.get("key_passphrase"),
        )


@dataclass(frozen=True)
class DatabaseConnection:
    """How to read a source database: a URL without the password, and the password apart."""

    url: str
    password: str | None = field(default=None, repr=False)
    query: str | None = None  # a named query to read instead of the dataset's table


class SecretStore(Protocol):
    """Looks up connections and secret keys by name."""

    def database_connection(self, name: str) -> DatabaseConnection:
        """The named database connection."""
        ...

    def sftp_connection(self, name: str) -> SftpConnection:
        """The named SFTP connection."""
        ...

    def secret(self, name: str) -> bytes:
        """The named secret's bytes."""
        ...


def decode_secret(name: str, text: str) -> bytes:
    """Decode a base64 secret; the error names the secret, never its value."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretMissing(f"secret {name!r} is not valid base64") from None


class LocalSecrets:
    """Secrets from the environment, then from a 0600 JSON file."""

    def __init__(self, file: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self._env = Settings.from_env().secret_env() if env is None else env
        self._file = file
        self._data: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalSecrets:
        """The store the settings name: their secrets file and EXCHANGE_SECRET_/CONN_ variables."""
        return cls(settings.secrets_file, settings.secret_env())

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            self._data = {}
            if self._file is not None:
                try:
                    mode = self._file.stat().st_mode
                    text = self._file.read_text("utf-8")
                except OSError as exc:
                    raise SecretMissing(
                        f"secrets file {self._file} cannot be read: {exc.strerror}"
                    ) from None
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise SecretMissing(
                        f"secrets file {self._file.name} is readable by others: chmod 600 it"
                    )
                try:
                    self._data = json.loads(text)
                except ValueError:
                    raise SecretMissing(f"secrets file {self._file.name} is not JSON") from None
        return self._data

    @staticmethod
    def _env_name(prefix: str, name: str) -> str:
        return prefix + name.upper().replace("-", "_")

    def database_connection(self, name: str) -> DatabaseConnection:
        """The named database connection ({"url": ..., "password": ...})."""
        raw = self._env.get(self._env_name("EXCHANGE_CONN_", name))
        value = json.loads(raw) if raw else self._load().get("connections", {}).get(name)
        if not value or not value.get("url"):
            raise SecretMissing(f"no database connection named {name!r} is configured")
        return DatabaseConnection(str(value["url"]), value.get("password"), value.get("query"))

    def sftp_connection(self, name: str) -> SftpConnection:
        """The named SFTP connection."""
        raw = self._env.get(self._env_name("EXCHANGE_CONN_", name))
        value = json.loads(raw) if raw else self._load().get("connections", {}).get(name)
        if not value:
            raise SecretMissing(f"no SFTP connection named {name!r} is configured")
        return SftpConnection.from_mapping(name, value)

    def rotate(self, name: str, new: bytes) -> bytes | None:
        """Replace a secret in the secrets file (atomically, 0600); return the old value."""
        if self._file is None:
            raise SecretMissing("rotation needs a secrets file (EXCHANGE_SECRETS)")
        if self._env.get(self._env_name("EXCHANGE_SECRET_", name)):
            raise SecretMissing(f"secret {name!r} is set in the environment: rotate it there")
        data = self._load()
        old = data.setdefault("secrets", {}).get(name)
        data["secrets"][name] = base64.b64encode(new).decode()
        # A fresh 0600 temp file in the same folder, renamed over the old: never 0644, never
        # half-written, never through a link planted at the file or at a fixed temp name.
        replace_private(self._file, json.dumps(data, indent=2).encode())
        return decode_secret(name, old) if old else None

    def secret(self, name: str) -> bytes:
        """The named secret's bytes."""
        raw = self._env.get(self._env_name("EXCHANGE_SECRET_", name))
        raw = raw or self._load().get("secrets", {}).get(name)
        if not raw:
            raise SecretMissing(f"no secret named {name!r} is configured")
        return decode_secret(name, raw)
