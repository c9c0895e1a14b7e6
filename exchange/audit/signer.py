"""Signing checkpoints: only of a ledger that verifies, and only trees that extend the last one.

With an anchor holding the last checkpoint handed out, the new tree is built from that
checkpoint's right edge and the entries added since, so it extends it by construction and no
run re-reads the whole ledger; the entry it ended at must still be there unchanged (a rewrite
recomputes its hash), and an RFC 9162 consistency proof between the two is checked before
signing. Without one (the first checkpoint), the whole ledger is verified first, against the
earlier checkpoints too. Either way LedgerError names the problem instead of signing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.audit import merkle, verify
from exchange.audit.anchor import Anchor, Anchored
from exchange.audit.chain import ChainCheck
from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.storage import Store
from exchange.errors import LedgerError

_UNVERIFIED = "will not sign a ledger that does not verify"


class Signer:
    """Signs, records (outside the database first, then in it) and returns checkpoints."""

    def __init__(
        self, store: Store, anchor: Anchor | None, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.anchor, self.clock = store, anchor, clock

    def sign(self, signing_key: Ed25519PrivateKey, origin: str) -> Checkpoint:
        """A checkpoint of every entry now in the ledger; the stored one if signed before."""
        if self.anchor is None:
            return self._whole(signing_key, origin)
        with self.anchor.locked():
            last = self.anchor.latest(signing_key.public_key(), origin)
            if last is None:
                return self._whole(signing_key, origin)
            return self._extension(signing_key, origin, last)

    def _whole(self, signing_key: Ed25519PrivateKey, origin: str) -> Checkpoint:
        against = verify.Against(signing_key.public_key(), origin)
        walk = verify.check(self.store, self.anchor, against)
        result = walk.finish()
        if not result.ok:
            raise LedgerError(f"{_UNVERIFIED}: {result.message}")
        made = sign_checkpoint(origin, walk.builder.size, walk.builder.root(), signing_key)
        return self._record(made, Anchored(made, walk.prev, tuple(walk.builder.edge)))

    def _extension(self, signing_key: Ed25519PrivateKey, origin: str, last: Anchored) -> Checkpoint:
        old = last.checkpoint
        refuse = (
            "will not sign: the ledger is not an extension of the last checkpoint handed out "
            f"(size {old.size})"
        )
        if old.size:
            ended = self.store.entry(old.size)
            if ended is None:
                raise LedgerError(f"{refuse}: entry {old.size} is missing (entries deleted)")
            if ended.entry_hash != last.head or ended.computed_hash() != last.head:
                raise LedgerError(f"{refuse}: entry {old.size} differs (history rewritten)")
        walk = ChainCheck(start=old.size + 1, prev=last.head)
        builder = merkle.RootBuilder.from_edge(old.size, last.edge)
        new_leaves: list[bytes] = []  # only the entries since: no whole-ledger read per run
        for entry in self.store.entries(since=old.size + 1):
            if not walk.add(entry):
                break
            new_leaves.append(entry.leaf)
            builder.append(entry.leaf)
        result = walk.finish()
        if not result.ok:
            raise LedgerError(f"{_UNVERIFIED}: {result.message}")
        root = builder.root()
        proof = merkle.consistency_proof_from_edge(old.size, last.edge, new_leaves)
        if not merkle.verify_consistency(old.size, builder.size, old.root, root, proof):
            raise LedgerError(f"{refuse}: the consistency proof does not verify")
        made = sign_checkpoint(origin, builder.size, root, signing_key)
        return self._record(made, Anchored(made, walk.prev, tuple(builder.edge)))

    def _record(self, made: Checkpoint, anchored: Anchored) -> Checkpoint:
        """Outside the database first (it is about to be handed out), then in it."""
        now = self.clock()
        if self.anchor is not None:
            self.anchor.record(anchored, at=now)
        return self.store.add_checkpoint(made, now.isoformat(timespec="microseconds"))
