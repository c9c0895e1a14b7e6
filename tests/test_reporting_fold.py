"""`reporting.Fold`: entries added a few at a time give, at every point, the report `build`
gives over the same entries at once; a report taken leaves the fold as it was. A seeded mix
of every registered event over several days, drops whose fate arrives after the period."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict
from typing import Any

import pytest

from exchange import reporting
from exchange.audit import Entry
from exchange.audit.entry import GENESIS, seal
from exchange.audit.events import REGISTRY, Event

SINCE, UNTIL = dt.date(2026, 11, 3), dt.date(2026, 11, 6)


def history(count: int, seed: int) -> list[Entry]:
    """A chained ledger of `count` entries from 2026-11-01 to 11-08: every event, with the
    fields the report reads, and acks, receipts and overdue flags naming earlier drops."""
    pick = random.Random(seed)  # noqa: S311 (reproducible test data, not a secret)
    events = [*Event, "x.unknown"]
    out: list[Entry] = []
    drops: list[tuple[str, str]] = []  # drop id, its agreement
    prev = GENESIS
    for seq in range(1, count + 1):
        event = pick.choice(events) if seq % 3 else Event.TRANSFER_SENT
        known = REGISTRY.get(event) if isinstance(event, Event) else None
        body: dict[str, Any] = {name: None for name in known.fields} if known else {}
        contract = pick.choice(["c-1", "c-2", "c-3"])
        if event is Event.TRANSFER_SENT:
            drops.append((f"drop-{seq}", contract))
            overridden = pick.choice([0, 0, 2])
            rows = {
                "read": 10,
                "sent": seq % 7,
                "excluded": {},
                "objections_overridden": overridden,
            }
            body |= {
                "rows": rows,
                "fields_sent": pick.sample(["a", "b", "c", "d"], 2),
                "drop_id": drops[-1][0],
                "payload_sha256": f"{seq:064x}",
                "recipient": f"R-{contract}",
                "purposes": ["p"],
                "legal_basis": "Care Act 2014 s.42",
            }
        elif event in reporting.FATE or event is Event.WITNESS_REFUSED:
            # a drop's fate is recorded under its own agreement
            body["drop_id"], contract = pick.choice(drops) if drops else ("none", contract)
            body["rows_match"] = pick.random() < 0.5
            body["cosignature"] = {
                "verified": pick.random() < 0.7,
                "witness": pick.choice(["w-1", "w-2"]),
                "origin": "o",
                "size": pick.randint(1, seq),
                "at": f"2026-11-0{pick.randint(1, 8)}",
            }
            body["deleted"] = [{"what": "payload", "status": "deleted"}]
        elif event in reporting.PROBLEMS:
            body["reason"] = pick.choice(["not-approved", "guard", None])
        if known is not None and known.security:
            body["security_event"] = pick.random() < 0.8
        day = 1 + (seq * 8) // (count + 1)
        at = f"2026-11-{day:02d}T10:{seq // 60 % 60:02d}:{seq % 60:02d}.000000+00:00"
        entry = seal(seq, prev, recorded_at=at, event=event, body=body, contract_id=contract)
        out.append(entry)
        prev = entry.entry_hash
    return out


def plain(report: reporting.Report) -> dict[str, Any]:
    return asdict(report)


@pytest.mark.parametrize("agreement", [None, "c-2"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fold_fed_in_steps_equals_build_at_every_step(seed: int, agreement: str | None) -> None:
    entries = history(400, seed)
    fold = reporting.Fold(SINCE, UNTIL, agreement)
    done = 0
    steps = random.Random(seed)  # noqa: S311 (reproducible test data, not a secret)
    while done < len(entries):
        step = steps.choice([1, 2, 7, 40])
        for entry in entries[done : done + step]:
            fold.add(entry)
        done = min(done + step, len(entries))
        folded = fold.report()
        assert plain(folded) == plain(reporting.build(entries[:done], SINCE, UNTIL, agreement))
        assert (fold.size, fold.head) == (done, entries[done - 1].entry_hash)
    whole = reporting.build(entries, SINCE, UNTIL, agreement)
    assert whole.transfers and whole.problems and whole.security  # the mix reaches them
    if agreement is None:
        assert whole.witnesses and whole.witness_refusals and whole.incidents
        assert any(item.acknowledged and item.destroyed for item in whole.agreements)


def test_a_report_taken_shares_nothing_with_the_fold() -> None:
    entries = history(200, 7)
    fold = reporting.Fold(SINCE, UNTIL)
    for entry in entries[:100]:
        fold.add(entry)
    first = fold.report()
    kept = plain(first)
    transfer = first.transfers[0]  # what it holds, too (second review: these were shared)
    transfer["fields"].append("changed by a reader")
    transfer["purposes"].append("changed by a reader")
    transfer["excluded"]["changed by a reader"] = 1
    first.transfers.clear()
    first.agreements[0].drops[0]["acknowledged"] = "changed by a reader"
    for entry in entries[100:]:
        fold.add(entry)
    assert plain(fold.report()) == plain(reporting.build(entries, SINCE, UNTIL))
    again = reporting.Fold(SINCE, UNTIL)
    for entry in entries[:100]:
        again.add(entry)
    assert plain(again.report()) == kept  # taking a report changed nothing in the fold
