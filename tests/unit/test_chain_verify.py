"""`verify_store` finds what an edited database file hides: a tip whose stored hash is not its
own (no later block links to it), and a store on another genesis than the node's file."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from dn.chain.genesis import Genesis, default_params
from dn.chain.store import Store
from dn.chain.verify import verify_store
from dn.node.node import Node, NodeHome, now_ms
from dn.wallet.keys import Keypair


def _chain(tmp_path: Path, blocks: int = 3) -> tuple[Path, Genesis]:
    home = NodeHome(tmp_path / "n")
    key = home.key()
    genesis = Genesis.build(
        network="devnet",
        time_ms=now_ms() - 60_000,
        validators=[key.address],
        allocations={Keypair.generate().address: 10**12},
        params=default_params(block_time_ms=50),
    )
    node = Node(home, genesis, rng=random.Random(1))
    clock = now_ms() - 30_000
    for i in range(blocks):
        node.produce(clock + 100 * i)
    node.close()
    return home.store_file, genesis


def _edit(path: Path, *sql: str) -> None:
    """Change the file as someone with the file would: append-only triggers are no obstacle."""
    conn = sqlite3.connect(path)
    for name in ("blocks_no_update", "canonical_no_update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in sql:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_an_untouched_store_verifies(tmp_path: Path) -> None:
    path, genesis = _chain(tmp_path)
    store = Store.open(path, readonly=True)
    try:
        report = verify_store(store, genesis=genesis)
    finally:
        store.close()
    assert report["ok"], report["problems"]
    assert report["blocks"] == 3


def test_a_tip_under_another_hash_is_found(tmp_path: Path) -> None:
    path, _ = _chain(tmp_path)
    fake = "ab" * 32
    conn = sqlite3.connect(path)
    (tip,) = conn.execute("SELECT hash FROM canonical ORDER BY height DESC LIMIT 1").fetchone()
    conn.close()
    _edit(
        path,
        f"UPDATE blocks SET hash = '{fake}' WHERE hash = '{tip}'",
        f"UPDATE canonical SET hash = '{fake}' WHERE hash = '{tip}'",
    )
    store = Store.open(path, readonly=True)
    try:
        report = verify_store(store)
    finally:
        store.close()
    assert not report["ok"]
    assert report["problems"] == [
        f"block 3: its stored hash {fake[:12]}… is not the hash of its header and signature"
    ]


def test_a_store_on_another_genesis_than_the_file_is_found(tmp_path: Path) -> None:
    path, genesis = _chain(tmp_path)
    other, _ = _chain(tmp_path / "other")
    store = Store.open(other, readonly=True)
    try:
        report = verify_store(store, genesis=genesis)
    finally:
        store.close()
    assert not report["ok"]
    assert report["problems"][0].startswith("the store holds genesis ")
