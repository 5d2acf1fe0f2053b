"""The checker's backstop for payment (dn/node/market/backstop.py) on real nodes over real SQLite
stores: held settlements survive a restart, are sent once when due, are forgotten once settled or
past saving, and every one it sends is checked by the node like any other transaction (one the
chain would refuse is dropped, not retried).

Two `Node`s share one genesis, as on a LAN: the validator's, which makes every block, and the
checker's own (a miner's node, not a validator), which takes each block as gossip would bring it.
The backstop submits to the checker's node; `Lan.block` relays what is pending there to the
validator, as gossip would. tests/functional/test_queries.py runs the same code in real miners,
with a consumer who never settles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dn.chain import books, tasks
from dn.chain import mempool as mempool_module
from dn.chain.genesis import Genesis
from dn.chain.ledger import TASK
from dn.chain.types import Tx
from dn.errors import TaskError
from dn.node.market.backstop import SETTLE_TRIES, Backstop, last_valid_height, settle_height
from dn.node.market.records import TaskRecords
from dn.node.node import Node, NodeHome
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    BOND,
    CONSUMER,
    CREATOR,
    DN,
    GATEWAY,
    M1,
    M2,
    OTHER,
    SMOL,
    make_genesis,
)
from tests.unit.test_chain_state import V

WINDOW = 20  # ticket_window_blocks
LIFE = 10  # a ticket expires this many blocks after its reference height
PRICE = 123_457  # units per 1,000 tokens
TOKENS = 77  # so a confirmed answer costs 123_457 * 77 // 1000 = 9_506 units
FEE = 1_000  # the default min_fee
MINERS = {kp.address: kp for kp in (M1, M2)}
REGISTERED = 1  # a miner's nonce after its miner.register in block 1
BOOKED = 1  # the block that holds CONSUMER's book, whose slot 0 `held_task` uses


def _node(path: Path, genesis: Genesis, key: Keypair) -> Node:
    path.mkdir(parents=True, exist_ok=True)
    return Node(NodeHome(path), genesis, key=key)


class Lan:
    """The validator's node and the checker's node on one genesis, the model registered, two
    miners serving it and CONSUMER's book of one slot for it (in block 1: BOOKED)."""

    def __init__(self, tmp_path: Path, **params: int) -> None:
        self.tmp_path = tmp_path
        self.genesis = make_genesis(ticket_window_blocks=WINDOW, **params)
        self.validator = _node(tmp_path / "validator", self.genesis, V)
        self.miner_key = Keypair.generate()
        self.miner = _node(tmp_path / "miner", self.genesis, self.miner_key)
        self.time_ms = self.genesis.time
        model = {
            "model": SMOL,
            "name": "smollm2",
            "domain": "general",
            "price": PRICE,
            "license": "apache-2.0",
            "size": 98_362_432,
        }
        serve = {"bond": BOND, "models": [SMOL]}
        self.block(
            self.tx(CREATOR, "model.register", model),
            self.tx(M1, "miner.register", {**serve, "url": "http://127.0.0.1:8001"}),
            self.tx(M2, "miner.register", {**serve, "url": "http://127.0.0.1:8002"}),
            # fee: 1 x min_fee; the slot reserves DN of CONSUMER's escrow
            self.tx(CONSUMER, "task.book", {"model": SMOL, "slots": 1, "max_price": DN}),
        )
        booked = books.get(self.miner.state, CONSUMER.address, 0)  # CONSUMER's first tx: nonce 0
        assert booked is not None and booked["height"] == BOOKED

    def tx(self, kp: Keypair, kind: str, payload: dict[str, Any]) -> Tx:
        """A transaction from `kp` with its next nonce as the validator's node sees it."""
        return self.validator.own_tx(kp, kind, payload)

    def block(self, *txs: Tx, relay: bool = True) -> None:
        """The validator takes `txs`, then (unless `relay` is off) whatever is pending on the
        checker's node, makes the next block, and the checker's node adopts it."""
        results = self.validator.submit([tx.to_json() for tx in txs])
        assert all(r["accepted"] for r in results), results
        if relay:  # as gossip would; what the validator refuses stays out
            self.validator.submit([tx.to_json() for tx in self.miner.mempool.pending()])
        self.time_ms += 1_000
        made = self.validator.produce(self.time_ms)
        assert self.miner.receive_block(made) == "extended"

    def advance_to(self, height: int) -> None:
        """Blocks up to `height`, relaying nothing: what waits on the checker's node waits."""
        while self.miner.tip.height < height:
            self.block(relay=False)

    def balance(self, kp: Keypair) -> int:
        return int(self.miner.account(kp.address)["balance"])

    def nonce(self, kp: Keypair) -> int:
        return int(self.miner.account(kp.address)["nonce"])

    def reopen_miner(self) -> None:
        """The checker's node restarts on its store."""
        self.miner.close()
        self.miner = Node(NodeHome(self.tmp_path / "miner"), self.genesis, key=self.miner_key)

    def close(self) -> None:
        self.validator.close()
        self.miner.close()


