"""The secure data exchange gateway: lawful, contract-governed bulk sharing of personal data.

The public API is what this module exports; everything else is internal and may change.
Importing it is cheap: the errors and settings are loaded at once, everything else (pyarrow,
SQLAlchemy, paramiko ...) only when first used (PEP 562), so the command starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange.errors import (
    ConnectionLost,
    ContractError,
    CryptoError,
    DropRejected,
    ExchangeError,
    GuardRefused,
    HostKeyRejected,
    InvalidRequest,
    LedgerError,
    NotRunnable,
    Problem,
    QualityFailed,
    Refused,
    Retryable,
    SourceError,
    TransferError,
)
from exchange.lazy import lazy_names
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.audit import Entry, Ledger, Verification
    from exchange.contract import Contract, load_contract
    from exchange.gateway import Gateway, Prepared, RunResult
    from exchange.receive import Received, receive
    from exchange.secrets import LocalSecrets, SecretMissing, SecretStore, SftpConnection

__version__ = "0.1.0"

# The heavy part of the public API: name -> the module that defines it, imported on first use.
_LAZY = {
    "Entry": "exchange.audit",
    "Ledger": "exchange.audit",
    "Verification": "exchange.audit",
    "Contract": "exchange.contract",
    "load_contract": "exchange.contract",
    "Gateway": "exchange.gateway",
    "Prepared": "exchange.gateway",
    "RunResult": "exchange.gateway",
    "Received": "exchange.receive",
    "receive": "exchange.receive",
    "LocalSecrets": "exchange.secrets",
    "SecretMissing": "exchange.secrets",
    "SecretStore": "exchange.secrets",
    "SftpConnection": "exchange.secrets",
}

__all__ = [
    "ConnectionLost",
    "Contract",
    "ContractError",
    "CryptoError",
    "DropRejected",
    "Entry",
    "ExchangeError",
    "Gateway",
    "GuardRefused",
    "HostKeyRejected",
    "InvalidRequest",
    "Ledger",
    "LedgerError",
    "LocalSecrets",
    "NotRunnable",
    "Prepared",
    "Problem",
    "QualityFailed",
    "Received",
    "Refused",
    "Retryable",
    "RunResult",
    "SecretMissing",
    "SecretStore",
    "Settings",
    "SftpConnection",
    "SourceError",
    "TransferError",
    "Verification",
    "__version__",
    "load_contract",
    "receive",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
