"""The Merkle tree of RFC 9162 (Certificate Transparency v2), section 2.1, over ledger entries.

The leaves are the entries' hashes (the 32 bytes of `entry_hash`), in `seq` order: leaf i is
entry i + 1. Hashes are SHA-256 with RFC 9162's domain separation (0x00 before a leaf, 0x01
before a pair of children), so proofs made here check with any RFC 9162 verifier, and vice versa.

Proofs are plain lists of 32-byte hashes in the order RFC 9162 gives them. Indices are 0-based
leaf numbers, as in the RFC; the ledger converts from `seq`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class RootBuilder:
    """The tree's root, kept up to date while leaf hashes are appended one by one.

    It holds the roots of at most log2(n) perfect subtrees, so a ledger of any length is walked
    in constant memory, and the root at every size is available on the way.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (leaves under it, hash), left to right

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash (already hashed with leaf_hash)."""
        self.size += 1
        width, node = 1, leaf
        while self._stack and self._stack[-1][0] == width:
            left_width, left = self._stack.pop()
            width, node = left_width + width, node_hash(left, node)
        self._stack.append((width, node))

    @classmethod
    def from_edge(cls, size: int, edge: Sequence[bytes]) -> RootBuilder:
        """A builder resumed at `size` from its right edge (see `edge`); ValueError if wrong."""
        widths = [1 << b for b in reversed(range(size.bit_length())) if size >> b & 1]
        if size < 0 or len(edge) != len(widths) or any(len(h) != 32 for h in edge):
            raise ValueError(
                f"an edge of a tree of size {size} has {len(widths)} hashes of 32 bytes"
            )
        builder = cls()
        builder.size, builder._stack = size, list(zip(widths, edge, strict=True))
        return builder

    def append_nodes(self, leaf: bytes, min_width: int) -> list[tuple[int, int, bytes]]:
        """`append`, returning the perfect subtrees of `min_width` leaves or more it completed,
        as (level, index, hash): the subtree of 2**level leaves from leaf index * 2**level."""
        self.size += 1
        width, node = 1, leaf
        done: list[tuple[int, int, bytes]] = []
        while self._stack and self._stack[-1][0] == width:
            left_width, left = self._stack.pop()
            width, node = left_width + width, node_hash(left, node)
            if width >= min_width:
                done.append((width.bit_length() - 1, self.size // width - 1, node))
        self._stack.append((width, node))
        return done

    @property
    def edge(self) -> list[bytes]:
        """The right edge: the roots of the perfect subtrees the tree so far splits into, left
        to right (one per set bit of the size). With it a later tree is built, and proven
        consistent with this one, from the new leaves alone."""
        return [node for _, node in self._stack]

    def root(self) -> bytes:
        """The root of the leaves appended so far (the empty root for none)."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def root(leaves: Iterable[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 for the given leaf hashes."""
    builder = RootBuilder()
    for leaf in leaves:
        builder.append(leaf)
    return builder.root()


def _subtree(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]); hi > lo."""
    if hi - lo == 1:
        return leaves[lo]
    k = _split(hi - lo)
    return node_hash(_subtree(leaves, lo, lo + k), _subtree(leaves, lo + k, hi))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162: the audit path of leaf `index` in the tree of `leaves`."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of size {len(leaves)}")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_subtree(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree(leaves, lo, lo + k))
            lo += k
    path.reverse()  # RFC order: from the leaf up
    return path


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162: that the tree of the first `old_size` leaves is a prefix."""
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise ValueError(f"size {old_size} is not within a tree of size {n}")
    return _consistency(old_size, n, lambda lo, hi: _subtree(leaves, lo, hi))


def consistency_proof_from_edge(
    old_size: int, edge: Sequence[bytes], new_leaves: Sequence[bytes]
) -> list[bytes]:
    """PROOF(m, D[n]) from the old tree's right edge and the leaves added since, only.

    Every node of an RFC 9162 consistency proof either lies wholly among the new leaves or is
    one of the old tree's edge subtrees, so the old leaves themselves are not needed.
    """
    known: dict[tuple[int, int], bytes] = {}
    lo = 0
    for node, bit in zip(
        edge, [b for b in reversed(range(old_size.bit_length())) if old_size >> b & 1], strict=True
    ):
        known[(lo, lo + (1 << bit))] = node
        lo += 1 << bit

    def subtree(a: int, b: int) -> bytes:
        if b <= old_size:
            return known[(a, b)]  # a KeyError would be a bug: RFC proofs never need others
        return _subtree(new_leaves, a - old_size, b - old_size)

    return _consistency(old_size, old_size + len(new_leaves), subtree)


