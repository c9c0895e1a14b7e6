"""Transports by the contract's server type: a new backend is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from exchange.errors import NotRunnable

if TYPE_CHECKING:
    from exchange.contract.model import Endpoint
    from exchange.secrets import SecretStore
    from exchange.transport.base import Transport

# How to open a transport to an endpoint, its credentials taken from the secrets store.
TransportFactory = Callable[["Endpoint", "SecretStore"], "Transport"]


def _sftp(endpoint: Endpoint, secrets: SecretStore) -> Transport:
    from exchange.transport.sftp import SftpTransport  # paramiko only once a partner is dialled

    return SftpTransport(secrets.sftp_connection(endpoint.connection), endpoint.host_keys)


TRANSPORTS: Mapping[str, TransportFactory] = {"sftp": _sftp}


def server_type(endpoint: Endpoint) -> str:
    """The contract's `servers[].type` for the recipient's endpoint."""
    return endpoint.type


def open_transport(
    endpoint: Endpoint, secrets: SecretStore, registry: Mapping[str, TransportFactory] = TRANSPORTS
) -> Transport:
    """The transport for the endpoint's server type. Raises NotRunnable for an unknown type."""
    kind = server_type(endpoint)
    factory = registry.get(kind)
    if factory is None:
        raise NotRunnable(f"no transport for server type {kind!r}", reason="unknown-server-type")
    return factory(endpoint, secrets)
