"""API keys that let LAN clients spend a node's gateway wallet, each up to its own budget.

A key is `dn-key-<id>.<secret>`: `id` (8 hex digits) is public and names the key in
`dn apikey list`/`revoke`; `secret` is 32 random bytes in hex. Only SHA-256 of the secret is
stored, and a presented secret is compared with it in constant time; the secret is shown once,
when the key is made, and never logged.

Keys live in `apikeys.sqlite` in the node's folder (mode 0600, WAL), which the running node and
the `dn apikey` commands both open: a key made or revoked by the CLI counts at the node's next
request, without a restart.

Budget accounting, in units, all in SQLite so it survives a restart:

    reserve(max_cost)   before a query is signed: `spent += max_cost` only where
                        `spent + max_cost <= budget` (one UPDATE, so concurrent queries, even
                        from two processes, cannot overshoot); else QuotaExhausted
    settle(max, paid)   when the query ends: `spent -= max - paid`, keeping what was really paid
                        (0 for a query that failed before settling)

A node killed mid-query keeps the whole reservation counted as spent: the budget errs on the side
of the wallet.

    check(key)          the key's row, or KeyRefused (unknown, malformed, revoked, expired)

Guessing is rationed by the client's address (`check(key, source=ADDRESS)`): after
`MAX_FAILED_CHECKS` refused keys from one address within `FAILED_CHECKS_WINDOW_S` seconds, every
key that address presents, the right one too, is refused with RateLimited `rate_limited` (429)
before anything is looked up, until the oldest of those failures is a window old. A secret of 256
bits cannot be guessed anyway; the ration keeps a guesser from turning the look-ups into load,
and a client whose key was revoked from retrying without end. Other addresses are not touched:
their keys go on working. The count is kept in memory, per process (`MAX_SOURCES` addresses at
most, the least recently refused forgotten first); a check with no `source` is not counted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dn.errors import InputError, KeyRefused, NotFound, QuotaExhausted, RateLimited

PREFIX = "dn-key-"
FILE_NAME = "apikeys.sqlite"
MAX_FAILED_CHECKS = 10  # refused keys one address may present within ...
FAILED_CHECKS_WINDOW_S = 60.0  # ... this many seconds, before it is cut off (see the docstring)
MAX_SOURCES = 4_096  # addresses whose failures are remembered
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    wallet TEXT NOT NULL,
    budget INTEGER NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class ApiKey:
    """One key's public record (never its secret)."""

    id: str
    wallet: str
    budget: int
    spent: int
    expires_ms: int | None
    revoked: bool
    created_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "wallet": self.wallet,
            "budget": self.budget,
            "spent": self.spent,
            "expires_ms": self.expires_ms,
            "revoked": self.revoked,
            "created_ms": self.created_ms,
        }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyStore:
    """The API keys of one node folder (see the module docstring). `clock` (seconds, default
    `time.monotonic`) times the ration of failed checks; tests move it by hand."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}  # address -> its latest refusals (times)
        self._failures_lock = threading.Lock()
        fresh = not path.exists()
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # autocommit: each statement is its own transaction, each UPDATE atomic
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(_SCHEMA)

    @classmethod
    def in_folder(cls, folder: Path) -> KeyStore:
        return cls(folder / FILE_NAME)

    def close(self) -> None:
        self.db.close()

    def create(self, wallet: str, budget: int, expires_ms: int | None = None) -> tuple[str, ApiKey]:
        """A new key for `wallet` (an address): the key to hand out, once, and its record."""
        if budget <= 0:
            raise InputError("a key's budget must be more than 0", reason="bad-amount")
        secret = secrets.token_hex(32)
        while True:
            key_id = secrets.token_hex(4)
            try:
                self.db.execute(
                    "INSERT INTO keys (id, secret_sha256, wallet, budget, expires_ms, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key_id, _digest(secret), wallet, budget, expires_ms, _now_ms()),
                )
            except sqlite3.IntegrityError:
                continue  # an id taken already: draw another
            return f"{PREFIX}{key_id}.{secret}", self.get(key_id)

    def get(self, key_id: str) -> ApiKey:
        row = self.db.execute(
            "SELECT id, wallet, budget, spent, expires_ms, revoked, created_ms FROM keys "
            "WHERE id = ?",
            (key_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no API key {key_id}")
        return _record(row)

    def all(self) -> list[ApiKey]:
        rows = self.db.execute(
            "SELECT id, wallet, budget, spent, expires_ms, revoked, created_ms FROM keys "
            "ORDER BY created_ms, id"
        ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        if self.db.execute("UPDATE keys SET revoked = 1 WHERE id = ?", (key_id,)).rowcount == 0:
            raise NotFound(f"no API key {key_id}")
        return self.get(key_id)

    def check(self, key: str, now_ms: int | None = None, *, source: str | None = None) -> ApiKey:
        """The record of a presented key, or KeyRefused; RateLimited, without a look-up, for a
        `source` (the client's address) that presented too many refused keys lately."""
        if source is None:
            return self._check(key, now_ms)
        self._ration(source)
        try:
            return self._check(key, now_ms)
        except KeyRefused:
            self._failed(source)
            raise

    def _ration(self, source: str) -> None:
        with self._failures_lock:
            recent = self._failures.get(source)
            if recent is None:
                return
            now = self.clock()
            while recent and now - recent[0] >= FAILED_CHECKS_WINDOW_S:
                recent.popleft()
            if not recent:
                del self._failures[source]
            elif len(recent) >= MAX_FAILED_CHECKS:
                wait = FAILED_CHECKS_WINDOW_S - (now - recent[0])
                limited = RateLimited(
                    f"too many invalid API keys from this address; try again in {wait:.0f} s",
                    reason="rate_limited",
                )
                limited.retry_after = max(1, int(wait + 0.999))
                raise limited

    def _failed(self, source: str) -> None:
        with self._failures_lock:
            recent = self._failures.pop(source, None) or deque(maxlen=MAX_FAILED_CHECKS)
            recent.append(self.clock())
            self._failures[source] = recent  # re-inserted last: the least recent go first
            while len(self._failures) > MAX_SOURCES:
                self._failures.pop(next(iter(self._failures)))

    def _check(self, key: str, now_ms: int | None) -> ApiKey:
        refused = KeyRefused("the API key is not valid on this node (unknown, revoked or expired)")
        if not key.startswith(PREFIX):
            raise refused
        key_id, dot, secret = key[len(PREFIX) :].partition(".")
        if not dot:
            raise refused
        row = self.db.execute(
            "SELECT secret_sha256, revoked, expires_ms FROM keys WHERE id = ?", (key_id,)
        ).fetchone()
        # A digest is compared even for an unknown id, so timing says nothing of the secret.
        stored = row[0] if row is not None else b"\0" * 32
        matches = hmac.compare_digest(_digest(secret), stored)
        if row is None or not matches or row[1]:
            raise refused
        expires = row[2]
        if expires is not None and (now_ms if now_ms is not None else _now_ms()) >= expires:
            raise refused
        return self.get(key_id)

    def reserve(self, key_id: str, amount: int) -> None:
        """Count `amount` units as spent now, if the budget has room (see the docstring)."""
        done = self.db.execute(
            "UPDATE keys SET spent = spent + ? WHERE id = ? AND spent + ? <= budget",
            (amount, key_id, amount),
        ).rowcount
        if done == 0:
            key = self.get(key_id)
            raise QuotaExhausted(
                f"API key {key_id} has {key.budget - key.spent} of its {key.budget} units left; "
                f"this query may cost {amount}",
            )

    def settle(self, key_id: str, reserved: int, paid: int) -> None:
        """Give back what a reservation did not spend."""
        back = max(0, reserved - max(0, paid))
        if back:
            self.db.execute("UPDATE keys SET spent = spent - ? WHERE id = ?", (back, key_id))


_UNITS_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now_ms: int | None = None) -> int:
    """When a key made now stops working, in Unix ms: a duration (`90m`, `12h`, `30d`, `2w`)
    from now, or a UTC date or time (`2027-01-31`, `2027-01-31T12:00`)."""
    now = _now_ms() if now_ms is None else now_ms
    raw = text.strip()
    unit = _UNITS_S.get(raw[-1:].lower())
    if unit is not None and raw[:-1].isdigit() and int(raw[:-1]) > 0:
        return now + int(raw[:-1]) * unit * 1000
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(
            f"--expires {text!r} is neither a duration (90m, 12h, 30d, 2w) nor a date (2027-01-31)",
            reason="bad-expiry",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    at = int(when.timestamp() * 1000)
    if at <= now:
        raise InputError(f"--expires {text!r} is in the past", reason="bad-expiry")
    return at


def _record(row: Any) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])