@dataclass
class Held:
    """A confirmed task the chain would settle, as the checker holds it."""

    task: str
    payload: dict[str, Any]
    checker: Keypair


def held_task(lan: Lan, *, life: int = LIFE, swap_miners: bool = False) -> Held:
    """A consumer's ticket for slot 0 of its book in block BOOKED (the checker's tip), and both
    miners' attestations of a confirmed answer of TOKENS tokens, by the two miners the slot
    draws (in each other's roles with `swap_miners`, which the chain refuses)."""
    chain_id, ref = lan.genesis.chain_id, BOOKED
    assert lan.miner.tip.height == ref
    ticket = tasks.sign_ticket(
        chain_id,
        CONSUMER,
        model=SMOL,
        prompt_hash=tasks.prompt_hash("Why is the sky blue?"),
        max_tokens=128,
        seed=7,
        max_price=DN,
        ref_height=ref,
        nonce=books.ticket_nonce(0, 0),  # slot 0 of the book CONSUMER made with nonce 0
        expiry=ref + life,
    )
    task = tasks.task_id(chain_id, ticket)
    state, block_hash = lan.miner.state, lan.miner.store.canonical_hash
    generator, checker = books.chosen(state, ticket, block_hash, final=ref)
    if swap_miners:
        generator, checker = checker, generator
    common = {"task": task, "output_hash": tasks.output_hash(list(range(TOKENS))), "tokens": TOKENS}
    gen = tasks.sign_attestation(
        chain_id, MINERS[generator], role="generator", verdict="generated", commitment="", **common
    )
    chk = tasks.sign_attestation(
        chain_id,
        MINERS[checker],
        role="checker",
        verdict="confirmed",
        commitment="cd" * 32,
        **common,
    )
    payload = {"ticket": ticket, "generator": gen, "checker": chk}
    return Held(task, payload, MINERS[checker])


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    made = Lan(tmp_path)
    yield made
    made.close()


def backstop_for(lan: Lan, held: Held) -> tuple[Backstop, TaskRecords]:
    """The checker's backstop on its node, holding `held` at the node's tip."""
    records = TaskRecords.for_chain(lan.tmp_path / "miner_tasks.db", lan.genesis)
    backstop = Backstop(lan.miner, held.checker, records)
    p = held.payload
    tokens = list(range(TOKENS))  # the checker keeps its record before it holds the settlement
    records.put(held.task, tasks.CHECKER, ticket=p["ticket"], task_input={}, tokens=tokens)
    backstop.hold(held.task, p["ticket"], p["generator"], p["checker"])
    return backstop, records


def refusal(lan: Lan, held: Held) -> str:
    """The reason the checker's node gives for this settlement from the checker now (the
    backstop's own transaction would be this one)."""
    tx = lan.miner.own_tx(held.checker, "task.settle", held.payload)
    (result,) = lan.miner.submit([tx.to_json()])
    assert not result["accepted"], "the node took it: the case would prove nothing"
    return str(result["reason"])


def test_a_settlement_is_held_only_for_a_task_whose_record_is_kept(lan: Lan) -> None:
    """What bounds the table of held settlements: the records' budgets (records.py)."""
    held = held_task(lan)
    records = TaskRecords.for_chain(lan.tmp_path / "miner_tasks.db", lan.genesis)
    backstop = Backstop(lan.miner, held.checker, records)
    p = held.payload
    with pytest.raises(TaskError) as caught:
        backstop.hold(held.task, p["ticket"], p["generator"], p["checker"])
    assert caught.value.reason == "no-record" and records.held_count() == 0
    records.close()


