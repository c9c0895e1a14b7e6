"""One ledger entry and its hash: the link of the chain, with no storage and no verification.

An entry's hash covers its sequence number, time, event, ids, body and the previous entry's
hash, so editing, deleting or reordering any entry breaks the chain at that point. The hash is
SHA-256 of the canonical JSON array of those columns (docs/auditors.md gives the recipe).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from exchange.audit import merkle

GENESIS = "0" * 64  # the `prev_hash` of entry 1


def canonical(value: Any) -> str:
    """JSON with sorted keys, no spaces and non-ASCII as is: the form every hash is taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Entry:
    """One ledger entry."""

    seq: int
    recorded_at: str
    event: str
    run_id: str | None
    contract_id: str | None
    body: str  # canonical JSON
    prev_hash: str
    entry_hash: str

    def computed_hash(self) -> str:
        """The hash this entry should carry, recomputed from its content."""
        material = canonical(
            [
                self.seq,
                self.recorded_at,
                self.event,
                self.run_id,
                self.contract_id,
                self.body,
                self.prev_hash,
            ]
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    @property
    def data(self) -> dict[str, Any]:
        """The body as a dict."""
        return json.loads(self.body)

    @property
    def leaf(self) -> bytes:
        """This entry's leaf hash in the Merkle tree: SHA-256(0x00 || entry_hash bytes)."""
        return merkle.leaf_hash(bytes.fromhex(self.entry_hash))

    def columns(self) -> dict[str, Any]:
        """The table's columns, by name."""
        return dict(self.__dict__)


def seal(
    seq: int,
    prev_hash: str,
    *,
    recorded_at: str,
    event: str,
    body: Mapping[str, Any],
    run_id: str | None = None,
    contract_id: str | None = None,
) -> Entry:
    """The entry that follows `prev_hash` at `seq`, with its hash computed."""
    draft = Entry(
        seq=seq,
        recorded_at=recorded_at,
        event=str(event),  # an `events.Event` is stored as its plain text
        run_id=run_id,
        contract_id=contract_id,
        body=canonical(dict(body)),
        prev_hash=prev_hash,
        entry_hash="",
    )
    return replace(draft, entry_hash=draft.computed_hash())
