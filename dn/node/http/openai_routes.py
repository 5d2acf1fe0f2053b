"""OpenAI-compatible routes, so any OpenAI client can use the market through this node.

    GET  /v1/models              live models on chain (`id` is the model's name; `dn.kind`)
    POST /v1/chat/completions    `messages` → a `chat.completion`, or SSE chunks with `stream`
                                 (a chat model only: a base model is 400 `base-model`)
    POST /v1/completions         `prompt` (raw text, no chat template) → a `text_completion`

A completion is one paid query (DESIGN.md section 7) run by this node on behalf of its own
**gateway wallet** (`dn node start --gateway-wallet NAME`): the node signs the ticket with that
wallet, runs it on the two miners the chain selects, then signs and submits `task.settle`, so the
wallet pays `price × tokens / 1000` (out of its query escrow: `dn escrow deposit`; without
enough there, 402 `escrow-short`) plus the fee for every confirmed answer. A rejected answer is
still returned (`dn.status` says so) and costs only the settlement fee. Every response carries a
`dn` field: the task id, the status, the units paid, the settlement transaction and both miners.

Safety: these POST routes spend the gateway wallet's money, so without an API key they answer only
clients on this machine (a loopback address: 127.0.0.0/8 or ::1). A node listening on 0.0.0.0 still
refuses (403 `not-local`) anyone on the LAN who has no key. A reverse proxy on the same machine
would make every client it forwards look local: do not put one in front of a node that has a
gateway wallet. Without a gateway wallet the POST routes answer 503. A web page in the user's
browser is on this machine too, so the routes also refuse what only a browser sends: a body that is
not `application/json` (415 `not-json`: a cross-site form can post text/plain without asking
first), an `Origin` that is not a loopback URL (403 `cross-origin`), and a `Host` that is not a
loopback name or address (403 `bad-host`: DNS rebinding). And the wallet pays at most `max_price`
units per 1,000 tokens (`dn node start --max-price`, default `DEFAULT_MAX_PRICE`; a request may
lower it with the extra field `dn_max_price`, never raise it): a dearer model is 402
`over-price-cap`, before anything is signed.

API keys (`dn apikey create`, dn/node/market/apikeys.py) let LAN clients in: a request with
`Authorization: Bearer dn-key-…` is served from any address, paid by the gateway wallet (a key
made for another wallet is 403 `key-wallet`), and counted against the key's budget: the most the
query may cost (`price × max_tokens / 1000` plus the settlement fee) is reserved before the
ticket is signed, and what was not paid is given back when it ends. A key that is unknown,
revoked or expired is 401 `invalid_api_key`; a budget that cannot cover the reservation is 429
`insufficient_quota` (OpenAI's answer for an account out of credit, sent with `x-should-retry:
false` so clients do not retry it). A keyed request skips the `Origin` and `Host` checks: they
guard an ambient credential (being on this machine), which a web page gets for free; a key is
sent only by whoever holds it, and a browser sends it cross-site only after a CORS preflight
that this node never approves. A bearer value that is not a `dn-key-` (the `openai` client
always sends one) changes nothing.

Answers are greedy unless the request sets a `temperature` (with `top_p` and `seed` if it
likes): then they are sampled verifiably, the sampler a function of the logits and a key from
the seed or the task (dn/runner/sampling.py), which the checker recomputes. `stop` ends the
answer at the first match (the checker checks it was the first); `logprobs` (and chat's
`top_logprobs`) come from the generator and are checked by the checker within the drift margins.
`n` must be 1 (dn/node/http/openai_requests.py checks each field). Errors have OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, with our reason as `code`; an error after
streaming began is an SSE `data: {"error": …}` line followed by `data: [DONE]`. `usage` counts
the prompt as the checker's tokenizer read it and the tokens generated."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from dn.chain import tasks
from dn.chain.ledger import MODEL
from dn.chain.models import kind_of
from dn.encoding import UNITS_PER_DN
from dn.errors import DNError, Forbidden, InputError, TaskError
from dn.node.http.bodies import json_object
from dn.node.http.local import bearer_key, is_local, refuse_browser_requests
from dn.node.http.openai_requests import (
    CHAT,
    TEXT,
    Ask,
    Shape,
    TokenLogprob,
    error_body,
    error_response,
    parse_ask,
)
from dn.node.http.task_routes import all_model_keys, find_model
from dn.node.market.apikeys import ApiKey, KeyStore
from dn.node.market.gateway import Gateway
from dn.node.market.slots import SlotPool
from dn.node.node import Node
from dn.node.taskio import input_hash
from dn.wallet.keys import Keypair

log = logging.getLogger("dn.openai")
DEFAULT_MAX_PRICE = UNITS_PER_DN  # units per 1,000 tokens the gateway wallet pays at most
EXPIRY_BLOCKS = 50
SSE = "text/event-stream"
DONE = b"data: [DONE]\n\n"


@dataclass
class Charge:
    """What one keyed query reserved of its key's budget, and what it paid; `close` gives the
    rest back, once (dn/node/market/apikeys.py)."""

    keys: KeyStore
    key: str
    reserved: int
    paid: int = 0
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.keys.settle(self.key, self.reserved, self.paid)


# --- running one ----------------------------------------------------------------------------


class OpenAIGateway:
    """Turns OpenAI-style requests into paid queries signed and settled by `wallet`."""

    def __init__(
        self, node: Node, gateway: Gateway, wallet: Keypair, max_price: int = DEFAULT_MAX_PRICE
    ) -> None:
        self.node = node
        self.gateway = gateway
        self.wallet = wallet
        self.max_price = max_price
        self.slots = SlotPool(node, wallet)

    def cap(self, ask: Ask, name: str, model: dict[str, Any]) -> None:
        """Refuse a model dearer than the cap (the node's, or the request's if lower)."""
        cap = self.max_price
        if ask.max_price is not None:
            if ask.max_price > self.max_price:
                raise InputError(
                    f"dn_max_price may only lower this node's cap of {self.max_price} units "
                    "per 1,000 tokens",
                    reason="bad-request",
                )
            cap = ask.max_price
        if model["price"] > cap:
            raise TaskError(
                f"model {name} costs {model['price']} units per 1,000 tokens, above the cap of "
                f"{cap} this gateway pays (dn node start --max-price)",
                reason="over-price-cap",
            )

    async def ticket(self, sha: str, model: dict[str, Any], ask: Ask) -> dict[str, Any]:
        """A ticket for the next unused slot this wallet booked for the model (slots.py)."""
        booked, nonce, _ = await self.slots.take(sha, model["price"], ask.max_tokens)
        genesis = self.node.genesis
        height = self.node.tip.height
        window = genesis.param("ticket_window_blocks")
        return tasks.sign_ticket(
            genesis.chain_id,
            self.wallet,
            model=sha,
            prompt_hash=input_hash(ask.task_input),
            max_tokens=ask.max_tokens,
            seed=0,
            max_price=tasks.price_of(model["price"], ask.max_tokens),
            ref_height=booked,
            nonce=nonce,
            expiry=height + min(EXPIRY_BLOCKS, window - 1),
        )

    async def start(
        self, ask: Ask, key: ApiKey | None = None, keys: KeyStore | None = None
    ) -> tuple[str, dict[str, Any], AsyncIterator[dict[str, Any]], Charge | None]:
        """Sign and plan the query (errors here come before any work): the task id, the model,
        the gateway's events, and what it reserved of `key`'s budget."""
        sha, model = find_model(self.node, ask.model)
        self.cap(ask, ask.model, model)
        charge = None
        if key is not None and keys is not None:
            most = tasks.price_of(model["price"], ask.max_tokens) + 2 * self.fee
            keys.reserve(key.id, most)
            charge = Charge(keys, key.id, most)
        try:
            # no-miner, one-miner: refused before a slot is booked for a model nobody can serve
            tasks.select_miners(
                tasks.eligible_miners(self.node.state, sha, self.node.tip.height), ""
            )
            ticket = await self.ticket(sha, model, ask)
            events = self.gateway.run(ticket, ask.task_input)
        except BaseException:
            if charge is not None:
                charge.close()
            raise
        return tasks.task_id(self.node.genesis.chain_id, ticket), model, events, charge

    @property
    def fee(self) -> int:
        """What `own_tx` pays for task.settle, and what one booked slot costs (slots.py)."""
        return int(self.node.genesis.param("min_fee"))

    def settle(self, done: dict[str, Any], charge: Charge | None = None) -> dict[str, Any]:
        """Sign and submit `task.settle` for a finished query; the `dn` field of the answer.
        A keyed query's charge is what the wallet pays: the price (owed to the miners, who
        settle it themselves if we do not), the slot the ticket used, and the fee if our
        settlement was taken."""
        payload = {k: done[k] for k in ("ticket", "generator", "checker")}
        tx = self.node.own_tx(self.wallet, "task.settle", payload)
        result = self.node.submit([tx.to_json()])[0]
        if charge is not None:
            charge.paid = done["price_units"] + self.fee + (tx.fee if result["accepted"] else 0)
        dn: dict[str, Any] = {
            "task": done["task"],
            "status": done["status"],
            "price_units": done["price_units"],
            "settle_tx": tx.id if result["accepted"] else None,
            "generator": done["generator"]["miner"],
            "checker": done["checker"]["miner"],
        }
        if not result["accepted"]:
            log.warning("task.settle for %s refused: %s", done["task"][:12], result.get("message"))
            dn["settle_error"] = result.get("message")
        return dn

    async def complete(
        self,
        shape: Shape,
        ask: Ask,
        task: str,
        model: dict[str, Any],
        events: Any,
        charge: Charge | None = None,
    ) -> dict[str, Any]:
        pieces: list[str] = []
        logprobs: list[TokenLogprob] | None = [] if ask.logprobs is not None else None
        done: dict[str, Any] | None = None
        try:
            async with _closing(events):
                async for event in events:
                    if event["event"] == "token":
                        pieces.append(event["text"])
                        if logprobs is not None:
                            logprobs += TokenLogprob.from_event(event)
                    elif event["event"] == "done":
                        done = event
            if done is None:
                raise TaskError("the query ended without an answer", reason="miner-failed")
            dn = self.settle(done, charge)
        finally:
            if charge is not None:
                charge.close()
        return {
            "id": f"{shape.prefix}-{task}",
            "object": shape.object,
            "created": int(time.time()),
            "model": model["name"],
            "choices": [shape.choice("".join(pieces), _finish(done, ask), logprobs)],
            "usage": _usage(done),
            "dn": dn,
        }

    async def stream(
        self,
        shape: Shape,
        ask: Ask,
        task: str,
        model: dict[str, Any],
        events: Any,
        charge: Charge | None = None,
    ) -> AsyncIterator[bytes]:
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            body = {
                "id": f"{shape.prefix}-{task}",
                "object": shape.chunk_object,
                "created": created,
                "model": model["name"],
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

        try:
            async with _closing(events, charge):
                async for event in events:
                    kind = event["event"]
                    if kind == "start" and shape.chat:
                        yield chunk([shape.delta("", None, first=True)])
                    elif kind == "token":
                        lp = TokenLogprob.from_event(event) if ask.logprobs is not None else None
                        yield chunk([shape.delta(event["text"], None, logprobs=lp)])
                    elif kind == "done":
                        final = shape.delta(None, _finish(event, ask))
                        yield chunk([final], dn=self.settle(event, charge))
                        if ask.include_usage:
                            yield chunk([], usage=_usage(event))
        except Exception as exc:  # noqa: BLE001 - reported to the reader as an SSE error
            _, body = error_body(exc)
            yield b"data: " + json.dumps(body).encode() + b"\n\n"
        yield DONE


def _finish(done: dict[str, Any], ask: Ask) -> str:
    return "length" if done["tokens"] >= ask.max_tokens else "stop"


def _usage(done: dict[str, Any]) -> dict[str, int]:
    # The prompt as the checker's tokenizer counted it (the gateway never tokenizes).
    prompt, completion = int(done.get("prompt_tokens", 0)), int(done["tokens"])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@contextlib.asynccontextmanager
async def _closing(events: Any, charge: Charge | None = None) -> AsyncIterator[None]:
    """Close the gateway's stream when we stop early (a client that went away, an error), so it
    releases the task and its checker forwarder at once; give back what a keyed query reserved
    and did not pay."""
    try:
        yield
    finally:
        try:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        finally:
            if charge is not None:
                charge.close()


# --- routes ---------------------------------------------------------------------------------


def add_openai_routes(
    app: FastAPI,
    node: Node,
    gateway: Gateway,
    wallet: Keypair | None,
    max_price: int = DEFAULT_MAX_PRICE,
) -> None:
    payer = OpenAIGateway(node, gateway, wallet, max_price) if wallet is not None else None
    keys = KeyStore.in_folder(node.home.path) if wallet is not None else None

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        height = node.tip.height
        data = []
        for key in all_model_keys(node):
            record = node.state.get(key)
            if record["retired"]:
                continue
            sha = key[len(MODEL) :]
            block = node.store.block(record["height"])  # OpenAI clients expect Unix seconds
            data.append(
                {
                    "id": record["name"],
                    "object": "model",
                    "created": block.header.time // 1000 if block is not None else 0,
                    "owned_by": record["creator"],
                    "dn": {
                        "sha256": sha,
                        "price": record["price"],
                        "domain": record["domain"],
                        "kind": kind_of(record),
                        "miners": len(tasks.eligible_miners(node.state, sha, height)),
                    },
                }
            )
        return {"object": "list", "data": data}

    def authorize(request: Request) -> ApiKey | None:
        """The request's API key, checked; or None for a client on this machine with none (see
        the module docstring for the rule)."""
        presented = bearer_key(request)
        if presented is not None:
            if keys is None:
                raise TaskError(
                    "this node has no gateway wallet, so it takes no API keys",
                    reason="no-gateway-wallet",
                )
            key = keys.check(presented, source=request.client.host if request.client else None)
            refuse_browser_requests(request, keyed=True)
            return key
        if not is_local(request.client.host if request.client else None):
            raise Forbidden(
                "the OpenAI API spends this node's gateway wallet, so without an API key "
                "(dn apikey create) it answers only clients on the same machine (loopback)",
                reason="not-local",
            )
        refuse_browser_requests(request)
        return None

    async def run(request: Request, shape: Shape) -> Any:
        try:
            key = authorize(request)
            if payer is None:
                raise TaskError(
                    "this node has no gateway wallet to pay for queries: start it with "
                    "'dn node start --gateway-wallet NAME'",
                    reason="no-gateway-wallet",
                )
            if key is not None and key.wallet != payer.wallet.address:
                raise Forbidden(
                    f"API key {key.id} spends wallet {key.wallet}, but this node pays with its "
                    f"gateway wallet {payer.wallet.address}",
                    reason="key-wallet",
                )
            ask = parse_ask(await json_object(request), shape)
            task, model, events, charge = await payer.start(ask, key, keys)
        except DNError as exc:
            return error_response(exc)
        if ask.stream:
            return StreamingResponse(
                payer.stream(shape, ask, task, model, events, charge),
                media_type=SSE,
                headers={"Cache-Control": "no-cache"},
            )
        try:
            return await payer.complete(shape, ask, task, model, events, charge)
        except Exception as exc:  # noqa: BLE001 - every failure gets OpenAI's error shape
            return error_response(exc)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        return await run(request, CHAT)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        return await run(request, TEXT)
