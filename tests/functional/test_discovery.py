"""mDNS discovery for real: zeroconf on 127.0.0.1 only, several instances on one asyncio loop.

Every test uses a fresh random genesis hash, so services that other tests or a devnet on this
host announce on loopback at the same time are filtered out like any other chain's. Nothing here
multicasts on a real interface: every socket is bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from dn import PROTOCOL_VERSION
from dn.errors import InputError
from dn.node.p2p.discovery import (
    SERVICE_TYPE,
    Discovery,
    Found,
    instance_name,
    parse_txt,
    txt_record,
)
from dn.wallet.keys import Keypair
from tests.functional.multicast import skip_without_loopback_multicast

LOOPBACK = ["127.0.0.1"]
WAIT_S = 10.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def loopback_mdns() -> None:
    skip_without_loopback_multicast()


# --- helpers ---------------------------------------------------------------------------------


class Node:
    """One Discovery plus what its callbacks reported."""

    def __init__(self, genesis: str, port: int, roles: list[str] | None = None) -> None:
        self.key = Keypair.generate()
        self.port = port
        self.found: dict[str, Found] = {}
        self.found_calls: list[Found] = []
        self.lost: list[str] = []
        self.discovery = Discovery(
            address=self.key.address,
            genesis_hash=genesis,
            port=port,
            roles=roles if roles is not None else ["validator"],
            interfaces=LOOPBACK,
            on_found=self._on_found,
            on_lost=self._on_lost,
        )
        self.name = self.discovery.name

    def _on_found(self, found: Found) -> None:
        asyncio.get_running_loop()  # called on the loop, as promised
        self.found_calls.append(found)
        self.found[found.name] = found

    def reported(self) -> set[str]:
        """Every name `on_found` was ever called with."""
        return {f.name for f in self.found_calls}

    def _on_lost(self, name: str) -> None:
        asyncio.get_running_loop()
        self.lost.append(name)
        self.found.pop(name, None)


def new_genesis() -> str:
    return secrets.token_hex(32)


def free_ports(n: int) -> list[int]:
    """Distinct ports for instance names; nothing listens on them in these tests."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(secrets.randbelow(20000) + 30000)
    return sorted(ports)


async def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def names(nodes: list[Node], but: Node | None = None) -> set[str]:
    return {n.name for n in nodes if n is not but}


def sees(node: Node, wanted: set[str]) -> Callable[[], bool]:
    return lambda: wanted <= set(node.found)


def heard_lost(node: Node, name: str) -> Callable[[], bool]:
    return lambda: name in node.lost


async def close_all(nodes: list[Node]) -> None:
    await asyncio.gather(*(n.discovery.close() for n in nodes))


# --- the pure parts --------------------------------------------------------------------------


def test_txt_round_trip_and_garbage() -> None:
    key = Keypair.generate()
    genesis = new_genesis()
    txt = txt_record(
        address=key.address, genesis_hash=genesis, roles=["validator", "miner"], port=8547
    )
    raw: dict[bytes, bytes | None] = {k.encode(): v.encode() for k, v in txt.items()}
    assert parse_txt(raw) == {
        "genesis_hash": genesis,
        "address": key.address,
        "roles": ("validator", "miner"),
        "port": 8547,
        "protocol": PROTOCOL_VERSION,
    }
    assert parse_txt({**raw, b"r": b""})["roles"] == ()  # type: ignore[index]
    for bad in (
        {k: v for k, v in raw.items() if k != b"a"},
        {**raw, b"a": b"dn1nope"},
        {**raw, b"g": b"XY" * 32},
        {**raw, b"p": b"0"},
        {**raw, b"p": b"70000"},
        {**raw, b"p": b"-1"},
        {**raw, b"v": b"one"},
        {**raw, b"r": b"Validator"},
        {**raw, b"g": None},
        {**raw, b"a": b"\xff\xfe"},
    ):
        assert parse_txt(bad) is None


def test_instance_name_is_per_node() -> None:
    a, b = Keypair.generate(), Keypair.generate()
    name = instance_name(a.address, 8547)
    assert name == f"dn-{a.address[:20]}-8547.{SERVICE_TYPE}"
    assert name != instance_name(b.address, 8547) != instance_name(a.address, 8548)


@pytest.mark.parametrize("interfaces", [[], ["0.0.0.0"], ["::1"], ["localhost"], ["224.0.0.251"]])
def test_interfaces_must_be_ipv4_addresses(interfaces: list[str]) -> None:
    with pytest.raises(InputError):
        Discovery(
            address=Keypair.generate().address,
            genesis_hash=new_genesis(),
            port=8547,
            roles=[],
            interfaces=interfaces,
            on_found=lambda found: None,
            on_lost=lambda name: None,
        )


# --- real zeroconf on 127.0.0.1 --------------------------------------------------------------


