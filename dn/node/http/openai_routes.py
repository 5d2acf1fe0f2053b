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

Safety: these POST routes spend the gateway wallet's money, so they answer only clients on this
machine (a loopback address: 127.0.0.0/8 or ::1). A node listening on 0.0.0.0 still refuses
(403) anyone on the LAN. A reverse proxy on the same machine would make every client it forwards
look local: do not put one in front of a node that has a gateway wallet. Without a gateway
wallet the POST routes answer 503. A web page in the user's browser is on this machine too, so
the routes also refuse what only a browser sends: a body that is not `application/json` (415
`not-json`: a cross-site form can post text/plain without asking first), an `Origin` that is not
a loopback URL (403 `cross-origin`), and a `Host` that is not a loopback name or address (403
`bad-host`: DNS rebinding). And the wallet pays at most `max_price` units per 1,000 tokens
(`dn node start --max-price`, default `DEFAULT_MAX_PRICE`; a request may lower it with the extra
field `dn_max_price`, never raise it): a dearer model is 402 `over-price-cap`, before anything
is signed.

Answers are greedy (the checker verifies greedy decoding), so sampling options such as
`temperature`, `top_p`, `seed` or `stop` are accepted and ignored; `n` must be 1. Errors have
OpenAI's shape, `{"error": {"message", "type", "code"}}`, with our reason as `code`; an error
after streaming began is an SSE `data: {"error": …}` line followed by `data: [DONE]`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from dn.chain import tasks
from dn.chain.ledger import MODEL
from dn.chain.models import kind_of
from dn.encoding import UNITS_PER_DN
from dn.errors import DNError, Forbidden, InputError, TaskError
from dn.node.http.bodies import json_object
from dn.node.http.local import is_local, refuse_browser_requests
from dn.node.http.task_routes import all_model_keys, find_model
from dn.node.market.gateway import Gateway
from dn.node.node import Node
from dn.node.taskio import input_hash, normalize_input
from dn.wallet.keys import Keypair

log = logging.getLogger("dn.openai")
DEFAULT_MAX_PRICE = UNITS_PER_DN  # units per 1,000 tokens the gateway wallet pays at most
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS = 65536  # the ticket's limit; the model's context is usually the tighter one
EXPIRY_BLOCKS = 50
SSE = "text/event-stream"
DONE = b"data: [DONE]\n\n"

# Statuses for reasons whose DNError class alone would give the wrong one.
_STATUS_BY_REASON = {
    "cannot-pay": 402,
    "escrow-short": 402,  # the gateway wallet's query escrow (`dn escrow deposit`)
    "over-price-cap": 402,
    "not-json": 415,
    "unknown-model": 404,
    "model-retired": 404,
    "no-miner": 503,
    "one-miner": 503,
    "no-gateway-wallet": 503,
}


def _status(exc: DNError) -> int:
    if exc.reason in _STATUS_BY_REASON:
        return _STATUS_BY_REASON[exc.reason]
    if exc.reason.startswith("miner-"):
        return 503  # the miners failed us, not the caller
    return exc.http_status


def _error_type(status: int) -> str:
    if status == 402:
        return "insufficient_funds"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 503:
        return "service_unavailable"
    return "invalid_request_error" if status < 500 else "server_error"


def _error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, DNError):
        status, message, code = _status(exc), exc.message, exc.reason
    else:
        log.exception("OpenAI-style request failed", exc_info=exc)
        status, message, code = 500, str(exc) or type(exc).__name__, "internal"
    return status, {"error": {"message": message, "type": _error_type(status), "code": code}}


