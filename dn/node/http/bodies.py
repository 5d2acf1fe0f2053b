"""Reading a request's JSON body, for every route that takes one: malformed JSON, JSON nested past
`MAX_DEPTH` (which would otherwise exhaust the parser's recursion and answer 500) and, where an
object is wanted, anything else are each a 4xx with its own reason."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from dn.errors import InputError

MAX_DEPTH = 64  # far above any message of the protocol (a block is about 6 deep)


def decode(raw: bytes, *, batch: bool = False) -> Any:
    """Parse `raw`; InputError `malformed-json` or `too-deep`. For a `batch` (a list whose items
    the route checks one by one, see `depth`), only the list itself is checked here."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InputError(f"JSON nested deeper than {MAX_DEPTH}", reason="too-deep") from None
    except (ValueError, UnicodeDecodeError):
        raise InputError("request body is not valid JSON", reason="malformed-json") from None
    if batch and isinstance(value, list):
        return value
    if depth(value) > MAX_DEPTH:
        raise InputError(f"JSON nested deeper than {MAX_DEPTH}", reason="too-deep")
    return value


async def json_body(request: Request) -> Any:
    return decode(await request.body())


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InputError("request body must be a JSON object", reason="bad-request")
    return body


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level) for child in item)
    return deepest
