"""Handshake openings are rationed per source address (issue 12): a node keeps each counter-
challenge it issues for `PENDING_S`, `MAX_PENDING` of them in all, so one address that opens
handshakes in a loop must not crowd the honest peers of other addresses out of that table
(dn/node/p2p/members.py). The clock is the table's own hook, moved by hand: nothing here is
timed."""

from __future__ import annotations

import httpx
import pytest

from dn.errors import HandshakeError, RateLimited
from dn.node.p2p import handshake, members
from dn.node.p2p.members import Members
from dn.node.p2p.session import HANDSHAKE, Member, MemberTransport
from dn.wallet.keys import Keypair

KEY = handshake.network_key_from_text("our lan")
GENESIS = "ab" * 32
FLOODER, HONEST, NEIGHBOUR = "10.0.0.66", "10.0.0.7", "10.0.0.8"
STEP_S = 0.1  # how far the clock moves between two rounds of the flood
PER_ROUND = 20  # openings the flooder sends per round: far above its ration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def table(clock: Clock) -> tuple[Members, Keypair]:
    node_key = Keypair.generate()
    return Members(node_key, GENESIS, KEY, clock=clock), node_key


def open_from(
    answering: Members, source: str, caller: Keypair | None = None
) -> tuple[str, Keypair, dict[str, object]] | None:
    """One opening from `source`: (its challenge, the caller, the hello), or None if refused."""
    caller = caller or Keypair.generate()
    challenge = handshake.new_challenge()
    opened = handshake.Opening(challenge, caller.address, None)
    try:
        hello = answering.answer(opened, roles=[], port=1, source=source)
    except RateLimited as exc:
        assert (exc.http_status, exc.reason) == (429, "rate-limited")
        return None
    return challenge, caller, hello


def finish(answering: Members, node_key: Keypair, opened: tuple[str, Keypair, dict]) -> str:
    challenge, caller, hello = opened
    body = handshake.finish(
        node_key.address,
        challenge,
        str(hello["counter"]),
        caller,
        genesis_hash=GENESIS,
        network_key=KEY,
    )
    return answering.finish(body)


def test_one_address_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    answering, _ = table(clock)
    tries = members.OPENING_BURST + 50
    taken = [open_from(answering, FLOODER) for _ in range(tries)]
    assert sum(t is not None for t in taken) == members.OPENING_BURST
    assert open_from(answering, FLOODER) is None
    clock.now += 1.0 / members.OPENINGS_PER_S  # one token back
    assert open_from(answering, FLOODER) is not None
    assert open_from(answering, FLOODER) is None
    assert open_from(answering, NEIGHBOUR) is not None  # another address has its own ration


def test_a_flood_of_openings_cannot_crowd_out_an_honest_peer() -> None:
    """The flooder opens handshakes as fast as it can for almost a whole pending life; an honest
    peer from another address opens one at the start and finishes it at the end. Before, every
    opening was answered and remembered, the oldest forgotten past `MAX_PENDING`, so the honest
    counter was pushed out by the 1,024th flood opening and its finish was `wrong-challenge`."""
    clock = Clock()
    answering, node_key = table(clock)
    flood_answered = 0
    for _ in range(members.MAX_PENDING + 1):  # more than the whole table, at once
        flood_answered += open_from(answering, FLOODER) is not None
    honest = open_from(answering, HONEST)
    assert honest is not None

    rounds = int((members.PENDING_S - 1) / STEP_S)  # the honest counter stays fresh
    last_of_flood = None
    for _ in range(rounds):
        clock.now += STEP_S
        for _ in range(PER_ROUND):
            answered = open_from(answering, FLOODER)
            if answered is not None:
                flood_answered += 1
                last_of_flood = answered
    attempts = members.MAX_PENDING + 1 + rounds * PER_ROUND
    most = members.OPENING_BURST + members.OPENINGS_PER_S * rounds * STEP_S + 1
    assert flood_answered <= most < attempts
    # what the flooder holds in the table at once is capped below the table's size
    assert len(answering._pending) <= members.MAX_OPEN_PER_SOURCE + 1 < members.MAX_PENDING

    assert finish(answering, node_key, honest) == honest[1].address
    assert answering.knows(honest[1].address)
    assert last_of_flood is not None  # the flooder's newest handshake is a handshake too
    assert finish(answering, node_key, last_of_flood) == last_of_flood[1].address


def test_a_source_at_its_cap_loses_its_own_oldest_challenge() -> None:
    clock = Clock()
    answering, node_key = table(clock)
    step = 1.0 / members.OPENINGS_PER_S  # a token back for each: only the cap binds here
    assert (members.MAX_OPEN_PER_SOURCE + 1) * step < members.PENDING_S  # and none lapses
    opened = []
    for _ in range(members.MAX_OPEN_PER_SOURCE + 1):
        clock.now += step
        answered = open_from(answering, FLOODER)
        assert answered is not None
        opened.append(answered)
    with pytest.raises(HandshakeError) as caught:
        finish(answering, node_key, opened[0])
    assert caught.value.reason == "wrong-challenge"
    assert finish(answering, node_key, opened[1]) == opened[1][1].address
    assert finish(answering, node_key, opened[-1]) == opened[-1][1].address


def test_openings_without_a_known_source_are_not_rationed() -> None:
    """An opening whose source is unknown (a caller in the same process) is answered as before:
    the table's overall bound still holds."""
    answering, _ = table(Clock())
    caller = Keypair.generate()
    for _ in range(members.OPENING_BURST + 5):
        challenge = handshake.new_challenge()
        answering.answer(handshake.Opening(challenge, caller.address, None), roles=[], port=1)
    assert len(answering._pending) == members.OPENING_BURST + 5


def test_a_rationed_opening_reaches_the_caller_as_429() -> None:
    """The calling side (dn/node/p2p/session.py): a node that rations our opening answers 429;
    the request we meant to send is answered locally with 429 `rate-limited`, not as a refusal
    of who we are (403), so a caller knows to come back later."""
    refusal = RateLimited("too many handshake openings from 10.0.0.66; slow down")

    def node(request: httpx.Request) -> httpx.Response:
        if request.url.path == HANDSHAKE:
            return httpx.Response(429, json=refusal.to_json(), headers={"Retry-After": "1"})
        return httpx.Response(200, json={"reached": True})

    member = Member(Keypair.generate(), GENESIS, KEY)
    transport = MemberTransport(member, httpx.MockTransport(node))
    with httpx.Client(transport=transport) as http:
        reply = http.get("http://10.0.0.1:8765/dn/v1/blocks")
    assert reply.status_code == 429 and reply.json()["reason"] == "rate-limited"
    assert member.sessions == {}
