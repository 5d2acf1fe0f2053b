"""Bad blocks pushed to a real node over HTTP gossip: each is refused with its own reason, the tip
does not move, the sender loses standing, and the next valid block is still accepted.

The test holds the validators' keys (their node folders are in its DN_HOME) and keeps an
in-process replica of the chain to build blocks on, so every bad block differs from a valid one
in exactly one way. The blocks come from peers the node has handshaken (scriptable peers,
tests/functional/hostile.py), each push signed with the peer's key: only a signed push can cost
its sender standing (a push that merely names a sender costs no one anything; see
test_hostile_peers.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dn.chain import consensus
from dn.chain.genesis import Genesis
from dn.chain.state import build_block
from dn.chain.types import Block, Header
from dn.node.node import Node, NodeHome, now_ms
from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, make_keys, wait_until, write_genesis
from tests.functional.hostile import HostilePeer

GOSSIP = "/dn/v1/gossip/block"


SENDERS = 10  # distinct peers, so one test's penalties do not add up to a ban on another's


class Rig:
    def __init__(self, dn_home: Path, node_factory: Callable[..., NodeProcess]) -> None:
        names = ["v0", "v1", "v2"]
        keys = make_keys(dn_home, names)
        self.genesis = write_genesis(
            dn_home,
            [k.address for k in keys.values()],
            {Keypair.generate().address: 10**12},
            names,
            block_time_ms=200,
            max_block_interval_ms=600_000,  # the node waits; the test makes the blocks
        )
        self.keys = {k.address: k for k in keys.values()}
        self.validators = sorted(self.keys)
        self.senders = [HostilePeer(self.genesis.hash).start() for _ in range(SENDERS)]
        peers = [arg for s in self.senders for arg in ("--peer", s.url)]
        self.node = node_factory("v0", None, ["--no-mdns", *peers]).start()
        self.address = keys["v0"].address
        self.http = httpx.Client(base_url=self.node.url, timeout=10)
        wait_until(
            lambda: len(self.http.get("/dn/v1/peers").json()["peers"]) == SENDERS,
            20,
            what="the node to handshake every sender",
        )
        self.replica = Node(NodeHome.named("replica", dn_home), self.genesis)

    def close(self) -> None:
        self.http.close()
        self.replica.close()
        for sender in self.senders:
            sender.stop()

    def next_valid(self, at: int | None = None) -> Block:
        """A valid next block by a validator allowed to sign it (in turn when possible)."""
        height = self.replica.tip.height + 1
        recent = self.replica.state.get("signers") or []
        order = sorted(
            self.validators, key=lambda a: a != consensus.in_turn(self.validators, height)
        )
        signer = next(a for a in order if consensus.may_sign(recent, a, len(self.validators)))
        applied, _ = build_block(
            self.replica.state,
            self.replica.tip.header,
            self.replica.tip.hash,
            [],
            self.keys[signer],
            at or now_ms(),
            self.genesis,
        )
        return applied.block

    def push(self, block: Block, sender: HostilePeer) -> httpx.Response:
        return sender.push(self.http, self.node.url, self.address, GOSSIP, block.to_json())

    def accept(self, block: Block, sender: HostilePeer | None = None) -> None:
        sender = sender or self.senders[0]
        response = self.push(block, sender)
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "extended"
        assert self.replica.receive_block(block) == "extended"

    def tip(self) -> str:
        return str(self.http.get("/dn/v1/status").json()["tip"])

    def standing(self, sender: HostilePeer) -> dict:  # type: ignore[type-arg]
        body = self.http.get("/dn/v1/peers").json()
        return {p["url"]: p for p in body["standing"]}.get(sender.url, {})


@pytest.fixture
def rig(dn_home: Path, node_factory: Callable[..., NodeProcess]):  # type: ignore[no-untyped-def]
    made = Rig(dn_home, node_factory)
    yield made
    made.close()


def _reseal(block: Block, key: Keypair, **changes: object) -> Block:
    header: Header = dataclasses.replace(block.header, **changes)  # type: ignore[arg-type]
    return Block.seal(header, list(block.txs), key)


def _bad_blocks(rig: Rig) -> dict[str, Block]:
    good = rig.next_valid()
    key = rig.keys[good.header.proposer]
    stranger = Keypair.generate()
    other = Genesis.build(
        network="othernet",
        time_ms=rig.genesis.time,
        validators=rig.validators,
        allocations=rig.genesis.allocations,
        params=rig.genesis.doc["params"],
    )
    recent_signer = rig.replica.tip.header.proposer
    return {
        "not-validator": _reseal(good, stranger, proposer=stranger.address),
        "bad-state-root": _reseal(good, key, state_root="ab" * 32),
        "bad-txs-root": _reseal(good, key, txs_root="cd" * 32),
        "wrong-chain-id": _reseal(good, key, chain_id=other.chain_id),
        "future-block": _reseal(good, key, time=now_ms() + 10 * 60_000),
        "signed-recently": _reseal(
            good,
            rig.keys[recent_signer],
            proposer=recent_signer,
            difficulty=consensus.difficulty(rig.validators, good.height, recent_signer),
        ),
        "bad-signature": Block(
            good.header, bytes(64), good.txs, Block.hash_of(good.header, bytes(64))
        ),
    }


def test_each_bad_block_is_refused_with_its_reason(rig: Rig) -> None:
    rig.accept(rig.next_valid())
    rig.accept(rig.next_valid())
    for i, (reason, bad) in enumerate(_bad_blocks(rig).items()):
        sender = rig.senders[1 + i]
        before = rig.tip()
        response = rig.push(bad, sender)
        assert response.status_code == 422, (reason, response.text)
        body = response.json()
        assert body["reason"] == reason, body
        assert rig.tip() == before
        standing = rig.standing(sender)
        assert standing and standing["score"] < 0 and standing["last_reason"] == reason
    rig.accept(rig.next_valid())  # the next valid block is still taken


def test_equivocation_is_refused(rig: Rig) -> None:
    rig.accept(rig.next_valid())
    first = rig.next_valid()
    twin = _reseal(first, rig.keys[first.header.proposer], time=first.header.time + 1)
    rig.accept(first)
    response = rig.push(twin, rig.senders[-1])
    assert response.status_code == 422 and response.json()["reason"] == "equivocation"
    assert rig.tip() == first.hash
    rig.accept(rig.next_valid())


def test_a_peer_that_keeps_sending_bad_blocks_is_banned(rig: Rig) -> None:
    rig.accept(rig.next_valid())
    sender = rig.senders[1]
    bad = _bad_blocks(rig)["bad-state-root"]
    codes = [rig.push(bad, sender).status_code for _ in range(4)]
    assert codes[0] == 422
    assert codes[-1] == 403
    banned = rig.http.get("/dn/v1/peers").json()["banned"]
    assert [b["url"] for b in banned] == [sender.url]
    # Banned means nothing is taken from it, not even a valid block; others are still heard.
    good = rig.next_valid()
    assert rig.push(good, sender).status_code == 403
    rig.accept(good, rig.senders[2])
    wait_until(lambda: rig.tip() == good.hash, 5)
