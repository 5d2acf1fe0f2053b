"""Range sync: fetch the blocks of a peer whose head beats ours, a page at a time, from the first
block whose parent we know (the store is the cursor, so sync resumes after a restart).

A page must arrive within a total deadline and at a minimum rate (after a short grace), not just
with some byte every few seconds: a peer that trickles its answer is dropped as `stalled`, loses
points, and its claimed head is not tried again until it claims another. Until a sync has applied
a block, the peer's heavier chain is only a claim, and block production does not wait for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

import httpx

from dn.chain import consensus
from dn.chain.types import Block
from dn.errors import DNError, InvalidBlock
from dn.node.p2p.peers import Peer

if TYPE_CHECKING:
    from dn.node.node import Node

log = logging.getLogger("dn.net")

PAGE = 100  # blocks per sync request (the API's page limit)
PAGE_DEADLINE_S = 30.0  # a whole page, however large, within this
MIN_RATE = 64 * 1024  # bytes/s a page must keep up once past the grace period
RATE_GRACE_S = 2.0
MAX_PAGE_BYTES = 64 * 1024 * 1024
RETRY_S = 10.0  # a head we could not sync to is tried again after this long, or once it moves


class Stalled(Exception):
    """A page that missed its deadline or fell below the minimum rate."""


class Sync:
    """The sync half of `Network` (a mixin: it shares the network's peers and HTTP client)."""

    node: Node
    _http: httpx.AsyncClient | None
    _syncing: set[str]
    _verified: set[str]  # syncs that have applied a block: their heavier chain is real
    _unreachable: dict[str, tuple[tuple[int, str], float]]  # url -> (its head, when to retry)

    def penalise(self, url: str, reason: str) -> None:
        raise NotImplementedError

    def worth_syncing(self, peer: Peer) -> bool:
        """Whether `peer` claims a heavier chain that we are not already syncing, and have not
        just failed to sync to."""
        if not consensus.prefer(peer.head(), (self.node.tip_td, self.node.tip.hash)):
            return False
        if peer.url in self._syncing:
            return False
        failed = self._unreachable.get(peer.url)
        return failed is None or failed[0] != peer.head() or time.monotonic() >= failed[1]

    async def sync_from(self, peer: Peer) -> int:
        """Fetch and apply blocks from `peer` until we have its head; returns blocks taken."""
        assert self._http is not None
        self._syncing.add(peer.url)
        taken = 0
        try:
            start = await self._find_start(peer)
            if start is None:
                return 0
            pending: asyncio.Task[list[Block] | None] | None = asyncio.ensure_future(
                self._page(peer, start)
            )
            while pending is not None:
                blocks = await pending
                pending = None
                if not blocks:
                    break
                if len(blocks) == PAGE:  # fetch the next page while this one is applied
                    pending = asyncio.ensure_future(self._page(peer, blocks[-1].height + 1))
                for block in blocks:
                    try:
                        outcome = self.node.receive_block(block)
                    except InvalidBlock as exc:
                        log.warning("invalid block %d from %s: %s", block.height, peer.url, exc)
                        self.penalise(peer.url, exc.reason)
                        if pending is not None:
                            pending.cancel()
                        return taken
                    if outcome == "orphan":
                        self.penalise(peer.url, "bad-response")
                        if pending is not None:
                            pending.cancel()
                        return taken
                    if outcome != "known":
                        taken += 1
                        self._verified.add(peer.url)
                await asyncio.sleep(0)  # let the HTTP server answer between pages
            return taken
        finally:
            self._syncing.discard(peer.url)
            self._verified.discard(peer.url)
            if consensus.prefer(peer.head(), (self.node.tip_td, self.node.tip.hash)):
                self._unreachable[peer.url] = (peer.head(), time.monotonic() + RETRY_S)
            else:
                self._unreachable.pop(peer.url, None)

    async def _page(self, peer: Peer, start: int) -> list[Block] | None:
        try:
            raw = json.loads(await self._fetch(peer.url + "/dn/v1/blocks", start))["blocks"]
            return [Block.from_json(item) for item in raw]
        except Stalled as exc:
            log.warning("sync page %d from %s stalled: %s", start, peer.url, exc)
            self.penalise(peer.url, "stalled")
            return None
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("sync page %d from %s failed: %s", start, peer.url, exc)
            return None
        except DNError as exc:
            self.penalise(peer.url, "bad-response")
            log.warning("malformed blocks from %s: %s", peer.url, exc)
            return None

    async def _fetch(self, url: str, start: int) -> bytes:
        """The page's bytes, or `Stalled`: by `PAGE_DEADLINE_S` in all, and at any moment past
        `RATE_GRACE_S` at least `MIN_RATE` bytes for every second since the request began."""
        assert self._http is not None
        began = time.monotonic()
        body = bytearray()
        try:
            async with asyncio.timeout(PAGE_DEADLINE_S):
                params = {"from": start, "limit": PAGE}
                async with self._http.stream("GET", url, params=params) as response:
                    chunks = response.aiter_bytes()
                    while True:
                        # the moment what we have stops being enough for the minimum rate
                        due = began + RATE_GRACE_S + len(body) / MIN_RATE
                        try:
                            chunk = await asyncio.wait_for(
                                anext(chunks), max(0.0, due - time.monotonic())
                            )
                        except StopAsyncIteration:
                            return bytes(body)
                        body += chunk
                        if len(body) > MAX_PAGE_BYTES:
                            raise Stalled(f"a page above {MAX_PAGE_BYTES} bytes")
        except TimeoutError:
            elapsed = time.monotonic() - began
            raise Stalled(f"{len(body)} bytes in {elapsed:.1f} s") from None

    async def _find_start(self, peer: Peer) -> int | None:
        """The lowest height worth fetching: walk back from our tip until the peer's block there
        has a parent we know (a common ancestor), never below our final block."""
        height = max(1, min(self.node.tip.height + 1, peer.height))
        step = 1
        while True:
            page = await self._page(peer, height)
            if not page:
                return None
            if self.node.store.has_block(page[0].header.prev):
                return height
            if height - 1 <= self.node.final:
                return None
            height = max(self.node.final + 1, height - step)
            step *= 2
