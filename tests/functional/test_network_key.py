"""A network key keeps strangers out of the peer-to-peer routes (THREATS.md: accountability; the
network-hardening issue, attack 5), played against real node processes on 127.0.0.1.

- A host without the key must not get in by relaying a member's handshake reply: the reply names
  the node it answers, so it is worthless to anyone else.
- With a key, every peer-to-peer route (gossip, block sync, miner tasks, records, model blobs)
  answers only a request signed by a node that proved the key in a handshake; the local user's
  routes (status, a single block, accounts, sending a transaction) stay as they were.
- Without a key nothing changes: an open devnet answers everyone.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dn.errors import ModelError
from dn.node.p2p import auth, handshake
from dn.node.p2p.pull import pull_model
from dn.node.p2p.session import Member, MemberTransport
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair
from tests.functional.harness import (
    NodeProcess,
    init_chain,
    make_keys,
    transfer,
    wait_until,
    write_genesis,
)
from tests.functional.hostile import HostilePeer

KEY = "the passphrase of our lan party"
TASK = "ab" * 32
GOSSIP = "/dn/v1/gossip/block"
INCLUDED_WITHIN_S = 20.0


def peers_of(node: NodeProcess) -> dict[str, str]:
    """{url: address} of the node's peers."""
    rows = httpx.get(node.url + "/dn/v1/peers", timeout=10).json()["peers"]
    return {row["url"]: row["address"] for row in rows}


@pytest.mark.parametrize("keyed", [True, False], ids=["network-key", "open"])
def test_a_relayed_handshake_reply_does_not_make_the_relay_a_peer(
    dn_home: Path, node_factory: Callable[..., NodeProcess], keyed: bool
) -> None:
    """Attack 5 (relay): M lacks the network key. When member A dials it, M opens a handshake of
    its own with member B, passes A's challenge on, and answers A with B's signed reply and
    proof. Before, A checked only the challenge, B's signature and B's proof, so it took M's URL
    as a peer under B's name. Now B's reply names the node it answers (M), so A refuses it. The
    same holds on an open network (no proofs), where M would pass for B the same way."""
    names = ["a", "b"]
    keys = make_keys(dn_home, names)
    genesis = write_genesis(
        dn_home, [keys["a"].address], {Keypair.generate().address: 10**12}, names
    )
    key = ["--network-key", KEY] if keyed else []
    b = node_factory("b", None, ["--no-mdns", *key]).start()
    relay = HostilePeer(genesis.hash)
    relay.route("POST", "/dn/v1/handshake", relay.relay_handshake(b.url))
    with relay:
        a = node_factory("a", None, ["--no-mdns", *key, "--peer", relay.url]).start()

        def outcome() -> tuple[str, str | None] | None:
            taken = peers_of(a)
            if relay.url in taken:
                return "peered", taken[relay.url]
            if len(relay.relayed) >= 3:  # A dialled again and again, B answered each time
                return "refused", None
            return None

        assert wait_until(outcome, 30, what="a to settle on the relay") == ("refused", None)
        assert all(reply.get("address") == keys["b"].address for reply in relay.relayed)
        assert relay.asked("/dn/v1/handshake/finish") == 0  # A never went on to prove itself


