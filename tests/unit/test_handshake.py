"""The signed, mutual peer handshake: a proper hello and finish are accepted, and every way of
getting either wrong (a relayed reply or proof included) is refused with its own reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dn import PROTOCOL_VERSION
from dn.errors import DNError, HandshakeError, InputError
from dn.node.p2p import handshake
from dn.node.p2p.handshake import PeerHello
from dn.wallet.keys import Keypair

ALICE = Keypair.from_seed(bytes(range(32)))  # the node that asks
BOB = Keypair.from_seed(bytes(range(1, 33)))  # the node that answers
MALLORY = Keypair.from_seed(bytes(range(2, 34)))
GENESIS = "ab" * 32
OTHER_GENESIS = "cd" * 32
KEY = handshake.network_key_from_text("correct horse battery staple")


COUNTER = "cc" * 32  # Bob's challenge to Alice


def bob_answers(challenge: str, network_key: bytes | None = None, **over: Any) -> dict[str, Any]:
    keypair = over.pop("keypair", BOB)
    args: dict[str, Any] = {
        "caller": ALICE.address,
        "counter": COUNTER,
        "genesis_hash": GENESIS,
        "roles": ["validator"],
        "port": 8547,
        "network_key": network_key,
    }
    args.update(over)
    return handshake.answer(challenge, keypair, **args)


def alice_checks(
    reply: Any, challenge: str, network_key: bytes | None = None, **over: Any
) -> PeerHello:
    args: dict[str, Any] = {
        "challenge": challenge,
        "genesis_hash": GENESIS,
        "network_key": network_key,
        "self_address": ALICE.address,
    }
    args.update(over)
    return handshake.verify(reply, **args)


def refused(reply: Any, challenge: str, **over: Any) -> str:
    with pytest.raises(HandshakeError) as info:
        alice_checks(reply, challenge, **over)
    assert info.value.http_status == 403
    return info.value.reason


def resign(reply: dict[str, Any], keypair: Keypair = BOB) -> dict[str, Any]:
    """`reply` with its signature made again by `keypair`: a forger's own, valid signature."""
    body = {k: v for k, v in reply.items() if k != "sig"}
    return {**body, "sig": keypair.sign(handshake._signed_bytes(body)).hex()}


# --- the happy path --------------------------------------------------------------------------


def test_round_trip() -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge)
    assert set(reply) == handshake.FIELDS
    assert reply["proof"] is None
    hello = alice_checks(reply, challenge)
    assert hello == PeerHello(BOB.address, GENESIS, PROTOCOL_VERSION, ("validator",), 8547, COUNTER)


def test_round_trip_with_network_key() -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge, KEY)
    assert isinstance(reply["proof"], str) and len(reply["proof"]) == 64
    assert alice_checks(reply, challenge, KEY).address == BOB.address


def test_reply_survives_json() -> None:
    import json

    challenge = handshake.new_challenge()
    reply = json.loads(json.dumps(bob_answers(challenge, KEY, roles=[])))
    assert alice_checks(reply, challenge, KEY).roles == ()


def test_challenges_are_fresh_lowercase_hex() -> None:
    seen = {handshake.new_challenge() for _ in range(100)}
    assert len(seen) == 100
    assert all(len(c) == 64 and c == c.lower() and int(c, 16) >= 0 for c in seen)


# --- each refusal, with its reason -----------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        None,
        [],
        "hello",
        {},
    ],
)
def test_not_a_hello(reply: Any) -> None:
    assert refused(reply, handshake.new_challenge()) == "bad-hello"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "dn1notanaddress"),
        ("address", 7),
        ("genesis_hash", "AB" * 32),
        ("protocol", "1"),
        ("protocol", True),
        ("protocol", 1.0),
        ("roles", "validator"),
        ("roles", ["Validator"]),
        ("roles", ["a,b"]),
        ("port", 0),
        ("port", 65536),
        ("port", "8547"),
        ("challenge", None),
        ("caller", "dn1notanaddress"),
        ("caller", None),
        ("counter", "CC" * 32),
        ("counter", None),
        ("proof", ""),
        ("sig", "00" * 63),
        ("sig", None),
    ],
)
def test_wrong_field_type(field: str, value: Any) -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge)
    reply[field] = value
    assert refused(reply, challenge) == "bad-hello"


def test_missing_or_extra_field() -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge)
    missing = {k: v for k, v in reply.items() if k != "roles"}
    assert refused(missing, challenge) == "bad-hello"
    assert refused({**reply, "url": "http://x:1"}, challenge) == "bad-hello"


def test_replayed_reply_for_another_challenge() -> None:
    old = handshake.new_challenge()
    reply = bob_answers(old)
    assert alice_checks(reply, old).address == BOB.address
    assert refused(reply, handshake.new_challenge()) == "wrong-challenge"


