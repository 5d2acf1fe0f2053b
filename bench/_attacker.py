"""A hostile peer that keeps attacking a devnet while bench/propagation.py times transfers on it.

It is the test suite's scriptable `HostilePeer` (tests/functional/hostile.py) run in a loop: it
claims a far heavier chain and trickles its block pages one byte every 3 s (so every node that
syncs from it stalls until its deadline), handshakes with every node again each round under a
fresh key (a ban or a dropped peer costs it nothing), and replays, signed as its gossip, the
last blocks and their transactions to every node. Counts what it sent.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' hostile peer

from dn.node.p2p.session import Member, MemberTransport  # noqa: E402
from dn.wallet.keys import Keypair  # noqa: E402
from tests.functional.hostile import HostilePeer  # noqa: E402

ROUND_S = 1.0
REPLAYED_BLOCKS = 3


class Attacker:
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.http = httpx.Client(timeout=5)
        statuses = [self.http.get(f"{url}/dn/v1/status").json() for url in urls]
        self.addresses = [s["node_address"] for s in statuses]
        self.genesis_hash = statuses[0]["genesis_hash"]
        self.peer = HostilePeer(self.genesis_hash)
        self.peer.status.update(height=10**6, tip="f" * 64, total_difficulty=10**9)
        self.peer.route(
            "GET", "/dn/v1/blocks", HostilePeer.trickle(b" ", every_s=3.0, declared=100_000)
        )
        self.counts = {"handshakes": 0, "replayed_blocks": 0, "replayed_txs": 0, "rounds": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.peer.start()
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=30)
        self.peer.stop()
        self.http.close()
        return {**self.counts, "synced_from_it": self.peer.asked("/dn/v1/blocks")}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except httpx.HTTPError:
                pass  # a node busy or refusing: the next round tries again
            self.counts["rounds"] += 1
            self._stop.wait(ROUND_S)

    def _round(self) -> None:
        self.peer.key = Keypair.generate()  # whatever standing the last key lost, a new one
        member = Member(self.peer.key, self.genesis_hash, None, url=self.peer.url)
        transport = MemberTransport(member)
        try:
            for url in self.urls:
                try:
                    transport.handshake_sync(url)
                    self.counts["handshakes"] += 1
                except Exception:  # noqa: BLE001 - refused (rate limit, ban): keep attacking
                    pass
        finally:
            transport.close()
        height = int(self.http.get(f"{self.urls[0]}/dn/v1/status").json()["height"])
        blocks = []
        for h in range(max(1, height - REPLAYED_BLOCKS + 1), height + 1):
            block = self.http.get(f"{self.urls[0]}/dn/v1/blocks/{h}").json()
            block.pop("height", None)
            blocks.append(block)
        txs = [tx for block in blocks for tx in block.get("txs", [])]
        for url, address in zip(self.urls, self.addresses, strict=True):
            for block in blocks:
                self.peer.push(self.http, url, address, "/dn/v1/gossip/block", block)
                self.counts["replayed_blocks"] += 1
            if txs:
                self.peer.push(self.http, url, address, "/dn/v1/gossip/txs", txs)
                self.counts["replayed_txs"] += len(txs)
