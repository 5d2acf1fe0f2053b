"""The OpenAI routes check a request's fields as OpenAI's API does (issue 14, item 3): a wrong
type or value is a 400 in OpenAI's error shape naming the field, `n` > 1 is refused, and fields we
do not know are ignored. The node of tests/unit/test_openai_guard.py (no miner): a request that
passes the checks ends in 503 `no-miner`, and a refused one spends nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_openai_guard import CHAT, ROUTES, TEXT, Rig

JSON = {"content-type": "application/json"}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.http.close()
    made.node.close()


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def _body(route: str) -> dict[str, Any]:
    return CHAT if "chat" in route else TEXT


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("n", "1"),
        ("max_tokens", "ten"),
        ("temperature", "hot"),
        ("temperature", 3),
        ("top_p", [1]),
        ("seed", 1.5),
        ("stop", 7),
        ("stream", "yes"),
        ("stream_options", "usage"),
        ("presence_penalty", True),
    ],
)
def test_a_wrong_field_is_400_in_openais_shape_naming_it(
    rig: Rig, route: str, field: str, value: Any
) -> None:
    before = rig.spent()
    response = rig.post(route, {**_body(route), field: value}, **JSON)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        field,
        "bad-request",
    )
    assert rig.spent() == before


def test_messages_not_a_list_is_400_naming_messages(rig: Rig) -> None:
    body = {**CHAT, "messages": "hi"}
    error = rig.post("/v1/chat/completions", body, **JSON).json()["error"]
    assert (error["param"], error["type"]) == ("messages", "invalid_request_error")


@pytest.mark.parametrize("route", ROUTES)
def test_unknown_fields_and_nulls_are_ignored(rig: Rig, route: str) -> None:
    body = {
        **_body(route),
        "user": "u1",
        "logit_bias": {"50256": -100},
        "some_future_field": {"x": [1, 2]},
        "temperature": None,
        "n": None,
        "stop": ["\n"],
        "seed": 3,
        "stream_options": None,
    }
    assert _error(rig.post(route, body, **JSON)) == (503, "no-miner")