def test_three_nodes_find_each_other_and_see_one_leave() -> None:
    async def main() -> None:
        genesis = new_genesis()
        *ports, newcomer_port = free_ports(4)
        nodes = [Node(genesis, port) for port in ports]
        try:
            await asyncio.gather(*(n.discovery.start() for n in nodes))
            for node in nodes:
                await wait_until(sees(node, names(nodes, but=node)), "all peers found")
            for node in nodes:
                assert set(node.found) == names(nodes, but=node)
                for other in nodes:
                    if other is node:
                        continue
                    assert node.found[other.name] == Found(
                        name=other.name,
                        host="127.0.0.1",
                        port=other.port,
                        address=other.key.address,
                        genesis_hash=genesis,
                        roles=("validator",),
                        protocol=PROTOCOL_VERSION,
                    )
                assert node.lost == []

            leaving, staying = nodes[0], nodes[1:]
            await leaving.discovery.close()
            await leaving.discovery.close()  # idempotent
            for node in staying:
                await wait_until(heard_lost(node, leaving.name), "on_lost for the leaver")
                assert node.lost == [leaving.name]
                assert set(node.found) == names(staying, but=node)

            # the others still work after one closed its zeroconf: a newcomer is found by both
            newcomer = Node(genesis, newcomer_port)
            nodes.append(newcomer)
            await newcomer.discovery.start()
            for node in staying:
                await wait_until(sees(node, {newcomer.name}), "the newcomer")
            await wait_until(sees(newcomer, names(staying)), "the newcomer sees both")
            # The newcomer is the checkpoint: the first three had sent all their announcements
            # (each sends several) before it sent its first, and everyone has heard it now. Yet
            # each node was reported once, and never to itself.
            for node in staying:
                assert sorted(f.name for f in node.found_calls) == sorted(names(nodes, but=node))
            assert sorted(f.name for f in newcomer.found_calls) == sorted(names(staying))
            assert set(newcomer.found) == names(staying)
        finally:
            await close_all(nodes)

    run(main)


def test_other_genesis_is_never_reported() -> None:
    async def main() -> None:
        genesis, elsewhere = new_genesis(), new_genesis()
        ports = free_ports(5)
        ours = [Node(genesis, ports[0]), Node(genesis, ports[1])]
        stranger = Node(elsewhere, ports[2])
        everyone = [*ours, stranger]
        try:
            await asyncio.gather(*(n.discovery.start() for n in everyone))
            await wait_until(lambda: all(len(n.found) == 1 for n in ours), "same-genesis pair")
            # The checkpoint: a newcomer on each genesis, announced after all of the above. Once
            # ours have heard theirs and the stranger its own, each has heard the others' too.
            late, their_late = Node(genesis, ports[3]), Node(elsewhere, ports[4])
            everyone += [late, their_late]
            await late.discovery.start()
            await their_late.discovery.start()
            for node in ours:
                await wait_until(sees(node, {late.name}), "our newcomer")
            await wait_until(sees(stranger, {their_late.name}), "the stranger's newcomer")
            assert all(n.reported() == names([*ours, late], but=n) for n in ours)
            assert stranger.reported() == {their_late.name}
            # A stranger's goodbye is not our news. The checkpoint: our newcomer's, sent after.
            await stranger.discovery.close()
            await late.discovery.close()
            for node in ours:
                await wait_until(heard_lost(node, late.name), "our newcomer's goodbye")
            assert all(n.lost == [late.name] for n in ours)
        finally:
            await close_all(everyone)

    run(main)


def test_garbage_txt_and_own_address_are_ignored() -> None:
    async def main() -> None:
        genesis = new_genesis()
        port_a, port_raw = free_ports(2)
        node = Node(genesis, port_a)
        good = Keypair.generate()
        valid = txt_record(address=good.address, genesis_hash=genesis, roles=[], port=port_raw)

        def raw(
            label: str, properties: dict[Any, Any] | bytes, port: int = port_raw
        ) -> AsyncServiceInfo:
            return AsyncServiceInfo(
                SERVICE_TYPE,
                f"{label}.{SERVICE_TYPE}",
                port=port,
                properties=properties,
                server=f"{label}.local.",
                parsed_addresses=["127.0.0.1"],
            )

        bad = [
            raw("junk-bytes", {b"g": genesis.encode(), b"a": b"\xff\x00\xfe", b"p": b"\x01"}),
            raw("junk-fields", {**valid, "a": "dn1notanaddress", "p": "port"}),
            raw("junk-missing", {"g": genesis, "a": good.address}),
            raw("junk-port", valid, port=port_raw + 1),  # SRV and TXT disagree
            raw("junk-text", b"\x05hello\x03g=x\x00"),  # not even key=value pairs
            raw(
                "self-copy",  # someone replaying our own address under another name
                txt_record(address=node.key.address, genesis_hash=genesis, roles=[], port=port_raw),
            ),
        ]
        control = raw("control", valid)
        aiozc = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        try:
            await node.discovery.start()
            announcing = await asyncio.gather(*(aiozc.async_register_service(i) for i in bad))
            await asyncio.gather(*announcing)  # every announcement of the bad ones has gone out
            # The checkpoint: the control, announced after them. Once it is found, they were
            # heard before it, and dropped.
            await aiozc.async_register_service(control)
            await wait_until(lambda: control.name in node.found, "the control service")
            assert set(node.found) == {control.name}
            assert node.reported() == {control.name}
            assert node.found[control.name].address == good.address
            assert node.found[control.name].roles == ()
        finally:
            await node.discovery.close()
            await aiozc.async_close()

    run(main)


def test_close_before_start_and_twice() -> None:
    async def main() -> None:
        node = Node(new_genesis(), free_ports(1)[0])
        await node.discovery.close()
        await node.discovery.close()

    run(main)
