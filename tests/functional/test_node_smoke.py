"""A real node process: a transfer over HTTP is included once and visible from the CLI's client."""

from __future__ import annotations

from dn.chain.types import Tx
from dn.wallet.keys import Keypair
from tests.functional.harness import init_chain


def test_transfer_is_included_once(dn_home, node_factory):
    alice, bob = Keypair.generate(), Keypair.generate()
    genesis = init_chain(dn_home, {alice.address: 10**12}, block_time_ms=100)
    node = node_factory().start()
    with node.client() as client:
        tx = Tx.create(
            alice,
            chain_id=genesis.chain_id,
            kind="transfer",
            nonce=0,
            fee=1000,
            payload={"to": bob.address, "amount": 5 * 10**9},
        )
        assert client.submit(tx.to_json())["id"] == tx.id
        included = client.wait_for_tx(tx.id, timeout=20)
        assert client.account(bob.address)["balance"] == 5 * 10**9
        assert client.account(alice.address)["nonce"] == 1
        assert client.block(included["height"])["tx_ids"] == [tx.id]
    assert node.stop() == 0
