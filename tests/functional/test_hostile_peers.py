"""Hostile hosts on the LAN against a real node process (THREATS.md: liveness, bounded cost).

Each test plays one attack from the network-hardening issue with the scriptable hostile peer
(tests/functional/hostile.py) and checks that the honest node keeps producing: a transfer sent
after the attack began is included.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx

from dn.chain.types import Tx
from dn.node.p2p import auth, handshake
from dn.node.p2p.members import OPENING_BURST
from dn.node.p2p.peers import DEFAULT_PENALTY, HEAL_PER_S, MAX_INBOUND_PER_HOST
from dn.wallet.keys import Keypair
from tests.functional.harness import (
    NodeProcess,
    init_chain,
    make_keys,
    wait_until,
    write_genesis,
)
from tests.functional.hostile import HostilePeer

GOSSIP = "/dn/v1/gossip/block"
INCLUDED_WITHIN_S = 20.0  # a few block times and sync deadlines, far below the attack's hold


def transfer(chain_id: str, sender: Keypair, nonce: int) -> Tx:
    return Tx.create(
        sender,
        chain_id=chain_id,
        kind="transfer",
        nonce=nonce,
        fee=1000,
        payload={"to": Keypair.generate().address, "amount": 10**9},
    )


def test_a_peer_that_trickles_its_blocks_does_not_stop_production(
    dn_home, node_factory: Callable[..., NodeProcess]
) -> None:
    """Attack 1: a peer with a throwaway key claims a far heavier chain, then sends its block
    page one byte every 3 s. The node must give up on it (a total deadline and a minimum rate,
    not a per-read timeout) and keep producing."""
    alice = Keypair.generate()
    genesis = init_chain(dn_home, {alice.address: 10**12}, block_time_ms=200)
    liar = HostilePeer(genesis.hash)
    liar.status.update(height=10**6, tip="f" * 64, total_difficulty=10**9)
    liar.route("GET", "/dn/v1/blocks", HostilePeer.trickle(b" ", every_s=3.0, declared=100_000))
    with liar:
        node = node_factory("default", None, ["--no-mdns", "--peer", liar.url]).start()
        wait_until(lambda: liar.asked("/dn/v1/blocks") > 0, 20, what="the node to sync from it")
        with node.client() as client:
            tx = transfer(genesis.chain_id, alice, 0)
            client.submit(tx.to_json())
            included = client.wait_for_tx(tx.id, timeout=INCLUDED_WITHIN_S)
            assert included["status"] == "included", included

        def reason() -> str | None:
            peers = httpx.get(node.url + "/dn/v1/peers", timeout=10).json()
            return {row["url"]: row["last_reason"] for row in peers["standing"]}.get(liar.url)

        # dropped as stalled within the grace period and a few seconds, not after the 40 s+
        # its trickle would take
        assert wait_until(reason, 15, what="the liar to lose standing") == "stalled"
        with node.client() as client:  # and production goes on after the stall
            later = transfer(genesis.chain_id, alice, 1)
            client.submit(later.to_json())
            assert client.wait_for_tx(later.id, timeout=INCLUDED_WITHIN_S)["status"] == "included"


class Listeners:
    """Plain TCP listeners on loopback that count who connects to them (and answer nothing)."""

    def __init__(self, count: int) -> None:
        self.sockets = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            sock.setblocking(False)
            self.sockets.append(sock)
        self.hits = [0] * count

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{s.getsockname()[1]}" for s in self.sockets]

    def poll(self) -> None:
        for i, sock in enumerate(self.sockets):
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                self.hits[i] += 1
                conn.close()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_handshakes_naming_other_addresses_do_not_make_the_node_dial_them(
    dn_home, node_factory: Callable[..., NodeProcess]
) -> None:
    """Attack 4: a host sends 100 handshakes, each naming another address as its own URL. The
    node may dial back only the caller, and only a few of its ports in a while: before, it dialled
    every named address and kept retrying (654 connections in 12 s)."""
    genesis = init_chain(dn_home, {Keypair.generate().address: 10**12}, block_time_ms=500)
    node = node_factory("default", None, ["--no-mdns"]).start()
    listeners = Listeners(100)
    caller = Keypair.generate()
    answered = 0
    try:
        with httpx.Client(timeout=10) as http:
            for url in listeners.urls:
                challenge = handshake.new_challenge()
                opening = {"challenge": challenge, "address": caller.address, "url": url}
                reply = http.post(node.url + "/dn/v1/handshake", json=opening)
                # One address's openings are rationed (a burst, then a few a second): the rest
                # are 429 before anything is signed, and are not dialled back either.
                assert reply.status_code in (200, 429), reply.text
                if reply.status_code == 429:
                    continue
                answered += 1
                handshake.verify(
                    reply.json(),
                    challenge=challenge,
                    genesis_hash=genesis.hash,
                    network_key=None,
                    self_address=caller.address,
                )
        deadline = time.monotonic() + 8.0  # several heartbeats and handshake retries
        while time.monotonic() < deadline:
            listeners.poll()
            time.sleep(0.05)
        listeners.poll()
    finally:
        listeners.close()
    assert answered >= OPENING_BURST  # the handshake itself is still answered, up to the ration
    dialled = sum(1 for hits in listeners.hits if hits)
    assert dialled <= MAX_INBOUND_PER_HOST, f"{dialled} addresses dialled"
    assert sum(listeners.hits) <= MAX_INBOUND_PER_HOST, f"{sum(listeners.hits)} connections"


def test_json_nested_5000_deep_is_a_4xx_on_every_route_that_reads_a_body(
    dn_home, node_factory: Callable[..., NodeProcess]
) -> None:
    """Attack 6: a body nested 5,000 deep got `500 Internal Server Error` (the parser ran out of
    recursion). Every route that reads a body refuses it as `too-deep`, and the node goes on."""
    alice = Keypair.generate()
    genesis = init_chain(dn_home, {alice.address: 10**12}, block_time_ms=200)
    node = node_factory("default", None, ["--no-mdns"]).start()
    deep = b"[" * 5000 + b"]" * 5000
    routes = [
        "/dn/v1/txs",
        "/dn/v1/gossip/txs",
        "/dn/v1/gossip/block",
        "/dn/v1/handshake",
        "/dn/v1/query",
        "/dn/v1/tasks/generate",
        "/dn/v1/tasks/check",
    ]
    with httpx.Client(base_url=node.url, timeout=10) as http:
        for route in routes:
            response = http.post(route, content=deep, headers={"content-type": "application/json"})
            assert response.status_code == 400, (route, response.status_code, response.text)
            assert response.json()["reason"] == "too-deep", (route, response.text)
        # In a batch, each item is judged alone: the deep one is refused, the valid one taken.
        tx = transfer(genesis.chain_id, alice, 0)
        nested: Any = {}
        for _ in range(100):
            nested = {"a": nested}
        reply = http.post("/dn/v1/txs", json=[tx.to_json(), nested])
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert results[0] == {"accepted": True, "id": tx.id}
        assert results[1]["accepted"] is False and results[1]["reason"] == "too-deep"
    with node.client() as client:  # and the node includes the valid transaction
        assert client.wait_for_tx(tx.id, timeout=INCLUDED_WITHIN_S)["status"] == "included"


def test_a_push_naming_another_node_costs_that_node_nothing(
    dn_home, node_factory: Callable[..., NodeProcess]
) -> None:
    """Attack 3 (ban framing): malformed blocks pushed to node A with a header naming node B
    made A ban B. Now only a push signed by a peer's handshake key costs standing, and it costs
    that peer: the attacker, once it peers with A and signs, is the one penalised; a signed push
    replayed is not taken twice."""
    names = ["a", "b"]
    keys = make_keys(dn_home, names)
    alice = Keypair.generate()
    genesis = write_genesis(
        dn_home, [keys["a"].address], {alice.address: 10**12}, names, block_time_ms=200
    )
    attacker = HostilePeer(genesis.hash).start()
    try:
        b = node_factory("b", None, ["--no-mdns"])
        a = node_factory("a", None, ["--no-mdns", "--peer", b.url, "--peer", attacker.url])
        a.start()
        b.start()
        http = httpx.Client(timeout=10)

        def standing(url: str) -> dict[str, Any]:
            rows = http.get(a.url + "/dn/v1/peers").json()["standing"]
            return {row["url"]: row for row in rows}.get(url, {})

        def peers_of_a() -> set[str]:
            return {p["url"] for p in http.get(a.url + "/dn/v1/peers").json()["peers"]}

        wait_until(lambda: {b.url, attacker.url} <= peers_of_a(), 20, what="a to peer")
        garbage = {"header": {"height": "not a block"}}
        for _ in range(3):  # naming b, unsigned: refused, and nobody pays for it
            reply = attacker.push(
                http, a.url, keys["a"].address, GOSSIP, garbage, from_url=b.url, signed=False
            )
            assert reply.status_code >= 400, reply.text
        assert standing(b.url) == {}
        assert standing(attacker.url) == {}

        reply = attacker.push(http, a.url, keys["a"].address, GOSSIP, garbage)  # signed
        assert reply.status_code >= 400
        assert standing(attacker.url)["last_reason"] == "malformed"
        once, read_at = standing(attacker.url)["score"], time.monotonic()
        assert once <= -DEFAULT_PENALTY + 5  # healing adds a point a second

        # The same signed push again, byte for byte: the signature was taken already.
        signed = auth.sign_push(
            attacker.key,
            genesis_hash=genesis.hash,
            from_url=attacker.url,
            to_address=keys["a"].address,
            path=GOSSIP,
            body=b'{"header":{}}',
            time_ms=time.time_ns() // 1_000_000,
        )
        for _ in range(5):
            http.post(
                a.url + GOSSIP,
                content=b'{"header":{}}',
                headers={**signed, "content-type": "application/json"},
            )
        # taken once: one more penalty, not five (which would have banned it); points heal at
        # HEAL_PER_S meanwhile, however slow this machine is
        after = standing(attacker.url)
        healed = HEAL_PER_S * (time.monotonic() - read_at) + 1
        assert once - 2 * DEFAULT_PENALTY < after["score"] <= once - DEFAULT_PENALTY + healed
        assert not after["banned"]

        # a and b still agree: a transfer sent to b is included and both see it
        with b.client() as client:
            tx = transfer(genesis.chain_id, alice, 0)
            client.submit(tx.to_json())
            assert client.wait_for_tx(tx.id, timeout=INCLUDED_WITHIN_S)["status"] == "included"
        with a.client() as client:
            assert client.wait_for_tx(tx.id, timeout=INCLUDED_WITHIN_S)["status"] == "included"
        assert standing(b.url) == {}
        http.close()
    finally:
        attacker.stop()


def test_unsigned_pushes_are_rationed_and_signed_ones_are_not(
    dn_home, node_factory: Callable[..., NodeProcess]
) -> None:
    """Unauthenticated traffic can cost no one standing, so it is rationed per address: a flood
    of unsigned pushes gets 429 `rate-limited` after a burst, while a peer that signs is still
    heard at once (before, an unsigned flood cost nothing and was all read)."""
    genesis = init_chain(dn_home, {Keypair.generate().address: 10**12}, block_time_ms=200)
    peer = HostilePeer(genesis.hash).start()
    try:
        node = node_factory("default", None, ["--no-mdns", "--peer", peer.url]).start()
        address = node.status()["node_address"]
        http = httpx.Client(timeout=10)

        def peered() -> bool:
            return peer.url in {
                p["url"] for p in http.get(node.url + "/dn/v1/peers").json()["peers"]
            }

        wait_until(peered, 20, what="the node to peer with the scripted peer")
        flood = [
            peer.push(http, node.url, address, "/dn/v1/gossip/txs", [], signed=False)
            for _ in range(60)
        ]
        codes = [r.status_code for r in flood]
        assert codes[:10] == [200] * 10  # a burst is read
        assert 429 in codes, codes
        limited = next(r for r in flood if r.status_code == 429)
        assert limited.json()["reason"] == "rate-limited"
        assert limited.headers["retry-after"] == "1"
        signed = peer.push(http, node.url, address, "/dn/v1/gossip/txs", [])
        assert signed.status_code == 200, signed.text  # the same peer, signing: not rationed
        http.close()
    finally:
        peer.stop()
