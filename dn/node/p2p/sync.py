"""Range sync: fetch the blocks of a peer whose head beats ours, a page at a time, from the first
block whose parent we know (the store is the cursor, so sync resumes after a restart)."""

from __future__ import annotations

import asyncio
import logging
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


class Sync:
    """The sync half of `Network` (a mixin: it shares the network's peers and HTTP client)."""

    node: Node
    _http: httpx.AsyncClient | None
    _syncing: set[str]
    _unreachable: dict[str, tuple[int, str]]

    def penalise(self, url: str, reason: str) -> None:
        raise NotImplementedError

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
                await asyncio.sleep(0)  # let the HTTP server answer between pages
            return taken
        finally:
            self._syncing.discard(peer.url)
            if consensus.prefer(peer.head(), (self.node.tip_td, self.node.tip.hash)):
                self._unreachable[peer.url] = peer.head()
            else:
                self._unreachable.pop(peer.url, None)

    async def _page(self, peer: Peer, start: int) -> list[Block] | None:
        assert self._http is not None
        try:
            response = await self._http.get(
                peer.url + "/dn/v1/blocks", params={"from": start, "limit": PAGE}
            )
            raw = response.json()["blocks"]
            return [Block.from_json(item) for item in raw]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("sync page %d from %s failed: %s", start, peer.url, exc)
            return None
        except DNError as exc:
            self.penalise(peer.url, "bad-response")
            log.warning("malformed blocks from %s: %s", peer.url, exc)
            return None

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
