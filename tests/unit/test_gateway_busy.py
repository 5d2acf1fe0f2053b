"""A miner whose slots are all taken (`dn.errors.Busy`): the node answers 503 with Retry-After,
and the gateway ends the query as it would on a miner that does not answer in time — with reason
`miner-busy`, before any token, the other miner's session given back (`dn.node.market.gateway`,
over an httpx mock transport; the real miners are in tests/functional/test_queries_burst.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dn.errors import Busy, TaskError
from dn.node.http.app import create_app
from dn.node.market.gateway import Gateway, Plan
from dn.node.node import Node, NodeHome
from dn.node.setup import init_dev_chain
from dn.runner.modelstore import ModelStore

PLAN = Plan(
    task="t" * 64,
    ticket={"max_tokens": 16, "model": "m" * 64},
    task_input={},
    model={"name": "m", "price": 1},
    generator="g",
    checker="c",
    generator_url="http://generator",
    checker_url="http://checker",
    max_cost=0,
)
BUSY = {"error": "Busy", "reason": "busy", "message": "all 4 slots of m are taken"}


async def _query(handler: Any) -> tuple[list[dict[str, Any]], BaseException | None]:
    gateway = Gateway(None, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    events: list[dict[str, Any]] = []
    try:
        async for event in gateway._run(PLAN):
            events.append(event)
    except TaskError as exc:
        return events, exc
    finally:
        await gateway.aclose()
    return events, None


def test_a_busy_generator_ends_the_query_and_frees_the_checker() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.url.host}{request.url.path}")
        if request.url.host == "generator":
            return httpx.Response(503, json=BUSY, headers={"Retry-After": "2"})
        return httpx.Response(200, json={"task": PLAN.task, "prompt_tokens": 5})

    events, error = asyncio.run(_query(handler))
    assert [e["event"] for e in events] == ["start"]  # not one token
    assert isinstance(error, Busy) and error.reason == "miner-busy"
    assert error.http_status == 503 and error.retry_after == 2
    assert "generator is busy" in error.message
    assert f"checker/dn/v1/tasks/check/{PLAN.task}/abort" in calls


def test_a_busy_checker_ends_the_query_before_it_is_answered() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "checker":
            return httpx.Response(503, json=BUSY, headers={"Retry-After": "1"})
        lines = [{"tokens": [i], "text": "x"} for i in range(16)]
        body = "".join(json.dumps(line) + "\n" for line in lines)
        return httpx.Response(200, content=body.encode())

    events, error = asyncio.run(_query(handler))
    assert isinstance(error, Busy) and error.reason == "miner-busy"
    assert "checker is busy" in error.message
    assert events[-1]["event"] != "done"


class _FullMiner:
    """A miner every slot of which is taken."""

    async def check_open(self, ticket: Any, raw_input: Any) -> dict[str, Any]:
        raise Busy("all 2 slots of smollm2 are taken; try again shortly")

    async def generate(self, ticket: Any, raw_input: Any) -> Any:
        raise Busy("all 2 slots of smollm2 are taken; try again shortly")


@pytest.mark.parametrize("route", ["/dn/v1/tasks/check", "/dn/v1/tasks/generate"])
def test_a_full_miner_answers_503_with_retry_after(tmp_path: Path, route: str) -> None:
    home = NodeHome.named("default", tmp_path)
    node = Node(home, init_dev_chain(home, {}, params={}))
    try:
        app = create_app(
            node,
            gateway=Gateway(node),
            miner=_FullMiner(),  # type: ignore[arg-type]
            store=ModelStore(tmp_path / "models"),
        )
        answer = TestClient(app).post(route, json={"ticket": {}, "input": {}})
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["reason"] == "busy"
    finally:
        node.close()
