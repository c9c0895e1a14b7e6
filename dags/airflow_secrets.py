"""Connections and secrets from Airflow: the Airflow-side implementation of SecretStore.

A contract's `sftpConnection` names an Airflow connection (with '-' written as '_'): host, port,
login, and in its extra `key_file`, `known_hosts` and optionally `key_passphrase`. A database
connection (`postgres:NAME`) is an Airflow connection too: host, port, login, password, schema
as the database, and in its extra optionally `sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
`exchange_tls` (see docs/operators.md) and a named `query`.

A secret (`pseudonymisationKey`, an objection list, the disclosure key) is read, base64, from:

1. the Airflow variable `<name>_secret` (any backend). Its name holds `secret`, one of the names
   Airflow treats as sensitive: the UI and the API show it as `***`, and task logs mask it;
2. or the environment secrets backend only, `AIRFLOW_VAR_<NAME>`: never shown in the UI.

A plain metastore variable `<name>` is refused: Airflow would show its value to every user who
can list variables. Every value read is also registered with Airflow's secrets masker (as text,
and each line of it, so an objection list's ids are masked one by one), whatever its name.
"""

from __future__ import annotations

import binascii
import os
from urllib.parse import quote, urlencode

from airflow.sdk import Connection, Variable
from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError
from airflow.sdk.log import mask_secret

from exchange.secrets import DatabaseConnection, SecretMissing, SftpConnection, decode_secret

SECRET_SUFFIX = "_secret"  # noqa: S105 - a suffix of variable names, not a secret
# Extra fields of a database connection passed on to the source URL (TLS, the override).
DATABASE_URL_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "exchange_tls")


def _airflow_id(name: str) -> str:
    return name.replace("-", "_")


def mask(value: str | None) -> None:
    """Register a secret with Airflow's masker: whole, stripped, and line by line.

    No `name` is given, so it is masked whatever the variable or field was called. Airflow
    skips values shorter than `[logging] min_length_masked_secret` (5 by default).
    """
    if not value:
        return
    mask_secret(value)
    mask_secret(value.strip())
    lines = [line.strip() for line in value.splitlines()]
    mask_secret([line for line in lines if line])


class AirflowSecrets:
    """Looks secrets up in Airflow's connections and variables (only masked ones)."""

    def sftp_connection(self, name: str) -> SftpConnection:
        """The named SFTP connection."""
        conn = self._connection(name)
        extra = conn.extra_dejson
        passphrase = extra.get("key_passphrase") or conn.password
        mask(passphrase)  # Airflow masks the extra as one string, not this field in it
        return SftpConnection.from_mapping(
            name,
            {
                "host": conn.host,
                "port": conn.port,
                "username": conn.login,
                "key_file": extra.get("key_file"),
                "known_hosts": extra.get("known_hosts"),
                "key_passphrase": passphrase,
            },
        )

    def database_connection(self, name: str) -> DatabaseConnection:
        """The named PostgreSQL connection (host, port, login, schema as the database)."""
        conn = self._connection(name)
        mask(conn.password)
        extra = conn.extra_dejson
        params = {k: str(extra[k]) for k in DATABASE_URL_EXTRAS if extra.get(k)}
        login = quote(conn.login or "", safe="")
        url = (
            f"postgresql://{login}@{conn.host or ''}:{conn.port or 5432}/"
            f"{quote(conn.schema or '', safe='')}"
        )
        if params:
            url += "?" + urlencode(params)
        query = extra.get("query")
        return DatabaseConnection(url, conn.password, str(query) if query else None)

    def secret(self, name: str) -> bytes:
        """The named secret (base64) from `<name>_secret` or the environment; masked."""
        key = _airflow_id(name)
        value = Variable.get(key + SECRET_SUFFIX, default=None)
        if value is None:
            # Airflow's environment backend, read by its own rule; not visible in the UI.
            value = os.environ.get(f"AIRFLOW_VAR_{key.upper()}")
        if value is None:
            plain = Variable.get(key, default=None)
            if plain is not None:
                mask(plain)
                raise SecretMissing(
                    f"Airflow variable {key!r} is not read: its value is shown in the Airflow "
                    f"UI; store it as {key + SECRET_SUFFIX!r} (masked) or in a secrets backend"
                )
            raise SecretMissing(
                f"no Airflow variable {key + SECRET_SUFFIX!r} (or AIRFLOW_VAR_{key.upper()})"
            )
        mask(value)
        data = decode_secret(name, value)
        try:
            mask(data.decode("utf-8"))  # an objection list: its ids, line by line
        except UnicodeDecodeError:
            mask(binascii.hexlify(data).decode())  # a key: in the hex form it may be printed in
        return data

    @staticmethod
    def _connection(name: str) -> Connection:
        try:
            return Connection.get(_airflow_id(name))
        except (AirflowNotFoundException, AirflowRuntimeError) as exc:
            raise SecretMissing(f"no Airflow connection {_airflow_id(name)!r}") from exc
