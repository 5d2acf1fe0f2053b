"""The answering side of the handshake and of signed requests: the counter-challenges this node
issued, the members that finished a handshake with it, and the signatures it has already taken.

- `answer` signs our hello to an opening and remembers the counter-challenge it carries, for
  `PENDING_S`, at most `MAX_PENDING` of them (the oldest forgotten first); `finish` takes a
  counter once, and makes the initiator that proved itself a member.
- Openings are rationed by the address they come from (the TCP peer, not anything the opening
  claims), so that one address opening handshakes in a loop cannot push the counters of honest
  peers at other addresses out of that table, nor make us sign for it without end: a token
  bucket per address (`OPENING_BURST` at once, then `OPENINGS_PER_S`; beyond, RateLimited
  `rate-limited`, 429, before anything is signed), and at most `MAX_OPEN_PER_SOURCE`
  counters open to one address at once (a new one replaces that address's oldest). Filling the
  table therefore takes `MAX_PENDING / MAX_OPEN_PER_SOURCE` addresses. An honest node opens one
  handshake per peer and finishes it within a second, so several nodes behind one address (a
  devnet on one host) stay far inside both bounds. An opening with no known source (a caller in
  the same process) is not rationed.
- A member stays one while it is heard from: every request it signs renews it, and it lapses
  after `MEMBER_S` of silence (`MAX_MEMBERS` at most). A lapsed member is told to handshake again
  (the `x-dn-handshake: required` header on the refusal), which its session does by itself.
- `check` verifies a signed request (`dn.node.p2p.auth`) and remembers its signature, so that a
  request is taken once (`MAX_SEEN` signatures at most: about 13 MB).

Without a network key anyone may finish a handshake and the member table gates nothing; signed
requests still say which peer sent what, for penalties.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dn.errors import RateLimited
from dn.node.p2p import auth, handshake
from dn.node.p2p.handshake import Opening
from dn.wallet.keys import Keypair

PENDING_S = 30.0
MAX_PENDING = 1_024
MEMBER_S = 600.0
MAX_MEMBERS = 4_096
MAX_SEEN = 100_000
OPENING_BURST = 32  # openings one address may send at once ...
OPENINGS_PER_S = 4.0  # ... and then per second
MAX_OPEN_PER_SOURCE = 64  # counters open to one address at once: 1/16 of MAX_PENDING
MAX_SOURCES = 4_096  # addresses whose ration is remembered (the longest idle forgotten first)


class Members:
    """One node's memory of the handshakes it answered and the members it took. `clock` (in
    seconds, default `time.monotonic`) is there for tests that move time by hand."""

    def __init__(
        self,
        key: Keypair,
        genesis_hash: str,
        network_key: bytes | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.genesis_hash = genesis_hash
        self.network_key = network_key
        self.clock = clock
        self._pending: dict[str, tuple[Opening, float]] = {}  # counter -> (opening, when)
        self._source_of: dict[str, str] = {}  # counter -> the address its opening came from
        # address -> the counters open to it, oldest first (a dict as an ordered set)
        self._open_by_source: dict[str, dict[str, None]] = {}
        self._rations: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)
        self._members: dict[str, float] = {}  # address -> last heard (monotonic)
        self._seen: dict[str, int] = {}  # signature -> when (ms)

    # --- the handshake -----------------------------------------------------------------------

    def answer(
        self, opened: Opening, *, roles: list[str], port: int, source: str | None = None
    ) -> dict[str, Any]:
        """Our hello to `opened`, its counter-challenge remembered for `finish`; RateLimited
        when `source`, the address the opening came from, is past its ration."""
        if source is not None and not self._ration(source):
            raise RateLimited(
                f"too many handshake openings from {source}; slow down", reason="rate-limited"
            )
        counter = handshake.new_challenge()
        reply = handshake.answer(
            opened.challenge,
            self.key,
            caller=opened.caller,
            counter=counter,
            genesis_hash=self.genesis_hash,
            roles=roles,
            port=port,
            network_key=self.network_key,
        )
        now = self.clock()
        mine = self._open_by_source.get(source, {}) if source is not None else {}
        if len(mine) >= MAX_OPEN_PER_SOURCE:
            self._forget(next(iter(mine)))  # its own oldest, not someone else's
        for old, (_, when) in list(self._pending.items()):
            if now - when <= PENDING_S and len(self._pending) < MAX_PENDING:
                break  # oldest first: the rest are younger
            self._forget(old)
        self._pending[counter] = (opened, now)
        if source is not None:
            self._source_of[counter] = source
            self._open_by_source.setdefault(source, {})[counter] = None
        return reply

    def _forget(self, counter: str) -> tuple[Opening, float] | None:
        """Drop a counter we issued; what we remembered under it, if anything."""
        found = self._pending.pop(counter, None)
        source = self._source_of.pop(counter, None)
        if source is not None:
            mine = self._open_by_source.get(source, {})
            mine.pop(counter, None)
            if not mine:
                self._open_by_source.pop(source, None)
        return found

    def _ration(self, source: str) -> bool:
        """Whether `source` may open a handshake now (a token bucket, see the docstring)."""
        now = self.clock()
        tokens, then = self._rations.pop(source, (float(OPENING_BURST), now))
        tokens = min(float(OPENING_BURST), tokens + (now - then) * OPENINGS_PER_S)
        allowed = tokens >= 1.0
        self._rations[source] = (tokens - 1.0 if allowed else tokens, now)  # last: newest
        while len(self._rations) > MAX_SOURCES:
            self._rations.pop(next(iter(self._rations)))
        return allowed

    def finish(self, body: Any) -> str:
        """The initiator that finished a handshake we answered, now a member; else
        `HandshakeError`. A counter is taken once, whatever the outcome."""
        counter = body.get("counter") if isinstance(body, dict) else None
        found = self._forget(counter) if isinstance(counter, str) else None
        fresh = found is not None and self.clock() - found[1] <= PENDING_S
        address = handshake.verify_finish(
            body,
            issued=found[0] if found is not None and fresh else None,
            genesis_hash=self.genesis_hash,
            network_key=self.network_key,
            self_address=self.key.address,
        )
        self.admit(address)
        return address

    # --- members -----------------------------------------------------------------------------

    def admit(self, address: str) -> None:
        self._members.pop(address, None)  # re-inserted last: the dict stays oldest first
        self._members[address] = self.clock()
        while len(self._members) > MAX_MEMBERS:
            self._members.pop(next(iter(self._members)))

    def knows(self, address: str) -> bool:
        """Whether `address` is a member now."""
        when = self._members.get(address)
        if when is None:
            return False
        if self.clock() - when > MEMBER_S:
            del self._members[address]
            return False
        return True

    # --- signed requests ---------------------------------------------------------------------

    def check(
        self, headers: Mapping[str, str], method: str, target: str, body: bytes
    ) -> auth.Signed | None:
        """Who signed this request to us, once per signature; None when no one validly did. A
        member that signs is renewed."""
        now = time.time_ns() // 1_000_000
        signed = auth.check_request(
            headers,
            genesis_hash=self.genesis_hash,
            to_address=self.key.address,
            method=method,
            target=target,
            body=body,
            now_ms=now,
        )
        if signed is None or signed.sig in self._seen:
            return None
        if len(self._seen) >= MAX_SEEN:
            horizon = now - 2 * auth.FRESH_MS
            self._seen = {s: t for s, t in self._seen.items() if t > horizon}
            while len(self._seen) >= MAX_SEEN:  # all fresh: forget the oldest
                self._seen.pop(next(iter(self._seen)))
        self._seen[signed.sig] = now
        if self.knows(signed.address):
            self.admit(signed.address)
        return signed
