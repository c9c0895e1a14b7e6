"""The transport interface: deliver a staged drop folder to the partner, whole or not at all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from exchange.transport.retry import Attempt


@dataclass(frozen=True)
class Delivery:
    """Where a drop landed, and how many tries it took."""

    remote_path: str
    files: tuple[str, ...]
    bytes: int
    already_delivered: bool = False
    attempts: tuple[Attempt, ...] = ()
    rename: str = ""  # how the drop was put in place: "posix-rename@openssh.com" or "rename"


class Transport(Protocol):
    """Moves a drop folder to the partner."""

    def deliver(
        self,
        drop: Path,
        folder: str,
        drop_id: str,
        *,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> Delivery:
        """Place the files of `drop` at `folder/drop_id`, atomically; idempotent per drop_id."""
        ...
