"""The transport interface: deliver a staged drop folder to the partner, whole or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Delivery:
    """Where a drop landed."""

    remote_path: str
    files: tuple[str, ...]
    bytes: int
    already_delivered: bool = False


class Transport(Protocol):
    """Moves a drop folder to the partner."""

    def deliver(self, drop: Path, folder: str, drop_id: str) -> Delivery:
        """Place the files of `drop` at `folder/drop_id`, atomically; idempotent per drop_id."""
        ...
