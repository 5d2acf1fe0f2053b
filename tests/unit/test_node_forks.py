"""Side branches, fork choice, reorgs and finality in `Node`, with blocks handed over by hand.

Several real nodes (real SQLite stores) share one genesis; the tests pass blocks between them
the way gossip would, so partitions and heals are exact and instant.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from dn.chain import consensus
from dn.chain.genesis import Genesis, default_params
from dn.chain.state import build_block, supply_report
from dn.chain.types import Block, Tx
from dn.chain.verify import verify_store
from dn.errors import InvalidBlock
from dn.node.node import Node, NodeHome, now_ms
from dn.wallet.keys import Keypair

FEE = 1_000


def _home(path: Path, key: Keypair) -> NodeHome:
    path.mkdir(parents=True, mode=0o700)
    (path / "node_key.json").write_text(
        json.dumps({"address": key.address, "seed": key.seed().hex()})
    )
    (path / "node_key.json").chmod(0o600)
    return NodeHome(path)


class Net:
    """N validator nodes on one genesis; alice and bob hold funds."""

    def __init__(self, tmp_path: Path, n: int) -> None:
        self.keys = sorted((Keypair.generate() for _ in range(n)), key=lambda k: k.address)
        self.alice, self.bob, self.carol = (
            Keypair.generate(),
            Keypair.generate(),
            Keypair.generate(),
        )
        self.genesis = Genesis.build(
            network="devnet",
            time_ms=now_ms() - 60_000,
            validators=[k.address for k in self.keys],
            allocations={self.alice.address: 10**12, self.bob.address: 10**12},
            params=default_params(block_time_ms=50),
        )
        self.nodes = [
            Node(_home(tmp_path / f"n{i}", k), self.genesis, rng=random.Random(i))
            for i, k in enumerate(self.keys)
        ]
        self.clock = now_ms() - 30_000

    def tick(self) -> int:
        self.clock += 10
        return self.clock

    def node_of(self, address: str) -> Node:
        return next(n for n in self.nodes if n.key.address == address)

    def produce(self, node: Node, to: list[Node]) -> Block:
        block = node.produce(self.tick())
        for other in to:
            if other is not node:
                other.receive_block(block)
        return block

    def round_robin(self, count: int) -> None:
        """Grow the shared chain with in-turn blocks, delivered to every node."""
        for _ in range(count):
            lead = self.nodes[0]
            proposer = consensus.in_turn(lead.validators, lead.tip.height + 1)
            self.produce(self.node_of(proposer), self.nodes)

    def transfer(self, sender: Keypair, nonce: int, amount: int) -> Tx:
        return Tx.create(
            sender,
            chain_id=self.genesis.chain_id,
            kind="transfer",
            nonce=nonce,
            fee=FEE,
            payload={"to": self.carol.address, "amount": amount},
        )


def _may_produce(node: Node) -> bool:
    recent = node.state.get("signers") or []
    return consensus.may_sign(recent, node.key.address, len(node.validators))


def test_three_validators_take_turns_and_agree(tmp_path: Path) -> None:
    net = Net(tmp_path, 3)
    net.round_robin(9)
    tips = {n.tip.hash for n in net.nodes}
    assert len(tips) == 1 and net.nodes[0].tip.height == 9
    proposers = [net.nodes[0].store.block(h).header.proposer for h in range(1, 10)]  # type: ignore[union-attr]
    assert proposers == [net.keys[h % 3].address for h in range(1, 10)]
    assert all(net.nodes[0].store.block(h).header.difficulty == 2 for h in range(1, 10))  # type: ignore[union-attr]
    assert net.nodes[0].final == 6  # blocks 7, 8, 9 carry all three signers
    for node in net.nodes:
        assert verify_store(node.store)["ok"]


def test_a_validator_may_not_sign_twice_within_the_window(tmp_path: Path) -> None:
    net = Net(tmp_path, 3)
    first = net.produce(net.nodes[0], net.nodes)
    assert first.header.proposer == net.keys[0].address
    assert first.header.difficulty == 1  # height 1 is keys[1]'s turn
    signer = net.node_of(first.header.proposer)
    assert not _may_produce(signer)
    assert not signer.due(now_ms() + 10**9)
    with pytest.raises(InvalidBlock) as caught:
        signer.produce(net.tick())
    assert caught.value.reason == "signed-recently"


def test_partition_two_by_two_then_heal_converges_and_returns_transactions(
    tmp_path: Path,
) -> None:
    net = Net(tmp_path, 4)
    net.round_robin(4)
    left, right = net.nodes[:2], net.nodes[2:]
    base = net.nodes[0].tip
    tx_left = net.transfer(net.alice, 0, 111)
    tx_right = net.transfer(net.bob, 0, 222)
    assert left[0].submit([tx_left.to_json()])[0]["accepted"]
    left[1].submit([tx_left.to_json()])
    assert right[0].submit([tx_right.to_json()])[0]["accepted"]
    right[1].submit([tx_right.to_json()])

    # Each side grows its own branch until the signing rule stops it: two validators out of
    # four can sign at most two blocks in a row.
    for side in (left, right):
        for _ in range(4):
            makers = [n for n in side if _may_produce(n)]
            if not makers:
                break
            net.produce(makers[0], side)
        assert not any(_may_produce(n) for n in side)
        assert side[0].tip.hash == side[1].tip.hash
        assert base.height + 1 <= side[0].tip.height <= base.height + 2
        assert side[0].final <= base.height  # the minority branch never becomes final
    assert left[0].tip.hash != right[0].tip.hash

    # Heal: every node hears every block of the other side.
    left_blocks = [left[0].store.block(h) for h in range(base.height + 1, left[0].tip.height + 1)]
    right_blocks = [
        right[0].store.block(h) for h in range(base.height + 1, right[0].tip.height + 1)
    ]
    for node in left:
        for block in right_blocks:
            node.receive_block(block)  # type: ignore[arg-type]
    for node in right:
        for block in left_blocks:
            node.receive_block(block)  # type: ignore[arg-type]
    heads = {n.tip.hash for n in net.nodes}
    assert len(heads) == 1
    for node in net.nodes:  # the supply kept per block, through the reorg, is the state's sum
        assert node.supply.report() == supply_report(node.state.items())
    winner_is_left = net.nodes[0].tip.hash == left_blocks[-1].hash  # type: ignore[union-attr]
    losers = right if winner_is_left else left
    lost_tx = tx_right if winner_is_left else tx_left
    won_tx = tx_left if winner_is_left else tx_right
    for node in net.nodes:
        assert node.store.count_canonical_tx(won_tx.id) == 1
        assert node.store.count_canonical_tx(lost_tx.id) == 0
    for node in losers:
        assert lost_tx.id in node.mempool  # back from the abandoned branch
        assert node.tx_status(lost_tx.id)["status"] == "pending"
        assert [t.id for t in node.store.mempool_txs()] == [lost_tx.id]

    # The network goes on; the returned transaction is included exactly once.
    for _ in range(4):
        makers = [n for n in losers if _may_produce(n)]
        if makers:
            net.produce(makers[0], net.nodes)
            break
        net.round_robin(1)
    for node in net.nodes:
        assert node.store.count_canonical_tx(lost_tx.id) == 1
        assert node.store.count_canonical_tx(won_tx.id) == 1
        report = verify_store(node.store)
        assert report["ok"], report["problems"]
        assert node.supply.report() == supply_report(node.state.items())
        assert node.supply.report()["burned"] > 0  # the fees' burned share moved it
    assert len({n.tip.hash for n in net.nodes}) == 1
    assert len({n.tip.header.state_root for n in net.nodes}) == 1


def test_equivocation_is_rejected_and_the_tip_stays(tmp_path: Path) -> None:
    net = Net(tmp_path, 3)
    net.round_robin(2)
    proposer = net.node_of(consensus.in_turn(net.nodes[0].validators, 3))
    victim = next(n for n in net.nodes if n is not proposer)
    first = net.produce(proposer, [victim])
    parent = victim.store.block(2)
    assert parent is not None
    twin, _ = build_block(
        _state_at(victim, 2),
        parent.header,
        parent.hash,
        [],
        proposer.key,
        first.header.time + 1,
        net.genesis,
    )
    assert twin.block.hash != first.hash
    with pytest.raises(InvalidBlock) as caught:
        victim.receive_block(twin.block)
    assert caught.value.reason == "equivocation"
    assert victim.tip.hash == first.hash


def _state_at(node: Node, height: int):  # type: ignore[no-untyped-def]
    from dn.chain.ledger import Overlay

    rewind: dict = {}
    for h in range(node.tip.height, height, -1):
        rewind.update(node.store.undo(node.store.canonical_hash(h)))  # type: ignore[arg-type]
    state = Overlay(node.state)
    state.changes.update(rewind)
    return state


def test_a_side_block_below_the_final_block_is_refused(tmp_path: Path) -> None:
    net = Net(tmp_path, 3)
    net.round_robin(1)
    straggler_key = net.keys[0]  # height 2 is keys[2]'s turn; keys[0] never signed there
    assert consensus.in_turn(net.nodes[0].validators, 1) == net.keys[1].address
    net.round_robin(6)
    main = net.nodes[0]
    assert main.final >= 3
    # A validator builds on block 1 as if it had slept through everything since.
    parent = main.store.block(1)
    assert parent is not None
    stale, _ = build_block(
        _state_at(main, 1), parent.header, parent.hash, [], straggler_key, net.tick(), net.genesis
    )
    before = main.tip.hash
    with pytest.raises(InvalidBlock) as caught:
        main.receive_block(stale.block)
    assert caught.value.reason == "below-final"
    assert main.tip.hash == before


def test_an_orphan_is_reported_not_stored(tmp_path: Path) -> None:
    net = Net(tmp_path, 3)
    b1 = net.produce(net.node_of(net.keys[1].address), net.nodes)
    b2 = net.produce(net.node_of(net.keys[2].address), net.nodes)
    assert net.nodes[0].receive_block(b2) == "known"
    solo = Node(_home(tmp_path / "solo", Keypair.generate()), net.genesis)
    assert solo.receive_block(b2) == "orphan"  # a node with only genesis: parent unknown
    assert not solo.store.has_block(b2.hash)
    assert solo.receive_block(b1) == "extended"
    assert solo.receive_block(b2) == "extended"
    assert solo.tip.hash == b2.hash
