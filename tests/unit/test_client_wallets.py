"""Listing the wallets on this machine, with balances from a node (dn/client/wallets.py)."""

from __future__ import annotations

import os
from pathlib import Path

from dn.client.http import NodeClient
from dn.client.wallets import list_wallets
from dn.wallet.keystore import KDF_FAST, Keystore
from tests.unit.inprocess import DN, served_node


def test_wallets_are_listed_by_name_with_damaged_ones_marked(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "wallets")
    alice = store.create("alice", "pw", KDF_FAST)
    broken = store.path("bob")
    broken.write_text("{}")
    os.chmod(broken, 0o600)
    (store.folder / "not a wallet name!.json").write_text("{}")
    assert list_wallets(store) == [
        {"name": "alice", "address": alice.address},
        {"name": "bob", "address": None, "error": "wallet 'bob' has no valid address"},
    ]


def test_balances_come_from_the_node_and_only_when_there_is_a_wallet(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "wallets")

    def refuse() -> NodeClient:
        raise AssertionError("no wallet to ask about, yet the node was called")

    assert list_wallets(store, refuse) == []
    alice = store.create("alice", "pw", KDF_FAST)
    with served_node(tmp_path, {alice.address: 3 * DN}) as (_, client):
        rows = list_wallets(store, lambda: client)
    assert rows == [{"name": "alice", "address": alice.address, "balance": 3 * DN, "nonce": 0}]
