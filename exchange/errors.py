"""The gateway's exceptions, each with the `exchange` command's exit code for it.

    ExchangeError                                                            exit 1
    ├── ContractError          the contract file is invalid (lists every problem)  2
    ├── InvalidRequest         cannot be done as asked (a bad date, an untrusted key)  2
    ├── Refused                policy said no: never retried, always audited       3
    │   ├── NotRunnable        contract not approved / not active / past review
    │   ├── GuardRefused       outgoing schema is not exactly the contract's
    │   └── QualityFailed      quality rules failed; the output is quarantined
    ├── SourceError            the source cannot be read as the contract needs     2
    ├── CryptoError            a key or a signature is unusable or wrong           1
    ├── TransferError          delivery failed                                     4
    │   ├── HostKeyRejected    unknown or changed partner host key (security event)
    │   └── ConnectionLost     transient: refused, dropped, timed out (Retryable)
    ├── DropRejected           a received drop failed verification                 5
    └── LedgerError            the audit ledger does not verify                    5

A subclass inherits its parent's code. Messages carry ids, counts, field names and hashes, never
a value from a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


class ExchangeError(Exception):
    """Base class of every error the gateway raises on purpose."""

    exit_code: ClassVar[int] = 1  # the command's exit status when this ends it
    label: ClassVar[str] = "failed"  # the command's one-line "exchange: LABEL: message"


class Retryable:
    """Marker: the fault is transient and the same step may be tried again."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a contract, located by file and path inside it."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ContractError(ExchangeError):
    """The contract is invalid; `problems` lists every one found."""

    exit_code = 2
    label = "contract invalid"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = str(self.problems[0]) if self.problems else "invalid contract"
        more = len(self.problems) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))


class InvalidRequest(ExchangeError):
    """The request cannot be carried out as asked (bad input that is not a contract's)."""

    exit_code = 2
    label = "not done"


class Refused(ExchangeError):
    """A policy refusal: terminal, never retried, always audited."""

    exit_code = 3
    label = "refused"
    reason = "refused"


class NotRunnable(Refused):
    """The contract may not run now (not approved, changed, suspended, past review ...)."""

    def __init__(self, message: str, *, reason: str = "contract-not-runnable") -> None:
        self.reason = reason
        super().__init__(message)


class GuardRefused(Refused):
    """The outgoing columns or types are not exactly the contract's."""

    reason = "guard"

    def __init__(
        self, message: str, *, unexpected: Sequence[str] = (), missing: Sequence[str] = ()
    ):
        self.unexpected = tuple(unexpected)
        self.missing = tuple(missing)
        super().__init__(message)


class QualityFailed(Refused):
    """The contract's quality rules failed; nothing was sent."""

    reason = "quality"

    def __init__(self, message: str, *, failures: Sequence[str] = ()):
        self.failures = tuple(failures)
        super().__init__(message)


class SourceError(ExchangeError):
    """The source cannot be read as the contract requires."""

    exit_code = 2
    label = "source"


class CryptoError(ExchangeError):
    """A key, recipient or signature is unusable."""

    exit_code = 1
    label = "key"


class TransferError(ExchangeError):
    """Delivery to the partner failed."""

    exit_code = 4
    label = "delivery failed"


class HostKeyRejected(TransferError):
    """The partner's host key is unknown or has changed: a security event."""


class ConnectionLost(TransferError, Retryable):
    """The partner server refused, dropped or timed out the connection."""


class DropRejected(ExchangeError):
    """A received drop failed verification; nothing was written."""

    exit_code = 5
    label = "not verified"


class LedgerError(ExchangeError):
    """The audit ledger is broken at a named entry."""

    exit_code = 5
    label = "not verified"
