"""Transports to partners' servers: one interface, one module per backend, a registry by type.

The names are imported on first use (PEP 562): reaching `exchange.transport.base` (as the
partner's `receive` does, through acknowledgements) does not load paramiko.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'exchange.transport' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted(set(globals()) | set(__all__))
