"""Who may spend a node's gateway wallet through its HTTP routes: clients on this machine, but
not a web page in the user's browser (which is on this machine too), and clients anywhere that
present an API key. See the safety paragraph of dn/node/http/openai_routes.py."""

from __future__ import annotations

import ipaddress

import httpx
from fastapi import Request

from dn.errors import Forbidden, InputError
from dn.node.market.apikeys import PREFIX as KEY_PREFIX


def is_local(host: str | None) -> bool:
    """Whether a client address is this machine."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _loopback_host(value: str) -> bool:
    """Whether `value` (a Host header, or an Origin's host and port) names this machine."""
    try:
        host = httpx.URL(f"http://{value}").host
    except (httpx.InvalidURL, ValueError):
        return False
    return is_local(host)


def bearer_key(request: Request) -> str | None:
    """The API key in `Authorization: Bearer dn-key-…`, or None; any other bearer value (the
    `openai` client always sends one) is not a key and is ignored."""
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value.startswith(KEY_PREFIX) else None


def refuse_browser_requests(request: Request, *, keyed: bool = False) -> None:
    """What only a web page in the user's browser sends (see the module docstring). A `keyed`
    request is checked for its body only: the `Origin` and `Host` checks guard the ambient
    credential of being on this machine, not a key that only its holder can send."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise InputError("these routes take only an application/json body", reason="not-json")
    if keyed:
        return
    origin = request.headers.get("origin")
    if origin is not None:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not _loopback_host(rest):
            raise Forbidden(
                f"requests from web pages at {origin} may not spend this node's wallet",
                reason="cross-origin",
            )
    if not _loopback_host(request.headers.get("host", "")):
        raise Forbidden(
            "the Host header must name this machine (127.0.0.1, localhost or ::1)",
            reason="bad-host",
        )
