"""HTTP routes for models and tasks, added to the node's app (`dn/node/http/app.py`).

    GET  /dn/v1/models                         models on chain, with the miners serving each
    GET  /dn/v1/models/{sha or name}           one model
    GET  /dn/v1/models/{sha}/blob              the GGUF file, if this node holds it (Range ok)
    GET  /dn/v1/tasks/{task}                   a settled task's record
    POST /dn/v1/query                          run a signed query: NDJSON events (gateway)
    POST /dn/v1/tasks/generate                 miner: generate, NDJSON token events
    POST /dn/v1/tasks/check                    miner: open a check session
                                               (either: 503 with Retry-After when every slot of
                                               the model is taken, dn.errors.Busy)
    POST /dn/v1/tasks/check/{task}/tokens      miner: the next chunk of claimed tokens
    POST /dn/v1/tasks/check/{task}/finish      miner: verdict and signed attestation
    POST /dn/v1/tasks/check/{task}/abort       miner: the gateway gave up; close the session
    GET  /dn/v1/tasks/{task}/values            miner: the per-token values it committed to
    POST /dn/v1/tasks/{task}/record            miner: ticket, input, tokens and values, for a
                                               validator's signed request
                                               (dn/node/market/records.py)

Streams are newline-delimited JSON. An error found before streaming starts is an ordinary JSON
error with its status; one found later is the stream's last line, `{"event": "error", …}`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse

from dn.chain import tasks
from dn.chain.ledger import MINER, MODEL, MODEL_NAME, TASK
from dn.chain.models import kind_of
from dn.chain.staking import backers_of
from dn.errors import InputError, NotFound, TaskError
from dn.node.http.bodies import json_object
from dn.node.market.gateway import Gateway, error_event
from dn.node.market.miner import Miner
from dn.node.node import Node
from dn.runner.modelstore import ModelStore, check_sha

NDJSON = "application/x-ndjson"


async def _ndjson(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield json.dumps(event, separators=(",", ":")).encode() + b"\n"
    except Exception as exc:  # noqa: BLE001 - reported to the reader as the last line
        yield json.dumps(error_event(exc)).encode() + b"\n"


def model_view(node: Node, sha: str, record: dict[str, Any]) -> dict[str, Any]:
    height = node.tip.height
    serving = tasks.eligible_miners(node.state, sha, height)
    return {
        "id": sha,
        **record,
        "kind": kind_of(record),  # records written before kinds existed have none: chat
        "miners": [_miner_view(node, m) for m in serving],
        "backers": [
            {"address": a, "amount": amount}
            for a, amount in sorted(backers_of(node.state, sha).items())
        ],
    }


def _miner_view(node: Node, address: str) -> dict[str, Any]:
    found = node.state.get(MINER + address) or {}
    return {
        "address": address,
        "url": found.get("url"),
        "bond": found.get("bond", 0),
        "slashed": found.get("slashed", 0),
    }


def find_model(node: Node, ref: str) -> tuple[str, dict[str, Any]]:
    """A model by sha256, by a unique sha256 prefix (at least 8 hex digits), or by name."""
    ref = ref.strip()
    sha = node.state.get(MODEL_NAME + ref)
    if sha is None and len(ref) == 64:
        sha = ref.lower()
    if sha is None and len(ref) >= 8:
        matches = [k[len(MODEL) :] for k in all_model_keys(node) if k[len(MODEL) :].startswith(ref)]
        if len(matches) == 1:
            sha = matches[0]
    record = node.state.get(MODEL + sha) if sha else None
    if record is None:
        raise NotFound(f"no model {ref!r} on this chain", reason="unknown-model")
    return str(sha), record


def all_model_keys(node: Node) -> list[str]:
    return sorted(key for key, _ in node.state.items() if key.startswith(MODEL))


def add_task_routes(
    app: FastAPI,
    node: Node,
    gateway: Gateway,
    miner: Miner | None,
    store: ModelStore,
) -> None:
    def mining() -> Miner:
        if miner is None:
            raise TaskError("this node is not a miner", reason="not-miner")
        return miner

    @app.get("/dn/v1/models")
    async def models() -> dict[str, Any]:
        found = [
            model_view(node, key[len(MODEL) :], node.state.get(key)) for key in all_model_keys(node)
        ]
        return {"height": node.tip.height, "models": found}

    @app.get("/dn/v1/models/{ref}")
    async def model(ref: str) -> dict[str, Any]:
        sha, record = find_model(node, ref)
        return model_view(node, sha, record)

    @app.get("/dn/v1/models/{sha}/blob", response_model=None)
    async def blob(sha: str) -> Any:
        check_sha(sha)
        if not store.has(sha):
            raise NotFound(f"this node does not hold model {sha[:12]}…", reason="no-blob")
        return FileResponse(store.path(sha), media_type="application/octet-stream")

    @app.get("/dn/v1/tasks/{task}")
    async def task(task: str) -> dict[str, Any]:
        record = node.state.get(TASK + task.lower())
        if record is None:
            raise NotFound(f"no settled task {task}")
        return {"task": task.lower(), **record}

    @app.post("/dn/v1/query", response_model=None)
    async def query(request: Request) -> Any:
        body = await json_object(request)
        events = gateway.run(body.get("ticket"), body.get("input"))
        return StreamingResponse(_ndjson(events), media_type=NDJSON)

    @app.post("/dn/v1/tasks/generate", response_model=None)
    async def generate(request: Request) -> Any:
        body = await json_object(request)
        events = await mining().generate(body.get("ticket"), body.get("input"))
        return StreamingResponse(_ndjson(events), media_type=NDJSON)

    @app.post("/dn/v1/tasks/check")
    async def check_open(request: Request) -> dict[str, Any]:
        body = await json_object(request)
        return await mining().check_open(body.get("ticket"), body.get("input"))

    @app.post("/dn/v1/tasks/check/{task}/tokens")
    async def check_tokens(task: str, request: Request) -> dict[str, Any]:
        body = await json_object(request)
        offset = body.get("offset")
        if not isinstance(offset, int) or offset < 0:
            raise InputError("offset must be a non-negative integer", reason="bad-request")
        return await mining().check_feed(task, offset, body.get("tokens"), body.get("logprobs"))

    @app.post("/dn/v1/tasks/check/{task}/finish")
    async def check_finish(task: str, request: Request) -> dict[str, Any]:
        body = await json_object(request)
        return await mining().check_finish(task, body.get("generator"))

    @app.post("/dn/v1/tasks/check/{task}/abort")
    async def check_abort(task: str) -> dict[str, Any]:
        return await mining().check_abort(task)

    @app.get("/dn/v1/tasks/{task}/values")
    async def values(task: str) -> dict[str, Any]:
        return {"task": task, "values": mining().values(task)}

    @app.post("/dn/v1/tasks/{task}/record")
    async def record(task: str, request: Request) -> dict[str, Any]:
        body = await json_object(request)
        return mining().record(task, body)
