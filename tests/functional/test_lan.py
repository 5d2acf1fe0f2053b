"""Real `dn node start` processes on a LAN of network namespaces (tests/functional/lan.py): one
node in each namespace, all on one bridge, listening on their own LAN address and so running mDNS
on their veth (the default for `--host`), with no `--peer`. They must find each other by mDNS
alone, take turns producing blocks, and gossip a transfer to every node.

Nothing here touches a real interface: the bridge, the veths and the 10.213.0.0/24 addresses live
only in namespaces the test creates and removes. Skipped, with the reason, without root, without
`ip`, or where namespaces cannot be made (an unprivileged container).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.chain import consensus
from dn.wallet.keys import Keypair
from tests.functional.harness import (
    agreed_prefix,
    canonical_count,
    make_keys,
    transfer,
    verify_offline,
    wait_until,
    write_genesis,
)
from tests.functional.lan import Lan, LanNode, skip_without_lan

pytestmark = pytest.mark.timeout(300)

WAIT_S = 60.0
MORE_BLOCKS = 8  # blocks made after every node is peered, to judge turn-taking on


@pytest.fixture
def lan_factory() -> Iterator[Callable[[int], Lan]]:
    """Make a LAN of n namespaces; every one made is torn down at the end, failed test or not."""
    skip_without_lan()
    made: list[Lan] = []

    def make(n: int) -> Lan:
        lan = Lan(n)
        made.append(lan)
        return lan.open()

    yield make
    errors = []
    for lan in made:
        try:
            lan.close()
        except RuntimeError as exc:
            errors.append(str(exc))
    assert not errors, errors


def _peers(node: LanNode) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = node.get("/dn/v1/peers")["peers"]
    return peers


def _one_tip(nodes: list[LanNode]) -> str | None:
    """The tip every node reports in one round of calls, or None while they differ."""
    seen = {(s["tip"], s["state_root"]) for s in (n.get("/dn/v1/status") for n in nodes)}
    return seen.pop()[0] if len(seen) == 1 else None


def _run_lan(dn_home: Path, lan: Lan) -> None:
    n = lan.n
    names = [f"lan{i}" for i in range(n)]
    keys = make_keys(dn_home, names)
    alice, bob = Keypair.generate(), Keypair.generate()
    write_genesis(
        dn_home,
        [k.address for k in keys.values()],
        {alice.address: 10**12},
        names,
        block_time_ms=1000,  # an out-of-turn signer waits a block time more: slack on a busy host
        max_block_interval_ms=1000,
    )
    validators = sorted(k.address for k in keys.values())
    # Each node's namespace holds its veth end and its own loopback, nothing else; the bridge and
    # the other veth ends are in the switch namespace, none in the namespace the tests run in.
    for ns in lan.namespaces:
        assert lan.links(ns) == {"lo", "dn0"}, lan.links(ns)
    assert lan.links(lan.switch) == {"lo", "br0", *(f"p{i}" for i in range(n))}
    assert not {"br0", "dn0"} & lan.links()
    nodes = [
        LanNode(lan, i, dn_home, name, args=["--peer-expiry", "5"]) for i, name in enumerate(names)
    ]
    try:
        started = time.monotonic()
        for node in nodes:
            node.start()

        # Each finds every other one over mDNS on the veths: no static peer anywhere, and each
        # peer's URL is the other node's LAN address.
        for node in nodes:
            others = {keys[o.name].address: o.url for o in nodes if o is not node}

            def peered(node: LanNode = node, others: dict[str, str] = others) -> bool:
                return {p["address"]: p["url"] for p in _peers(node)} == others

            wait_until(peered, WAIT_S, interval=0.5, what=f"{node.name} peered by mDNS")
        for node in nodes:
            sources = {p["source"] for p in _peers(node)}
            assert sources <= {"mdns", "inbound"}, (node.name, sources)
        assert any("mdns" in {p["source"] for p in _peers(node)} for node in nodes)
        peered_after = time.monotonic() - started

        # A transfer sent to node 0 is gossiped, included once, and seen by every node.
        status = nodes[0].get("/dn/v1/status")
        all_up = status["height"]
        tx = transfer(status["chain_id"], alice, 0, bob.address, 5_000)
        assert nodes[0].post("/dn/v1/txs", tx.to_json())["accepted"]
        for node in nodes:
            wait_until(
                lambda node=node: node.get(f"/dn/v1/txs/{tx.id}")["status"] == "included",  # type: ignore[misc]
                WAIT_S,
                interval=0.5,
                what=f"transfer included, seen by {node.name}",
            )
            assert node.get(f"/dn/v1/accounts/{bob.address}")["balance"] == 5_000

        # Blocks go on, made in turn by all of them, and they agree on one tip.
        wait_until(
            lambda: min(x.get("/dn/v1/status")["height"] for x in nodes) >= all_up + MORE_BLOCKS,
            WAIT_S,
            interval=0.5,
            what=f"{MORE_BLOCKS} more blocks on every node",
        )
        wait_until(lambda: _one_tip(nodes), WAIT_S, interval=0.3, what="one tip on every node")
        page = nodes[n - 1].get(f"/dn/v1/blocks?from={all_up + 1}&limit=100")
        made = [b["header"] for b in page["blocks"]]
        assert len(made) >= MORE_BLOCKS
        proposers = [h["proposer"] for h in made]
        assert set(proposers) == set(validators), proposers  # every validator took its turns
        window = consensus.recent_window(n)
        for i, proposer in enumerate(proposers):
            recent = proposers[max(0, i - window) : i]
            assert proposer not in recent, (i, proposers)
        in_turn = sum(h["proposer"] == consensus.in_turn(validators, h["height"]) for h in made)
        assert in_turn * 2 > len(made), (in_turn, len(made))  # mostly in turn, all being up

        for node in nodes:
            assert node.stop() == 0, node.tail()
        agreed_prefix(dn_home, names)
        for name in names:
            report = verify_offline(dn_home, name)
            assert report["ok"], report["problems"]
            assert canonical_count(dn_home, name, tx.id) == 1
        print(f"{n} nodes peered by mDNS {peered_after:.1f} s after the first start")
    except BaseException:
        for node in nodes:
            print(f"--- {node.name} log ---\n{node.tail()}")
        raise


def test_three_nodes_on_a_lan_find_each_other_take_turns_and_gossip(
    dn_home: Path, lan_factory: Callable[[int], Lan]
) -> None:
    _run_lan(dn_home, lan_factory(3))


@pytest.mark.soak
def test_five_nodes_on_a_lan(dn_home: Path, lan_factory: Callable[[int], Lan]) -> None:
    _run_lan(dn_home, lan_factory(5))
