"""Hostile local edits to a partner's record of received drops (`.received.json` in `--out`).

The record says which drops were taken (replay protection) and which checkpoint of the
sender's log was witnessed. Whoever edits it can make `receive` refuse a drop, but never make
it write outside `--out`, take a drop without writing it (a drop skipped silently), or fail
with a traceback instead of one clear line. Every edit runs through the real command.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_receive_hostile import (
    DROP_ID,
    Parties,
    data_files,
    make_drop,
    make_parties,
    plaintext,
    snapshot,
    take,
)

from exchange import cli

receive = importlib.import_module("exchange.receive")

Edit = Callable[[dict[str, Any]], Any]
OUTPUT = f"{DROP_ID}.csv"


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    return make_parties(tmp_path / "keys")


@pytest.fixture
def witnessed(parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """A genuine record, as `receive` wrote it, without the drop itself (so it is new)."""
    drop = make_drop(parties, tmp_path / "first", rows=2)
    code, err = take(parties, drop, tmp_path / "first-out", capsys)
    assert code == cli.OK, err
    record = json.loads((tmp_path / "first-out" / receive.RECORD_NAME).read_text())
    del record["drops"][DROP_ID]
    assert record["witness"]  # the sender's checkpoint, held under its key id
    return record


def sender_of(record: dict[str, Any]) -> str:
    (sender,) = record["witness"]
    return str(sender)


def held(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The record with the witnessed checkpoint changed."""
    sender = sender_of(record)
    record["witness"][sender] = {**record["witness"][sender], **changes}
    return record


def inbox_and_out(parties: Parties, tmp_path: Path) -> tuple[Path, Path]:
    """A new drop of 3 rows, and an empty output folder to receive it into."""
    out = tmp_path / "out"
    out.mkdir()
    return make_drop(parties, tmp_path / "inbox", rows=3), out


ESCAPES = "\x1b[2J\x1b[31mreceived\nexchange: ok"

# name -> (edit of the genuine record, or the raw text to write; a phrase of the refusal,
# or None where the drop must be received as usual)
CASES: dict[str, tuple[Edit | str, str | None]] = {
    "a forged entry for the drop is a replay": (
        lambda r: r["drops"].__setitem__(DROP_ID, {"received_at": "2026-01-01T00:00:00+00:00"}),
        "already received at 2026-01-01T00:00:00+00:00: refusing a replay",
    ),
    "an entry that is not an object": (
        lambda r: r["drops"].__setitem__(DROP_ID, "taken"),
        "is damaged (the entry of drop",
    ),
    "an entry of another drop that is a list": (
        lambda r: r["drops"].__setitem__("other-drop", [1, 2]),
        "is damaged (the entry of drop",
    ),
    "a received time with terminal escapes": (
        lambda r: r["drops"].__setitem__(DROP_ID, {"received_at": ESCAPES}),
        "was already received (at a time the record does not state plainly): refusing a replay",
    ),
    "an entry that is not a drop id": (
        lambda r: r["drops"].__setitem__("../../" + DROP_ID, {"received_at": "x"}),
        "is damaged (an entry is not named by a drop id)",
    ),
    "other drops' outputs and folders outside --out": (
        lambda r: r["drops"].__setitem__(
            "other-drop",
            {"output": "../../escape.csv", "drop_folder": "/", "payload": "../x", "rows": 1},
        ),
        None,
    ),
    "drops is a list": (lambda r: r.__setitem__("drops", []), "is damaged"),
    "the record is a list": ("[]", "is damaged"),
    "the record is not JSON": ('{"drops": {', "is damaged"),
    "the record nests without end": ('{"drops":' + "[" * 100_000 + "]" * 100_000 + "}", "damaged"),
    "the witnessed checkpoint is a string": (
        lambda r: r["witness"].__setitem__(sender_of(r), "trusted"),
        "is damaged",
    ),
    "the witnessed drop id carries escapes": (
        lambda r: held(r, drop_id=ESCAPES, size=9, history=[]),
        "is damaged (the checkpoint witnessed of sender",
    ),
    "the witnessed log renamed": (
        lambda r: held(r, origin="elsewhere.example/log\n\x1b[2J"),
        "is not an extension of the one you witnessed",
    ),
    "the witnessed root changed": (
        lambda r: held(r, root="00" * 32),
        "the log is forked",
    ),
    "the witnessed size lowered to nothing": (
        lambda r: held(r, size=0, history=[]),
        "is not an extension of the one you witnessed",
    ),
    "the witnessed size raised beyond the drop": (
        lambda r: held(r, size=10**30),
        None,  # an older drop of a log witnessed since: its checkpoint is in the history
    ),
    "a witnessed log under a name no drop ties to a key": (
        lambda r: r["witness"].__setitem__("gateway.example/log", r["witness"].pop(sender_of(r))),
        "cannot be tied to a sender key",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_an_edited_record_never_writes_outside_out_nor_skips_the_drop_silently(
    case: str,
    parties: Parties,
    witnessed: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edit, refusal = CASES[case]
    drop, out = inbox_and_out(parties, tmp_path)
    record = out / receive.RECORD_NAME
    if isinstance(edit, str):
        record.write_text(edit)
    else:
        edit(witnessed)
        record.write_text(json.dumps(witnessed))
    outside = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(out))}

    code, err = take(parties, drop, out, capsys)  # a traceback would fail the test here

    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(out))} == outside
    if refusal is None:
        assert code == cli.OK, err
        assert (out / OUTPUT).read_bytes() == plaintext("csv", 3)
        assert DROP_ID in json.loads(record.read_text())["drops"]
        return
    assert code == cli.NOT_VERIFIED, err
    assert err.startswith("exchange: not verified: ") and err.count("\n") == 1, err
    assert err.rstrip("\n").isprintable(), err  # no escapes, no second line from the record
    assert refusal in err, err
    assert OUTPUT not in data_files(out)
    if "damaged" in refusal:
        assert "restore it from your backup" in err, err


def test_a_forged_replay_is_taken_with_again(
    parties: Parties,
    witnessed: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A drop marked as taken by an edit is refused out loud, and `--again` takes it."""
    drop, out = inbox_and_out(parties, tmp_path)
    witnessed["drops"][DROP_ID] = {"received_at": "2026-01-01T00:00:00+00:00"}
    (out / receive.RECORD_NAME).write_text(json.dumps(witnessed))
    code, err = take(parties, drop, out, capsys, "--again")
    assert code == cli.OK, err
    assert (out / OUTPUT).read_bytes() == plaintext("csv", 3)


def test_a_record_linked_to_a_file_elsewhere_is_refused_and_left_alone(
    parties: Parties,
    witnessed: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    drop, out = inbox_and_out(parties, tmp_path)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(witnessed))
    os.symlink(elsewhere, out / receive.RECORD_NAME)
    before = elsewhere.read_bytes()
    code, err = take(parties, drop, out, capsys)
    assert code == cli.NOT_VERIFIED, err
    assert "is damaged (not a plain file: a link?)" in err, err
    assert elsewhere.read_bytes() == before
    assert (out / receive.RECORD_NAME).is_symlink()
    assert OUTPUT not in data_files(out)
