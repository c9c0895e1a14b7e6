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
from collections.abc import Callable, Iterable, Sequence

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


def _consistency(old_size: int, n: int, subtree: Callable[[int, int], bytes]) -> list[bytes]:
    """SUBPROOF(m, D[0:n], true) of RFC 9162, section 2.1.4.1, given MTH of any [lo, hi)."""
    if old_size in (0, n):
        return []
    proof: list[bytes] = []
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
