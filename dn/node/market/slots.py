"""The slots a gateway wallet has booked, per model (dn/chain/books.py): every ticket this node
signs for its own wallet (the OpenAI routes) uses one, and each slot is used once.

A booking is one `task.book` transaction for `size` slots (fee `size × min_fee`; `SIZE`, or
`$DN_BOOK_SLOTS`: 1 makes every query pay for exactly its own slot); the pool books
again when a model has no slot left that can still settle with a margin (`MARGIN` blocks of the
ticket window), and concurrent queries of one model wait for the same booking. Slots left unused
when their book leaves the ticket window are simply dropped: each cost `min_fee`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from dn.chain.books import MAX_SLOTS, ticket_nonce
from dn.errors import InputError, NotFound, TaskError

if TYPE_CHECKING:
    from dn.node.node import Node
    from dn.wallet.keys import Keypair

SIZE = 8
MARGIN = 10  # blocks a slot must still be able to settle in (at most half the ticket window)
POLL_S = 0.05


class SlotPool:
    """The unused booked slots of one wallet, per model (see the module docstring)."""

    def __init__(self, node: Node, wallet: Keypair, size: int | None = None) -> None:
        self.node = node
        self.wallet = wallet
        self.size = size or int(os.environ.get("DN_BOOK_SLOTS") or SIZE)
        if not 1 <= self.size <= MAX_SLOTS:
            raise InputError(f"DN_BOOK_SLOTS must be 1 to {MAX_SLOTS}", reason="bad-slots")
        self._free: dict[str, list[tuple[int, int]]] = {}  # model -> [(height, ticket nonce)]
        self._booking: dict[str, asyncio.Task[None]] = {}

    def _fresh(self, sha: str) -> list[tuple[int, int]]:
        window = int(self.node.genesis.param("ticket_window_blocks"))
        oldest = self.node.tip.height - window + min(MARGIN, window // 2)
        kept = [slot for slot in self._free.get(sha, []) if slot[0] >= oldest]
        self._free[sha] = kept
        return kept

    async def take(self, sha: str) -> tuple[int, int]:
        """A slot (its book's height, its ticket nonce) of model `sha` nobody used, booking more
        first if none is left. TaskError when the booking is refused or does not land."""
        for _ in range(3):  # a booking landed but went stale while waiting: book once more
            free = self._fresh(sha)
            if free:
                return free.pop(0)
            running = self._booking.get(sha)
            if running is None or running.done():
                running = asyncio.ensure_future(self._book(sha))
                self._booking[sha] = running
            await asyncio.shield(running)
        raise TaskError("could not book slots for this model in time", reason="no-slot")

    async def _book(self, sha: str) -> None:
        min_fee = int(self.node.genesis.param("min_fee"))
        payload = {"model": sha, "slots": self.size}
        tx = self.node.own_tx(self.wallet, "task.book", payload, fee=self.size * min_fee)
        result = self.node.submit([tx.to_json()])[0]
        if not result["accepted"]:
            raise TaskError(
                f"this node's gateway wallet could not book slots: {result.get('message')}",
                reason=str(result.get("reason") or "no-slot"),
            )
        limit = time.monotonic() + 2 * int(self.node.genesis.param("max_block_interval_ms")) / 1000
        while time.monotonic() < limit:
            try:
                found = self.node.tx_status(tx.id)
            except NotFound:  # dropped from the mempool (a block made it invalid)
                break
            if found["status"] == "included":
                height, free = int(found["height"]), self._free.setdefault(sha, [])
                free.extend((height, ticket_nonce(tx.nonce, i)) for i in range(self.size))
                return
            await asyncio.sleep(POLL_S)
        raise TaskError("the slots this node booked did not land in a block", reason="no-slot")
