"""The gateway wallet's pool of booked ticket slots (dn/node/market/slots.py), on a stand-in node
whose transactions land in the next block at once. The real pool runs behind the OpenAI routes in
tests/functional/test_openai_*.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from dn.chain.books import MAX_SLOTS
from dn.errors import TaskError
from dn.node.market.slots import MARGIN, SlotPool
from dn.wallet.keys import Keypair

WINDOW = 100
MIN_FEE = 1_000


@dataclass
class Tip:
    height: int


@dataclass
class Genesis:
    def param(self, name: str) -> int:
        return {"ticket_window_blocks": WINDOW, "min_fee": MIN_FEE, "max_block_interval_ms": 1000}[
            name
        ]


@dataclass
class Sent:
    id: str
    nonce: int
    fee: int
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass
class FakeNode:
    """Books land in the block after the tip as soon as they are submitted (the k-th book one
    block after the one before); `refuse` refuses them."""

    tip: Tip = field(default_factory=lambda: Tip(10))
    genesis: Genesis = field(default_factory=Genesis)
    made: dict[str, Sent] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    refuse: bool = False

    def own_tx(self, _: Keypair, kind: str, payload: dict[str, Any], fee: int = 0) -> Sent:
        assert kind == "task.book" and fee == payload["slots"] * MIN_FEE
        tx = Sent(f"tx{len(self.made)}", len(self.made), fee, payload)
        self.made[tx.id] = tx
        return tx

    def submit(self, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.refuse:
            return [{"accepted": False, "reason": "insufficient-funds", "message": "no funds"}]
        self.sent.append(self.made[raws[0]["id"]])
        return [{"accepted": True}]

    def tx_status(self, tx_id: str) -> dict[str, Any]:
        return {"status": "included", "height": self.tip.height + 1 + self.made[tx_id].nonce}


def take(pool: SlotPool, sha: str, n: int) -> list[tuple[int, int]]:
    async def run() -> list[tuple[int, int]]:
        return list(await asyncio.gather(*(pool.take(sha) for _ in range(n))))

    return asyncio.run(run())


def test_one_booking_serves_its_slots_once_each() -> None:
    node = FakeNode()
    pool = SlotPool(node, Keypair.generate(), size=8)  # type: ignore[arg-type]
    got = take(pool, "m" * 64, 8)  # eight queries at once: one booking between them
    assert len(node.sent) == 1
    assert sorted(nonce for _, nonce in got) == [i for i in range(8)]  # book nonce 0: 0*256 + i
    assert {height for height, _ in got} == {11}
    got += take(pool, "m" * 64, 1)  # the ninth needs a second book
    assert len(node.sent) == 2 and got[-1] == (12, 1 * MAX_SLOTS + 0)
    assert len(set(got)) == 9


def test_books_are_per_model_and_slots_go_stale_before_the_window_ends() -> None:
    node = FakeNode()
    pool = SlotPool(node, Keypair.generate(), size=4)  # type: ignore[arg-type]
    take(pool, "a" * 64, 1)
    take(pool, "b" * 64, 1)
    assert len(node.sent) == 2  # another model, another book
    node.tip = Tip(11 + WINDOW - MARGIN)  # the first book can still settle, barely
    take(pool, "a" * 64, 1)
    assert len(node.sent) == 2
    node.tip = Tip(12 + WINDOW - MARGIN)  # now less than MARGIN blocks would be left
    height, _ = take(pool, "a" * 64, 1)[0]
    assert len(node.sent) == 3 and height == node.tip.height + 1 + 2


def test_a_refused_booking_is_a_clear_error() -> None:
    pool = SlotPool(FakeNode(refuse=True), Keypair.generate(), size=2)  # type: ignore[arg-type]
    with pytest.raises(TaskError) as caught:
        take(pool, "m" * 64, 1)
    assert caught.value.reason == "insufficient-funds"
    assert "could not book" in caught.value.message


def test_the_pool_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DN_BOOK_SLOTS", "3")
    assert SlotPool(FakeNode(), Keypair.generate()).size == 3  # type: ignore[arg-type]
    monkeypatch.setenv("DN_BOOK_SLOTS", str(MAX_SLOTS + 1))
    with pytest.raises(Exception, match="DN_BOOK_SLOTS"):
        SlotPool(FakeNode(), Keypair.generate())  # type: ignore[arg-type]
