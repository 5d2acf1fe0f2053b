"""The node's HTTP JSON API (FastAPI). Node-to-node and wallet routes live under `/dn/v1/`.

Every error is JSON `{"error", "reason", "message"}` with a 4xx/5xx status, mapped from the error
tree in exactly one place (`_dn_error`). Request bodies above `max_body` get 413 before they are
read in full: the guard looks at Content-Length first and counts streamed chunks otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dn.chain.models import is_model
from dn.chain.staking import stakes_of
from dn.chain.types import Block, Tx
from dn.encoding import pubkey_from_address
from dn.errors import (
    DNError,
    Forbidden,
    InputError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
)
from dn.node.http.bodies import MAX_DEPTH, decode, depth, json_body
from dn.node.node import Node
from dn.node.p2p.auth import FROM_HEADER  # the URL a push claims to come from

if TYPE_CHECKING:
    from dn.node.market.gateway import Gateway
    from dn.node.market.miner import Miner
    from dn.node.p2p.network import Network
    from dn.runner.modelstore import ModelStore
    from dn.wallet.keys import Keypair

MAX_BODY = 8 * 1024 * 1024
MAX_BATCH = 10_000
SUBMIT_STEP = 16  # transactions checked between two looks at the clock
KEEP_STEP = 500  # accepted transactions persisted (and announced) at once
SUBMIT_TURN_S = 0.01  # checking time after which other requests get a turn
MAX_BLOCKS_PER_PAGE = 100
MAX_HEIGHT = 2**63 - 1  # SQLite INTEGER; larger decimal refs cannot name a block


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, without reading them in full."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await self._reject(send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(f"request body above {self.limit} bytes")
            return message

        try:
            await self.app(scope, limited, send)
        except PayloadTooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            PayloadTooLarge(f"request body above {self.limit} bytes").to_json()
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _dn_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DNError)
    # Errors that mean "not now" (a miner with every slot taken, a rationed sender) say when.
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=headers)


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    err = InputError(f"{where}: {first.get('msg')}", reason="bad-request")
    return JSONResponse(err.to_json(), status_code=422)


_HTTP_REASONS = {404: "not-found", 405: "method-not-allowed"}


def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Errors the framework raises itself (unknown path, wrong method) in the house shape."""
    assert isinstance(exc, StarletteHTTPException)
    reason = _HTTP_REASONS.get(exc.status_code, f"http-{exc.status_code}")
    body = {"error": "HTTPError", "reason": reason, "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def landed(node: Node) -> None:
    """Wait, without holding the event loop, for the block the node is making in its worker
    thread (dn/node/service.py), if any, and adopt it: before writing to the store, which that
    thread may be committing to."""
    job = node.job
    if job is not None:
        await asyncio.wait([asyncio.wrap_future(job)])
        node.settle()


Persist = Callable[[list[Tx]], Awaitable[None]]


async def _submit(node: Node, raws: list[Any], persist: Persist | None) -> list[dict[str, Any]]:
    """`node.submit`, giving the event loop a turn after every `SUBMIT_TURN_S` of work (a
    10,000-transaction batch checked in one go held it for half a second). Each item's nesting
    is checked here rather than the whole body's at once; what is accepted is persisted, in
    parts, before the answer (by `persist`, off the loop, where the service gives one)."""
    results: list[dict[str, Any]] = []
    accepted: list[Tx] = []
    turn = 0.0  # a turn first: decoding the body took one

    async def pause() -> None:
        nonlocal turn
        # While the node makes a block (in a thread, holding the GIL most of the time) the loop
        # only answers: checking on would slow both down.
        if node.job is not None or time.perf_counter() - turn > SUBMIT_TURN_S:
            await asyncio.sleep(0)
            await landed(node)
            turn = time.perf_counter()

    for start in range(0, len(raws), SUBMIT_STEP):
        await pause()
        step = raws[start : start + SUBMIT_STEP]
        deep = {i for i, raw in enumerate(step) if depth(raw) >= MAX_DEPTH}
        done, kept = node.check([raw for i, raw in enumerate(step) if i not in deep])
        fresh = iter(done)
        for i in range(len(step)):
            results.append(_TOO_DEEP if i in deep else next(fresh))
        accepted += kept
    for start in range(0, len(accepted), KEEP_STEP):
        await pause()
        await landed(node)  # not to persist what a block being stored may include
        part = accepted[start : start + KEEP_STEP]
        if persist is not None:
            await persist(part)
        node.keep(part, stored=persist is not None)
    return results


_TOO_DEEP = {
    "accepted": False,
    **InputError(f"JSON nested deeper than {MAX_DEPTH}", reason="too-deep").to_json(),
}


def _block_json(block: Block) -> dict[str, Any]:
    return {**block.to_json(), "height": block.height}


def create_app(
    node: Node,
    network: Network | None = None,
    *,
    max_body: int = MAX_BODY,
    gateway: Gateway | None = None,
    miner: Miner | None = None,
    store: ModelStore | None = None,
    gateway_wallet: Keypair | None = None,
    gateway_max_price: int | None = None,
    persist: Persist | None = None,
) -> FastAPI:
    app = FastAPI(title="DeepNode node", version="1", docs_url="/dn/v1/docs", redoc_url=None)
    app.add_exception_handler(DNError, _dn_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if network is not None:  # inside BodyLimit (added after it), so bodies it reads are bounded
        from dn.node.http.guard import PeerGuard

        app.add_middleware(PeerGuard, network=network)
    app.add_middleware(BodyLimit, limit=max_body)

    @app.get("/dn/v1/status")
    async def status() -> dict[str, Any]:
        if miner is None:
            return node.status()
        return {**node.status(), "miner": miner.status()}

    @app.get("/dn/v1/genesis")
    async def genesis() -> dict[str, Any]:
        return node.genesis.doc

    @app.post("/dn/v1/txs", response_model=None)
    async def submit(request: Request) -> Any:
        body = decode(await request.body(), batch=True)
        if isinstance(body, list):
            if len(body) > MAX_BATCH:
                raise InputError(f"at most {MAX_BATCH} transactions per request", reason="batch")
            results = await _submit(node, body, persist)
            # JSONResponse directly: the framework's generic encoder took ~0.2 s on 10,000
            return JSONResponse(
                {"accepted": sum(r["accepted"] for r in results), "results": results}
            )
        await landed(node)
        result = node.submit([body])[0]
        if not result["accepted"]:
            return JSONResponse({k: v for k, v in result.items() if k != "accepted"}, 422)
        return result

    @app.get("/dn/v1/txs/{tx_id}")
    async def get_tx(tx_id: str) -> dict[str, Any]:
        return node.tx_status(tx_id)

    @app.get("/dn/v1/blocks")
    async def blocks(
        start: int = Query(0, alias="from", ge=0),
        limit: int = Query(20, ge=1, le=MAX_BLOCKS_PER_PAGE),
    ) -> dict[str, Any]:
        tip = node.tip.height  # a block stored by the producer's thread and not yet adopted
        found = [b for b in node.store.blocks(start, limit) if b.height <= tip]  # is not shown
        return {"height": tip, "blocks": [_block_json(b) for b in found]}

    @app.get("/dn/v1/blocks/{ref}")
    async def block(ref: str) -> dict[str, Any]:
        key: int | str = int(ref) if ref.isdigit() and len(ref) < 20 else ref.lower()
        if isinstance(key, int) and key > min(MAX_HEIGHT, node.tip.height):
            raise NotFound(f"no block {ref}")
        found = node.store.block(key)
        if found is None:
            raise NotFound(f"no block {ref}")
        return _block_json(found)

    def net() -> Network:
        if network is None:
            raise NotFound("this node runs without networking")
        return network

    @app.post("/dn/v1/handshake")
    async def hello(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        caller = request.client.host if request.client else None
        return net().hello(body, caller)

    @app.post("/dn/v1/handshake/finish")
    async def finish(request: Request) -> dict[str, Any]:
        return net().finish(await json_body(request))

    @app.get("/dn/v1/peers")
    async def peers() -> dict[str, Any]:
        current = net()
        return {
            "peers": current.peer_list(),
            "banned": current.bans(),
            "standing": current.standings(),
        }

    async def gossip(request: Request) -> tuple[str | None, str | None, Any]:
        """(the URL a push claims to come from, the peer that signed it, its body), unless the
        claimed sender's link is cut or it is banned. The signature was checked, once, by the
        guard (dn/node/http/guard.py)."""
        source = request.headers.get(FROM_HEADER)
        refused = net().accepts_from(source)
        if refused:
            raise Forbidden(f"not taking gossip from {source}: {refused}", reason=refused)
        raw = await request.body()
        signed_by = net().authenticate(getattr(request.state, "dn_signed", None))
        if signed_by is None and not net().ration(request.client.host if request.client else None):
            raise RateLimited("too many pushes that no peer signed from this address; slow down")
        return source, signed_by, decode(raw, batch=request.url.path.endswith("/txs"))

    @app.post("/dn/v1/gossip/block")
    async def gossip_block(request: Request) -> dict[str, Any]:
        source, signed_by, body = await gossip(request)
        return net().on_gossip_block(body, source, signed_by)

    @app.post("/dn/v1/gossip/txs")
    async def gossip_txs(request: Request) -> dict[str, Any]:
        _, _, body = await gossip(request)
        if not isinstance(body, list) or len(body) > MAX_BATCH:
            raise InputError(f"gossip carries a list of at most {MAX_BATCH} txs", reason="batch")
        results = await _submit(node, body, persist)
        return {"accepted": sum(r["accepted"] for r in results)}

    @app.get("/dn/v1/accounts/{address}")
    async def get_account(address: str) -> dict[str, Any]:
        return node.account(address)

    @app.get("/dn/v1/stakes")
    async def stakes(target: str | None = None, backer: str | None = None) -> dict[str, Any]:
        """Stakes as `{target, backer, amount}`, those on `target` (a model sha256 or a validator
        address) and/or by `backer`; a malformed address is a 400, never an empty answer."""
        if target is not None and not is_model(target):
            pubkey_from_address(target)
        if backer is not None:
            pubkey_from_address(backer)
        found = stakes_of(node.state.items(), target=target, backer=backer)
        return {"height": node.tip.height, "stakes": found}

    @app.get("/dn/v1/validators")
    async def validator_set() -> dict[str, Any]:
        """The active set, and every validator with its own weight, bond, delegations and
        scheduled change."""
        from dn.chain import validators as vs
        from dn.chain.staking import backers_of

        members = vs.active(node.state, node.genesis)
        everyone = set(members) | set(node.genesis.validators)
        everyone |= {
            k[len(vs.VALIDATOR) :] for k, _ in node.state.items() if k.startswith(vs.VALIDATOR)
        }
        rows = []
        for address in sorted(everyone):
            record = node.state.get(vs.VALIDATOR + address) or {}
            rows.append(
                {
                    "address": address,
                    "active": address in members,
                    "genesis": address in node.genesis.validators,
                    "bond": record.get("bond", 0),
                    "weight": vs.own_weight(node.state, node.genesis, address),
                    "delegated": sum(backers_of(node.state, address).values()),
                    "joins": record.get("joins"),
                    "leaves": record.get("leaves"),
                }
            )
        return {"height": node.tip.height, "active": members, "validators": rows}

    from dn.node.http.powr_routes import add_powr_routes

    add_powr_routes(app, node)
    if gateway is not None and store is not None:
        from dn.node.http.openai_routes import add_openai_routes
        from dn.node.http.task_routes import add_task_routes

        add_task_routes(app, node, gateway, miner, store)
        from dn.node.http.openai_routes import DEFAULT_MAX_PRICE

        cap = DEFAULT_MAX_PRICE if gateway_max_price is None else gateway_max_price
        add_openai_routes(app, node, gateway, gateway_wallet, cap)
    from dn.node.http.dashboard import add_dashboard_routes

    add_dashboard_routes(app, node, network, miner, store, gateway_wallet, gateway_max_price)
    return app