# --- the pure rules ---------------------------------------------------------------------------


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_the_checker_waits_half_the_ticket_life_left(done: int, left: int) -> None:
    at = settle_height(done, done + left)
    assert done < at <= done + left  # after the gateway's turn, while a block can take it
    assert at - done >= left // 2


def test_last_valid_height_is_the_chains_rule() -> None:
    assert last_valid_height({"expiry": 60, "ref_height": 10}, 100) == 60
    assert last_valid_height({"expiry": 200, "ref_height": 10}, 100) == 110


# --- on the nodes -----------------------------------------------------------------------------


def test_it_sends_once_when_due_and_forgets_once_settled(lan: Lan) -> None:
    held = held_task(lan)  # at height 1: the ticket's last block is 11, the checker's turn 6
    backstop, records = backstop_for(lan, held)
    (row,) = records.held()
    assert (row["settle_at"], row["last_valid"], row["tries"]) == (6, 11, 0)
    consumer, checker = escrowed(lan), lan.balance(held.checker)
    lan.advance_to(5)
    assert backstop.step() == []  # the gateway's turn
    assert lan.miner.mempool.pending() == []
    lan.advance_to(6)
    (sent,) = backstop.step()
    tx = lan.miner.mempool.get(sent)  # taken by the node's own checks
    assert tx is not None
    assert (tx.kind, tx.sender, tx.fee, tx.payload) == (
        "task.settle",
        held.checker.address,
        FEE,
        held.payload,
    )
    assert backstop.step() == []  # ours is pending: not sent again
    assert backstop.pending() == 1
    lan.block()
    record = lan.miner.state.get(TASK + held.task)
    assert record is not None and (record["status"], record["paid"]) == ("confirmed", 9_506)
    assert lan.miner.tx_status(sent)["status"] == "included"
    assert backstop.step() == []
    assert records.held() == [] and backstop.pending() == 0
    # The consumer paid the price from its escrow; the checker its fee, and it got its 15% share
    # (1,500 bps).
    assert consumer - escrowed(lan) == 9_506
    assert lan.balance(held.checker) - checker == 1_425 - FEE
    assert lan.nonce(held.checker) == REGISTERED + 1  # one settlement, ever


def escrowed(lan: Lan) -> int:
    return int(lan.miner.state.get("escrow:" + CONSUMER.address)["amount"])


def test_held_settlements_survive_a_restart(lan: Lan) -> None:
    held = held_task(lan)
    _, records = backstop_for(lan, held)
    records.close()
    lan.reopen_miner()
    again = TaskRecords.for_chain(lan.tmp_path / "miner_tasks.db", lan.genesis)
    (row,) = again.held()
    assert row["task"] == held.task and row["payload"] == held.payload
    assert (row["settle_at"], row["last_valid"], row["tries"]) == (6, 11, 0)
    backstop = Backstop(lan.miner, held.checker, again)
    lan.advance_to(6)
    (sent,) = backstop.step()
    lan.block()
    assert lan.miner.tx_status(sent)["status"] == "included"
    assert backstop.step() == [] and again.held() == []


def test_a_settlement_seen_before_it_is_due_is_forgotten(lan: Lan) -> None:
    held = held_task(lan)
    backstop, records = backstop_for(lan, held)
    lan.block(lan.tx(GATEWAY, "task.settle", held.payload))  # the gateway settled it
    assert backstop.step() == []
    assert records.held() == []
    lan.advance_to(6)
    assert backstop.step() == []
    assert lan.miner.mempool.pending() == [] and lan.nonce(held.checker) == REGISTERED


def test_a_settlement_pending_elsewhere_is_refused_and_dropped(lan: Lan) -> None:
    """The gateway's settlement reached the checker's node but no block yet when the checker's
    turn comes: the node refuses the second one, and the backstop lets the task go."""
    held = held_task(lan)
    backstop, records = backstop_for(lan, held)
    lan.advance_to(6)
    gateway = lan.miner.own_tx(GATEWAY, "task.settle", held.payload)
    assert lan.miner.submit([gateway.to_json()])[0]["accepted"]
    assert refusal(lan, held) == "task-settled"
    assert backstop.step() == []
    assert records.held() == []
    lan.block()
    assert lan.miner.tx_status(gateway.id)["status"] == "included"
    assert lan.nonce(held.checker) == REGISTERED  # the checker paid no fee


