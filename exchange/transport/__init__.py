"""Transports to partners' servers: one interface, one module per backend, a registry by type.

The names are imported on first use (PEP 562): reaching `exchange.transport.base` (as the
partner's `receive` does, through acknowledgements) does not load paramiko.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange.lazy import lazy_names

if TYPE_CHECKING:
    from exchange.transport.base import Delivery, Remote, RemoteEntry, Transport
    from exchange.transport.registry import TRANSPORTS, open_transport
    from exchange.transport.sftp import SftpTransport

# Public name -> the module that defines it.
_LAZY = {
    "TRANSPORTS": "exchange.transport.registry",
    "Delivery": "exchange.transport.base",
    "Remote": "exchange.transport.base",
    "RemoteEntry": "exchange.transport.base",
    "SftpTransport": "exchange.transport.sftp",
    "Transport": "exchange.transport.base",
    "open_transport": "exchange.transport.registry",
}

__all__ = [
    "TRANSPORTS",
    "Delivery",
    "Remote",
    "RemoteEntry",
    "SftpTransport",
    "Transport",
    "open_transport",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
