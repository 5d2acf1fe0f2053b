"""Members of a keyed network, in process: the guard in front of the peer-to-peer routes, the
session transport that handshakes and signs, and the bounds on what a node remembers."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from dn.errors import HandshakeError
from dn.node.http.app import create_app
from dn.node.http.guard import PEER_ROUTES, is_peer_route
from dn.node.market.gateway import Gateway
from dn.node.node import Node, NodeHome
from dn.node.p2p import auth, handshake, members
from dn.node.p2p.network import NetOptions, Network
from dn.node.p2p.session import Member, MemberTransport
from dn.node.setup import init_dev_chain
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair

KEY = handshake.network_key_from_text("our lan")
URL = "http://node.test:8765"


class AppTransport(httpx.BaseTransport):
    """Hands each request to the node's app, counting handshakes."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        answer = self.client.request(
            request.method,
            request.url.raw_path.decode(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            content=request.read(),
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@contextmanager
def keyed_node(base: Path, network_key: bytes | None = KEY) -> Iterator[tuple[Network, TestClient]]:
    home = NodeHome.named("default", base)
    genesis = init_dev_chain(home, {Keypair.generate().address: 10**12})
    node = Node(home, genesis)
    network = Network(node, url=URL, options=NetOptions(network_key=network_key))
    app = create_app(node, network, gateway=Gateway(node), store=ModelStore(base / "models"))
    try:
        with TestClient(app, base_url=URL) as client:
            yield network, client
    finally:
        node.close()


def member_client(
    network: Network, client: TestClient, key: bytes | None = KEY
) -> tuple[httpx.Client, AppTransport]:
    inner = AppTransport(client)
    member = Member(Keypair.generate(), network.node.genesis.hash, key)
    return httpx.Client(base_url=URL, transport=MemberTransport(member, inner)), inner


def test_every_listed_route_is_guarded_and_the_users_are_not() -> None:
    for method, path in PEER_ROUTES:
        assert is_peer_route(method, path.replace("{sha}", "ab" * 32).replace("{task}", "cd" * 32))
    for method, path in [
        ("GET", "/dn/v1/status"),
        ("GET", "/dn/v1/blocks/5"),
        ("POST", "/dn/v1/txs"),
        ("GET", "/dn/v1/tasks/" + "cd" * 32),  # a settled task: the user's
        ("GET", "/dn/v1/models"),
        ("POST", "/dn/v1/handshake"),
        ("POST", "/dn/v1/handshake/finish"),
        ("POST", "/dn/v1/query"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/dn/v1/blocks"),
    ]:
        assert not is_peer_route(method, path), path


def test_only_members_pass_the_guard(tmp_path: Path) -> None:
    with keyed_node(tmp_path) as (network, client):
        unsigned = client.get("/dn/v1/blocks", params={"from": 0})
        assert unsigned.status_code == 401
        assert unsigned.json()["reason"] == "unauthenticated"
        assert unsigned.headers[auth.HANDSHAKE_HEADER] == "required"
        outsider = Keypair.generate()
        signed = auth.sign_request(
            outsider,
            genesis_hash=network.node.genesis.hash,
            to_address=network.node.key.address,
            method="GET",
            target="/dn/v1/blocks?from=0",
            body=b"",
            time_ms=time.time_ns() // 1_000_000,
        )
        refused = client.get("/dn/v1/blocks?from=0", headers=signed)
        assert refused.status_code == 403 and refused.json()["reason"] == "not-a-member"
        assert client.get("/dn/v1/status").status_code == 200  # the user's route

        http, inner = member_client(network, client)
        first = http.get("/dn/v1/blocks", params={"from": 0})
        assert first.status_code == 200, first.text
        assert inner.paths == ["/dn/v1/handshake", "/dn/v1/handshake/finish", "/dn/v1/blocks"]
        again = client.get(  # the member's signed request, replayed byte for byte
            "/dn/v1/blocks?from=0",
            headers={k: v for k, v in first.request.headers.items() if k.startswith("x-dn-")},
        )
        assert again.status_code == 401 and again.json()["reason"] == "unauthenticated"
        assert http.get("/dn/v1/blocks", params={"from": 0}).status_code == 200  # no new handshake
        assert inner.paths.count("/dn/v1/handshake") == 1


def test_a_forgotten_member_handshakes_again_by_itself(tmp_path: Path) -> None:
    with keyed_node(tmp_path) as (network, client):
        http, inner = member_client(network, client)
        assert http.get("/dn/v1/blocks").status_code == 200
        network.members._members.clear()  # a restart, or a membership that lapsed
        assert http.get("/dn/v1/blocks").status_code == 200
        assert inner.paths.count("/dn/v1/handshake/finish") == 2


def test_the_wrong_key_is_refused_locally_with_the_handshakes_reason(tmp_path: Path) -> None:
    with keyed_node(tmp_path) as (network, client):
        other = handshake.network_key_from_text("not ours")
        http, inner = member_client(network, client, other)
        answer = http.post("/dn/v1/gossip/txs", json=[])
        assert answer.status_code == 403 and answer.json()["reason"] == "wrong-network-key"
        assert inner.paths == ["/dn/v1/handshake"]  # the push itself was never sent


def test_without_a_key_the_routes_stay_open_and_signatures_still_count(tmp_path: Path) -> None:
    with keyed_node(tmp_path, None) as (network, client):
        assert client.get("/dn/v1/blocks", params={"from": 0}).status_code == 200
        http, _ = member_client(network, client, None)
        assert http.post("/dn/v1/gossip/txs", json=[]).status_code == 200


def test_an_async_member_streams_a_model_file(tmp_path: Path) -> None:
    """The async side, as the gateway and the network use it: handshake, then a signed request
    whose answer arrives as a stream."""
    blob = bytes(range(256)) * 4096
    sha = hashlib.sha256(blob).hexdigest()
    ModelStore(tmp_path / "models").add_stream([blob], name="blob", source="test")
    with keyed_node(tmp_path) as (network, client):
        member = Member(Keypair.generate(), network.node.genesis.hash, KEY)

        async def pull() -> tuple[int, bytes, int]:
            inner = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(
                base_url=URL, transport=MemberTransport(member, inner)
            ) as http:
                async with http.stream("GET", f"/dn/v1/models/{sha}/blob") as answer:
                    chunks = [chunk async for chunk in answer.aiter_bytes(65536)]
                    return answer.status_code, b"".join(chunks), len(chunks)

        status, body, chunks = asyncio.run(pull())
        assert status == 200 and body == blob and chunks > 1
        assert list(member.sessions.values()) == [network.node.key.address]


def test_a_counter_is_taken_once_and_lapses(tmp_path: Path) -> None:
    node_key, caller = Keypair.generate(), Keypair.generate()
    table = members.Members(node_key, "ab" * 32, KEY)
    challenge = handshake.new_challenge()
    opened = handshake.Opening(challenge, caller.address, None)
    hello = table.answer(opened, roles=[], port=1)

    def finish() -> dict[str, object]:
        return handshake.finish(
            node_key.address,
            challenge,
            hello["counter"],
            caller,
            genesis_hash="ab" * 32,
            network_key=KEY,
        )

    assert table.finish(finish()) == caller.address
    assert table.knows(caller.address)
    with pytest.raises(HandshakeError) as info:
        table.finish(finish())
    assert info.value.reason == "wrong-challenge"
    table._members[caller.address] = time.monotonic() - members.MEMBER_S - 1
    assert not table.knows(caller.address)

    late = table.answer(opened, roles=[], port=1)
    counter, (first, _) = next(iter(table._pending.items()))
    assert counter == late["counter"]
    table._pending[counter] = (first, time.monotonic() - members.PENDING_S - 1)
    with pytest.raises(HandshakeError) as info:
        table.finish(
            handshake.finish(
                node_key.address,
                challenge,
                late["counter"],
                caller,
                genesis_hash="ab" * 32,
                network_key=KEY,
            )
        )
    assert info.value.reason == "wrong-challenge"


def test_what_a_node_remembers_is_bounded() -> None:
    table = members.Members(Keypair.generate(), "ab" * 32, KEY)
    opened = handshake.Opening(handshake.new_challenge(), Keypair.generate().address, None)
    for _ in range(members.MAX_PENDING + 20):
        table.answer(opened, roles=[], port=1)
    assert len(table._pending) == members.MAX_PENDING
    for _ in range(members.MAX_MEMBERS + 5):
        table.admit(Keypair.generate().address)
    assert len(table._members) == members.MAX_MEMBERS