def _consistency(old_size: int, n: int, subtree: Callable[[int, int], T]) -> list[T]:
    """SUBPROOF(m, D[0:n], true) of RFC 9162, section 2.1.4.1, given MTH of any [lo, hi)."""
    if old_size in (0, n):
        return []
    proof: list[T] = []
    lo, hi, m, whole = 0, n, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        proof.append(subtree(lo, hi))
    proof.reverse()
    return proof


# -- proofs from stored subtrees --------------------------------------------------------------
# A ledger keeps the hashes of the perfect, aligned subtrees of 2**level leaves and more (RFC
# 9162 interior nodes), so any MTH(D[a:b]) is O(log n) of them plus the leaves of at most two
# blocks of 2**level leaves. The proofs are the same bytes as the leaf-based ones above.


def perfect_pieces(lo: int, hi: int) -> list[tuple[int, int]]:
    """The perfect subtrees [a, b) that MTH(D[lo:hi]) is made of by RFC 9162's split, left to
    right: MTH(D[lo:hi]) is node_hash(first, node_hash(second, ... last))."""
    pieces: list[tuple[int, int]] = []
    while (hi - lo) & (hi - lo - 1):  # not a power of two: its left part is one
        k = _split(hi - lo)
        pieces.append((lo, lo + k))
        lo += k
    pieces.append((lo, hi))
    return pieces


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH make PATH(index, D[size]), in the proof's order."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH make PROOF(old_size, D[size]), in the proof's order."""
    if not 0 <= old_size <= size:
        raise ValueError(f"size {old_size} is not within a tree of size {size}")
    return _consistency(old_size, size, lambda lo, hi: (lo, hi))


class NodeSource(Protocol):
    """Where `Subtrees` reads stored nodes and leaves (the ledger's tables)."""

    def nodes(self, keys: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored hashes of the nodes (level, index) asked for that are there."""
        ...

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        """The leaf hashes of leaves lo..hi-1 (0-based)."""
        ...


class Subtrees:
    """MTH of any leaf range of a tree of `size` leaves, from stored nodes and few leaves.

    The nodes of 2**level leaves or more ending at or before leaf `stored` are expected in
    `source` (blocks beyond it are hashed from their leaves). A node that is not there after
    all is rebuilt from its halves, down to a block's leaves, so a damaged cache costs time,
    never a wrong answer; a node stored with a wrong hash makes a proof that does not verify.
    Reads are batched per proof and kept, so many proofs of one tree share them.
    """

    def __init__(self, size: int, source: NodeSource, *, level: int, stored: int) -> None:
        self.size, self.source, self.block = size, source, 1 << level
        self.stored = min(stored, size)
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._asked: set[tuple[int, int]] = set()
        self._blocks: dict[int, list[bytes]] = {}

    def _key(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The stored node that is MTH(D[lo:hi]), if one is expected."""
        width = hi - lo
        if width < self.block or width & (width - 1) or lo % width or hi > self.stored:
            return None
        return width.bit_length() - 1, lo // width

    def hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH(D[lo:hi]) for each range (0 <= lo < hi <= size), read in few queries."""
        keys: set[tuple[int, int]] = set()
        blocks: set[int] = set()
        for lo, hi in ranges:
            if not 0 <= lo < hi <= self.size:
                raise ValueError(f"[{lo}, {hi}) is not a range of a tree of size {self.size}")
            for a, b in perfect_pieces(lo, hi):
                key = self._key(a, b)
                if key is None:
                    blocks.update(range(a // self.block, (b - 1) // self.block + 1))
                elif key not in self._nodes and key not in self._asked:
                    keys.add(key)
        self._fetch_nodes(keys)
        self._fetch_blocks(blocks)
        return [self.range_hash(lo, hi) for lo, hi in ranges]

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi])."""
        pieces = [self._perfect(a, b) for a, b in perfect_pieces(lo, hi)]
        node = pieces[-1]
        for left in reversed(pieces[:-1]):
            node = node_hash(left, node)
        return node

    def root(self, size: int) -> bytes:
        """MTH(D[size]) of the first `size` leaves."""
        return self.hashes([(0, size)])[0] if size else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[bytes]:
        """PATH(index, D[size]): equal to `inclusion_proof(index, leaves)`."""
        return self.hashes(inclusion_ranges(index, self.size))

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """PROOF(old_size, D[size]): equal to `consistency_proof(old_size, leaves)`."""
        return self.hashes(consistency_ranges(old_size, self.size))

    def _perfect(self, lo: int, hi: int) -> bytes:
        key = self._key(lo, hi)
        if key is not None:
            if key not in self._nodes and key not in self._asked:
                self._fetch_nodes({key})
            found = self._nodes.get(key)
            if found is not None:
                return found
        width = hi - lo
        if width > self.block and not width & (width - 1) and not lo % width:
            middle = lo + width // 2  # no stored node: from its halves
            return node_hash(self._perfect(lo, middle), self._perfect(middle, hi))
        return _subtree(self._leaves(lo, hi), 0, width)

    def _leaves(self, lo: int, hi: int) -> list[bytes]:
        first, last = lo // self.block, (hi - 1) // self.block
        self._fetch_blocks(set(range(first, last + 1)))
        out: list[bytes] = []
        for number in range(first, last + 1):
            out += self._blocks[number]
        start = first * self.block
        return out[lo - start : hi - start]

    def _fetch_nodes(self, keys: Collection[tuple[int, int]]) -> None:
        if keys:
            self._nodes.update(self.source.nodes(keys))
            self._asked.update(keys)

    def _fetch_blocks(self, blocks: Collection[int]) -> None:
        """Read the leaves of the blocks not read yet, one query per run of adjacent blocks."""
        todo = sorted(set(blocks) - self._blocks.keys())
        while todo:
            run = 1
            while run < len(todo) and todo[run] == todo[0] + run:
                run += 1
            lo = todo[0] * self.block
            leaves = self.source.leaves(lo, min(lo + run * self.block, self.size))
            for i in range(run):
                self._blocks[todo[i]] = leaves[i * self.block : (i + 1) * self.block]
            todo = todo[run:]


class NodeCheck:
    """Recomputes, as the leaves stream by, every node a ledger stores; compares them after.

    Only the blocks' hashes are kept (32 bytes per 2**level leaves); each level above is
    rebuilt from the one below when it is compared.
    """

    def __init__(self, level: int) -> None:
        self.level, self.block = level, 1 << level
        self._leaves: list[bytes] = []
        self._blocks = bytearray()

    def add(self, leaf: bytes) -> None:
        """The next leaf hash."""
        self._leaves.append(leaf)
        if len(self._leaves) == self.block:
            self._blocks += root(self._leaves)
            self._leaves.clear()

    def problem(
        self, stored: Callable[[int, int], Iterable[tuple[int, bytes | None]]]
    ) -> tuple[int, int] | None:
        """The first stored node that differs from the tree of the leaves seen, as (level,
        index); None if all agree. `stored(level, count)` gives (index, hash or None when
        malformed) of the stored nodes of a level with index < count; absent ones are fine."""
        level, hashes = self.level, bytes(self._blocks)
        while hashes:
            count = len(hashes) // 32
            for index, value in stored(level, count):
                if not 0 <= index < count:
                    continue  # beyond the leaves seen: not this check's to judge
                if value is None or not hmac.compare_digest(
                    value, hashes[index * 32 : index * 32 + 32]
                ):
                    return level, index
            level += 1
            hashes = b"".join(
                node_hash(hashes[i : i + 32], hashes[i + 32 : i + 64])
                for i in range(0, (count - count % 2) * 32, 64)
            )
        return None


def node_range(level: int, index: int) -> tuple[int, int]:
    """The 1-based entry numbers a stored node covers, first and last."""
    return (index << level) + 1, (index + 1) << level


def _sides(fn: int, sn: int, path: Sequence[bytes]) -> list[bool] | None:
    """For each hash of a proof path, whether it is the left sibling on the way up; None when
    the path does not fit the tree. The walk RFC 9162 sections 2.1.3.2 and 2.1.4.2 share."""
    sides: list[bool] = []
    for _ in path:
        if sn == 0:
            return None
        left = bool(fn & 1) or fn == sn
        sides.append(left)
        while left and fn and not fn & 1:
            fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
    return sides if sn == 0 else None


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """True when `proof` shows leaf hash `leaf` at `index` in the tree of `size` with `root_hash`.

    The algorithm of RFC 9162, section 2.1.3.2.
    """
    if not 0 <= index < size:
        return False
    sides = _sides(index, size - 1, proof)
    if sides is None:
        return False
    r = leaf
    for p, left in zip(proof, sides, strict=True):
        r = node_hash(p, r) if left else node_hash(r, p)
    return hmac.compare_digest(r, root_hash)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    The algorithm of RFC 9162, section 2.1.4.2, plus its trivial cases: an empty old tree is a
    prefix of anything, and a tree is consistent with itself (empty proof, equal roots).
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof
    if old_size == new_size:
        return not proof and hmac.compare_digest(old_root, new_root)
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    sides = _sides(fn, sn, path[1:])
    if sides is None:
        return False
    fr = sr = path[0]
    for c, left in zip(path[1:], sides, strict=True):
        if left:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    return hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)
