"""Gossip: push each block we adopt and each transaction we accept to every peer once; the
receivers deduplicate, so only what is new to them travels on. Transactions still pending after
`REANNOUNCE_S` are pushed again (a peer that got one before the block it builds on refused it as a
nonce gap)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import httpx

from dn.chain.types import Block, Tx
from dn.errors import DNError, InvalidBlock
from dn.node.p2p.peers import LinkPolicy, Peer

if TYPE_CHECKING:
    from dn.node.node import Node

REANNOUNCE_S = 3.0  # push a still-pending transaction again after this long
REANNOUNCE_MAX = 1_000  # transactions per re-announcement
PUSH_TXS = 200  # transactions per push


class Gossip:
    """The gossip half of `Network` (a mixin: it shares the network's peers and HTTP client)."""

    node: Node
    url: str
    peers: dict[str, Peer]
    links: LinkPolicy
    _http: httpx.AsyncClient | None
    _stop: asyncio.Event
    _wake: asyncio.Event
    _syncing: set[str]
    _announced: dict[str, float]

    def penalise(self, url: str, reason: str) -> None:
        raise NotImplementedError

    def banned(self, url: str) -> bool:
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    async def sync_from(self, peer: Peer) -> int:
        raise NotImplementedError

    def _on_node_event(self, event: str, payload: Any) -> None:
        if self._http is None or self._stop.is_set():
            return
        if event == "block":
            if self._syncing:
                return  # blocks taken by range sync are old news to the peers they came from
            assert isinstance(payload, Block)
            self._push_all("/dn/v1/gossip/block", payload.to_json())
        elif event == "txs":
            self._push_txs([tx for tx in payload if isinstance(tx, Tx)])

    def _push_txs(self, txs: list[Tx]) -> None:
        now = time.monotonic()
        for tx in txs:
            self._announced[tx.id] = now
        if len(txs) <= PUSH_TXS:
            self._push_all("/dn/v1/gossip/txs", [tx.to_json() for tx in txs])
        else:  # a big batch in parts, the event loop free in between
            self._spawn(self._push_in_parts(txs))

    async def _push_in_parts(self, txs: list[Tx]) -> None:
        for start in range(0, len(txs), PUSH_TXS):
            await asyncio.sleep(0)
            self._push_all(
                "/dn/v1/gossip/txs", [t.to_json() for t in txs[start : start + PUSH_TXS]]
            )

    def _reannounce(self) -> None:
        """Push again what has waited in our mempool for a while. A peer that had not yet seen
        the block a transaction builds on refused it (a nonce gap); if we may not sign the next
        block ourselves, only the peers can include it."""
        pending = {tx.id: tx for tx in self.node.mempool.pending(REANNOUNCE_MAX)}
        self._announced = {k: v for k, v in self._announced.items() if k in pending}
        now = time.monotonic()
        stale = [
            tx
            for tx_id, tx in pending.items()
            if now - self._announced.get(tx_id, 0.0) >= REANNOUNCE_S
        ]
        if stale and self.peers:
            self._push_txs(stale)

    def _push_all(self, path: str, body: Any) -> None:
        """Push `body` to every peer; the network's transport signs it for each
        (dn.node.p2p.session), naming that peer as the receiver."""
        data = json.dumps(body, separators=(",", ":")).encode()
        for url in list(self.peers):
            if self.links.allows(url) and not self.banned(url):
                self._spawn(self._push(url + path, data))

    async def _push(self, target: str, data: bytes) -> None:
        assert self._http is not None
        with contextlib.suppress(httpx.HTTPError):
            await self._http.post(
                target, content=data, headers={"content-type": "application/json"}
            )

    def on_gossip_block(
        self, raw: Any, from_url: str | None, signed_by: str | None = None
    ) -> dict[str, Any]:
        """A block pushed to us. Invalid -> the sender loses points, but only a peer that signed
        the push (`signed_by`, see `authenticate`): a URL in a header proves nothing. An orphan
        -> sync from the peer it names."""
        source = from_url.rstrip("/") if from_url else None
        try:
            block = Block.from_json(raw)
            outcome = self.node.receive_block(block)
        except DNError as exc:
            if signed_by is not None:
                reason = exc.reason if isinstance(exc, InvalidBlock) else "bad-block"
                self.penalise(signed_by, reason)
            raise
        if outcome == "orphan":
            peer = self.peers.get(source or "")
            if peer is not None and peer.url not in self._syncing:
                self._spawn(self.sync_from(peer))
            else:
                self._wake.set()
        return {"result": outcome, "height": block.height, "hash": block.hash}
