"""The gateway wallet's pool of booked ticket slots (dn/node/market/slots.py), on a stand-in node
whose transactions land in the next block at once (final after `polls` looks). The real pool
runs behind the OpenAI routes in tests/functional/test_openai_*.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from dn.chain.books import MAX_SLOTS
from dn.chain.tasks import price_of
from dn.errors import TaskError
from dn.node.market.slots import MARGIN, SlotPool, tier
from dn.wallet.keys import Keypair

WINDOW = 100
MIN_FEE = 1_000
PRICE = 3_000  # units per 1,000 tokens


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
    polls: int = 0  # how many looks at a booking find it in a block not final yet
    looked: int = 0

    def own_tx(self, _: Keypair, kind: str, payload: dict[str, Any], fee: int = 0) -> Sent:
        assert kind == "task.book" and fee == payload["slots"] * MIN_FEE
        assert set(payload) == {"model", "slots", "max_price"}
        tx = Sent(f"tx{len(self.made)}", len(self.made), fee, payload)
        self.made[tx.id] = tx
        return tx

    def submit(self, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.refuse:
            return [{"accepted": False, "reason": "insufficient-funds", "message": "no funds"}]
        self.sent.append(self.made[raws[0]["id"]])
        return [{"accepted": True}]

    def tx_status(self, tx_id: str) -> dict[str, Any]:
        self.looked += 1
        height = self.tip.height + 1 + self.made[tx_id].nonce
        return {"status": "included", "height": height, "final": self.looked > self.polls}


def take(pool: SlotPool, sha: str, n: int, max_tokens: int = 256) -> list[tuple[int, int]]:
    async def run() -> list[tuple[int, int, int]]:
        asks = (pool.take(sha, PRICE, max_tokens) for _ in range(n))
        return list(await asyncio.gather(*asks))

    got = asyncio.run(run())
    assert all(most == price_of(PRICE, tier(max_tokens)) for _, _, most in got)
    return [(height, nonce) for height, nonce, _ in got]


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


def test_slots_reserve_by_request_size_and_cover_every_request() -> None:
    """Each slot reserves its max_price of the escrow, so the pool books by size of request:
    the next power of two of max_tokens, at least 256 (a request's slot covers what it can
    cost and reserves at most twice that)."""
    assert [tier(n) for n in (1, 100, 256, 257, 512, 513, 65536)] == [
        256,
        256,
        256,
        512,
        512,
        1024,
        65536,
    ]
    for n in (1, 255, 256, 257, 1000, 4097, 65536):
        assert price_of(PRICE, n) <= price_of(PRICE, tier(n))
        assert n < 256 or tier(n) < 2 * n
    node = FakeNode()
    pool = SlotPool(node, Keypair.generate(), size=4)  # type: ignore[arg-type]
    take(pool, "m" * 64, 2, max_tokens=16)
    take(pool, "m" * 64, 2, max_tokens=256)
    assert len(node.sent) == 1  # both sizes fit the 256-token slots
    take(pool, "m" * 64, 1, max_tokens=300)
    assert len(node.sent) == 2
    assert [tx.payload["max_price"] for tx in node.sent] == [
        PRICE * 256 // 1000,
        PRICE * 512 // 1000,
    ]


def test_a_booking_is_used_only_once_its_block_is_final() -> None:
    node = FakeNode(polls=3)
    pool = SlotPool(node, Keypair.generate(), size=2)  # type: ignore[arg-type]
    take(pool, "m" * 64, 1)
    assert node.looked == 4  # three looks found it in a block, not final yet