def test_challenge_field_swapped_after_signing() -> None:
    old, new = handshake.new_challenge(), handshake.new_challenge()
    reply = bob_answers(old)
    reply["challenge"] = new
    assert refused(reply, new) == "bad-signature"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("roles", ["validator", "miner"]),
        ("port", 8548),
        ("genesis_hash", OTHER_GENESIS),
        ("address", MALLORY.address),
        ("protocol", PROTOCOL_VERSION + 1),
        ("counter", "dd" * 32),
    ],
)
def test_tampered_after_signing(field: str, value: Any) -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge)
    reply[field] = value
    assert refused(reply, challenge) == "bad-signature"


def test_signature_by_another_key() -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge)
    reply["sig"] = resign(reply, MALLORY)["sig"]
    assert refused(reply, challenge) == "bad-signature"


def test_self() -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge, keypair=ALICE)
    assert refused(reply, challenge) == "self"


def test_wrong_protocol() -> None:
    challenge = handshake.new_challenge()
    reply = resign({**bob_answers(challenge), "protocol": PROTOCOL_VERSION + 1})
    assert refused(reply, challenge) == "wrong-protocol"


def test_wrong_genesis() -> None:
    challenge = handshake.new_challenge()
    reply = bob_answers(challenge, genesis_hash=OTHER_GENESIS)
    assert refused(reply, challenge) == "wrong-genesis"


def test_network_key_we_have_they_lack() -> None:
    challenge = handshake.new_challenge()
    assert refused(bob_answers(challenge), challenge, network_key=KEY) == "wrong-network-key"


def test_network_key_they_have_we_lack() -> None:
    challenge = handshake.new_challenge()
    assert refused(bob_answers(challenge, KEY), challenge) == "wrong-network-key"


def test_network_keys_differ() -> None:
    challenge = handshake.new_challenge()
    theirs = handshake.network_key_from_text("another passphrase")
    assert refused(bob_answers(challenge, theirs), challenge, network_key=KEY) == (
        "wrong-network-key"
    )


def test_lifted_proof_is_useless() -> None:
    """Mallory lacks the key: she relays our challenge to Bob and pastes Bob's proof into a
    reply she signs herself. The proof is bound to Bob's address, so it fails for hers."""
    challenge = handshake.new_challenge()
    bobs = bob_answers(challenge, KEY)
    mallorys = bob_answers(challenge, keypair=MALLORY)
    forged = resign({**mallorys, "proof": bobs["proof"]}, MALLORY)
    assert refused(forged, challenge, network_key=KEY) == "wrong-network-key"


def test_a_reply_to_another_caller_is_refused() -> None:
    """The relay attack: Mallory, dialled by Alice, opens a handshake of her own with Bob,
    passing Alice's challenge on, and hands Alice Bob's reply. Bob answered Mallory, and says so:
    the reply is worthless to Alice, however good Bob's signature and proof."""
    challenge = handshake.new_challenge()
    for key in (None, KEY):
        relayed = bob_answers(challenge, key, caller=MALLORY.address)
        assert refused(relayed, challenge, network_key=key) == "wrong-caller"
        retargeted = {**relayed, "caller": ALICE.address}  # and she cannot rewrite it
        assert refused(retargeted, challenge, network_key=key) == "bad-signature"


def test_a_responder_proof_is_bound_to_both_challenges() -> None:
    challenge = handshake.new_challenge()
    other = bob_answers(challenge, KEY, counter="dd" * 32)
    forged = resign({**bob_answers(challenge, KEY), "proof": other["proof"]})
    assert refused(forged, challenge, network_key=KEY) == "wrong-network-key"


# --- the finish: the initiator proves itself -------------------------------------------------


def alice_finishes(challenge: str, network_key: bytes | None = KEY, **over: Any) -> dict[str, Any]:
    keypair = over.pop("keypair", ALICE)
    args: dict[str, Any] = {"genesis_hash": GENESIS, "network_key": network_key}
    args.update(over)
    return handshake.finish(BOB.address, challenge, COUNTER, keypair, **args)


def bob_checks_finish(
    body: Any, challenge: str, network_key: bytes | None = KEY, **over: Any
) -> str:
    args: dict[str, Any] = {
        "issued": handshake.Opening(challenge, ALICE.address, None),
        "genesis_hash": GENESIS,
        "network_key": network_key,
        "self_address": BOB.address,
    }
    args.update(over)
    return handshake.verify_finish(body, **args)


def finish_refused(body: Any, challenge: str, **over: Any) -> str:
    with pytest.raises(HandshakeError) as info:
        bob_checks_finish(body, challenge, **over)
    assert info.value.http_status == 403
    return info.value.reason


def test_finish_round_trip() -> None:
    challenge = handshake.new_challenge()
    assert bob_checks_finish(alice_finishes(challenge), challenge) == ALICE.address
    assert bob_checks_finish(alice_finishes(challenge, None), challenge, None) == ALICE.address
    assert set(alice_finishes(challenge)) == handshake.FINISH_FIELDS


