"""Verifying the ledger in its database, against every checkpoint it is known by.

Those are the checkpoints stored beside the entries, the ones handed out (kept outside the
database by `exchange.audit.anchor`) and notes held by partners or auditors. `Ledger.verify`
and checkpoint signing use this walk; an export is checked by `exchange.audit.export`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.audit.anchor import Anchor
from exchange.audit.chain import ChainCheck, Stored, from_checkpoints, held_checkpoints
from exchange.audit.checkpoint import Checkpoint, open_note
from exchange.audit.entry import GENESIS, Entry
from exchange.audit.storage import Store
from exchange.errors import LedgerError

_GATEWAY_ORIGIN = "exchange-gateway/"


@dataclass(frozen=True)
class Against:
    """What the entries are checked against besides themselves."""

    public_key: Ed25519PublicKey | None = None  # checks each checkpoint's signature
    origin: str | None = None  # the log every checkpoint must name (with a key)
    held: tuple[str, ...] = ()  # checkpoint notes held by partners or auditors


def outside(anchor: Anchor | None, against: Against) -> list[Stored]:
    """The checkpoints kept outside the database: the anchor's, and notes held by others."""
    out: list[Stored] = []
    if anchor is not None:
        for anchored in anchor.all(against.public_key, against.origin):
            size = anchored.checkpoint.size
            out.append(Stored(anchored.checkpoint, f"handed-out checkpoint (size {size})", True))
    return out + held_checkpoints(against.held, against.public_key, against.origin)


def check(
    store: Store,
    anchor: Anchor | None,
    against: Against,
    *,
    start: int = 1,
    until: int | None = None,
    visit: Callable[[Entry], None] | None = None,
) -> ChainCheck:
    """Walk entries start..until; `visit` sees each that verified. Read `.finish()` after.

    From entry 1 the Merkle root is compared with every checkpoint; from a later entry only
    the chain is checked, starting at the hash of the entry before.
    """
    if start == 1:
        rows, key, origin = store.checkpoint_rows(), against.public_key, against.origin
        walk = from_checkpoints(rows, key, origin, lambda: outside(anchor, against), until=until)
    else:
        before = store.entry(start - 1)
        walk = ChainCheck(start=start, prev=before.entry_hash if before else GENESIS)
        if before is None:
            walk.fail(start - 1, "entry missing (sequence gap)")
    if walk.problem is not None:
        return walk
    for entry in store.entries(since=start, until=until):
        if not walk.add(entry):
            break
        if visit is not None:
            visit(entry)
    return walk


def signed_by_another_key(
    store: Store, anchor: Anchor | None, public_key: Ed25519PublicKey
) -> str | None:
    """When checkpoints exist and not one of them (stored or handed out) carries a signature
    by `public_key`: the id of the key they name (from a gateway origin), or "" if unknown.

    None when the key signed any of them, or a signature by it fails (that is tampering, not a
    wrong key), or there are none: the failure is then the ledger's, not the key's.
    """
    notes = [row.note for row in store.checkpoint_rows()]
    if anchor is not None:
        with contextlib.suppress(LedgerError):  # an unreadable anchor is reported by the walk
            notes += [a.checkpoint.note for a in anchor.all(None, None)]
    origins: set[str] = set()
    for note in notes:
        try:
            origin = Checkpoint.parse(note).origin
            open_note(note, origin, public_key)
        except LedgerError as exc:
            if not str(exc).startswith("no signature by "):
                return None
            origins.add(origin)
            continue
        return None
    if not origins:
        return None
    named = {o.removeprefix(_GATEWAY_ORIGIN) for o in origins if o.startswith(_GATEWAY_ORIGIN)}
    return f"ed25519:{named.pop()}" if len(named) == 1 and len(origins) == 1 else ""
