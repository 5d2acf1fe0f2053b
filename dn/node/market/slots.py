"""The slots a gateway wallet has booked, per model and price (dn/chain/books.py): every ticket
this node signs for its own wallet (the OpenAI routes) uses one, and each slot is used once.

Each slot reserves its `max_price` of the wallet's escrow until it settles or leaves the window,
so slots are booked by size of request: a request of `max_tokens` takes a slot booked for
`tier(max_tokens)` tokens (the next power of two, at least `LEAST_TOKENS`) at the model's price,
which covers it and reserves at most twice what it can cost (the default 256 tokens share one
pool).

A booking is one `task.book` transaction for `size` slots (fee `size × min_fee`; `SIZE`, or
`$DN_BOOK_SLOTS`: 1 makes every query pay for exactly its own slot); the pool books
again when a model has no slot left that can still settle with a margin (`MARGIN` blocks of the
ticket window), and concurrent queries of one model wait for the same booking, until its block is
final (the miners serve only final books: dn/node/market/miner.py). Slots left unused
when their book leaves the ticket window are simply dropped: each cost `min_fee`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from dn.chain.books import MAX_SLOTS, ticket_nonce
from dn.chain.tasks import price_of
from dn.errors import InputError, NotFound, TaskError

if TYPE_CHECKING:
    from dn.node.node import Node
    from dn.wallet.keys import Keypair

SIZE = 8
MARGIN = 10  # blocks a slot must still be able to settle in (at most half the ticket window)
POLL_S = 0.05
LAND_S = 60.0  # how long a booking may take to land in a final block
LEAST_TOKENS = 256
Pool = tuple[str, int]  # (model, the most each of its slots pays)


def tier(max_tokens: int) -> int:
    """The request size whose slots a request of `max_tokens` uses (see the module docstring)."""
    return max(LEAST_TOKENS, 1 << (max_tokens - 1).bit_length())


class SlotPool:
    """The unused booked slots of one wallet, per model and price (see the module docstring)."""

    def __init__(self, node: Node, wallet: Keypair, size: int | None = None) -> None:
        self.node = node
        self.wallet = wallet
        self.size = size or int(os.environ.get("DN_BOOK_SLOTS") or SIZE)
        if not 1 <= self.size <= MAX_SLOTS:
            raise InputError(f"DN_BOOK_SLOTS must be 1 to {MAX_SLOTS}", reason="bad-slots")
        self._free: dict[Pool, list[tuple[int, int]]] = {}  # -> [(height, ticket nonce)]
        self._booking: dict[Pool, asyncio.Task[None]] = {}

    def _fresh(self, pool: Pool) -> list[tuple[int, int]]:
        window = int(self.node.genesis.param("ticket_window_blocks"))
        oldest = self.node.tip.height - window + min(MARGIN, window // 2)
        kept = [slot for slot in self._free.get(pool, []) if slot[0] >= oldest]
        self._free[pool] = kept
        return kept

    async def take(self, sha: str, price: int, max_tokens: int) -> tuple[int, int, int]:
        """A slot nobody used of model `sha` (`price` per 1,000 tokens) for a request of
        `max_tokens`, booking more first if none is left: (its book's height, its ticket nonce,
        the most its ticket may pay). TaskError when the booking is refused or does not land."""
        pool = (sha, price_of(price, tier(max_tokens)))
        for _ in range(3):  # a booking landed but went stale while waiting: book once more
            free = self._fresh(pool)
            if free:
                height, nonce = free.pop(0)
                return height, nonce, pool[1]
            running = self._booking.get(pool)
            if running is None or running.done():
                running = asyncio.ensure_future(self._book(pool))
                self._booking[pool] = running
            await asyncio.shield(running)
        raise TaskError("could not book slots for this model in time", reason="no-slot")

    async def _book(self, pool: Pool) -> None:
        min_fee = int(self.node.genesis.param("min_fee"))
        payload = {"model": pool[0], "slots": self.size, "max_price": pool[1]}
        tx = self.node.own_tx(self.wallet, "task.book", payload, fee=self.size * min_fee)
        result = self.node.submit([tx.to_json()])[0]
        if not result["accepted"]:
            raise TaskError(
                f"this node's gateway wallet could not book slots: {result.get('message')}",
                reason=str(result.get("reason") or "no-slot"),
            )
        limit = time.monotonic() + LAND_S
        while time.monotonic() < limit:
            try:
                found = self.node.tx_status(tx.id)
            except NotFound:  # dropped from the mempool (a block made it invalid)
                break
            if found["status"] == "included" and found["final"]:
                height, free = int(found["height"]), self._free.setdefault(pool, [])
                free.extend((height, ticket_nonce(tx.nonce, i)) for i in range(self.size))
                return
            await asyncio.sleep(POLL_S)
        raise TaskError(
            "the slots this node booked did not land in a final block", reason="no-slot"
        )
