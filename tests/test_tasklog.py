"""The gateway's task-log lines: text by default, JSON with the run and agreement on request."""

from __future__ import annotations

import json

import pytest

from exchange.errors import InvalidRequest
from exchange.settings import Settings
from exchange.tasklog import task_line


def test_text_is_the_line_as_written() -> None:
    line = task_line("text", event="prepared", run_id="r1", agreement="a", text="hello", rows=3)
    assert line == "hello"


def test_json_carries_the_run_and_agreement_on_every_line() -> None:
    line = task_line(
        "json", event="prepared", run_id="r1", agreement="a-b", text="exchange: done", rows=3
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "event": "prepared",
        "run_id": "r1",
        "agreement": "a-b",
        "message": "exchange: done",
        "rows": 3,
    }
    # A field cannot replace the line's own message.
    forged = task_line("json", event="e", run_id="r1", agreement="a", text="t", message="x")
    assert json.loads(forged)["message"] == "t"


@pytest.mark.parametrize(
    ("given", "expected"), [(None, "text"), ("json", "json"), ("JSON", "json")]
)
def test_the_setting(given: str | None, expected: str) -> None:
    env = {} if given is None else {"EXCHANGE_LOG_FORMAT": given}
    assert Settings.from_env(env).log_format == expected


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match="EXCHANGE_LOG_FORMAT must be one of text, json"):
        Settings.from_env({"EXCHANGE_LOG_FORMAT": "yaml"})
