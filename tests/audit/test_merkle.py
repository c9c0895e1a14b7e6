"""RFC 9162 Merkle tree (exchange.audit.merkle) against the CT test vectors and the RFC's own
recursive definitions written out independently here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from exchange.audit import merkle

VECTORS = json.loads((Path(__file__).parent / "vectors" / "merkle_rfc6962.json").read_text())
SIZES = range(1, 18)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- RFC 9162 section 2.1, transcribed literally (recursive, slices), as the reference ---------


def _k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf DATA (not hashes)."""
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + rfc_mth(d[:k]) + rfc_mth(d[k:]))


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*rfc_path(m, d[:k]), rfc_mth(d[k:])]
    return [*rfc_path(m - k, d[k:]), rfc_mth(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [rfc_mth(d)]
    k = _k(n)
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), rfc_mth(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


def rfc_proof(m: int, d: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n])."""
    return rfc_subproof(m, d, True)


def data(n: int) -> list[bytes]:
    """n distinct leaf data, like ledger entry hashes."""
    return [hashlib.sha256(f"entry {i}".encode()).digest() for i in range(n)]


def leaves(d: list[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(x) for x in d]


# -- known answers ----------------------------------------------------------------------------


def test_roots_match_the_ct_vectors() -> None:
    d = [bytes.fromhex(x) for x in VECTORS["leaves"]]
    assert merkle.root([]).hex() == merkle.EMPTY_ROOT.hex() == VECTORS["empty_root"]
    for n, expected in enumerate(VECTORS["roots"], start=1):
        assert merkle.root(leaves(d[:n])).hex() == expected
        assert rfc_mth(d[:n]).hex() == expected  # the reference agrees with the vectors


def test_proofs_match_the_ct_vectors() -> None:
    d = [bytes.fromhex(x) for x in VECTORS["leaves"]]
    roots = [bytes.fromhex(x) for x in VECTORS["roots"]]
    for case in VECTORS["inclusion"]:
        path = [bytes.fromhex(x) for x in case["path"]]
        index, size = case["index"], case["size"]
        assert merkle.inclusion_proof(index, leaves(d[:size])) == path
        assert merkle.verify_inclusion(leaves(d)[index], index, size, path, roots[size - 1])
        assert not merkle.verify_inclusion(leaves(d)[index], index - 1, size, path, roots[size - 1])
    for case in VECTORS["consistency"]:
        proof = [bytes.fromhex(x) for x in case["proof"]]
        m, n = case["old_size"], case["new_size"]
        assert merkle.consistency_proof(m, leaves(d[:n])) == proof
        assert merkle.verify_consistency(m, n, roots[m - 1], roots[n - 1], proof)
        assert not merkle.verify_consistency(m, n, roots[m - 2], roots[n - 1], proof)


# -- every small tree against the RFC's definitions ---------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_root_and_incremental_root_agree_with_the_rfc(n: int) -> None:
    d = data(n)
    builder = merkle.RootBuilder()
    for i, leaf in enumerate(leaves(d), start=1):
        builder.append(leaf)
        assert builder.root() == rfc_mth(d[:i])
    assert merkle.root(leaves(d)) == rfc_mth(d)


@pytest.mark.parametrize("n", SIZES)
def test_inclusion_proofs_for_every_leaf(n: int) -> None:
    d = data(n)
    hashes, root = leaves(d), rfc_mth(d)
    for m in range(n):
        path = merkle.inclusion_proof(m, hashes)
        assert path == rfc_path(m, d)
        assert merkle.verify_inclusion(hashes[m], m, n, path, root)
        # Wrong leaf, index, root, or any altered, missing or extra hash: refused. (The size
        # is bound to the root by the signed checkpoint, not by the proof.)
        other = hashes[(m + 1) % n] if n > 1 else merkle.leaf_hash(b"other")
        assert not merkle.verify_inclusion(other, m, n, path, root)
        assert not merkle.verify_inclusion(hashes[m], m, n, path, _h(b"not the root"))
        assert not merkle.verify_inclusion(hashes[m], n, n, path, root)
        if n > 1:
            assert not merkle.verify_inclusion(hashes[m], (m + 1) % n, n, path, root)
        for i in range(len(path)):
            bad = list(path)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            assert not merkle.verify_inclusion(hashes[m], m, n, bad, root)
        if path:
            assert not merkle.verify_inclusion(hashes[m], m, n, path[:-1], root)
        assert not merkle.verify_inclusion(hashes[m], m, n, [*path, root], root)


@pytest.mark.parametrize("n", SIZES)
def test_consistency_proofs_for_every_older_size(n: int) -> None:
    d = data(n)
    hashes, new_root = leaves(d), rfc_mth(d)
    for m in range(0, n + 1):
        proof = merkle.consistency_proof(m, hashes)
        assert proof == (rfc_proof(m, d) if 0 < m < n else [])
        old_root = rfc_mth(d[:m])
        assert merkle.verify_consistency(m, n, old_root, new_root, proof)
        if 0 < m < n:
            assert not merkle.verify_consistency(m, n, _h(b"forged"), new_root, proof)
            assert not merkle.verify_consistency(m, n, old_root, _h(b"forged"), proof)
            assert not merkle.verify_consistency(m, n, old_root, new_root, proof[:-1])
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
                assert not merkle.verify_consistency(m, n, old_root, new_root, bad)
            # A rewritten history: same sizes, different old leaves.
            forged = data(m)
            forged[0] = b"rewritten"
            assert not merkle.verify_consistency(m, n, rfc_mth(forged), new_root, proof)
    assert not merkle.verify_consistency(n, n, rfc_mth(d[:-1]), new_root, [])
    assert not merkle.verify_consistency(n + 1, n, new_root, new_root, [])


def test_out_of_range_requests_are_refused() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(3, leaves(data(3)))
    with pytest.raises(ValueError):
        merkle.consistency_proof(4, leaves(data(3)))
