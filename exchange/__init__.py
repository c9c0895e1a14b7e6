"""The secure data exchange gateway: lawful, contract-governed bulk sharing of personal data.

The public API is what this module exports; everything else is internal and may change.
"""

from exchange.audit import Entry, Ledger, Verification
from exchange.contract import Contract, load_contract
from exchange.errors import (
    ConnectionLost,
    ContractError,
    CryptoError,
    DropRejected,
    ExchangeError,
    GuardRefused,
    HostKeyRejected,
    LedgerError,
    NotRunnable,
    Problem,
    QualityFailed,
    Refused,
    Retryable,
    SourceError,
    TransferError,
)
from exchange.gateway import Gateway, Prepared, RunResult
from exchange.receive import Received, receive
from exchange.secrets import LocalSecrets, SecretMissing, SecretStore, SftpConnection
from exchange.settings import Settings

__version__ = "0.1.0"

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
