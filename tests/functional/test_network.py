"""Several real `dn node start` processes on loopback: turn-taking, gossip, partitions, heals.

Nodes peer through static `--peer` addresses (mDNS has its own test); links are cut and healed
with the test-only deny list each node reads (tests/functional/hooks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dn.chain import consensus
from dn.wallet.keys import Keypair
from tests.functional.harness import (
    Cluster,
    NodeProcess,
    agreed_prefix,
    canonical_count,
    free_port,
    make_keys,
    transfer,
    verify_offline,
    wait_until,
    write_genesis,
)


def build_cluster(
    dn_home: Path,
    node_factory: Callable[..., NodeProcess],
    n: int,
    funded: list[Keypair],
    **params: int,
) -> tuple[Cluster, list[str]]:
    names = [f"v{i}" for i in range(n)]
    keys = make_keys(dn_home, names)
    ports = {name: free_port() for name in names}
    write_genesis(
        dn_home,
        [k.address for k in keys.values()],
        {k.address: 10**12 for k in funded},
        names,
        **params,
    )
    nodes = []
    for name in names:
        peers = [
            a for other in names if other != name for a in ("--peer", f"127.0.0.1:{ports[other]}")
        ]
        nodes.append(node_factory(name, ports[name], ["--no-mdns", *peers]))
    validators = sorted(k.address for k in keys.values())
    return Cluster(nodes), validators


def test_three_validators_take_turns_and_agree(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    alice, bob = Keypair.generate(), Keypair.generate()
    cluster, validators = build_cluster(
        dn_home, node_factory, 3, [alice], block_time_ms=200, max_block_interval_ms=1000
    )
    cluster.start()
    first = cluster.nodes[0]
    wait_until(lambda: min(s["height"] for s in cluster.statuses()) >= 6, 60, what="height 6")
    chain_id = first.status()["chain_id"]
    # Nodes start one after another, so the first blocks are made by whoever is up, out of
    # turn; turn-taking is judged on the blocks made after all three were on one chain.
    all_up = min(s["height"] for s in cluster.statuses())

    # A transaction sent to one node is included once and visible from all.
    tx = transfer(chain_id, alice, 0, bob.address, 5_000)
    with cluster.nodes[2].client() as client:
        client.submit(tx.to_json())
    for node in cluster.nodes:
        with node.client() as client:
            found = client.wait_for_tx(tx.id, timeout=30)
            assert found["status"] == "included"
            assert client.account(bob.address)["balance"] == 5_000
    assert cluster.sync_all()  # one tip and one state root, in one round of calls
    wait_until(
        lambda: min(s["height"] for s in cluster.statuses()) >= all_up + 8,
        60,
        what="eight more blocks",
    )

    with first.client() as client:
        height = client.status()["height"]
        blocks = [client.block(h) for h in range(1, height + 1)]
    proposers = [b["header"]["proposer"] for b in blocks]
    assert set(proposers) == set(validators)  # every validator took part
    for i in range(1, len(proposers)):
        assert proposers[i] != proposers[i - 1]  # floor(3/2)+1 = 2: never twice in a row
    settled = [b for b in blocks if b["header"]["height"] > all_up]
    assert len(settled) >= 8
    in_turn = sum(
        b["header"]["proposer"] == consensus.in_turn(validators, b["header"]["height"])
        for b in settled
    )
    assert in_turn * 2 > len(settled)  # mostly in turn when everyone is up
    for node in cluster.nodes:
        assert node.stop() == 0
    agreed_prefix(dn_home, [n.name for n in cluster.nodes])
    for node in cluster.nodes:
        report = verify_offline(dn_home, node.name)
        assert report["ok"], report["problems"]
        assert canonical_count(dn_home, node.name, tx.id) == 1


def test_partition_two_by_two_heals_to_one_branch(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    alice, bob, carol = Keypair.generate(), Keypair.generate(), Keypair.generate()
    # Blocks only when there is work (no idle blocks within the test), so the chain stands
    # still while the test picks the two sides.
    cluster, _ = build_cluster(
        dn_home, node_factory, 4, [alice, bob], block_time_ms=200, max_block_interval_ms=60_000
    )
    cluster.start()
    chain_id = cluster.nodes[0].status()["chain_id"]
    for nonce in range(4):
        warmup = transfer(chain_id, alice, nonce, carol.address, 1)
        with cluster.nodes[0].client() as client:
            client.submit(warmup.to_json())
            client.wait_for_tx(warmup.id, timeout=30)
    cluster.sync_all()
    # The signers of the last two blocks may not sign the next one: a side holding both could
    # make no block at all, so each side gets one of them.
    with cluster.nodes[0].client() as client:
        base = client.status()["height"]
        recent = [client.block(h)["header"]["proposer"] for h in (base - 1, base)]
    by_address = {n.status()["node_address"]: n for n in cluster.nodes}
    rest = [n for a, n in by_address.items() if a not in recent]
    left, right = [by_address[recent[0]], rest[0]], [by_address[recent[1]], rest[1]]
    cluster.partition(left, right)

    tx_left = transfer(chain_id, alice, 4, carol.address, 111)
    tx_right = transfer(chain_id, bob, 0, carol.address, 222)
    with left[0].client() as client:
        client.submit(tx_left.to_json())
    with right[0].client() as client:
        client.submit(tx_right.to_json())

    # Each side includes its transaction on its own branch, then stalls: two of four
    # validators cannot sign more than two blocks in a row, and nothing becomes final.
    for side, tx in ((left, tx_left), (right, tx_right)):
        for node in side:
            with node.client() as client:
                wait_until(
                    lambda c=client, t=tx: c.tx(t.id)["status"] == "included",  # type: ignore[misc]
                    30,
                    what="tx included on its side",
                )
    left_tip = cluster.sync_all(nodes=left)
    right_tip = cluster.sync_all(nodes=right)
    assert left_tip != right_tip
    for node in cluster.nodes:
        status = node.status()
        assert status["final_height"] <= base + 1
        assert status["height"] <= base + 3

    cluster.heal()
    cluster.sync_all(timeout=30)
    # The abandoned branch's transaction comes back and is included exactly once.
    for node in cluster.nodes:
        with node.client() as client:
            for tx in (tx_left, tx_right):
                wait_until(
                    lambda c=client, t=tx: c.tx(t.id)["status"] == "included",  # type: ignore[misc]
                    30,
                    what="both txs included after the heal",
                )
            assert client.account(carol.address)["balance"] == 4 + 333
    assert cluster.sync_all(timeout=30)  # one tip and one state root, in one round of calls
    for node in cluster.nodes:
        assert node.stop() == 0
    agreed_prefix(dn_home, [n.name for n in cluster.nodes])
    for node in cluster.nodes:
        report = verify_offline(dn_home, node.name)
        assert report["ok"], report["problems"]
        assert canonical_count(dn_home, node.name, tx_left.id) == 1
        assert canonical_count(dn_home, node.name, tx_right.id) == 1
