"""How the gateway forwards a streaming answer to the checker (`dn.node.market.gateway`): chunk
sizes and the order and completeness of what the checker is sent, over an httpx mock transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from dn.node.market.gateway import Gateway, Plan, chunk_size


@given(st.integers(1, 4096), st.integers(1, 64), st.data())
def test_chunk_sizes_stay_in_bounds_and_shrink_towards_the_end(max_tokens, chunk, data):
    sent = data.draw(st.integers(0, max_tokens - 1))
    size = chunk_size(sent, max_tokens, chunk)
    assert 1 <= size <= chunk
    assert size <= max_tokens - sent  # never waits for tokens the ticket does not allow
    if sent + 1 < max_tokens:
        assert chunk_size(sent + 1, max_tokens, chunk) <= size
    assert chunk_size(max_tokens - 1, max_tokens, chunk) == 1


def test_the_middle_of_an_answer_goes_in_full_chunks():
    assert chunk_size(0, 128, 8) == 8
    assert chunk_size(96, 128, 8) == 8
    assert chunk_size(120, 128, 8) == 2


def _plan(max_tokens: int) -> Plan:
    return Plan(
        task="t" * 64,
        ticket={"max_tokens": max_tokens},
        task_input={},
        model={},
        generator="g",
        checker="c",
        generator_url="http://generator",
        checker_url="http://checker",
        max_cost=0,
    )


async def _forward(arrivals: list[list[int]], max_tokens: int, pause_s: float) -> list[Any]:
    """Feed `arrivals` (groups of tokens that come together) to Gateway._forward; return the
    bodies the checker received."""
    received: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True})

    gateway = Gateway(None, chunk=8, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    queue: asyncio.Queue[tuple[int, Any] | None] = asyncio.Queue()

    async def opened() -> None:
        return None

    try:
        task = asyncio.create_task(
            gateway._forward(
                gateway._client(), _plan(max_tokens), queue, asyncio.ensure_future(opened())
            )
        )
        for group in arrivals:
            for token in group:
                queue.put_nowait((token, None))
            await asyncio.sleep(pause_s)
        queue.put_nowait(None)
        await asyncio.wait_for(task, 5)
    finally:
        await gateway.aclose()
    return received


def test_every_token_reaches_the_checker_once_in_order():
    tokens = list(range(100))
    arrivals = [tokens[i : i + 3] for i in range(0, 100, 3)]
    bodies = asyncio.run(_forward(arrivals, 128, 0.001))
    assert [t for b in bodies for t in b["tokens"]] == tokens
    offsets = [b["offset"] for b in bodies]
    assert offsets == [sum(len(b["tokens"]) for b in bodies[:i]) for i in range(len(bodies))]
    # Full chunks while the answer is far from max_tokens: no chunk of one token in the middle.
    assert all(len(b["tokens"]) >= 8 for b in bodies[:-1] if b["offset"] < 96)


def test_an_answer_that_ends_early_sends_what_is_left():
    bodies = asyncio.run(_forward([[1, 2, 3]], 128, 0.0))
    assert bodies == [{"offset": 0, "tokens": [1, 2, 3]}]


def test_tokens_that_queue_up_go_together():
    # All 40 tokens are waiting before the first chunk is sent: one chunk carries them all,
    # rather than five round trips.
    bodies = asyncio.run(_forward([list(range(40))], 40, 0.0))
    assert [t for b in bodies for t in b["tokens"]] == list(range(40))
    assert len(bodies) == 1


def test_no_tokens_sends_nothing():
    assert asyncio.run(_forward([], 16, 0.0)) == []