def test_finish_refusals() -> None:
    challenge = handshake.new_challenge()
    good = alice_finishes(challenge)
    assert finish_refused({**good, "extra": 1}, challenge) == "bad-finish"
    assert finish_refused({**good, "sig": "00"}, challenge) == "bad-finish"
    assert finish_refused(good, challenge, issued=None) == "wrong-challenge"  # no such counter
    other = handshake.new_challenge()  # a counter issued for another opening
    assert finish_refused(good, other) == "wrong-challenge"
    mallory_opened = handshake.Opening(challenge, MALLORY.address, None)
    assert finish_refused(good, challenge, issued=mallory_opened) == "wrong-challenge"
    assert finish_refused(good, challenge, self_address=MALLORY.address) == "wrong-peer"
    tampered = {**good, "proof": "00" * 32}
    assert finish_refused(tampered, challenge) == "bad-signature"
    assert finish_refused(alice_finishes(challenge, None), challenge) == "wrong-network-key"
    other_key = handshake.network_key_from_text("another passphrase")
    assert finish_refused(alice_finishes(challenge, other_key), challenge) == "wrong-network-key"
    assert finish_refused(good, challenge, network_key=None) == "wrong-network-key"
    assert finish_refused(alice_finishes(challenge, genesis_hash=OTHER_GENESIS), challenge) == (
        "bad-signature"
    )


def test_no_proof_a_member_makes_lets_mallory_finish_as_herself() -> None:
    """Mallory opened a handshake with Bob and must now prove the key for her own address. No
    proof a member computes will do: Bob's hello proof is a responder's, Alice's finish names
    Alice as the initiator."""
    challenge = handshake.new_challenge()
    opened = handshake.Opening(challenge, MALLORY.address, None)
    lifted = [
        bob_answers(challenge, KEY, caller=MALLORY.address)["proof"],  # Bob's, to her
        alice_finishes(challenge)["proof"],  # Alice's, for the same challenges
    ]
    for proof in lifted:
        body = alice_finishes(challenge, None, keypair=MALLORY)
        body = {k: v for k, v in body.items() if k != "sig"} | {"proof": proof}
        body["sig"] = MALLORY.sign(handshake._finish_bytes(GENESIS, body)).hex()
        assert finish_refused(body, challenge, issued=opened) == "wrong-network-key"


def test_opening_is_read_strictly() -> None:
    challenge = handshake.new_challenge()
    body = handshake.opening(challenge, ALICE, "http://127.0.0.1:1")
    assert handshake.read_opening(body) == handshake.Opening(
        challenge, ALICE.address, "http://127.0.0.1:1"
    )
    assert handshake.read_opening({**body, "url": 7}).url is None
    for broken in (None, [], {**body, "address": "dn1x"}, {"challenge": challenge}, {}):
        with pytest.raises(InputError):
            handshake.read_opening(broken)


def test_errors_are_dn_errors() -> None:
    with pytest.raises(DNError) as info:
        alice_checks({}, handshake.new_challenge())
    assert info.value.to_json()["reason"] == "bad-hello"
    assert HandshakeError("x").reason == "handshake"


# --- inputs on our own side ------------------------------------------------------------------


@pytest.mark.parametrize("challenge", ["", "ab" * 31, "AB" * 32, "zz" * 32, "ab" * 33])
def test_answer_refuses_a_malformed_challenge(challenge: str) -> None:
    with pytest.raises(InputError):
        bob_answers(challenge)


def test_network_key_from_text() -> None:
    key = handshake.network_key_from_text("lan party")
    assert len(key) == 32
    assert key == handshake.network_key_from_text("lan party")
    assert key != handshake.network_key_from_text("lan party ")
    for empty in ("", "   "):
        with pytest.raises(InputError):
            handshake.network_key_from_text(empty)


def test_network_key_must_be_32_bytes() -> None:
    challenge = handshake.new_challenge()
    with pytest.raises(InputError):
        bob_answers(challenge, b"short")
    with pytest.raises(InputError):
        alice_checks(bob_answers(challenge), challenge, network_key=b"short")


# --- property: any single-field change is refused --------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=80),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128),
    st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), max_size=3),
    st.sampled_from([ALICE.address, MALLORY.address, GENESIS, OTHER_GENESIS, PROTOCOL_VERSION]),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

CHALLENGE = handshake.new_challenge()
VALID = bob_answers(CHALLENGE, KEY)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type (so True does not pass for 1)."""
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(sorted(handshake.FIELDS)),
    change=st.one_of(st.just("drop"), st.tuples(st.just("set"), VALUES)),
)
def test_any_single_field_change_is_refused(field: str, change: Any) -> None:
    reply = copy.deepcopy(VALID)
    if change == "drop":
        del reply[field]
    else:
        value = change[1]
        assume(not same(reply[field], value))
        reply[field] = value
    with pytest.raises(HandshakeError):
        alice_checks(reply, CHALLENGE, KEY)


@settings(max_examples=100, deadline=None)
@given(name=st.text(min_size=1, max_size=12), value=VALUES)
def test_any_extra_field_is_refused(name: str, value: Any) -> None:
    assume(name not in handshake.FIELDS)
    with pytest.raises(HandshakeError) as info:
        alice_checks({**VALID, name: value}, CHALLENGE, KEY)
    assert info.value.reason == "bad-hello"


def test_the_property_baseline_is_valid() -> None:
    assert alice_checks(copy.deepcopy(VALID), CHALLENGE, KEY).address == BOB.address