def test_a_settlement_the_chain_refuses_is_dropped_not_retried(lan: Lan) -> None:
    held = held_task(lan, swap_miners=True)
    backstop, records = backstop_for(lan, held)
    lan.advance_to(6)
    assert refusal(lan, held) == "wrong-miners"
    assert backstop.step() == []
    assert records.held() == [] and lan.miner.mempool.pending() == []
    lan.block()
    assert lan.miner.state.get(TASK + held.task) is None
    assert lan.nonce(held.checker) == REGISTERED


def test_a_full_mempool_is_tried_again_at_the_next_step(
    lan: Lan, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = held_task(lan)
    backstop, records = backstop_for(lan, held)
    lan.advance_to(6)
    monkeypatch.setattr(mempool_module, "MAX_PENDING", 1)
    other = lan.miner.own_tx(OTHER, "transfer", {"to": CREATOR.address, "amount": 1})
    assert lan.miner.submit([other.to_json()])[0]["accepted"]
    assert refusal(lan, held) == "mempool-full"
    assert backstop.step() == []
    assert backstop.pending() == 1 and records.held()[0]["tries"] == 0  # kept for the next step
    lan.block()  # the transfer leaves the mempool for a block
    (sent,) = backstop.step()
    lan.block()
    assert lan.miner.tx_status(sent)["status"] == "included"


@pytest.mark.parametrize(
    ("life", "last", "reason"),
    [(LIFE, 11, "expired-ticket"), (WINDOW + 10, 1 + WINDOW, "stale-ticket")],
    ids=["expiry", "ticket-window"],
)
def test_it_gives_up_where_no_block_can_take_it(
    lan: Lan, life: int, last: int, reason: str
) -> None:
    """The last height the backstop tries is the last one the chain takes: with the tip one
    below it the node accepts the settlement; at it, the node refuses it and the backstop
    sends nothing."""
    held = held_task(lan, life=life)
    backstop, records = backstop_for(lan, held)
    assert records.held()[0]["last_valid"] == last
    lan.advance_to(last - 1)
    in_time = lan.miner.own_tx(GATEWAY, "task.settle", held.payload)
    assert lan.miner.submit([in_time.to_json()])[0]["accepted"]  # block `last` may take it
    lan.advance_to(last)  # it does not: the node drops it as too late for any later block
    assert lan.miner.mempool.get(in_time.id) is None
    assert refusal(lan, held) == reason
    assert backstop.step() == []
    assert records.held() == [] and lan.miner.mempool.pending() == []
    assert lan.nonce(held.checker) == REGISTERED


def test_it_gives_up_after_its_settlement_is_lost_again_and_again(lan: Lan) -> None:
    """Each time, another transaction of the checker's wallet takes the nonce of the backstop's
    settlement in the block the validator makes, so the checker's node drops the settlement as
    spent: it is sent again with the next nonce, SETTLE_TRIES times in all."""
    held = held_task(lan)
    backstop, records = backstop_for(lan, held)
    lan.advance_to(6)
    for tries in range(1, SETTLE_TRIES + 1):
        (sent,) = backstop.step()
        tx = lan.miner.mempool.get(sent)
        assert tx is not None and tx.nonce == REGISTERED + tries - 1
        rival = Tx.create(
            held.checker,
            chain_id=lan.genesis.chain_id,
            kind="transfer",
            nonce=tx.nonce,
            fee=FEE,
            payload={"to": OTHER.address, "amount": 1},
        )
        lan.block(rival)  # taken before the relayed settlement, which is then refused
        assert lan.miner.mempool.get(sent) is None and records.held()[0]["tries"] == tries
        assert lan.miner.state.get(TASK + held.task) is None
    assert backstop.step() == []
    assert records.held() == [] and lan.miner.mempool.pending() == []
    assert lan.nonce(held.checker) == REGISTERED + SETTLE_TRIES  # the rivals only