def error_response(exc: BaseException) -> JSONResponse:
    status, body = _error_body(exc)
    return JSONResponse(body, status_code=status)


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How one endpoint's objects look: chat (`message`/`delta`) or text (`text`)."""

    chat: bool

    @property
    def prefix(self) -> str:
        return "chatcmpl" if self.chat else "cmpl"

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def choice(self, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def delta(self, text: str | None, finish: str | None, *, first: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


CHAT, TEXT = Shape(chat=True), Shape(chat=False)


@dataclass(frozen=True)
class Ask:
    """One OpenAI-style request, checked: what to run and how to answer."""

    model: str
    task_input: dict[str, Any]
    max_tokens: int
    stream: bool
    include_usage: bool
    max_price: int | None = None  # units per 1,000 tokens: only ever lowers the node's cap


def _content(i: int, content: Any) -> Any:
    """A message's content as text: a string, or the text of a list of `text` parts."""
    if not isinstance(content, list):
        return content
    texts: list[str] = []
    for part in content:
        text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
        if not isinstance(text, str):
            raise InputError(f"message {i}: only text content is supported", reason="bad-request")
        texts.append(text)
    return "\n".join(texts)


def parse_ask(body: dict[str, Any], shape: Shape) -> Ask:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InputError("model must be a model name or id", reason="bad-request")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = DEFAULT_MAX_TOKENS if limit is None else limit
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise InputError("max_tokens must be an integer", reason="bad-request")
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise InputError(f"max_tokens must be between 1 and {MAX_TOKENS}", reason="bad-request")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InputError("stream must be true or false", reason="bad-request")
    if body.get("n", 1) not in (1, None):
        raise InputError("n must be 1: each answer is one paid task", reason="bad-request")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    max_price = body.get("dn_max_price")
    if max_price is not None and (
        not isinstance(max_price, int) or isinstance(max_price, bool) or max_price < 0
    ):
        raise InputError(
            "dn_max_price must be a whole number of units per 1,000 tokens", reason="bad-request"
        )
    if shape.chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise InputError("messages must be a list", reason="bad-request")
        clean = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise InputError(f"message {i} is not an object", reason="bad-request")
            role = message.get("role")
            clean.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content(i, message.get("content")),
                }
            )
        task_input = normalize_input({"messages": clean})
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InputError("prompt must be one string", reason="bad-request")
        task_input = normalize_input({"prompt": prompt})
    return Ask(model.strip(), task_input, max_tokens, stream, include_usage, max_price)


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

    def ticket(self, sha: str, model: dict[str, Any], ask: Ask) -> dict[str, Any]:
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
            ref_height=self._ref_height(sha, height, window),
            nonce=secrets.randbits(62),
            expiry=height + min(EXPIRY_BLOCKS, window - 1),
        )

    def _ref_height(self, sha: str, height: int, window: int) -> int:
        """The block before the tip, where it names the same miners: a miner refuses a ticket
        that refers to a block it has not received yet, and the tip may be milliseconds old
        here, while `dn query` pays a round trip or two before a miner sees its ticket."""
        if height == 0 or window < 2:
            return height
        state = self.node.state
        before = tasks.eligible_miners(state, sha, height - 1)
        return height - 1 if before == tasks.eligible_miners(state, sha, height) else height

    def start(self, ask: Ask) -> tuple[str, dict[str, Any], AsyncIterator[dict[str, Any]]]:
        """Sign and plan the query (errors here come before any work): the task id, the model
        and the gateway's events."""
        sha, model = find_model(self.node, ask.model)
        self.cap(ask, ask.model, model)
        ticket = self.ticket(sha, model, ask)
        events = self.gateway.run(ticket, ask.task_input)
        return tasks.task_id(self.node.genesis.chain_id, ticket), model, events

    def settle(self, done: dict[str, Any]) -> dict[str, Any]:
        """Sign and submit `task.settle` for a finished query; the `dn` field of the answer."""
        payload = {k: done[k] for k in ("ticket", "generator", "checker")}
        tx = self.node.own_tx(self.wallet, "task.settle", payload)
        result = self.node.submit([tx.to_json()])[0]
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
        self, shape: Shape, ask: Ask, task: str, model: dict[str, Any], events: Any
    ) -> dict[str, Any]:
        pieces: list[str] = []
        done: dict[str, Any] | None = None
        async with _closing(events):
            async for event in events:
                if event["event"] == "token":
                    pieces.append(event["text"])
                elif event["event"] == "done":
                    done = event
        if done is None:
            raise TaskError("the query ended without an answer", reason="miner-failed")
        return {
            "id": f"{shape.prefix}-{task}",
            "object": shape.object,
            "created": int(time.time()),
            "model": model["name"],
            "choices": [shape.choice("".join(pieces), _finish(done, ask))],
            "usage": _usage(done),
            "dn": self.settle(done),
        }

    async def stream(
        self, shape: Shape, ask: Ask, task: str, model: dict[str, Any], events: Any
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
            async with _closing(events):
                async for event in events:
                    kind = event["event"]
                    if kind == "start" and shape.chat:
                        yield chunk([shape.delta("", None, first=True)])
                    elif kind == "token":
                        yield chunk([shape.delta(event["text"], None)])
                    elif kind == "done":
                        final = shape.delta(None, _finish(event, ask))
                        yield chunk([final], dn=self.settle(event))
                        if ask.include_usage:
                            yield chunk([], usage=_usage(event))
        except Exception as exc:  # noqa: BLE001 - reported to the reader as an SSE error
            _, body = _error_body(exc)
            yield b"data: " + json.dumps(body).encode() + b"\n\n"
        yield DONE


def _finish(done: dict[str, Any], ask: Ask) -> str:
    return "length" if done["tokens"] >= ask.max_tokens else "stop"


def _usage(done: dict[str, Any]) -> dict[str, int]:
    # The gateway never tokenizes the prompt (the miners do), so prompt tokens are not known.
    return {"prompt_tokens": 0, "completion_tokens": done["tokens"], "total_tokens": done["tokens"]}


@contextlib.asynccontextmanager
async def _closing(events: Any) -> AsyncIterator[None]:
    """Close the gateway's stream when we stop early (a client that went away, an error), so it
    releases the task and its checker forwarder at once."""
    try:
        yield
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


# --- routes ---------------------------------------------------------------------------------


def add_openai_routes(
    app: FastAPI,
    node: Node,
    gateway: Gateway,
    wallet: Keypair | None,
    max_price: int = DEFAULT_MAX_PRICE,
) -> None:
    payer = OpenAIGateway(node, gateway, wallet, max_price) if wallet is not None else None

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

    async def run(request: Request, shape: Shape) -> Any:
        try:
            if not is_local(request.client.host if request.client else None):
                raise Forbidden(
                    "the OpenAI API spends this node's gateway wallet, so it answers only "
                    "clients on the same machine (loopback)",
                    reason="not-local",
                )
            refuse_browser_requests(request)
            if payer is None:
                raise TaskError(
                    "this node has no gateway wallet to pay for queries: start it with "
                    "'dn node start --gateway-wallet NAME'",
                    reason="no-gateway-wallet",
                )
            ask = parse_ask(await json_object(request), shape)
            task, model, events = payer.start(ask)
        except DNError as exc:
            return error_response(exc)
        if ask.stream:
            return StreamingResponse(
                payer.stream(shape, ask, task, model, events),
                media_type=SSE,
                headers={"Cache-Control": "no-cache"},
            )
        try:
            return await payer.complete(shape, ask, task, model, events)
        except Exception as exc:  # noqa: BLE001 - every failure gets OpenAI's error shape
            return error_response(exc)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        return await run(request, CHAT)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        return await run(request, TEXT)
