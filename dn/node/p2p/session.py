"""The calling side of membership: the sessions a node holds with the nodes it handshook with, and
an httpx transport that signs every request it sends as that node, handshaking first with a node
it has not met and again with one that has forgotten it.

    member = Member(node.key, genesis.hash, network_key, url="http://10.0.0.7:8765")
    async with httpx.AsyncClient(transport=MemberTransport(member)) as http:
        await http.post(miner_url + "/dn/v1/tasks/check", json=body)  # handshake, then signed

A session is the node address proved at an origin (`http://host:port`) in a handshake
(`dn.node.p2p.handshake`); each request to that origin is signed naming that address as its
receiver (`dn.node.p2p.auth`), so nobody can turn it on another node. A handshake that fails is
answered, in place of the request, by a local 403 with the handshake's reason, so callers see one
kind of refusal (429 `rate-limited` when the node rations our openings: dn/node/p2p/members.py).
Streamed answers stay streamed: only the handshake's own answers are read here.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from dn.errors import DNError, HandshakeError, RateLimited
from dn.node.p2p import auth, handshake
from dn.node.p2p.handshake import PeerHello
from dn.wallet.keys import Keypair

HANDSHAKE = "/dn/v1/handshake"
FINISH = "/dn/v1/handshake/finish"
TIMEOUT_S = 5.0  # each handshake request, when the request it precedes names no timeout
MAX_SESSIONS = 1_024

Flow = Generator[httpx.Request, httpx.Response, PeerHello]


def origin_of(url: httpx.URL | str) -> str:
    """`scheme://host:port` of `url`: what a session is kept under."""
    url = httpx.URL(url)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{url.port or (443 if url.scheme == 'https' else 80)}"


@dataclass
class Member:
    """A node's identity on the network (its key, the chain, the network key, where it serves,
    if it does) and the sessions it holds: origin -> the node address proved there."""

    key: Keypair
    genesis_hash: str
    network_key: bytes | None
    url: str | None = None
    sessions: dict[str, str] = field(default_factory=dict)

    def handshake_flow(self, origin: str, timeout: Any = None) -> Flow:
        """The two requests of a handshake with the node at `origin`; each answer must be read
        before it is sent back in. Returns the node's hello and records the session; raises
        `HandshakeError` for a hello we refuse or a refusal of either request."""
        challenge = handshake.new_challenge()
        opening = handshake.opening(challenge, self.key, self.url)
        response = yield _request(origin + HANDSHAKE, opening, timeout)
        hello = handshake.verify(
            _answer(response, "handshake"),
            challenge=challenge,
            genesis_hash=self.genesis_hash,
            network_key=self.network_key,
            self_address=self.key.address,
        )
        body = handshake.finish(
            hello.address,
            challenge,
            hello.counter,
            self.key,
            genesis_hash=self.genesis_hash,
            network_key=self.network_key,
        )
        _answer((yield _request(origin + FINISH, body, timeout)), "finish")
        self.sessions.pop(origin, None)  # re-inserted last: the dict stays oldest first
        self.sessions[origin] = hello.address
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))
        return hello

    def sign(self, request: httpx.Request, origin: str) -> None:
        """Sign `request` (its body read already) for the node of our session at `origin`."""
        request.headers.update(
            auth.sign_request(
                self.key,
                genesis_hash=self.genesis_hash,
                to_address=self.sessions[origin],
                method=request.method,
                target=request.url.raw_path.decode("ascii"),
                body=request.content,
                time_ms=time.time_ns() // 1_000_000,
                from_url=request.headers.get(auth.FROM_HEADER),
            )
        )


def _request(url: str, body: dict[str, Any], timeout: Any) -> httpx.Request:
    request = httpx.Request("POST", url, json=body)
    request.extensions["timeout"] = timeout or httpx.Timeout(TIMEOUT_S).as_dict()
    return request


def _answer(response: httpx.Response, what: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        found = body if isinstance(body, dict) else {}
        message = found.get("message") or f"HTTP {response.status_code}"
        if response.status_code == 429:  # the node rations openings: not now, rather than no
            raise RateLimited(f"the {what} was refused: {message}", reason="rate-limited")
        raise HandshakeError(
            f"the {what} was refused: {message}", reason=str(found.get("reason") or "handshake")
        )
    if body is None:
        raise HandshakeError(f"the {what} answer is not JSON", reason="bad-hello")
    return body


def _asks_handshake(response: httpx.Response) -> bool:
    return (
        response.status_code in (401, 403)
        and response.headers.get(auth.HANDSHAKE_HEADER) == "required"
    )


def _refusal(exc: DNError, request: httpx.Request) -> httpx.Response:
    return httpx.Response(exc.http_status, json=exc.to_json(), request=request)


class MemberTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Sends every request signed as `member` (handshake requests as they are), through `inner`
    (default: httpx's own transport, sync or async as the client is)."""

    def __init__(
        self,
        member: Member,
        inner: httpx.AsyncBaseTransport | httpx.BaseTransport | None = None,
    ) -> None:
        self.member = member
        self._async = inner if isinstance(inner, httpx.AsyncBaseTransport) else None
        self._sync = inner if isinstance(inner, httpx.BaseTransport) else None

    # --- async -------------------------------------------------------------------------------

    async def handshake(self, url: str, timeout: Any = None) -> PeerHello:
        """Handshake with the node at `url` now (`HandshakeError`, or httpx's errors)."""
        inner = self._inner_async()
        flow = self.member.handshake_flow(origin_of(url), timeout)
        step = next(flow)
        while True:
            response = await inner.handle_async_request(step)
            try:
                await response.aread()
            finally:
                await response.aclose()
            try:
                step = flow.send(response)
            except StopIteration as done:
                return done.value

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        inner = self._inner_async()
        if request.url.path in (HANDSHAKE, FINISH):
            return await inner.handle_async_request(request)
        await request.aread()
        where = origin_of(request.url)
        for attempt in range(2):
            if where not in self.member.sessions:
                try:
                    await self.handshake(where, request.extensions.get("timeout"))
                except DNError as exc:
                    return _refusal(exc, request)
            self.member.sign(request, where)
            response = await inner.handle_async_request(request)
            if attempt or not _asks_handshake(response):
                return response
            await response.aclose()
            self.member.sessions.pop(where, None)  # it forgot us: handshake again, once
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()

    def _inner_async(self) -> httpx.AsyncBaseTransport:
        if self._async is None:
            self._async = httpx.AsyncHTTPTransport()
        return self._async

    # --- sync --------------------------------------------------------------------------------

    def handshake_sync(self, url: str, timeout: Any = None) -> PeerHello:
        """`handshake`, for a synchronous client."""
        inner = self._inner_sync()
        flow = self.member.handshake_flow(origin_of(url), timeout)
        step = next(flow)
        while True:
            response = inner.handle_request(step)
            try:
                response.read()
            finally:
                response.close()
            try:
                step = flow.send(response)
            except StopIteration as done:
                return done.value

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        inner = self._inner_sync()
        if request.url.path in (HANDSHAKE, FINISH):
            return inner.handle_request(request)
        request.read()
        where = origin_of(request.url)
        for attempt in range(2):
            if where not in self.member.sessions:
                try:
                    self.handshake_sync(where, request.extensions.get("timeout"))
                except DNError as exc:
                    return _refusal(exc, request)
            self.member.sign(request, where)
            response = inner.handle_request(request)
            if attempt or not _asks_handshake(response):
                return response
            response.close()
            self.member.sessions.pop(where, None)  # it forgot us: handshake again, once
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    def _inner_sync(self) -> httpx.BaseTransport:
        if self._sync is None:
            self._sync = httpx.HTTPTransport()
        return self._sync
