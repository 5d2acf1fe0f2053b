"""Who may spend a node's gateway wallet through its HTTP routes: clients on this machine only,
and not a web page in the user's browser (which is on this machine too). See the safety
paragraph of dn/node/http/openai_routes.py."""

from __future__ import annotations

import ipaddress

import httpx
from fastapi import Request

from dn.errors import Forbidden, InputError


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


def refuse_browser_requests(request: Request) -> None:
    """What only a web page in the user's browser sends (see the module docstring)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise InputError("these routes take only an application/json body", reason="not-json")
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
