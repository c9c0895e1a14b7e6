"""Stored Merkle nodes: proofs read O(log n) rows and equal the leaf-based ones, a ledger made
before the node table gets it, and the table is a cache that verify and verifiers never trust."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from audit_fixtures import ORIGIN
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange import cli
from exchange.audit import merkle
from exchange.audit.checkpoint import sign_checkpoint
from exchange.audit.entry import GENESIS, seal
from exchange.audit.ledger import Ledger
from exchange.audit.proofs import verify_checkpoint_consistency, verify_inclusion
from exchange.audit.storage import BLOCK, NODE_LEVEL, Store
from exchange.errors import LedgerError
from exchange.settings import Settings

SIZE = 2 * 1024 + 3  # levels 8 to 11 stored, and a partial block at the end
# The sizes where a split changes: 1, 2, powers of two and their neighbours, block boundaries.
EDGES = sorted(
    {1, 2, 3, SIZE}
    | {n + d for n in (4, 8, BLOCK, 2 * BLOCK, 3 * BLOCK, 1024, 2048) for d in (-1, 0, 1)}
)


def fill(ledger: Ledger, count: int, *, start: int = 1) -> None:
    for i in range(start, start + count):
        ledger.append("step", {"n": i}, run_id=f"run-{i}", contract_id="c-1")


def insert_as_before(url: str, count: int) -> None:
    """Append entries the way a gateway from before the node table did: entries only."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        row = conn.execute(
            sa.text("SELECT seq, entry_hash FROM audit_ledger ORDER BY seq DESC LIMIT 1")
        ).first()
        seq, prev = (row[0], row[1]) if row else (0, GENESIS)
        rows = []
        for n in range(seq + 1, seq + count + 1):
            entry = seal(n, prev, recorded_at="2026-01-01T00:00:00+00:00", event="step", body={})
            rows.append(entry.columns())
            prev = entry.entry_hash
        conn.execute(
            sa.text(
                "INSERT INTO audit_ledger (seq, recorded_at, event, run_id, contract_id, body, "
                "prev_hash, entry_hash) VALUES (:seq, :recorded_at, :event, :run_id, "
                ":contract_id, :body, :prev_hash, :entry_hash)"
            ),
            rows,
        )
    engine.dispose()


def made(url: str, count: int) -> Ledger:
    """A ledger of `count` entries inserted in bulk (quick), opened as the gateway opens it,
    which stores their nodes."""
    Store(url).close()
    insert_as_before(url, count)
    return Ledger(url)


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the database directly, as someone with database access could."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        result = conn.execute(sa.text(statement), params)
        rows = list(result.all()) if result.returns_rows else []
    engine.dispose()
    return rows


def expected_nodes(size: int) -> set[tuple[int, int]]:
    """Every perfect aligned subtree of BLOCK leaves or more within the first `size`."""
    return {
        (level, index)
        for level in range(NODE_LEVEL, size.bit_length())
        for index in range(size >> level)
    }


def stored_keys(url: str) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in sql(url, "SELECT level, idx FROM audit_merkle_nodes")}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, list[bytes]]]:
    """A SQLite ledger of SIZE entries, the last block's completed by an append, its leaves."""
    folder = tmp_path_factory.mktemp("nodes")
    ledger = made(f"sqlite:///{folder / 'audit.db'}", SIZE - 5)
    fill(ledger, 5)
    yield ledger, ledger.leaves()
    ledger.close()


# -- the same proofs as from every leaf ---------------------------------------------------------


def test_appends_store_each_node_as_its_block_completes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    ledger = Ledger(url)
    fill(ledger, BLOCK - 1)
    assert stored_keys(url) == set()
    fill(ledger, 1, start=BLOCK)
    assert stored_keys(url) == {(8, 0)}
    fill(ledger, BLOCK + 1, start=BLOCK + 1)
    assert stored_keys(url) == {(8, 0), (8, 1), (9, 0)} == expected_nodes(2 * BLOCK + 1)
    leaves = ledger.leaves()
    for level, index, value in sql(url, "SELECT level, idx, hash FROM audit_merkle_nodes"):
        lo = index << level
        assert bytes.fromhex(value) == merkle.root(leaves[lo : lo + (1 << level)])
    ledger.close()


