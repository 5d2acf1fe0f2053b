"""A ticket book is used only once its block is final (dn/node/market/miner.py, `not-final`;
dn/chain/books.py): the draw that picks a slot's miners is the hash of the book's block, so a
reorganisation that replaces that block changes the draw (or the book's height), and a task
already served on it could never settle: its miners would go unpaid. The five-node LAN soak hit
it once (a book's block replaced after a partition healed; the task refused `wrong-miners`).

Four validators' real nodes (real SQLite stores) on one genesis, blocks handed over by hand so
the partition and the heal are exact. The consumer's book lands on the minority side; the heal
replaces its block. Whatever a miner agreed to serve must settle afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dn.chain import books, consensus, tasks
from dn.chain.genesis import Genesis, checked_params
from dn.chain.state import supply_report
from dn.chain.types import Block, Tx
from dn.chain.verify import verify_store
from dn.errors import TaskError
from dn.node.market.miner import Miner
from dn.node.market.records import TaskRecords
from dn.node.node import Node, now_ms
from dn.node.taskio import input_hash, normalize_input
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import BOND, CONSUMER, CREATOR, DN, M1, M2, SMOL
from tests.unit.test_market_records import ScriptedRunner
from tests.unit.test_node_forks import _home
from tests.unit.test_powr_validator import FakeStore

KEYS = sorted(
    (Keypair.from_seed(f"validator-{i}".encode().ljust(32, b".")) for i in range(4)),
    key=lambda k: k.address,
)
MINERS = {kp.address: kp for kp in (M1, M2)}
WINDOW = 40
PRICE = 100_000  # units per 1,000 tokens
MAX_PRICE = DN  # what the consumer's tickets (and its book's slots) may cost at most
INPUT = {"prompt": "Why is the sky blue?"}
TOKENS = 7


class Net:
    """Four validators' nodes; the model registered and M1, M2 serving it from block 1."""

    def __init__(self, tmp_path: Path) -> None:
        self.genesis = Genesis.build(
            network="devnet",
            time_ms=now_ms() - 60_000,
            validators=[k.address for k in KEYS],
            allocations={kp.address: 100 * DN for kp in (CREATOR, M1, M2, CONSUMER)},
            params=checked_params({"ticket_window_blocks": WINDOW, "block_time_ms": 50}),
            escrows={CONSUMER.address: 100 * DN},
        )
        self.nodes = [Node(_home(tmp_path / f"n{i}", k), self.genesis) for i, k in enumerate(KEYS)]
        self.clock = now_ms() - 30_000
        model = {
            "model": SMOL,
            "name": "smollm2",
            "domain": "general",
            "price": PRICE,
            "license": "apache-2.0",
            "size": 98_362_432,
        }
        serve = {"bond": BOND, "models": [SMOL]}
        self.submit(
            self.nodes,
            self.tx(CREATOR, "model.register", model),
            self.tx(M1, "miner.register", {**serve, "url": "http://127.0.0.1:8001"}),
            self.tx(M2, "miner.register", {**serve, "url": "http://127.0.0.1:8002"}),
        )
        for _ in range(4):  # block 1 holds them; 2 to 4 make it final
            self.produce(self.in_turn(), self.nodes)
        assert all(n.final >= 1 for n in self.nodes)

    def tx(self, kp: Keypair, kind: str, payload: dict[str, Any], fee: int = 0) -> Tx:
        return self.nodes[0].own_tx(kp, kind, payload, fee=fee)

    def submit(self, to: list[Node], *txs: Tx) -> None:
        for node in to:
            results = node.submit([tx.to_json() for tx in txs])
            assert all(r["accepted"] for r in results), results

    def in_turn(self) -> Node:
        lead = self.nodes[0]
        return self.nodes[
            lead.validators.index(consensus.in_turn(lead.validators, lead.tip.height + 1))
        ]

    def produce(self, node: Node, to: list[Node]) -> Block:
        self.clock += 10
        block = node.produce(self.clock)
        for other in to:
            if other is not node:
                assert other.receive_block(block) in ("extended", "reorg", "side"), block.height
        return block

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@pytest.fixture
def net(tmp_path: Path) -> Any:
    made = Net(tmp_path)
    yield made
    made.close()


def book_tx(net: Net) -> Tx:
    payload = {"model": SMOL, "slots": 1, "max_price": MAX_PRICE}
    return net.tx(CONSUMER, "task.book", payload, fee=int(net.genesis.param("min_fee")))


def ticket_for(net: Net, ref: int, book_nonce: int) -> dict[str, Any]:
    return tasks.sign_ticket(
        net.genesis.chain_id,
        CONSUMER,
        model=SMOL,
        prompt_hash=input_hash(normalize_input(INPUT)),
        max_tokens=64,
        seed=0,
        max_price=MAX_PRICE,
        ref_height=ref,
        nonce=books.ticket_nonce(book_nonce, 0),
        expiry=ref + WINDOW - 1,
    )


def serve(node: Node, ticket: dict[str, Any], tmp_path: Path) -> tuple[str, str] | None:
    """What the drawn generator's miner on `node` does with `ticket`: the pair it serves with,
    or None when it refuses with `not-final` (any other refusal fails the test)."""
    pair = books.chosen(node.state, ticket, node.store.canonical_hash, final=node.tip.height)
    path = tmp_path / f"records-{ticket['ref_height']}.db"
    miner = Miner(
        node,
        MINERS[pair[0]],
        FakeStore({SMOL}),  # type: ignore[arg-type]
        ScriptedRunner(),  # type: ignore[arg-type]
        records=TaskRecords.for_chain(path, node.genesis),
    )
    try:
        miner.accept(ticket, INPUT, tasks.GENERATOR)
    except TaskError as exc:
        assert exc.reason == "not-final", exc
        return None
    finally:
        miner.records.close()
        miner.exposure.close()
    return pair


