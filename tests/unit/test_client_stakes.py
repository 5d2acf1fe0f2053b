"""Staking through the client library (dn/client/stakes.py): the wallet is checked, the target
resolved, and only then the password asked; what comes back unlocks after the genesis's
`unbonding_blocks`."""

from __future__ import annotations

from pathlib import Path

import pytest

from dn.client.stakes import resolve_target, stake, unstake
from dn.errors import InvalidAddress, NotFound, WalletNotFound
from dn.wallet.keystore import KDF_FAST, Keystore, LockedWallet
from tests.cli.helpers import mistype
from tests.unit.inprocess import DN, served_node

PASSWORD = "pw"


class Asked:
    """A password source that counts how often it was asked."""

    def __init__(self) -> None:
        self.times = 0

    def __call__(self) -> str:
        self.times += 1
        return PASSWORD


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "wallets")


def test_a_stake_on_the_validator_and_back_with_the_genesis_unbonding(
    tmp_path: Path, keystore: Keystore
) -> None:
    alice = keystore.create("alice", PASSWORD, KDF_FAST)
    asked = Asked()
    wallet = LockedWallet(keystore, "alice", asked)
    with served_node(tmp_path, {alice.address: 50 * DN}, unbonding_blocks=7) as (node, client):
        validator = node.key.address
        staked = stake(client, wallet, validator, 5 * DN)
        assert (staked["target"], staked["kind"], staked["name"]) == (validator, "validator", None)
        assert (staked["backer"], staked["amount"], staked["staked"]) == (
            alice.address,
            5 * DN,
            5 * DN,
        )
        back = unstake(client, wallet, validator, 2 * DN)
        assert back["staked"] == 3 * DN
        assert back["unbonding_blocks"] == 7
        assert back["unlock_height"] == back["height"] + 7
        assert asked.times == 2  # once per signature
        pending = unstake(client, wallet, validator, DN, wait=False)
        assert pending["unlock_height"] is None and "staked" not in pending


def test_nothing_is_asked_or_sent_for_a_missing_wallet_or_a_bad_target(
    tmp_path: Path, keystore: Keystore
) -> None:
    alice = keystore.create("alice", PASSWORD, KDF_FAST)
    asked = Asked()
    with served_node(tmp_path, {alice.address: 50 * DN}) as (node, client):
        validator = node.key.address
        with pytest.raises(WalletNotFound):
            stake(client, LockedWallet(keystore, "nobody", asked), validator, DN)
        wallet = LockedWallet(keystore, "alice", asked)
        with pytest.raises(InvalidAddress):
            stake(client, wallet, mistype(validator), DN)
        with pytest.raises(NotFound):
            stake(client, wallet, "no-such-model", DN)
        assert asked.times == 0
        assert node.tip.height == 0


def test_a_target_is_a_model_by_name_or_a_validator_address(
    tmp_path: Path, keystore: Keystore
) -> None:
    alice = keystore.create("alice", PASSWORD, KDF_FAST)
    from dn.client.txs import send

    with served_node(tmp_path, {alice.address: 50 * DN}) as (node, client):
        sha = "ab" * 32
        payload = {
            "model": sha,
            "name": "tiny",
            "domain": "general",
            "price": 0,
            "license": "",
            "size": 1,
        }
        send(client, alice, "model.register", payload)
        assert resolve_target(client, "tiny") == {"target": sha, "kind": "model", "name": "tiny"}
        assert resolve_target(client, f"  {node.key.address} ")["kind"] == "validator"