def test_the_bulk_ledger_has_every_node(big: tuple[Ledger, list[bytes]]) -> None:
    ledger, leaves = big
    url = str(ledger.engine.url)
    assert stored_keys(url) == expected_nodes(SIZE)
    for level, index, value in sql(url, "SELECT level, idx, hash FROM audit_merkle_nodes"):
        lo = index << level
        assert bytes.fromhex(value) == merkle.root(leaves[lo : lo + (1 << level)])


@pytest.mark.parametrize("size", EDGES)
def test_proofs_at_edge_sizes_equal_the_leaf_based_ones(
    big: tuple[Ledger, list[bytes]], size: int
) -> None:
    ledger, leaves = big
    for index in sorted({0, 1, size // 2, size - 2, size - 1} & set(range(size))):
        path = ledger.prove_inclusion(index + 1, size).path
        assert list(path) == merkle.inclusion_proof(index, leaves[:size]), index
    for old in sorted({0, 1, size // 3, size - 1, size} & set(range(size + 1))):
        proof = merkle.consistency_proof(old, leaves[:size])
        assert ledger.prove_consistency(old, size) == proof, old
        assert ledger.consistency(old, size) == (merkle.root(leaves[:old]), proof), old


@pytest.mark.integration  # a long property search
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_proofs_equal_the_leaf_based_ones(big: tuple[Ledger, list[bytes]], data: Any) -> None:
    ledger, leaves = big
    size = data.draw(st.one_of(st.sampled_from(EDGES), st.integers(1, SIZE)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(0, size), label="old_size")
    tree = ledger.subtrees(size)
    assert tree.inclusion_proof(index) == merkle.inclusion_proof(index, leaves[:size])
    assert tree.consistency_proof(old) == merkle.consistency_proof(old, leaves[:size])
    assert tree.root(old) == merkle.root(leaves[:old])
    assert ledger.prove_consistency(old, size) == merkle.consistency_proof(old, leaves[:size])


class Memory:
    """Stored nodes in a dict, some missing, and the leaves: a `merkle.NodeSource`."""

    def __init__(self, leaves: list[bytes], level: int, missing: set[tuple[int, int]]) -> None:
        self.leaves_, self.reads = leaves, 0
        builder = merkle.RootBuilder()
        self.stored = {
            (lvl, idx): node
            for leaf in leaves
            for lvl, idx, node in builder.append_nodes(leaf, 1 << level)
            if (lvl, idx) not in missing
        }

    def nodes(self, keys: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {k: self.stored[k] for k in keys if k in self.stored}

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        self.reads += hi - lo
        return self.leaves_[lo:hi]


@pytest.mark.integration  # a long property search
@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 700),
    level=st.integers(1, 4),
    data=st.data(),
)
def test_any_tree_shape_and_missing_nodes_give_the_same_proofs(
    size: int, level: int, data: Any
) -> None:
    leaves = [merkle.leaf_hash(n.to_bytes(4, "big")) for n in range(size)]
    keys = sorted(expected_nodes_at(size, level))
    missing = set(data.draw(st.lists(st.sampled_from(keys), max_size=5))) if keys else set()
    stored = data.draw(st.integers(0, size), label="stored")  # as far as the table was filled
    source = Memory(leaves, level, missing)
    index, old = data.draw(st.integers(0, size - 1)), data.draw(st.integers(0, size))
    for prove, expected in (
        (lambda t: t.inclusion_proof(index), merkle.inclusion_proof(index, leaves)),
        (lambda t: t.consistency_proof(old), merkle.consistency_proof(old, leaves)),
        (lambda t: [t.root(old)], [merkle.root(leaves[:old])]),
    ):
        source.reads = 0
        assert prove(merkle.Subtrees(size, source, level=level, stored=stored)) == expected
        if not missing and stored == size:  # all there: at most two blocks of leaves read
            assert source.reads <= 2 * (1 << level)


def expected_nodes_at(size: int, level: int) -> set[tuple[int, int]]:
    return {(lvl, i) for lvl in range(level, size.bit_length()) for i in range(size >> lvl)}


def test_a_proof_reads_few_leaves_and_nodes() -> None:
    size, level = 100_003, 8
    leaves = [merkle.leaf_hash(n.to_bytes(4, "big")) for n in range(size)]
    source = Memory(leaves, level, set())
    tree = merkle.Subtrees(size, source, level=level, stored=size)
    assert tree.inclusion_proof(size // 2) == merkle.inclusion_proof(size // 2, leaves)
    assert source.reads <= 2 * (BLOCK - 1) + 1
    source.reads = 0
    fresh = merkle.Subtrees(size, source, level=level, stored=size)
    assert fresh.consistency_proof(size // 3) == merkle.consistency_proof(size // 3, leaves)
    assert source.reads <= 2 * BLOCK


# -- a ledger made before the node table ---------------------------------------------------------


def test_a_ledger_from_before_the_node_table_gets_it_when_opened(backend_url: str) -> None:
    made(backend_url, 3).close()
    sql(backend_url, "DROP TABLE audit_merkle_nodes")  # the old layout
    insert_as_before(backend_url, 3 * BLOCK + 10)  # written by the old code
    size = 3 * BLOCK + 13

    reader = Ledger(backend_url, create=False)  # an auditor's read-only open: no table, no write
    assert not reader.store.has_nodes
    leaves = reader.leaves()
    assert list(reader.prove_inclusion(5, size).path) == merkle.inclusion_proof(4, leaves)
    assert reader.verify().ok
    reader.close()
    assert not sa.inspect(sa.create_engine(backend_url)).has_table("audit_merkle_nodes")

    writer = Ledger(backend_url)  # the gateway's open fills it, once
    assert stored_keys(backend_url) == expected_nodes(size)
    assert writer.store.fill_nodes() == 0
    for index in (0, 700, size - 1):
        assert list(writer.prove_inclusion(index + 1, size).path) == merkle.inclusion_proof(
            index, leaves
        )
    assert writer.prove_consistency(300, size) == merkle.consistency_proof(300, leaves)
    assert writer.verify().ok
    writer.close()


def test_entries_appended_by_an_older_gateway_are_caught_up(backend_url: str) -> None:
    ledger = made(backend_url, BLOCK + 1)
    insert_as_before(backend_url, 3 * BLOCK - 2)  # no nodes for these blocks
    size = 4 * BLOCK - 1
    assert stored_keys(backend_url) == expected_nodes(BLOCK)
    leaves = ledger.leaves()
    tree = ledger.subtrees()
    assert tree.inclusion_proof(size - 2) == merkle.inclusion_proof(size - 2, leaves)
    assert tree.consistency_proof(BLOCK + 5) == merkle.consistency_proof(BLOCK + 5, leaves)
    fill(ledger, 1, start=size + 1)  # the append that completes block 3 catches up
    assert stored_keys(backend_url) == expected_nodes(4 * BLOCK)
    assert ledger.verify().ok
    ledger.close()


# -- the table is a cache: verify recomputes it, verifiers reject proofs from a wrong one ---------


@pytest.fixture
def signed(backend_url: str, gateway_key: Ed25519PrivateKey) -> Iterator[tuple[Ledger, Any]]:
    ledger = made(backend_url, 4 * BLOCK + 7)
    checkpoint = ledger.checkpoint(gateway_key, ORIGIN)
    yield ledger, checkpoint
    ledger.close()


def test_a_tampered_node_fails_verify_by_name_and_its_proofs_fail(
    signed: tuple[Ledger, Any], backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    ledger, checkpoint = signed
    key = gateway_key.public_key()
    seq, old = 3 * BLOCK + 1, 2 * BLOCK + 5  # entry 769's path has the node of entries 1..512
    honest = ledger.prove_inclusion(seq)
    assert verify_inclusion(honest, checkpoint.note, key).size == checkpoint.size
    assert ledger.verify(public_key=key).ok

    sql(backend_url, "UPDATE audit_merkle_nodes SET hash = :h WHERE level = 9", h="ab" * 32)
    result = ledger.verify(public_key=key)
    assert not result.ok and result.broken_at is None
    assert result.message.startswith(
        "stored Merkle node at level 9, index 0 (entries 1..512) differs from the entries' tree"
    )
    assert ledger.verify(2).ok  # from a later entry no tree is built, so nodes are not judged

    # Proofs taken from the altered nodes as they are (the ledger checks its own against the
    # checkpoints' roots first: see the test of proofs handed out, below).
    tree = ledger.subtrees(checkpoint.size)
    forged = dataclasses.replace(honest, path=tuple(tree.inclusion_proof(seq - 1)))
    assert forged.path != honest.path
    with pytest.raises(LedgerError, match="is not in the signed tree"):
        verify_inclusion(forged, checkpoint.note, key)
    old_note = _signed_note(ledger, gateway_key, old)
    proof = tree.consistency_proof(old)
    with pytest.raises(LedgerError, match="does not extend"):
        verify_checkpoint_consistency(old_note, checkpoint.note, proof, key)


def _signed_note(ledger: Ledger, key: Ed25519PrivateKey, size: int) -> str:
    """A checkpoint of the first `size` entries, signed as the gateway signs (from the leaves)."""
    return sign_checkpoint(ORIGIN, size, merkle.root(ledger.leaves(size)), key).note


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        (
            "UPDATE audit_merkle_nodes SET hash = 'not hex' WHERE level = 8 AND idx = 2",
            "8, index 2",
        ),
        (
            "UPDATE audit_merkle_nodes SET hash = :h WHERE level = 10 AND idx = 0",
            "10, index 0 (entries 1..1024)",
        ),
    ],
)
def test_a_malformed_or_zeroed_node_is_named(
    signed: tuple[Ledger, Any], backend_url: str, statement: str, named: str
) -> None:
    ledger, _ = signed
    sql(backend_url, statement, h="00" * 32)
    assert f"stored Merkle node at level {named}" in ledger.verify().message


@pytest.mark.parametrize(
    ("level", "index"),
    [
        (12, 0),  # covers entries 1..4096 of a 1,031-entry ledger
        (8, 4),  # the block being filled, not complete yet
        (3, 0),  # below the blocks' level: no append writes it
        (9, -1),
    ],
)
def test_a_node_planted_ahead_of_the_entries_fails_verify(
    signed: tuple[Ledger, Any], backend_url: str, level: int, index: int
) -> None:
    ledger, _ = signed
    assert ledger.verify().ok
    insert = "INSERT INTO audit_merkle_nodes (level, idx, hash) VALUES (:level, :idx, :h)"
    sql(backend_url, insert, level=level, idx=index, h="cd" * 32)
    result = ledger.verify()
    assert not result.ok
    assert f"stored Merkle node at level {level}, index {index} is not one the ledger's" in (
        result.message
    )
    assert ledger.prove_inclusion(3).path  # proofs still come, from the honest nodes


def test_a_missing_node_costs_time_not_correctness(
    signed: tuple[Ledger, Any], backend_url: str, gateway_key: Ed25519PrivateKey
) -> None:
    ledger, checkpoint = signed
    sql(backend_url, "DELETE FROM audit_merkle_nodes WHERE level >= 9")
    sql(backend_url, "DELETE FROM audit_merkle_nodes WHERE level = 8 AND idx = 1")
    leaves = ledger.leaves()
    proof = ledger.prove_inclusion(BLOCK + 3)
    assert list(proof.path) == merkle.inclusion_proof(BLOCK + 2, leaves)
    assert verify_inclusion(proof, checkpoint.note, gateway_key.public_key())
    assert ledger.verify().ok  # a gap in a cache is not tampering with history


@pytest.mark.parametrize(
    "deleted",
    [
        "level = 8 AND idx = 3",  # the newest block's node, below stored parents: rebuilt
        "level = 10",  # the edge node the next block pairs with: rebuilt from those below
    ],
)
def test_a_damaged_node_table_never_stops_an_append(backend_url: str, deleted: str) -> None:
    ledger = made(backend_url, 4 * BLOCK + 7)
    sql(backend_url, f"DELETE FROM audit_merkle_nodes WHERE {deleted}")  # noqa: S608
    fill(ledger, 5 * BLOCK - ledger.head()[0])  # completes block 5: its append writes nodes
    assert ledger.head()[0] == 5 * BLOCK
    assert stored_keys(backend_url) == expected_nodes(5 * BLOCK)
    leaves = ledger.leaves()
    for seq in (1, 3 * BLOCK + 2, 5 * BLOCK):
        path = ledger.prove_inclusion(seq, 5 * BLOCK).path
        assert list(path) == merkle.inclusion_proof(seq - 1, leaves)
    assert ledger.verify().ok
    ledger.close()


def test_exchange_audit_verify_names_a_tampered_node(
    gateway_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env()
    made(settings.audit_url, BLOCK).close()
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == cli.OK
    sql(settings.audit_url, "UPDATE audit_merkle_nodes SET hash = :h", h="cd" * 32)
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == cli.NOT_VERIFIED
    err = capsys.readouterr().err
    assert "stored Merkle node at level 8, index 0 (entries 1..256)" in err


# -- reads do not grow with the ledger -----------------------------------------------------------


def bulk(path: Path, count: int) -> str:
    """A SQLite ledger of `count` entries inserted in bulk, its nodes filled on open."""
    url = f"sqlite:///{path}"
    made(url, count).close()
    return url


def proof_steps(url: str, seq: int) -> int:
    ledger = Ledger(url, create=False)
    ledger.engine.dispose()
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    @sa.event.listens_for(ledger.engine, "connect")
    def _count(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.set_progress_handler(tick, 100)

    size = ledger.head()[0]
    ledger.prove_inclusion(seq, size)
    ledger.prove_consistency(seq, size)
    ledger.close()
    return steps[0]


def test_a_proofs_reads_grow_with_log_n_not_n(tmp_path: Path) -> None:
    small = bulk(tmp_path / "small.db", 4 * 1024)
    large = bulk(tmp_path / "large.db", 32 * 1024)  # 8 times the entries
    a, b = proof_steps(small, 3 * 1024 + 7), proof_steps(large, 3 * 1024 + 7)
    assert a > 0
    assert b <= a * 1.3, f"{a} -> {b} (x100 SQLite steps)"  # a scan of any table would show
    assert stored_keys(large) == expected_nodes(32 * 1024)


def test_proofs_handed_out_are_checked_against_the_checkpoints_roots_first(
    backend_url: str, gateway_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by review: an altered node made the gateway hand out, under a correctly signed
    checkpoint, proofs no partner or auditor could verify (a false fork alarm). A proof from
    the stored nodes is now checked against the checkpoints' roots, and made from the entries
    when it fails, with a warning that names the cause."""
    key = gateway_key.public_key()
    ledger = made(backend_url, BLOCK + 44)
    first = ledger.checkpoint(gateway_key, ORIGIN)
    sql(
        backend_url,
        "UPDATE audit_merkle_nodes SET hash = :h WHERE level = 8 AND idx = 0",
        h="11" * 32,
    )
    fill(ledger, 3 * BLOCK, start=BLOCK + 45)
    second = ledger.checkpoint(gateway_key, ORIGIN)
    assert second.root == merkle.root(ledger.leaves(second.size))  # signed from the entries

    caplog.set_level("WARNING", logger="exchange.audit.ledger")
    _, proof = ledger.consistency(first.size, second.size)
    assert merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
    proof = ledger.prove_consistency(first.size, second.size)
    verify_checkpoint_consistency(first.note, second.note, proof, key)
    inclusion = ledger.prove_inclusion(7, second.size)
    assert verify_inclusion(inclusion, second.note, key).size == second.size
    assert "made from the entries instead" in caplog.text
    assert not ledger.verify(public_key=key).ok  # and verify still names the node
    ledger.close()
