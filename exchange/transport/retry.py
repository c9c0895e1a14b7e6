"""Retries with exponential backoff and full jitter, for transient faults only.

A fault is transient when its exception carries the `Retryable` marker (ConnectionLost: refused,
dropped, timed out). Everything else (a refused host key, a refused login, a full disk, a policy
refusal) is raised at once: trying again would not help, and for a host key it would hide a
security event. The clock and the randomness are parameters, so tests need not wait or guess.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from exchange.errors import ExchangeError, Retryable

T = TypeVar("T")

DEFAULT_ATTEMPTS = 4
DEFAULT_BASE = 2.0  # seconds: the first wait is at most this
DEFAULT_CAP = 30.0  # seconds: no single wait is longer


@dataclass(frozen=True)
class Attempt:
    """The outcome of one try: ids, counts and error names only, ready for the audit ledger."""

    number: int
    ok: bool
    error: str | None = None
    message: str | None = None
    retryable: bool = False
    wait: float = 0.0  # seconds slept before the next attempt; 0.0 when none follows

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "attempt": self.number,
            "ok": self.ok,
            "error": self.error,
            "message": self.message,
            "retryable": self.retryable,
            "wait_seconds": round(self.wait, 3),
        }


def is_retryable(exc: BaseException) -> bool:
    """Whether the fault is transient (marked Retryable)."""
    return isinstance(exc, Retryable)


def backoff(number: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Full jitter: a uniform wait in [0, min(cap, base * 2**(number-1)))."""
    return rng() * min(cap, base * 2 ** (number - 1))


def with_retries(
    fn: Callable[[], T],
    attempts: int = DEFAULT_ATTEMPTS,
    base: float = DEFAULT_BASE,
    cap: float = DEFAULT_CAP,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    *,
    on_attempt: Callable[[Attempt], None] | None = None,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """Call `fn` until it succeeds, retrying transient faults; raises the last error unchanged.

    `on_attempt` is told of every attempt (failed or not) before any wait, so a crash during the
    wait still leaves the attempt on record.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for number in range(1, attempts + 1):
        try:
            result = fn()
        except Exception as exc:
            transient = retryable(exc)
            last = number == attempts or not transient
            wait = 0.0 if last else backoff(number, base, cap, rng)
            if on_attempt is not None:
                # Only the gateway's own messages are safe to record; another's may hold a value.
                message = str(exc) if isinstance(exc, ExchangeError) else None
                on_attempt(Attempt(number, False, type(exc).__name__, message, transient, wait))
            if last:
                raise
            sleep(wait)
        else:
            if on_attempt is not None:
                on_attempt(Attempt(number, True))
            return result
    raise AssertionError("unreachable")


def with_attempts(
    fn: Callable[[], T],
    policy: RetryPolicy,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> tuple[T, tuple[Attempt, ...]]:
    """`with_retries` under `policy`, returning the result and every attempt made."""
    attempts: list[Attempt] = []

    def record(attempt: Attempt) -> None:
        attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)

    result = with_retries(
        fn, policy.attempts, policy.base, policy.cap, policy.sleep, policy.rng, on_attempt=record
    )
    return result, tuple(attempts)


@dataclass(frozen=True)
class RetryPolicy:
    """How a transport retries transient faults: tries, backoff, and injectable sleep and rng."""

    attempts: int = DEFAULT_ATTEMPTS
    base: float = DEFAULT_BASE
    cap: float = DEFAULT_CAP
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random
