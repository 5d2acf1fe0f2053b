"""The checker's backstop for payment (dn/node/market/backstop.py): held settlements survive a
restart, are sent once when due, and are forgotten once settled or past saving.

The node here is a stand-in that records what is submitted; tests/functional/test_queries.py
runs the same code in real miners, with a consumer who never settles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dn.chain import tasks
from dn.chain.ledger import TASK
from dn.chain.types import Tx
from dn.node.market.backstop import SETTLE_TRIES, Backstop, last_valid_height, settle_height
from dn.node.market.records import TaskRecords
from dn.node.node import Node
from dn.wallet.keys import Keypair

CHAIN = "devnet-test"
TICKET = tasks.sign_ticket(
    CHAIN,
    Keypair.generate(),
    model="ab" * 32,
    prompt_hash=tasks.prompt_hash("hello"),
    max_tokens=8,
    seed=1,
    max_price=10_000,
    ref_height=10,
    nonce=1,
    expiry=60,
)
TASK_ID = tasks.task_id(CHAIN, TICKET)
GEN, CHK = Keypair.generate(), Keypair.generate()
ATTEST = {"task": TASK_ID, "output_hash": tasks.output_hash([1, 2]), "tokens": 2}
GENERATOR = tasks.sign_attestation(
    CHAIN, GEN, role="generator", verdict="generated", commitment="", **ATTEST
)
CHECKER = tasks.sign_attestation(
    CHAIN, CHK, role="checker", verdict="confirmed", commitment="cd" * 32, **ATTEST
)


@dataclass
class Tip:
    height: int


@dataclass
class Genesis:
    chain_id: str = CHAIN

    def param(self, name: str) -> int:
        return {"ticket_window_blocks": 100, "min_fee": 1_000}[name]


@dataclass
class Mempool:
    txs: dict[str, Tx] = field(default_factory=dict)

    def get(self, tx_id: str) -> Tx | None:
        return self.txs.get(tx_id)

    def pending_nonce(self, address: str) -> int:
        return len(self.txs)


@dataclass
class FakeNode:
    tip: Tip = field(default_factory=lambda: Tip(20))
    genesis: Genesis = field(default_factory=Genesis)
    mempool: Mempool = field(default_factory=Mempool)
    state: dict[str, Any] = field(default_factory=dict)
    refuse: dict[str, str] | None = None  # the error the next submit answers with
    submitted: list[Tx] = field(default_factory=list)

    own_tx = Node.own_tx  # the real one: it reads only genesis and mempool

    def submit(self, raws: list[Any]) -> list[dict[str, Any]]:
        tx = Tx.from_json(raws[0])
        if self.refuse is not None:
            return [{"accepted": False, **self.refuse}]
        self.submitted.append(tx)
        self.mempool.txs[tx.id] = tx
        return [{"accepted": True, "id": tx.id}]


def make(tmp_path: Path) -> tuple[FakeNode, Backstop, TaskRecords]:
    node = FakeNode()
    records = TaskRecords(tmp_path / "miner_tasks.db")
    backstop = Backstop(node, Keypair.generate(), records)  # type: ignore[arg-type]
    backstop.hold(TASK_ID, TICKET, GENERATOR, CHECKER)
    return node, backstop, records


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_the_checker_waits_half_the_ticket_life_left(done: int, left: int) -> None:
    at = settle_height(done, done + left)
    assert done < at <= done + left  # after the gateway's turn, while a block can take it
    assert at - done >= left // 2


def test_last_valid_height_is_the_chains_rule() -> None:
    assert last_valid_height({"expiry": 60, "ref_height": 10}, 100) == 60
    assert last_valid_height({"expiry": 200, "ref_height": 10}, 100) == 110


def test_held_settlements_survive_a_restart(tmp_path: Path) -> None:
    _, _, records = make(tmp_path)
    records.close()
    again = TaskRecords(tmp_path / "miner_tasks.db")
    (row,) = again.held()
    assert row["task"] == TASK_ID
    assert row["payload"] == {"ticket": TICKET, "generator": GENERATOR, "checker": CHECKER}
    assert (row["settle_at"], row["last_valid"], row["tries"]) == (40, 60, 0)
    again.release(TASK_ID)
    assert again.held() == []


def test_it_sends_once_when_due_and_forgets_once_settled(tmp_path: Path) -> None:
    node, backstop, records = make(tmp_path)
    node.tip.height = 39
    assert backstop.step() == []  # the gateway's turn
    node.tip.height = 40
    (sent,) = backstop.step()
    tx = node.submitted[0]
    assert (tx.id, tx.kind, tx.sender) == (sent, "task.settle", backstop.wallet.address)
    assert tx.payload["ticket"] == TICKET and tx.fee == 1_000
    node.tip.height = 41
    assert backstop.step() == []  # ours is pending: not sent again
    assert backstop.pending() == 1
    node.mempool.txs.clear()
    node.state[TASK + TASK_ID] = {"status": "confirmed"}  # included
    assert backstop.step() == []
    assert records.held() == [] and len(node.submitted) == 1


def test_a_settlement_seen_before_it_is_due_is_forgotten(tmp_path: Path) -> None:
    node, backstop, records = make(tmp_path)
    node.state[TASK + TASK_ID] = {"status": "confirmed"}  # the gateway settled it
    assert backstop.step() == []
    assert records.held() == [] and node.submitted == []


def test_a_refused_settlement_is_dropped_unless_it_may_pass_later(tmp_path: Path) -> None:
    node, backstop, records = make(tmp_path)
    node.tip.height = 45
    node.refuse = {"reason": "mempool-full", "message": "the mempool is full"}
    assert backstop.step() == [] and backstop.pending() == 1  # kept for the next step
    node.refuse = {"reason": "task-settled", "message": "task is settled already"}
    assert backstop.step() == [] and records.held() == []


def test_it_gives_up_when_no_block_can_take_it_or_after_lost_tries(tmp_path: Path) -> None:
    node, backstop, records = make(tmp_path)
    node.tip.height = 60  # the next block would be past the ticket's last height
    assert backstop.step() == [] and records.held() == [] and node.submitted == []

    (tmp_path / "again").mkdir()
    node, backstop, records = make(tmp_path / "again")
    node.tip.height = 45
    for _ in range(SETTLE_TRIES):
        assert len(backstop.step()) == 1
        node.mempool.txs.clear()  # dropped by a reorg, never included
    assert backstop.step() == []
    assert records.held() == [] and len(node.submitted) == SETTLE_TRIES