def _outsider_request(
    http: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = b"" if body is None else httpx.Request("POST", "http://x", json=body).read()
    extra = {"content-type": "application/json"} if body is not None else {}
    return http.request(method, path, content=content, headers={**extra, **(headers or {})})


def test_with_a_network_key_only_members_use_the_peer_routes(
    dn_home: Path, node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """With `--network-key`, an outsider on the same host gets 401 `unauthenticated` on every
    peer-to-peer route (403 `not-a-member` when it signs with a key that never proved the network
    key), cannot finish a handshake, and costs no member standing; it still reads the status
    and sends a transaction. Members still sync, gossip a transfer and pull a model file."""
    names = ["a", "b"]
    keys = make_keys(dn_home, names)
    alice = Keypair.generate()
    genesis = write_genesis(
        dn_home,
        [keys["a"].address],
        {alice.address: 10**12},
        names,
        block_time_ms=200,
        max_block_interval_ms=1000,
    )
    a = node_factory("a", None, ["--no-mdns", "--network-key", KEY]).start()
    with a.client() as client:  # blocks that b will have to sync
        wait_until(lambda: client.status()["height"] >= 3, 20, what="a to produce")
    blob = os.urandom(256 * 1024)
    sha = hashlib.sha256(blob).hexdigest()
    ModelStore.default(dn_home).add_stream([blob], name="blob", source="test")  # a serves it

    routes: list[tuple[str, str, Any]] = [
        ("POST", "/dn/v1/gossip/txs", []),
        ("POST", "/dn/v1/gossip/block", {}),
        ("GET", "/dn/v1/blocks?from=0&limit=5", None),
        ("POST", "/dn/v1/tasks/generate", {}),
        ("POST", "/dn/v1/tasks/check", {}),
        ("POST", f"/dn/v1/tasks/check/{TASK}/tokens", {"offset": 0, "tokens": [1]}),
        ("POST", f"/dn/v1/tasks/check/{TASK}/finish", {}),
        ("POST", f"/dn/v1/tasks/check/{TASK}/abort", {}),
        ("GET", f"/dn/v1/tasks/{TASK}/values", None),
        ("POST", f"/dn/v1/tasks/{TASK}/record", {}),
        ("GET", f"/dn/v1/models/{sha}/blob", None),
    ]
    outsider = Keypair.generate()
    http = httpx.Client(base_url=a.url, timeout=10)
    for method, path, body in routes:
        reply = _outsider_request(http, method, path, body)
        assert reply.status_code == 401, (path, reply.status_code, reply.text)
        assert reply.json()["reason"] == "unauthenticated", (path, reply.text)

    for method, path, body in routes:  # signed, by a key that never proved the network key
        content = b"" if body is None else httpx.Request("POST", "http://x", json=body).read()
        signed = auth.sign_request(
            outsider,
            genesis_hash=genesis.hash,
            to_address=keys["a"].address,
            method=method,
            target=path,
            body=content,
            time_ms=time.time_ns() // 1_000_000,
            from_url=None,
        )
        reply = _outsider_request(http, method, path, body, signed)
        assert reply.status_code == 403, (path, reply.status_code, reply.text)
        assert reply.json()["reason"] == "not-a-member", (path, reply.text)

    # The handshake itself is answered, but the outsider cannot finish it without the key.
    challenge = handshake.new_challenge()
    opening = {"challenge": challenge, "address": outsider.address, "url": None}
    hello = http.post("/dn/v1/handshake", json=opening)
    assert hello.status_code == 200, hello.text
    answered = hello.json()
    assert answered["caller"] == outsider.address
    finish = handshake.finish(
        answered["address"],
        challenge,
        answered["counter"],
        outsider,
        genesis_hash=genesis.hash,
        network_key=None,
    )
    refused = http.post("/dn/v1/handshake/finish", json=finish)
    assert refused.status_code == 403 and refused.json()["reason"] == "wrong-network-key"
    reply = _outsider_request(http, "GET", "/dn/v1/blocks?from=0", None)
    assert reply.status_code == 401

    # The local user's routes stay open: status, one block, an account, sending a transaction.
    assert http.get("/dn/v1/status").status_code == 200
    assert http.get("/dn/v1/blocks/1").status_code == 200
    assert http.get(f"/dn/v1/accounts/{alice.address}").status_code == 200
    sent = transfer(genesis.chain_id, alice, 0, Keypair.generate().address, 10**9)
    assert http.post("/dn/v1/txs", json=sent.to_json()).json()["accepted"] is True
    with a.client() as client:  # `dn chain blocks` reads them one by one
        assert [row["height"] for row in client.blocks(1, 2)["blocks"]] == [1, 2]

    # A member joins late: it syncs a's blocks, and a transfer sent to it (it does not produce)
    # reaches a by gossip and is included.
    b = node_factory("b", None, ["--no-mdns", "--network-key", KEY, "--peer", a.url]).start()
    wait_until(lambda: keys["a"].address in peers_of(b).values(), 20, what="b to peer with a")
    wait_until(lambda: keys["b"].address in peers_of(a).values(), 20, what="a to peer with b")
    with a.client() as client:
        assert client.wait_for_tx(sent.id, INCLUDED_WITHIN_S)["status"] == "included"
    with b.client() as client:
        assert client.wait_for_tx(sent.id, INCLUDED_WITHIN_S)["status"] == "included"  # synced
        later = transfer(genesis.chain_id, alice, 1, Keypair.generate().address, 10**9)
        client.submit(later.to_json())
        assert client.wait_for_tx(later.id, INCLUDED_WITHIN_S)["status"] == "included"

    # Any holder of the key is a member: it handshakes on its first request, then signs each.
    member = Member(Keypair.generate(), genesis.hash, handshake.network_key_from_text(KEY))
    signing = MemberTransport(member)
    pulled = pull_model(sha, [a.url], ModelStore(tmp_path / "member"), transport=signing)
    assert pulled["pulled"] and pulled["size"] == len(blob)
    with httpx.Client(base_url=a.url, timeout=10, transport=MemberTransport(member)) as ours:
        past_the_guard = ours.post("/dn/v1/tasks/check", json={})
        assert past_the_guard.status_code == 409, past_the_guard.text
        assert past_the_guard.json()["reason"] == "not-miner"  # a is no miner; the guard let it by
    with pytest.raises(ModelError):  # the outsider cannot pull it
        pull_model(sha, [a.url], ModelStore(tmp_path / "outsider"))

    # Garbage blocks the outsider pushes in b's name, unsigned or signed with its own key, are
    # refused before they are read, and cost b nothing.
    garbage = b'{"header":{"height":"not a block"}}'
    for _ in range(5):
        framing = auth.sign_push(
            outsider,
            genesis_hash=genesis.hash,
            from_url=b.url,
            to_address=keys["a"].address,
            path=GOSSIP,
            body=garbage,
            time_ms=time.time_ns() // 1_000_000,
        )
        for headers in (framing, {auth.FROM_HEADER: b.url}):
            reply = http.post(GOSSIP, content=garbage, headers=headers)
            assert reply.status_code in (401, 403), reply.text
    rows = http.get("/dn/v1/peers").json()
    assert rows["standing"] == [] and rows["banned"] == []
    assert b.url in {row["url"] for row in rows["peers"]}
    http.close()


def test_without_a_network_key_the_routes_stay_open(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    """An open devnet: anyone on the host reads blocks and reaches the task routes unsigned."""
    init_chain(dn_home, {Keypair.generate().address: 10**12}, block_time_ms=200)
    node = node_factory("default", None, ["--no-mdns"]).start()
    with httpx.Client(base_url=node.url, timeout=10) as http:
        blocks = http.get("/dn/v1/blocks", params={"from": 0, "limit": 2})
        assert blocks.status_code == 200 and blocks.json()["blocks"], blocks.text
        check = http.post("/dn/v1/tasks/check", json={})
        assert check.status_code == 409 and check.json()["reason"] == "not-miner", check.text
        assert http.get(f"/dn/v1/tasks/{TASK}/values").json()["reason"] == "not-miner"


def test_miners_with_the_key_serve_a_paid_query_on_a_keyed_network(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    """`dn mine --network-key` and a gateway with the same key: the miners sync, register and
    serve, and the gateway's task calls (signed as a member) end in a confirmed, settled query."""
    from dn.client.query import chat_input, run_query
    from tests.functional.market import running_market

    keyed = ["--network-key", KEY]
    with running_market(tmp_path, smollm2_gguf, gateway_args=keyed, miner_args=keyed) as market:
        for miner in market.miners:  # an outsider still cannot use a miner's task routes
            outsider = httpx.post(miner.url + "/dn/v1/tasks/generate", json={}, timeout=10)
            assert outsider.status_code == 401, outsider.text
        with market.client() as client:
            result = run_query(
                client,
                market.wallets["consumer"],
                "smollm2",
                chat_input("Name three colours."),
                max_tokens=8,
            )
    assert result["status"] == "confirmed", result
    assert result["settlement"]["status"] == "included"
