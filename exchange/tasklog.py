"""The gateway's one line per task in a scheduler's task log: text for people, or JSON for a log
platform, carrying the run and agreement ids on every line. Ids and counts only, never a value
from a row (the callers pass nothing else)."""

from __future__ import annotations

import json
from typing import Any


def task_line(
    log_format: str, *, event: str, run_id: str, agreement: str, text: str, **fields: Any
) -> str:
    """`text`, or with `log_format` "json" one JSON object: event, run_id, agreement, message
    and the given fields (ids and counts)."""
    if log_format != "json":
        return text
    record = {"event": event, "run_id": run_id, "agreement": agreement, "message": text}
    return json.dumps({**fields, **record}, sort_keys=True, default=str)
