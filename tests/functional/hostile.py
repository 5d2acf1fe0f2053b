"""A scriptable hostile peer, in the manner of Bitcoin's `P2PInterface`: a fake node on a loopback
port that passes the handshake with a throwaway key of its own, then answers each route the way a
test scripts it (lying, slow, oversized), and records what honest nodes ask of it.

    peer = HostilePeer(genesis.hash)
    peer.status.update(total_difficulty=10**9, height=10**6)    # claim a huge heavier chain
    peer.route("GET", "/dn/v1/blocks", peer.trickle(b"{", every_s=3.0, declared=10_000))
    with peer:                                                  # serves on peer.url
        ...

A handler gets the `Request` and returns `(status, json_body)`, or is an `async` function taking
`(request, writer)` that writes a whole HTTP response itself (for trickling bytes). The server is
plain asyncio on its own thread, so it can do what a real HTTP framework would never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from dn.node.p2p import auth, handshake
from dn.wallet.keys import Keypair


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Handler = (
    Callable[[Request], tuple[int, Any]]
    | Callable[[Request, asyncio.StreamWriter], Awaitable[None]]
)


@dataclass
class HostilePeer:
    genesis_hash: str
    key: Keypair = field(default_factory=Keypair.generate)
    roles: tuple[str, ...] = ("node",)
    network_key: bytes | None = None
    status: dict[str, Any] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    relayed: list[Any] = field(default_factory=list)  # what members answered `relay_handshake`

    def __post_init__(self) -> None:
        self.port = 0
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/dn/v1/handshake"): self._handshake,
            ("POST", "/dn/v1/handshake/finish"): lambda _: (200, {"member": None}),  # takes any
            ("GET", "/dn/v1/status"): lambda _: (200, self._status()),
            ("GET", "/dn/v1/blocks"): lambda _: (200, {"height": 0, "blocks": []}),
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler

    def push(
        self,
        http: httpx.Client,
        node_url: str,
        node_address: str,
        path: str,
        body: Any,
        *,
        from_url: str | None = None,
        signed: bool = True,
    ) -> httpx.Response:
        """POST `body` to a node's `path` as a push from this peer: signed with its key (as an
        honest node signs its gossip) unless `signed` is False; `from_url` claims another URL."""
        data = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if signed:
            headers |= auth.sign_push(
                self.key,
                genesis_hash=self.genesis_hash,
                from_url=from_url or self.url,
                to_address=node_address,
                path=path,
                body=data,
                time_ms=time.time_ns() // 1_000_000,
            )
        else:
            headers[auth.FROM_HEADER] = from_url or self.url
        return http.post(node_url + path, content=data, headers=headers)

    def relay_handshake(self, member_url: str) -> Callable[[Request], tuple[int, Any]]:
        """A handshake handler that answers whoever dials this peer with a real member's reply:
        it opens a handshake of its own with `member_url`, passing on the caller's challenge
        under this peer's own identity, and hands back what the member answered."""

        def relay(request: Request) -> tuple[int, Any]:
            opening = {**request.json(), "address": self.key.address, "url": self.url}
            reply = httpx.post(member_url + "/dn/v1/handshake", json=opening, timeout=10)
            self.relayed.append(reply.json())
            return reply.status_code, reply.json()

        return relay

    def asked(self, path: str) -> int:
        """How many requests for `path` came in."""
        return sum(1 for r in list(self.requests) if r.path == path)

    # --- scripted behaviours ------------------------------------------------------------------

    @staticmethod
    def trickle(
        chunk: bytes, *, every_s: float, declared: int
    ) -> Callable[[Request, asyncio.StreamWriter], Awaitable[None]]:
        """A 200 response that declares `declared` bytes and sends `chunk` every `every_s`."""

        async def send(_: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {declared}\r\n\r\n".encode()
            )
            await writer.drain()
            sent = 0
            while sent < declared:
                await asyncio.sleep(every_s)
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)

        return send

    # --- default routes -----------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return {
            "height": 0,
            "tip": "0" * 64,
            "total_difficulty": 0,
            "genesis_hash": self.genesis_hash,
            **self.status,
        }

    def _handshake(self, request: Request) -> tuple[int, Any]:
        opened = handshake.read_opening(request.json())
        return 200, handshake.answer(
            opened.challenge,
            self.key,
            caller=opened.caller,
            counter=handshake.new_challenge(),
            genesis_hash=self.genesis_hash,
            roles=list(self.roles),
            port=self.port,
            network_key=self.network_key,
        )

    # --- serving ------------------------------------------------------------------------------

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path, _, query = target.partition("?")
                request = Request(method, path, query, headers, body)
                self.requests.append(request)
                handler = self._routes.get((method, path))
                if handler is None:
                    await self._respond(writer, 404, {"error": "NotFound", "reason": "not-found"})
                    continue
                if asyncio.iscoroutinefunction(handler):
                    await handler(request, writer)  # type: ignore[call-arg]
                    continue
                status, payload = handler(request)  # type: ignore[call-arg,misc]
                await self._respond(writer, status, payload)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._server = await asyncio.start_server(self._serve_one, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    def start(self) -> HostilePeer:
        self._thread = threading.Thread(target=self._run, name="hostile-peer", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hostile peer did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        def shut() -> None:
            for writer in list(self._writers):
                writer.close()
            server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()

        loop.call_soon_threadsafe(shut)
        self._thread.join(10)

    def __enter__(self) -> HostilePeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
