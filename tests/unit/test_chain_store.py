"""The SQLite chain store on real files (DESIGN.md section 5, storage)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.chain.genesis import Genesis
from dn.chain.ledger import DictState
from dn.chain.state import build_block, genesis_block, genesis_state, supply_holds
from dn.chain.store import Store
from dn.chain.types import Block, Tx
from dn.encoding import UNITS_PER_DN
from dn.errors import GenesisError, StoreError
from dn.wallet.keys import Keypair

DN = UNITS_PER_DN
V = Keypair.from_seed(b"V" * 32)
A = Keypair.from_seed(b"A" * 32)
B = Keypair.from_seed(b"B" * 32)
GENESIS = Genesis.build(
    network="devnet",
    time_ms=1000,
    validators=[V.address],
    allocations={A.address: 10 * DN, B.address: 5 * DN},
)


def transfer(kp: Keypair, to: Keypair, amount: int, nonce: int) -> Tx:
    return Tx.create(
        kp,
        chain_id=GENESIS.chain_id,
        kind="transfer",
        nonce=nonce,
        fee=GENESIS.param("min_fee"),
        payload={"to": to.address, "amount": amount},
    )


def next_block(
    store: Store, txs: list[Tx], time_ms: int | None = None
) -> tuple[Block, dict[str, Any]]:
    tip = store.tip()
    applied, rejected = build_block(
        DictState(store.load_state()),
        tip.header,
        tip.hash,
        txs,
        V,
        time_ms if time_ms is not None else tip.header.time + 1000,
        GENESIS,
    )
    assert rejected == []
    return applied.block, applied.changes


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "node" / "chain.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    s = Store.create(path, GENESIS)
    yield s
    s.close()


@pytest.fixture
def with_block(store: Store) -> tuple[Store, Block, Tx]:
    tx = transfer(A, B, DN, 0)
    block, changes = next_block(store, [tx])
    store.commit_block(block, changes)
    return store, block, tx


def test_create_then_open(store: Store, path: Path) -> None:
    assert path.exists()
    tip = store.tip()
    assert tip.height == 0 and tip.hash == genesis_block(GENESIS).hash
    assert store.load_state() == genesis_state(GENESIS)
    store.close()
    again = Store.open(path)
    try:
        assert again.genesis.hash == GENESIS.hash
        assert again.genesis.chain_id == GENESIS.chain_id
        assert again.tip().hash == tip.hash
        assert again.load_state() == genesis_state(GENESIS)
    finally:
        again.close()


def test_create_refuses_an_existing_file(store: Store, path: Path) -> None:
    with pytest.raises(StoreError, match="exists"):
        Store.create(path, GENESIS)


def test_journal_mode_is_wal_and_sync_full(store: Store, path: Path) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # WAL is a property of the file: a fresh plain connection sees it too.
    plain = sqlite3.connect(path)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


def test_migrations_are_recorded(store: Store) -> None:
    names = [row[0] for row in store.conn.execute("SELECT name FROM migrations")]
    assert names == ["001_initial", "002_side_chains"]


@pytest.mark.parametrize(
    ("table", "update"),
    [
        ("blocks", "UPDATE blocks SET height = height + 100"),
        ("txs", "UPDATE txs SET raw = '{}'"),
        ("state_undo", "UPDATE state_undo SET old = NULL"),
        ("applied", "UPDATE applied SET block_hash = 'x'"),
    ],
)
def test_append_only_tables_refuse_update_and_delete(
    with_block: tuple[Store, Block, Tx], table: str, update: str
) -> None:
    store, _, _ = with_block
    before = store.conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    assert before, f"{table} should have rows for this test to mean anything"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute(update)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute(f"DELETE FROM {table}")
    assert store.conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() == before


def test_commit_and_reopen_give_the_same_tip_and_state(
    with_block: tuple[Store, Block, Tx], path: Path
) -> None:
    store, block, tx = with_block
    block2, changes2 = next_block(store, [transfer(B, A, 2 * DN, 0), transfer(A, B, DN, 1)])
    store.commit_block(block2, changes2)
    state = store.load_state()
    assert state["acct:" + A.address]["nonce"] == 2
    assert supply_holds(state.items())
    store.close()
    again = Store.open(path, genesis=GENESIS)
    try:
        assert again.tip().hash == block2.hash
        assert again.tip().header == block2.header
        assert [t.id for t in again.tip().txs] == [t.id for t in block2.txs]
        assert again.load_state() == state
        assert again.state_get("acct:" + B.address) == state["acct:" + B.address]
        assert again.state_get("acct:nobody") is None
        assert [b.hash for b in again.iter_canonical()] == [
            genesis_block(GENESIS).hash,
            block.hash,
            block2.hash,
        ]
        assert again.block(1).hash == block.hash  # type: ignore[union-attr]
        assert again.block(block2.hash).header.height == 2  # type: ignore[union-attr]
        assert again.block(3) is None
        assert again.block("00" * 32) is None
    finally:
        again.close()


def test_state_after_commit_equals_applying_the_changes(
    with_block: tuple[Store, Block, Tx],
) -> None:
    store, block, _ = with_block
    expected = DictState(genesis_state(GENESIS))
    _, changes = next_block_from_genesis(block)
    expected.update(changes)
    assert store.load_state() == expected.data


def next_block_from_genesis(block: Block) -> tuple[Block, dict[str, Any]]:
    g = genesis_block(GENESIS)
    applied, _ = build_block(
        DictState(genesis_state(GENESIS)),
        g.header,
        g.hash,
        list(block.txs),
        V,
        block.header.time,
        GENESIS,
    )
    assert applied.block.hash == block.hash  # deterministic
    return applied.block, applied.changes


def test_tx_lookup_finds_the_canonical_inclusion(with_block: tuple[Store, Block, Tx]) -> None:
    store, block, tx = with_block
    record = store.tx(tx.id)
    assert record is not None
    assert (record.block_hash, record.height, record.index) == (block.hash, 1, 0)
    assert record.tx.id == tx.id and record.tx.to_json() == tx.to_json()
    assert store.count_canonical_tx(tx.id) == 1
    assert store.tx("00" * 32) is None
    assert store.count_canonical_tx("00" * 32) == 0


def test_mempool_round_trip_and_persistence(store: Store, path: Path) -> None:
    t1, t2, t3 = transfer(A, B, DN, 0), transfer(A, B, DN, 1), transfer(B, A, DN, 0)
    store.mempool_add([t1, t2])
    store.mempool_add([t1, t3])  # t1 again is ignored
    assert [t.id for t in store.mempool_txs()] == [t1.id, t2.id, t3.id]
    store.close()
    store2 = Store.open(path)
    try:
        assert [t.id for t in store2.mempool_txs()] == [t1.id, t2.id, t3.id]
        store2.mempool_remove([t2.id, "ff" * 32])
        assert [t.id for t in store2.mempool_txs()] == [t1.id, t3.id]
        # Committing a block clears its transactions from the mempool table.
        block, changes = next_block(store2, [t1])
        store2.commit_block(block, changes)
        assert [t.id for t in store2.mempool_txs()] == [t3.id]
    finally:
        store2.close()
    store3 = Store.open(path)
    try:
        assert [t.id for t in store3.mempool_txs()] == [t3.id]
    finally:
        store3.close()


def test_mempool_add_and_remove_of_nothing(store: Store) -> None:
    store.mempool_add([])
    store.mempool_remove([])
    assert store.mempool_txs() == []


def test_opening_with_another_genesis_is_refused(store: Store, path: Path) -> None:
    other = Genesis.build(
        network="devnet", time_ms=1000, validators=[V.address], allocations={A.address: 1}
    )
    with pytest.raises(GenesisError, match=GENESIS.chain_id):
        Store.open(path, genesis=other)
    same = Store.open(path, genesis=GENESIS)
    assert same.genesis.hash == GENESIS.hash
    same.close()


def test_opening_a_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "chain.db"
    with pytest.raises(StoreError, match="no chain store"):
        Store.open(missing)
    assert not missing.exists()


def test_opening_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError):
        Store.open(junk)
    empty_db = tmp_path / "empty.db"
    sqlite3.connect(empty_db).close()
    with pytest.raises(StoreError):
        Store.open(empty_db)


def test_commit_on_a_stale_parent_changes_nothing(with_block: tuple[Store, Block, Tx]) -> None:
    store, block, _ = with_block
    state = store.load_state()
    # A rival block 1, also built on genesis.
    g = genesis_block(GENESIS)
    applied, _ = build_block(
        DictState(genesis_state(GENESIS)),
        g.header,
        g.hash,
        [transfer(B, A, DN, 0)],
        V,
        5000,
        GENESIS,
    )
    with pytest.raises(StoreError, match="tip"):
        store.commit_block(applied.block, applied.changes)
    assert store.tip().hash == block.hash
    assert store.load_state() == state
    assert store.block(applied.block.hash) is None
    assert store.integrity_check() == "ok"


def test_failure_inside_the_commit_rolls_everything_back(
    with_block: tuple[Store, Block, Tx],
) -> None:
    store, block, _ = with_block
    state = store.load_state()
    undo = store.conn.execute("SELECT count(*) FROM state_undo").fetchone()[0]
    tx = transfer(A, B, DN, 1)
    good, changes = next_block(store, [tx])
    # Same parent, but claiming height 1 again: the canonical insert fails half-way through.
    bad = Block.seal(dataclasses.replace(good.header, height=1), [tx], V)
    with pytest.raises((StoreError, sqlite3.Error)):
        store.commit_block(bad, changes)
    assert store.tip().hash == block.hash
    assert store.load_state() == state
    assert store.block(bad.hash) is None
    assert store.tx(tx.id) is None
    assert store.conn.execute("SELECT count(*) FROM state_undo").fetchone()[0] == undo
    assert not store.conn.in_transaction
    # The store still works afterwards.
    store.commit_block(good, changes)
    assert store.tip().hash == good.hash


def test_integrity_check(with_block: tuple[Store, Block, Tx]) -> None:
    store, _, _ = with_block
    assert store.integrity_check() == "ok"


def test_readonly_store_refuses_writes(with_block: tuple[Store, Block, Tx], path: Path) -> None:
    store, block, _ = with_block
    ro = Store.open(path, readonly=True)
    try:
        assert ro.tip().hash == block.hash
        with pytest.raises(sqlite3.OperationalError):
            ro.mempool_add([transfer(A, B, DN, 1)])
    finally:
        ro.close()
