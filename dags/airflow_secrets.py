"""Connections and secrets from Airflow: the Airflow-side implementation of SecretStore.

A contract's `sftpConnection` names an Airflow connection (with '-' written as '_'): host, port,
login, and in its extra `key_file`, `known_hosts` and optionally `key_passphrase`. Its
`pseudonymisationKey` names an Airflow variable holding the key in base64.
"""

from __future__ import annotations

from airflow.sdk import Connection, Variable
from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

from exchange.secrets import DatabaseConnection, SecretMissing, SftpConnection, decode_secret


def _airflow_id(name: str) -> str:
    return name.replace("-", "_")


class AirflowSecrets:
    """Looks secrets up in Airflow's connections and variables."""

    def sftp_connection(self, name: str) -> SftpConnection:
        """The named SFTP connection."""
        try:
            conn = Connection.get(_airflow_id(name))
        except (AirflowNotFoundException, AirflowRuntimeError) as exc:
            raise SecretMissing(f"no Airflow connection {_airflow_id(name)!r}") from exc
        extra = conn.extra_dejson
        return SftpConnection.from_mapping(
            name,
            {
                "host": conn.host,
                "port": conn.port,
                "username": conn.login,
                "key_file": extra.get("key_file"),
                "known_hosts": extra.get("known_hosts"),
                "key_passphrase": extra.get("key_passphrase") or conn.password,
            },
        )

    def database_connection(self, name: str) -> DatabaseConnection:
        """The named PostgreSQL connection (host, port, login, schema as the database)."""
        try:
            conn = Connection.get(_airflow_id(name))
        except (AirflowNotFoundException, AirflowRuntimeError) as exc:
            raise SecretMissing(f"no Airflow connection {_airflow_id(name)!r}") from exc
        url = f"postgresql://{conn.login}@{conn.host}:{conn.port or 5432}/{conn.schema or ''}"
        return DatabaseConnection(url, conn.password)

    def secret(self, name: str) -> bytes:
        """The named secret from an Airflow variable (base64)."""
        value = Variable.get(_airflow_id(name), default=None)
        if not value:
            raise SecretMissing(f"no Airflow variable {_airflow_id(name)!r}")
        return decode_secret(name, value)
