"""Transports to partners' servers: one interface, one module per backend, a registry by type."""

from exchange.transport.base import Delivery, Remote, RemoteEntry, Transport
from exchange.transport.registry import TRANSPORTS, open_transport
from exchange.transport.sftp import SftpTransport

__all__ = [
    "TRANSPORTS",
    "Delivery",
    "Remote",
    "RemoteEntry",
    "SftpTransport",
    "Transport",
    "open_transport",
]
