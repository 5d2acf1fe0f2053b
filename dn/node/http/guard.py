"""Which routes are peer-to-peer, and the guard in front of them.

Peer-to-peer routes are those other nodes call: gossip, block sync, a miner's task routes (called
by gateways and referees), task records and model files. On a node with `--network-key` they
answer only a request signed (`dn.node.p2p.auth`) by a member, a node that proved the key in a
handshake (`dn.node.p2p.handshake`); everything else is refused before the route reads anything:

    no signature, or one that fails (bad, stale, replayed)   401 `unauthenticated`
    a signature by a node that is not a member (now)         403 `not-a-member`

Both refusals carry `x-dn-handshake: required`, so a member whose membership lapsed handshakes
again and retries (`dn.node.p2p.session` does). Without a network key these routes stay open to
everyone, as on a devnet; a signed request is still verified here, once, so that a gossip route
can tell which peer sent it (`request.state.dn_signed`, for penalties).

The handshake itself (`/dn/v1/handshake` and its `/finish`) is open: it is how a node becomes a
member. The local user's routes (status, genesis, accounts, a transaction's status, sending
transactions, one block, a settled task, models, stakes, validators, PoWR, peers, explain, the
gateway's `/dn/v1/query`, the OpenAI routes, the dashboard) are not peer-to-peer routes and are
not guarded here.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dn.errors import DNError, Forbidden, Unauthenticated
from dn.node.p2p import auth

if TYPE_CHECKING:
    from dn.node.p2p.network import Network

PEER_ROUTES = (
    ("GET", "/dn/v1/blocks"),  # range sync (`/dn/v1/blocks/{ref}`, one block, is the user's)
    ("POST", "/dn/v1/gossip/block"),
    ("POST", "/dn/v1/gossip/txs"),
    ("GET", "/dn/v1/models/{sha}/blob"),
    ("POST", "/dn/v1/tasks/generate"),
    ("POST", "/dn/v1/tasks/check"),
    ("POST", "/dn/v1/tasks/check/{task}/tokens"),
    ("POST", "/dn/v1/tasks/check/{task}/finish"),
    ("POST", "/dn/v1/tasks/check/{task}/abort"),
    ("GET", "/dn/v1/tasks/{task}/values"),
    ("POST", "/dn/v1/tasks/{task}/record"),
)
_PATTERNS = [
    (method, re.compile(re.sub(r"\{[a-z]+\}", "[^/]+", path))) for method, path in PEER_ROUTES
]


def is_peer_route(method: str, path: str) -> bool:
    return any(m == method and p.fullmatch(path) for m, p in _PATTERNS)


class PeerGuard:
    """ASGI middleware: members only on the peer-to-peer routes of a keyed node (see above)."""

    def __init__(self, app: ASGIApp, network: Network) -> None:
        self.app = app
        self.network = network

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_peer_route(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        members = self.network.members
        keyed = self.network.network_key is not None
        claimed, sig = headers.get(auth.NODE_HEADER), headers.get(auth.SIG_HEADER)
        if keyed and (claimed is None or sig is None):
            await _refuse(send, Unauthenticated("this network answers only signed requests"))
            return
        if keyed and not members.knows(str(claimed)):  # before any signature is checked
            await _refuse(send, _not_a_member(claimed))
            return
        if sig is None:
            await self.app(scope, receive, send)
            return
        body, receive = await _buffered(receive)
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        signed = members.check(headers, scope["method"], target.decode("latin-1"), body)
        if keyed and signed is None:
            await _refuse(
                send, Unauthenticated("the request's signature is bad, stale or replayed")
            )
            return
        scope.setdefault("state", {})["dn_signed"] = signed
        await self.app(scope, receive, send)


def _not_a_member(address: str | None) -> Forbidden:
    return Forbidden(
        f"{address} has not proved this network's key in a handshake (or not lately)",
        reason="not-a-member",
    )


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that hands it to the route again."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, again


async def _refuse(send: Send, error: DNError) -> None:
    data = json.dumps(error.to_json()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (auth.HANDSHAKE_HEADER.encode(), b"required"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
