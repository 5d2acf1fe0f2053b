"""Range sync and crash recovery between real node processes.

- A node joining late syncs 1,200 blocks (with transactions) to the same state root; killed with
  SIGKILL halfway, it restarts from where its store got to, not from genesis.
- Validators killed with SIGKILL again and again (during block production, and right after a
  restart while they sync) always restart on a store that `verify_store` accepts, and catch up:
  seven kills in the default suite, thirty in `make soak`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dn.node.node import Node, NodeHome
from dn.wallet.keys import Keypair
from tests.functional.harness import (
    Cluster,
    NodeProcess,
    agreed_prefix,
    free_port,
    make_keys,
    transfer,
    verify_offline,
    wait_until,
    write_genesis,
)

SEED = int(os.environ.get("DN_CRASH_SEED", "20240607"))


def _grow_chain(dn_home: Path, blocks: int, txs_per_block: int) -> str:
    """Produce `blocks` blocks in process on node v0 (the only validator); returns the tip."""
    alice, bob = Keypair.generate(), Keypair.generate()
    key = make_keys(dn_home, ["v0"])["v0"]
    genesis = write_genesis(
        dn_home, [key.address], {alice.address: 10**15}, ["v0", "late"], block_time_ms=50
    )
    node = Node(NodeHome.named("v0", dn_home), genesis)
    try:
        t0 = genesis.time + 1
        nonce = 0
        for height in range(1, blocks + 1):
            txs = [
                transfer(genesis.chain_id, alice, nonce + i, bob.address, 1 + i).to_json()
                for i in range(txs_per_block)
            ]
            nonce += txs_per_block
            assert all(r["accepted"] for r in node.submit(txs))
            node.produce(t0 + height)
        return node.tip.hash
    finally:
        node.close()


def test_a_late_node_syncs_1200_blocks_and_resumes_after_sigkill(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    _grow_chain(dn_home, 1_200, 8)
    source = node_factory("v0", None, ["--no-mdns"]).start()
    assert source.status()["height"] >= 1_200
    late = node_factory("late", None, ["--no-mdns", "--peer", f"127.0.0.1:{source.port}"])
    late.start()
    halfway = wait_until(
        lambda: (h := late.status()["height"]) >= 300 and h, 60, interval=0.02, what="300 blocks"
    )
    late.kill()
    report = verify_offline(dn_home, "late")
    assert report["ok"], report["problems"]
    kept = report["height"]
    assert kept >= halfway
    assert kept < 1_200, "the kill should land mid-sync; the test would prove nothing otherwise"

    late.start()
    assert late.status()["height"] >= kept  # resumed from its store, not from genesis
    wait_until(lambda: late.status()["height"] >= 1_200, 120, interval=0.1, what="caught up")
    Cluster([source, late]).sync_all(timeout=30)  # one tip and one state root
    with late.client() as client:
        assert client.block(1_200)["hash"] == _block_hash(source, 1_200)
    assert late.stop() == 0
    report = verify_offline(dn_home, "late")
    assert report["ok"], report["problems"]
    assert report["txs"] == 1_200 * 8


def _block_hash(node: NodeProcess, height: int) -> str:
    with node.client() as client:
        return str(client.block(height)["hash"])


def _reaches(node: NodeProcess, height: int) -> Callable[[], bool]:
    return lambda: bool(node.status()["height"] >= height)


def test_validators_killed_again_and_again_recover_and_catch_up(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    """Five rounds (seven kills) in the default suite; the twenty-round version is a soak test."""
    _kill_rounds(dn_home, node_factory, rounds=5)


@pytest.mark.soak
def test_validators_killed_twenty_times_recover_and_catch_up(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    _kill_rounds(dn_home, node_factory, rounds=20)


def _kill_rounds(dn_home: Path, node_factory: Callable[..., NodeProcess], rounds: int) -> None:
    """Kill -9 each of three validators in turn, `rounds` times (every other round once more
    while it catches up), at random moments of block production: each restarts on a store
    `verify_store` accepts, catches up, and every transaction lands exactly once."""
    rng = random.Random(SEED)
    names = ["v0", "v1", "v2"]
    keys = make_keys(dn_home, names)
    alice, bob = Keypair.generate(), Keypair.generate()
    genesis = write_genesis(
        dn_home,
        [k.address for k in keys.values()],
        {alice.address: 10**15},
        names,
        block_time_ms=100,
        max_block_interval_ms=1000,
    )
    ports = {name: free_port() for name in names}
    nodes = []
    for name in names:
        peers = [
            arg
            for other in names
            if other != name
            for arg in ("--peer", f"127.0.0.1:{ports[other]}")
        ]
        nodes.append(node_factory(name, ports[name], ["--no-mdns", *peers]))
    cluster = Cluster(nodes).start()
    nonce = 0
    last = ""  # the id of the last transaction sent
    for round_ in range(rounds):
        victim = nodes[round_ % 3]
        others = [n for n in nodes if n is not victim]
        # Keep transactions flowing so blocks carry work when the kill lands.
        with others[0].client() as client:
            batch = [transfer(genesis.chain_id, alice, nonce + i, bob.address, 1) for i in range(5)]
            nonce += 5
            last = batch[-1].id
            client.submit_many([tx.to_json() for tx in batch])
        time.sleep(rng.uniform(0.0, 0.4))  # a random moment in block production
        victim.kill()
        report = verify_offline(dn_home, victim.name)
        assert report["ok"], (round_, report["problems"])
        wait_until(_reaches(others[0], report["height"] + 3), 30, what="progress")
        victim.start()
        if round_ % 2:  # and once more while it is catching up
            time.sleep(rng.uniform(0.0, 0.2))
            victim.kill()
            again = verify_offline(dn_home, victim.name)
            assert again["ok"], (round_, again["problems"])
            victim.start()
        target = max(n.status()["height"] for n in others)
        wait_until(_reaches(victim, target), 30, what="caught up")
    for node in nodes:  # every transaction submitted made it in, exactly once
        with node.client() as client:
            wait_until(
                lambda c=client: c.account(alice.address)["nonce"] == nonce,  # type: ignore[misc]
                30,
                what="all transactions included",
            )
    cluster.sync_all(timeout=30)
    with nodes[0].client() as client:
        work = client.tx(last)["height"]  # the block that holds the last of the work
    for node in nodes:
        assert node.stop() == 0
    for node in nodes:
        report = verify_offline(dn_home, node.name)
        assert report["ok"], report["problems"]
    # The last two keep producing while the first stops: compare the chains, not the tips. All
    # three stores hold one chain up to at least the block with the last transaction.
    height, _ = agreed_prefix(dn_home, names)
    assert height >= work
