"""Who a node talks to: a peer's record, a URL's standing (penalty points and bans), and the
link policy that decides which URLs a node talks to at all.

A URL loses points by how bad the data it sent was (`PENALTY`) and heals `HEAL_PER_S` points a
second; at `BAN_SCORE` it is banned for the network's `ban_s`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from dn.errors import InputError

BAN_SCORE = -100
PENALTY = {  # points lost per reason; unknown reasons cost DEFAULT_PENALTY
    "future-block": 20,
    "below-final": 10,
    "bad-block": 50,
    "bad-response": 25,
}
DEFAULT_PENALTY = 35
HEAL_PER_S = 1.0
MAX_INBOUND_PER_HOST = 8  # ports of one host we dial back after its handshakes, per window
INBOUND_WINDOW_S = 60.0
MAX_CANDIDATES = 256


@dataclass
class Peer:
    url: str
    address: str
    roles: tuple[str, ...]
    source: str
    height: int = 0
    tip: str = ""
    total_difficulty: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    last_seen_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def head(self) -> tuple[int, str]:
        return (self.total_difficulty, self.tip)


@dataclass
class Standing:
    """A URL's score; banned until `banned_until` (monotonic seconds) once below BAN_SCORE."""

    score: float = 0.0
    banned_until: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    last_reason: str = ""


class LinkPolicy(Protocol):
    """Which URLs a node talks to and takes gossip from. Nodes talk to every URL; the test harness
    installs a policy that cuts links (through `dn.node.hooks`)."""

    def allows(self, url: str) -> bool: ...


class OpenLinks:
    """Every link is up."""

    def allows(self, url: str) -> bool:
        return True


def normalise_peer(text: str) -> str:
    """`HOST:PORT` or a URL -> `http://host:port`."""
    value = text.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    try:
        parsed = httpx.URL(value)
    except (httpx.InvalidURL, ValueError):
        raise InputError(f"--peer wants HOST:PORT, got {text!r}") from None
    if parsed.scheme != "http" or not parsed.host or parsed.port is None:
        raise InputError(f"--peer wants HOST:PORT, got {text!r}")
    return f"http://{parsed.host}:{parsed.port}"
