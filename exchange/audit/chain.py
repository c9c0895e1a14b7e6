"""Verifying a stream of entries: links, hashes, and the Merkle root at every checkpoint's size.

The same walk checks the database (`exchange.audit.verify`) and an export
(`exchange.audit.export`), so both report a problem in the same words. Nothing here reads a
database or a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.audit import merkle
from exchange.audit.checkpoint import Checkpoint, CheckpointRow
from exchange.audit.entry import GENESIS, Entry
from exchange.errors import LedgerError


@dataclass(frozen=True)
class Verification:
    """The result of checking the ledger (or an export of it).

    `broken_at` is the first entry that does not verify and `reason` says why; a problem with a
    checkpoint itself (a bad signature) has a reason but no entry. `entries` and `head` are
    the count and hash of the entries that verified before the first problem.
    """

    entries: int
    head: str
    broken_at: int | None = None
    reason: str = ""
    checkpoints: int = 0  # checkpoints whose root (and signature, given a key) verified
    signed_size: int = 0  # the size of the newest of them: entries 1..signed_size are signed
    signatures_checked: bool = False
    handed_out: int = 0  # of them, checkpoints kept outside the database (anchor, held notes)

    @property
    def ok(self) -> bool:
        """True when every entry and checkpoint verified."""
        return self.broken_at is None and not self.reason

    @property
    def message(self) -> str:
        """One line for people: what broke where, or a summary."""
        if self.broken_at is not None:
            return f"entry {self.broken_at}: {self.reason}"
        if self.reason:
            return self.reason
        if not self.signatures_checked:
            # Without the key a forged checkpoint row matches a rewritten chain: say so plainly.
            signed = (
                "; checkpoint signatures NOT checked (no public key given), so a rewritten "
                "ledger with replaced checkpoints would also pass"
            )
        else:
            signed = f"; entries 1..{self.signed_size} signed" if self.signed_size else ""
        outside = (
            f"; consistent with {self.handed_out} checkpoint(s) kept outside the database"
            if self.handed_out
            else ""
        )
        return f"{self.entries} entries verified{signed}{outside}; head {self.head}"


@dataclass(frozen=True)
class Stored:
    """A checkpoint read from the table, an export or elsewhere, with what it is known to say."""

    checkpoint: Checkpoint
    label: str  # how a message names it, e.g. "checkpoint 12 (size 40)"
    outside: bool = False  # kept outside the database: handed out, or held by someone


def _open(
    note: str, public_key: Ed25519PublicKey | None, origin: str | None, created_at: str = ""
) -> Checkpoint:
    """A checkpoint note, its signature (and origin) checked given a key; LedgerError if not."""
    if public_key is None:
        return Checkpoint.parse(note, created_at=created_at)
    return Checkpoint.open(note, public_key, origin=origin, created_at=created_at)


def open_checkpoints(
    rows: Iterable[CheckpointRow], public_key: Ed25519PublicKey | None, origin: str | None = None
) -> tuple[list[Stored], str]:
    """Parse each stored checkpoint (signature checked given a key, origin given one) and
    compare its columns with its note.

    Returns the checkpoints as their notes say, and a problem naming the first bad one ("" if
    none).
    """
    out: list[Stored] = []
    for row in rows:
        try:
            parsed = _open(row.note, public_key, origin, row.created_at)
        except LedgerError as exc:
            return out, f"{row.label}: {exc}"
        if (row.tree_size is not None and row.tree_size != parsed.size) or (
            row.root is not None and row.root != parsed.root_hex
        ):
            return out, f"{row.label}: its size or root column differs from its signed note"
        out.append(Stored(parsed, row.label))
    return out, ""


def held_checkpoints(
    notes: Iterable[str], public_key: Ed25519PublicKey | None, origin: str | None
) -> list[Stored]:
    """Checkpoint notes held by partners or auditors; LedgerError naming the first bad one."""
    out: list[Stored] = []
    for number, note in enumerate(notes, start=1):
        try:
            checkpoint = _open(note, public_key, origin)
        except LedgerError as exc:
            raise LedgerError(f"held checkpoint {number}: {exc}") from None
        out.append(Stored(checkpoint, f"held checkpoint {number} (size {checkpoint.size})", True))
    return out


class ChainCheck:
    """Walks entries in order: links, hashes, and the Merkle root at every checkpoint's size.

    The tree is built only when the walk starts at entry 1; `signed` records whether the
    checkpoints' signatures were checked before they were given here.
    """

    def __init__(
        self,
        checkpoints: Sequence[Stored] = (),
        *,
        start: int = 1,
        prev: str = GENESIS,
        signed: bool = False,
    ) -> None:
        self.tree = start == 1
        self.signed = signed
        self.expected = start
        self.prev = prev
        self.count = 0
        self.builder = merkle.RootBuilder()
        self.problem: Verification | None = None
        self._good = 0  # the size of the newest checkpoint that matched
        self._matched = 0
        self._outside = 0
        self._pending = sorted(checkpoints, key=lambda s: s.checkpoint.size, reverse=True)
        while self.tree and self._pending and self._pending[-1].checkpoint.size == 0:
            self._match(self._pending.pop())

    def _result(self, broken_at: int | None = None, reason: str = "") -> Verification:
        return Verification(
            self.count,
            self.prev,
            broken_at,
            reason,
            self._matched,
            self._good,
            self.signed,
            self._outside,
        )

    def fail(self, broken_at: int | None, reason: str) -> bool:
        """Record the first problem; always False."""
        if self.problem is None:
            self.problem = self._result(broken_at, reason)
        return False

    def _match(self, stored: Stored) -> bool:
        if self.builder.root() != stored.checkpoint.root:
            first, size = self._good + 1, stored.checkpoint.size
            what = f"entry {first}" if first == size else f"entries {first}..{size}"
            return self.fail(
                first, f"{what} differ from {stored.label} (root mismatch: rewritten or replaced)"
            )
        self._good, self._matched = stored.checkpoint.size, self._matched + 1
        self._outside += stored.outside
        return True

    def add(self, entry: Entry) -> bool:
        """Check the next entry; False (and `problem` set) at the first that does not verify."""
        if self.problem is not None:
            return False
        if type(entry.seq) is not int:  # a column retyped (numeric, text): never hashed
            return self.fail(self.expected, "sequence number is not an integer (table altered)")
        if entry.seq != self.expected:
            return self.fail(self.expected, "entry missing (sequence gap)")
        if entry.prev_hash != self.prev:
            return self.fail(entry.seq, "does not follow the entry before it")
        if entry.computed_hash() != entry.entry_hash:
            return self.fail(entry.seq, "content altered (hash mismatch)")
        self.prev, self.expected, self.count = entry.entry_hash, self.expected + 1, self.count + 1
        if self.tree:
            self.builder.append(entry.leaf)
            while self._pending and self._pending[-1].checkpoint.size == self.builder.size:
                if not self._match(self._pending.pop()):
                    return False
        return True

    def finish(self, *, complete: bool = True) -> Verification:
        """The verdict; `complete` when the walk reached the newest entry."""
        if self.problem is not None:
            return self.problem
        if self.tree and complete and self._pending:
            newest = self._pending[0]
            return self._result(
                self.expected,
                f"entry missing: the ledger ends at entry {self.count} but {newest.label} "
                "was signed (newest entries deleted, or an old copy)",
            )
        return self._result()


def from_checkpoints(
    rows: Iterable[CheckpointRow],
    public_key: Ed25519PublicKey | None,
    origin: str | None,
    more: Callable[[], list[Stored]] = list,
    *,
    until: int | None = None,
) -> ChainCheck:
    """A walk from entry 1 against stored checkpoint rows and `more()` (kept elsewhere, read
    only when the rows are good), up to size `until`; failed already if any is bad."""
    stored, problem = open_checkpoints(rows, public_key, origin)
    if not problem:
        try:
            stored += more()
        except LedgerError as exc:
            problem = str(exc)
    if until is not None:
        stored = [s for s in stored if s.checkpoint.size <= until]
    walk = ChainCheck(stored, signed=public_key is not None)
    if problem:
        walk.fail(None, problem)
    return walk