def settlement(node: Node, ticket: dict[str, Any], pair: tuple[str, str]) -> Tx:
    """The settlement of a confirmed answer of TOKENS tokens by `pair`, sent by its checker
    through `node`."""
    chain_id = node.genesis.chain_id
    task = tasks.task_id(chain_id, ticket)
    common = {"task": task, "output_hash": tasks.output_hash(list(range(TOKENS))), "tokens": TOKENS}
    gen = tasks.sign_attestation(
        chain_id, MINERS[pair[0]], role="generator", verdict="generated", commitment="", **common
    )
    chk = tasks.sign_attestation(
        chain_id,
        MINERS[pair[1]],
        role="checker",
        verdict="confirmed",
        commitment="cd" * 32,
        **common,
    )
    payload = {"ticket": ticket, "generator": gen, "checker": chk}
    return node.own_tx(MINERS[pair[1]], "task.settle", payload)


def settle_all(net: Net, served: list[tuple[dict[str, Any], tuple[str, str]]]) -> None:
    """Every task a miner served settles, its miners paid: each settlement, sent by its checker
    to n1, is accepted and lands confirmed in the next block."""
    n0, n1, n2, n3 = net.nodes
    for ticket, pair in served:
        tx = settlement(n1, ticket, pair)
        (result,) = n1.submit([tx.to_json()])
        assert result["accepted"], (ticket["ref_height"], result)
        net.submit([n0, n2, n3], tx)
    proposer = next(n for n in net.nodes if n.due(n.last_block_ms + 10**9))
    net.produce(proposer, net.nodes)
    for ticket, _ in served:
        task = tasks.task_id(net.genesis.chain_id, ticket)
        assert n1.state.get(f"task:{task}")["status"] == tasks.CONFIRMED


def test_whatever_a_miner_served_settles_after_its_books_block_is_replaced(
    net: Net, tmp_path: Path
) -> None:
    n0, n1, n2, n3 = net.nodes
    assert n1.tip.height == 4
    # The partition: n1 alone, the other three together. n1 makes block 5 (in turn) with the
    # consumer's book; the three make 5, 6 and 7 out of turn, which weigh more (3 against 2).
    assert consensus.in_turn(n1.validators, 5) == n1.key.address
    booking = book_tx(net)
    net.submit([n1], booking)
    minority = net.produce(n1, [n1])
    assert books.get(n1.state, CONSUMER.address, booking.nonce)["height"] == 5
    served: list[tuple[dict[str, Any], tuple[str, str]]] = []
    ticket = ticket_for(net, 5, booking.nonce)
    pair = serve(n1, ticket, tmp_path)  # the gateway on n1 saw the book: the miner is asked
    if pair is not None:
        served.append((ticket, pair))

    for node in (n2, n3, n0):
        net.produce(node, [n0, n2, n3])
    assert n0.tip.height == 7
    for height in (5, 6, 7):  # the heal: n1 takes the heavier branch
        n1.receive_block(n0.store.block(height))
    assert n1.tip.hash == n0.tip.hash and n1.store.canonical_hash(5) != minority.hash

    # The booking is pending again on n1; gossip brings it to the others and it lands anew.
    net.submit([n0, n2, n3], *n1.mempool.pending())
    proposer = next(n for n in net.nodes if n.due(n.last_block_ms + 10**9))
    net.produce(proposer, net.nodes)
    landed = books.get(n1.state, CONSUMER.address, booking.nonce)
    assert landed is not None and landed["height"] == 8
    settle_all(net, served)  # what was served on the replaced block (nothing, when refused)
    again = ticket_for(net, 8, booking.nonce)
    assert serve(n1, again, tmp_path) is None  # not final yet: nobody serves it
    for _ in range(8):  # blocks on top until block 8 is final everywhere
        if all(n.final >= 8 for n in net.nodes):
            break
        proposer = next(n for n in net.nodes if n.due(n.last_block_ms + 10**9))
        net.produce(proposer, net.nodes)
    assert all(n.final >= 8 for n in net.nodes)
    pair = serve(n1, again, tmp_path)
    assert pair is not None
    settle_all(net, [(again, pair)])  # served on the final book: it settles
    for node in net.nodes:  # every node's chain replays, and its supply is accounted
        assert verify_store(node.store)["ok"]
        assert node.supply.report() == supply_report(node.state.items())


def test_a_book_not_final_yet_is_work_for_the_proposer(net: Net) -> None:
    """A consumer waits for its book's block to be final, so a validator proposes at
    `block_time` while one is not, though its mempool is empty (not after the idle interval)."""
    block_time = int(net.genesis.param("block_time_ms"))
    idle = int(net.genesis.param("max_block_interval_ms"))
    assert idle > 10 * block_time
    net.submit(net.nodes, book_tx(net))
    net.produce(net.in_turn(), net.nodes)  # block 5 holds the book
    for _ in range(2):  # two blocks on top; four validators need three signers above it
        node = net.in_turn()
        soon = node.last_block_ms + block_time  # in turn: no random delay
        assert len(node.mempool) == 0 and node.final < 5
        assert node.due(soon), "an unfinal book waits on nobody"
        net.produce(node, net.nodes)
    net.produce(net.in_turn(), net.nodes)
    assert all(n.final >= 5 for n in net.nodes)
    node = net.in_turn()
    assert not node.due(node.last_block_ms + block_time + 2_000)  # final: idle again
    assert node.due(node.last_block_ms + idle)
