"""Peers, gossip and sync: how a node keeps up with the others on its LAN.

- **Candidates** are addresses we could talk to: static `--peer HOST:PORT`, services found by
  mDNS, and nodes that handshook with us. A candidate becomes a **peer** only after a mutual
  signed handshake (`dn.node.p2p.handshake`): same genesis, the right network key, never
  ourselves. The handshake also makes us a **member** to it (`members`), and every request we
  send it afterwards is signed for it (`session`); with a network key, a node answers its
  peer-to-peer routes to members only (`dn/node/http/guard.py`).
- A **heartbeat** asks every peer for its status. A peer whose head is heavier than ours (fork
  choice: total difficulty, then lowest hash) is synced from, in ranges of blocks, starting from
  the first block whose parent we know; the store is the cursor, so sync resumes after a restart.
  Peers silent for `expire_s` are dropped (static peers stay candidates and are retried).
- **Gossip** pushes each block we adopt and each transaction we accept to every peer once; the
  receivers deduplicate (a known block, a pending transaction) and only what is new to them travels
  on. Transactions still pending after `REANNOUNCE_S` are pushed again: a peer that got one before
  the block it builds on refused it as a nonce gap.
- A peer that sends invalid data loses points by how bad it was, and below `BAN_SCORE` is banned
  for `ban_s`: nothing is taken from or sent to it until then. Scores heal slowly.

The parts: `peers` (records, standing, the link policy), `sync` (range sync), `gossip` (pushes),
`handshake`, `auth` (signed requests), `members` (the answering side: counters, members, replay
memory), `session` (the calling side) and `discovery`; this module runs them on the node's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from dn.errors import DNError
from dn.node.node import Node
from dn.node.p2p import auth, handshake
from dn.node.p2p.gossip import Gossip
from dn.node.p2p.members import Members
from dn.node.p2p.peers import (
    BAN_SCORE,
    DEFAULT_PENALTY,
    HEAL_PER_S,
    INBOUND_WINDOW_S,
    MAX_CANDIDATES,
    MAX_INBOUND_PER_HOST,
    PENALTY,
    LinkPolicy,
    OpenLinks,
    Peer,
    Standing,
    normalise_peer,
)
from dn.node.p2p.session import Member, MemberTransport
from dn.node.p2p.sync import Sync

log = logging.getLogger("dn.net")

UNSIGNED_BURST = 20.0  # pushes no peer signed that one host may send at once …
UNSIGNED_PER_S = 2.0  # … and then this many a second
MAX_RATIONED_HOSTS = 1_024

__all__ = ["NetOptions", "Network", "Peer", "normalise_peer"]


@dataclass
class NetOptions:
    """How a node finds and talks to its peers."""

    peers: list[str] = field(default_factory=list)  # static HOST:PORT or URLs
    network_key: bytes | None = None
    mdns_interfaces: list[str] | None = None  # None: no mDNS
    heartbeat_s: float = 1.0
    expire_s: float = 15.0
    ban_s: float = 60.0


class Network(Sync, Gossip):
    """The peer-to-peer side of one node, run as tasks on the node's asyncio loop."""

    def __init__(self, node: Node, *, url: str, options: NetOptions | None = None) -> None:
        options = options or NetOptions()
        self.node = node
        self.url = url.rstrip("/")
        self.port = httpx.URL(self.url).port or 80
        self.network_key = options.network_key
        self.mdns_interfaces = options.mdns_interfaces
        self.heartbeat_s = options.heartbeat_s
        self.expire_s = options.expire_s
        self.ban_s = options.ban_s
        static_peers = options.peers
        self.static = {normalise_peer(p) for p in static_peers}
        self.candidates: dict[str, str] = dict.fromkeys(self.static, "static")
        self.found: dict[str, str] = {}  # mDNS instance name -> url
        self.peers: dict[str, Peer] = {}
        self.standing: dict[str, Standing] = {}
        self.links: LinkPolicy = OpenLinks()
        self._next_try: dict[str, float] = {}
        # who proved the key to us, and the signatures taken (dn.node.p2p.members) ...
        self.members = Members(node.key, node.genesis.hash, self.network_key)
        # ... and our side: the sessions we hold, and a transport that signs what we send
        self.member = Member(node.key, node.genesis.hash, self.network_key, url=self.url)
        self.transport = MemberTransport(self.member)
        self._rations: dict[str, tuple[float, float]] = {}  # host -> (tokens, when)
        self._inbound: dict[str, list[float]] = {}  # host -> when we took its inbound candidates
        self._syncing: set[str] = set()
        self._verified: set[str] = set()
        self._announced: dict[str, float] = {}  # tx id -> when we last pushed it
        self._unreachable: dict[str, tuple[tuple[int, str], float]] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self._discovery: Any = None
        node.listeners.append(self._on_node_event)

    # --- standing --------------------------------------------------------------------------

    def _standing(self, url: str) -> Standing:
        entry = self.standing.setdefault(url, Standing())
        now = time.monotonic()
        entry.score = min(0.0, entry.score + (now - entry.updated) * HEAL_PER_S)
        entry.updated = now
        return entry

    def banned(self, url: str) -> bool:
        return self._standing(url).banned_until > time.monotonic()

    def penalise(self, url: str, reason: str) -> None:
        entry = self._standing(url)
        entry.score -= PENALTY.get(reason, DEFAULT_PENALTY)
        entry.last_reason = reason
        if entry.score <= BAN_SCORE and entry.banned_until <= time.monotonic():
            entry.banned_until = time.monotonic() + self.ban_s
            self.peers.pop(url, None)
            log.warning("banned %s for %.0f s (last: %s)", url, self.ban_s, reason)

    def authenticate(self, signed: auth.Signed | None) -> str | None:
        """The URL of the peer that signed a push (`Members.check` verified the signature and
        took it once), or None when no peer did: the key must be the one that peer proved in
        its handshake, at the URL the push names (see `dn.node.p2p.auth`)."""
        if signed is None or signed.url is None:
            return None
        peer = self.peers.get(signed.url)
        return signed.url if peer is not None and peer.address == signed.address else None

    def ration(self, host: str | None) -> bool:
        """Whether an unsigned push from `host` may be read now (a token bucket per host: such
        pushes cost no one standing, so they are rationed instead)."""
        key = host or "?"
        now = time.monotonic()
        tokens, then = self._rations.get(key, (UNSIGNED_BURST, now))
        tokens = min(UNSIGNED_BURST, tokens + (now - then) * UNSIGNED_PER_S)
        allowed = tokens >= 1.0
        self._rations.pop(key, None)  # re-inserted last: the dict stays oldest first
        self._rations[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._rations) > MAX_RATIONED_HOSTS:
            self._rations.pop(next(iter(self._rations)))
        return allowed

    def accepts_from(self, url: str | None) -> str | None:
        """Why gossip claiming to come from `url` is refused, or None if it is welcome."""
        if url is None:
            return None
        url = url.rstrip("/")
        if not self.links.allows(url):
            return "link-cut"
        if self.banned(url):
            return "banned"
        return None

    def behind(self) -> bool:
        """Whether a sync is taking blocks of a heavier chain from a peer (then do not propose).
        A peer's claim to a heavier chain alone does not count: a liar could stop production."""
        return bool(self._verified)

    # --- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(5.0),
            headers={auth.FROM_HEADER: self.url},
            transport=self.transport,
        )
        try:
            if self.mdns_interfaces:
                await self._start_discovery()
            while not self._stop.is_set():
                await self._heartbeat()
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._discovery is not None:
                with contextlib.suppress(Exception):
                    await self._discovery.close()
            await self._http.aclose()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_discovery(self) -> None:
        from dn.node.p2p.discovery import Discovery, Found

        def on_found(found: Found) -> None:
            url = f"http://{found.host}:{found.port}"
            self.found[found.name] = url
            if url != self.url:
                self.candidates.setdefault(url, "mdns")
                self._wake.set()

        def on_lost(name: str) -> None:
            url = self.found.pop(name, None)
            if url and url not in self.static:
                self.candidates.pop(url, None)
                self.peers.pop(url, None)

        self._discovery = Discovery(
            address=self.node.key.address,
            genesis_hash=self.node.genesis.hash,
            port=self.port,
            roles=self.node.roles,
            interfaces=list(self.mdns_interfaces or []),
            on_found=on_found,
            on_lost=on_lost,
        )
        await self._discovery.start()

    # --- heartbeat: handshakes, status, expiry, sync ----------------------------------------

    async def _heartbeat(self) -> None:
        self._reannounce()
        now = time.monotonic()
        for url in list(self.candidates):
            if url in self.peers or url == self.url or not self.links.allows(url):
                continue
            if self.banned(url) or self._next_try.get(url, 0.0) > now:
                continue
            self._next_try[url] = now + max(self.heartbeat_s * 2, 2.0)
            self._spawn(self._handshake(url))
        for url, peer in list(self.peers.items()):
            if not self.links.allows(url):
                continue
            if now - peer.last_seen > self.expire_s:
                log.info("peer %s went silent; dropped", url)
                self.peers.pop(url, None)
                if self.candidates.get(url) == "inbound":
                    self.candidates.pop(url, None)
                continue
            self._spawn(self._poll(peer))

    async def _handshake(self, url: str) -> None:
        peer = await self._try_handshake(url)
        if peer is None:
            if self.candidates.get(url) == "inbound":  # it may handshake us again to come back
                self.candidates.pop(url, None)
            return
        self.peers[url] = peer
        log.info("peer %s (%s) added", url, peer.address)
        await self._poll(peer)

    async def _try_handshake(self, url: str) -> Peer | None:
        """A mutual handshake with `url` (`dn.node.p2p.handshake`): it proves itself to us, we
        to it, and our session there signs what we send it from then on."""
        try:
            hello = await self.transport.handshake(url)
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("handshake with %s failed: %s", url, exc)
            return None
        except DNError as exc:
            log.info("not peering with %s: %s (%s)", url, exc.message, exc.reason)
            if exc.reason == "self":
                self.candidates.pop(url, None)
            return None
        if any(p.address == hello.address for p in self.peers.values()):
            return None  # the same node under another URL
        return Peer(url, hello.address, tuple(hello.roles), self.candidates.get(url, "inbound"))

    def hello(self, body: Any, caller: str | None = None) -> dict[str, Any]:
        """Answer a handshake opening; remember the caller as a candidate to handshake back. Only
        the caller's own address is dialled back (at the port its URL names), at most
        `MAX_INBOUND_PER_HOST` ports of one host per `INBOUND_WINDOW_S`, so handshakes naming
        other hosts or many ports cannot make this node open connections for someone else."""
        opened = handshake.read_opening(body)
        reply = self.members.answer(opened, roles=self.node.roles, port=self.port, source=caller)
        if opened.url is not None:
            try:
                url = normalise_peer(opened.url)
                if caller is not None:
                    url = normalise_peer(f"{_bracketed(caller)}:{httpx.URL(url).port}")
            except DNError:
                return reply
            if url != self.url and url not in self.candidates and self.links.allows(url):
                if self._admit_inbound(httpx.URL(url).host):
                    self.candidates[url] = "inbound"
                    self._wake.set()
        return reply

    def finish(self, body: Any) -> dict[str, Any]:
        """The second half of a handshake we answered: the initiator proves itself and becomes a
        member (`HandshakeError` otherwise)."""
        return {"member": self.members.finish(body)}

    def _admit_inbound(self, host: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._inbound.get(host, []) if now - t < INBOUND_WINDOW_S]
        if len(recent) >= MAX_INBOUND_PER_HOST or len(self.candidates) >= MAX_CANDIDATES:
            self._inbound[host] = recent
            return False
        self._inbound[host] = [*recent, now]
        if len(self._inbound) > MAX_CANDIDATES:  # forget the hosts heard from longest ago
            oldest = min(self._inbound, key=lambda h: max(self._inbound[h], default=0.0))
            self._inbound.pop(oldest, None)
        return True

    async def _poll(self, peer: Peer) -> None:
        assert self._http is not None
        try:
            response = await self._http.get(peer.url + "/dn/v1/status")
            data = response.json()
            peer.height = int(data["height"])
            peer.tip = str(data["tip"])
            peer.total_difficulty = int(data["total_difficulty"])
            if data["genesis_hash"] != self.node.genesis.hash:
                self.peers.pop(peer.url, None)
                return
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return
        peer.last_seen = time.monotonic()
        peer.last_seen_ms = time.time_ns() // 1_000_000
        if self.worth_syncing(peer):
            await self.sync_from(peer)

    def peer_list(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        rows = []
        for url, peer in sorted(self.peers.items()):
            entry = self._standing(url)
            rows.append(
                {
                    "url": url,
                    "address": peer.address,
                    "roles": list(peer.roles),
                    "source": peer.source,
                    "height": peer.height,
                    "tip": peer.tip,
                    "last_seen_ms": peer.last_seen_ms,
                    "seen_ago_s": round(now - peer.last_seen, 1),
                    "score": round(entry.score, 1),
                }
            )
        return rows

    def standings(self) -> list[dict[str, Any]]:
        """Every address that has lost points, with its score and why."""
        now = time.monotonic()
        rows = []
        for url in sorted(self.standing):
            entry = self._standing(url)
            if entry.score < 0 or entry.banned_until > now:
                rows.append(
                    {
                        "url": url,
                        "score": round(entry.score, 1),
                        "last_reason": entry.last_reason,
                        "banned": entry.banned_until > now,
                    }
                )
        return rows

    def bans(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {"url": url, "until_s": round(s.banned_until - now, 1), "reason": s.last_reason}
            for url, s in sorted(self.standing.items())
            if s.banned_until > now
        ]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
