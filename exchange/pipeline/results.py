"""What the stages hand on: a staged drop (through XCom) and a whole run (to people and logs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Prepared:
    """A drop staged as ciphertext, ready to deliver: ids and counts only, never a path.

    It may travel through XCom, which Airflow users can edit, so delivery never trusts it: the
    staged drop is found from the run and verified afresh (`pipeline.staging.staged`)."""

    run_id: str
    drop_id: str
    contract_id: str
    rows_read: int
    rows_sent: int
    excluded: dict[str, int]
    payload_sha256: str
    objections_overridden: int = 0
    watermark: str | None = None  # the newest last-updated time read; advanced on delivery
    rows_unchanged: int = 0  # incremental: rows left out as unchanged since `since`
    since: str | None = None  # incremental: the last delivered run's watermark this run read from

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Prepared:
        """Inverse of to_dict."""
        return cls(**value)


@dataclass(frozen=True)
class RunResult:
    """What one exchange did, for people and logs (counts and ids only)."""

    run_id: str
    drop_id: str
    rows_read: int
    rows_sent: int
    excluded: dict[str, int]
    remote_path: str
    already_delivered: bool
    objections_overridden: int = 0
    rows_unchanged: int = 0  # incremental: rows left out as unchanged since `since`
    since: str | None = None  # incremental: the last delivered run's watermark
