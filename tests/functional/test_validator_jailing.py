"""Downtime jailing on a real node process (issue 12, attack 2): on the README's one-validator
chain, a stranger bonds the minimum and never runs a node. The chain does not stop when the
stranger joins the set; the stranger is jailed at the next epoch boundary, and the store
verifies."""

from __future__ import annotations

from pathlib import Path

from dn.chain.types import Tx
from dn.wallet.keys import Keypair
from tests.functional.harness import (
    NodeProcess,
    make_keys,
    verify_offline,
    wait_until,
    write_genesis,
)

DN = 10**9
EPOCH = 4


def test_a_bonded_validator_that_never_signs_is_jailed_and_the_chain_goes_on(
    dn_home: Path,
) -> None:
    key = make_keys(dn_home, ["v0"])["v0"]
    stranger = Keypair.generate()
    genesis = write_genesis(
        dn_home,
        [key.address],
        {key.address: DN, stranger.address: 200 * DN},
        ["v0"],
        block_time_ms=100,
        max_block_interval_ms=1000,
        epoch_blocks=EPOCH,
    )
    node = NodeProcess(dn_home, "v0", None, ["--no-mdns"]).start()
    try:
        with node.client() as client:
            bond = Tx.create(
                stranger,
                chain_id=genesis.chain_id,
                kind="validator.bond",
                nonce=0,
                fee=genesis.param("min_fee"),
                payload={"amount": genesis.param("validator_min_bond")},
            )
            assert client.submit(bond.to_json())["accepted"], "bond refused"
            client.wait_for_tx(bond.id, timeout=30)
            wait_until(lambda: stranger.address in client.validators()["active"], 30, what="join")
            joined = client.status()["height"]
            # Before jailing, the chain stopped two blocks after the join (`signed-recently`).
            wait_until(lambda: client.status()["height"] >= joined + 3 * EPOCH, 60, what="blocks")
            assert client.validators()["active"] == [key.address]
            blocks = client.blocks(joined, 3 * EPOCH)["blocks"]
            assert {b["header"]["proposer"] for b in blocks} == {key.address}
            assert client.status()["final_height"] > joined
    finally:
        assert node.stop() == 0
    report = verify_offline(dn_home, "v0")
    assert report["ok"], report["problems"]
