"""The signed peer handshake: how two nodes prove to each other who they are, and that both know
the network key, before either takes the other as a peer or a member.

mDNS and `--peer` only say that *something* listens at a host and port. The handshake is mutual,
with a fresh challenge from each side, and takes two requests:

1. **Opening.** The initiator A sends the responder B a fresh random challenge `cA` and its own
   address (and its URL, if it serves).
2. **Hello.** B answers with its address, genesis hash, protocol version, roles and API port, the
   challenge `cA`, the caller it answers (A's address), a fresh challenge of its own `cB` (the
   *counter*), an HMAC proof of the network key (or null) and an Ed25519 signature by its node
   key over all of that. A accepts only a reply that answers *this* challenge (no replays),
   names A as the caller, is signed by a key that is not A's own, speaks A's protocol, proves
   A's network key (or both have none), and is on A's genesis.
3. **Finish.** A sends B both challenges, both addresses and its own network-key proof, signed by
   A's key. B accepts it only for a counter it issued to that caller a moment ago (each counter
   is taken once); from then on A is a **member** to B, and A's later requests, each signed with
   A's key (`dn.node.p2p.auth`), are its.

Each proof is an HMAC-SHA256 under the network key over the role (`responder` or `initiator`),
both addresses and both challenges. Why that much:

- A handshake endpoint answers anyone, so a stranger M could relay our challenge to a real member
  B and hand us B's reply. B's reply names the caller B answered; if M opened it as itself, it
  names M and we refuse it (`wrong-caller`). If M passed on our opening word for word, B's reply
  is a real reply to us and M is a mere proxy: every later request we accept must be signed by
  B's key, and every one we send names B, so M can pass messages on or drop them, but not act.
- M cannot finish a handshake as itself: the initiator proof names M, and only a holder of the
  key can compute it; no member ever computes a proof naming another node as the initiator, and
  the roles keep a responder's proof from passing for an initiator's.

`verify` checks in this order and raises `HandshakeError` with the first reason that applies:
`bad-hello` (not the shape below), `wrong-challenge`, `wrong-caller`, `bad-signature`, `self`,
`wrong-protocol`, `wrong-network-key`, `wrong-genesis`. `verify_finish` checks `bad-finish`,
`wrong-challenge` (a counter not issued to that caller with that challenge, or used already),
`wrong-peer` (a finish for another node), `bad-signature`, `wrong-network-key`. Nothing but the
shape and our own values is looked at before the signature checks out.

Pure: no I/O. The routes are in `dn/node/http/app.py`; the responder's memory of the counters
it issued and of its members is `dn/node/p2p/members.py`, which also rations openings by source
address (so one address cannot crowd other peers' counters out); the initiator's side, which
sends the two requests, is `dn/node/p2p/session.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from dn import PROTOCOL_VERSION
from dn.encoding import canonical, is_address
from dn.errors import HandshakeError, InputError
from dn.wallet.keys import Keypair
from dn.wallet.keys import verify as verify_signature

SIGN_DOMAIN = "dn-handshake-v2"
FINISH_DOMAIN = "dn-handshake-finish-v2"
PROOF_DOMAIN = "dn-handshake-proof-v2"
KEY_DOMAIN = b"dn-network-key-v1\x00"
KEY_BYTES = 32
MAX_ROLES = 16
MAX_URL = 200

FIELDS = frozenset(
    {
        "address",
        "genesis_hash",
        "protocol",
        "roles",
        "port",
        "challenge",
        "caller",
        "counter",
        "proof",
        "sig",
    }
)
FINISH_FIELDS = frozenset({"address", "peer", "challenge", "counter", "proof", "sig"})

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_HEX128 = re.compile(r"[0-9a-f]{128}", re.ASCII)
_ROLE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)


@dataclass(frozen=True)
class PeerHello:
    """What a verified hello tells us about the responder; `counter` is its challenge to us."""

    address: str
    genesis_hash: str
    protocol: int
    roles: tuple[str, ...]
    port: int
    counter: str


@dataclass(frozen=True)
class Opening:
    """A handshake opened with us: the caller's challenge, its address, its URL if it serves."""

    challenge: str
    caller: str
    url: str | None


def new_challenge() -> str:
    """32 fresh random bytes as lowercase hex: one per handshake we start or answer."""
    return secrets.token_hex(32)


def network_key_from_text(text: str) -> bytes:
    """The 32-byte network key behind a `--network-key` passphrase (SHA-256, domain-separated)."""
    if not text or not text.strip():
        raise InputError("--network-key must not be empty", reason="bad-network-key")
    return hashlib.sha256(KEY_DOMAIN + text.encode("utf-8")).digest()


def opening(challenge: str, keypair: Keypair, url: str | None) -> dict[str, Any]:
    """The initiator's first request body."""
    _check_challenge(challenge)
    return {"challenge": challenge, "address": keypair.address, "url": url}


def read_opening(body: Any) -> Opening:
    """An opening's fields, or InputError `bad-request`."""
    if not isinstance(body, dict):
        raise InputError("a handshake opening is a JSON object", reason="bad-request")
    challenge, caller, url = body.get("challenge"), body.get("address"), body.get("url")
    if not _is_hex64(challenge):
        raise InputError("a handshake needs a challenge (64 lowercase hex)", reason="bad-request")
    if not (isinstance(caller, str) and is_address(caller)):
        raise InputError("a handshake names the caller's address", reason="bad-request")
    if not (isinstance(url, str) and len(url) <= MAX_URL):
        url = None
    return Opening(str(challenge), caller, url)


def answer(
    challenge: str,
    keypair: Keypair,
    *,
    caller: str,
    counter: str,
    genesis_hash: str,
    roles: list[str],
    port: int,
    network_key: bytes | None,
) -> dict[str, Any]:
    """Our signed hello to `caller`, answering `challenge` and challenging it with `counter`."""
    _check_challenge(challenge)
    _check_challenge(counter)
    if not is_address(caller):
        raise InputError(f"not an address: {caller!r}")
    if not _is_hex64(genesis_hash):
        raise InputError(f"not a genesis hash: {genesis_hash!r}")
    if not _is_roles(roles):
        raise InputError(f"roles must be short lowercase names, got {roles!r}")
    if not _is_port(port):
        raise InputError(f"not a TCP port: {port!r}")
    _check_key(network_key)
    proof = None
    if network_key is not None:
        proof = _proof(network_key, "responder", caller, keypair.address, challenge, counter)
    body: dict[str, Any] = {
        "address": keypair.address,
        "genesis_hash": genesis_hash,
        "protocol": PROTOCOL_VERSION,
        "roles": list(roles),
        "port": port,
        "challenge": challenge,
        "caller": caller,
        "counter": counter,
        "proof": proof,
    }
    body["sig"] = keypair.sign(_signed_bytes(body)).hex()
    return body


def verify(
    reply: Any,
    *,
    challenge: str,
    genesis_hash: str,
    network_key: bytes | None,
    self_address: str,
) -> PeerHello:
    """The peer behind `reply` if it answers our `challenge` to us properly; else
    `HandshakeError`."""
    _check_challenge(challenge)
    _check_key(network_key)
    _check_shape(reply)
    if not hmac.compare_digest(reply["challenge"], challenge):
        raise HandshakeError("the reply answers another challenge", reason="wrong-challenge")
    if reply["caller"] != self_address:
        raise HandshakeError(
            "the reply answers another node's handshake (relayed)", reason="wrong-caller"
        )
    body = {k: v for k, v in reply.items() if k != "sig"}
    if not verify_signature(reply["address"], _signed_bytes(body), bytes.fromhex(reply["sig"])):
        raise HandshakeError("the handshake signature does not verify", reason="bad-signature")
    # From here on the fields are the signer's own words.
    if reply["address"] == self_address:
        raise HandshakeError("that is this node itself", reason="self")
    if reply["protocol"] != PROTOCOL_VERSION:
        raise HandshakeError(
            f"peer speaks protocol {reply['protocol']}, we speak {PROTOCOL_VERSION}",
            reason="wrong-protocol",
        )
    expected = None
    if network_key is not None:
        expected = _proof(
            network_key, "responder", self_address, reply["address"], challenge, reply["counter"]
        )
    _check_proof(reply["proof"], expected)
    if reply["genesis_hash"] != genesis_hash:
        raise HandshakeError("the peer is on another chain (genesis)", reason="wrong-genesis")
    return PeerHello(
        address=reply["address"],
        genesis_hash=reply["genesis_hash"],
        protocol=reply["protocol"],
        roles=tuple(reply["roles"]),
        port=reply["port"],
        counter=reply["counter"],
    )


def finish(
    peer: str,
    challenge: str,
    counter: str,
    keypair: Keypair,
    *,
    genesis_hash: str,
    network_key: bytes | None,
) -> dict[str, Any]:
    """The initiator's signed finish for the hello of `peer` that answered `challenge` with
    `counter` (JSON-able)."""
    _check_challenge(challenge)
    _check_challenge(counter)
    _check_key(network_key)
    proof = None
    if network_key is not None:
        proof = _proof(network_key, "initiator", keypair.address, peer, challenge, counter)
    body: dict[str, Any] = {
        "address": keypair.address,
        "peer": peer,
        "challenge": challenge,
        "counter": counter,
        "proof": proof,
    }
    body["sig"] = keypair.sign(_finish_bytes(genesis_hash, body)).hex()
    return body


def verify_finish(
    body: Any,
    *,
    issued: Opening | None,
    genesis_hash: str,
    network_key: bytes | None,
    self_address: str,
) -> str:
    """The address of the initiator that finished, with `body`, the handshake it opened with
    `issued` (what we remembered under the counter it names; None: no such counter); else
    `HandshakeError`."""
    _check_key(network_key)
    if not isinstance(body, dict) or set(body) != FINISH_FIELDS or not _finish_shape(body):
        raise HandshakeError("a finish has exactly the finish fields", reason="bad-finish")
    if (
        issued is None
        or not hmac.compare_digest(issued.challenge, body["challenge"])
        or issued.caller != body["address"]
    ):
        raise HandshakeError(
            "no handshake of ours waits on that counter-challenge", reason="wrong-challenge"
        )
    if body["peer"] != self_address:
        raise HandshakeError("the finish is for another node", reason="wrong-peer")
    unsigned = {k: v for k, v in body.items() if k != "sig"}
    if not verify_signature(
        body["address"], _finish_bytes(genesis_hash, unsigned), bytes.fromhex(body["sig"])
    ):
        raise HandshakeError("the finish signature does not verify", reason="bad-signature")
    expected = None
    if network_key is not None:
        initiator, counter = body["address"], body["counter"]
        expected = _proof(
            network_key, "initiator", initiator, self_address, issued.challenge, counter
        )
    _check_proof(body["proof"], expected)
    return str(body["address"])


# --- helpers ---------------------------------------------------------------------------------


def _signed_bytes(body: dict[str, Any]) -> bytes:
    return canonical({"domain": SIGN_DOMAIN, "hello": body})


def _finish_bytes(genesis_hash: str, body: dict[str, Any]) -> bytes:
    return canonical({"domain": FINISH_DOMAIN, "genesis": genesis_hash, "finish": body})


def _proof(
    key: bytes, role: str, initiator: str, responder: str, challenge: str, counter: str
) -> str:
    message = canonical(
        {
            "domain": PROOF_DOMAIN,
            "role": role,
            "initiator": initiator,
            "responder": responder,
            "challenge": challenge,
            "counter": counter,
        }
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _check_proof(proof: str | None, expected: str | None) -> None:
    if expected is None:
        if proof is not None:
            raise HandshakeError(
                "the peer uses a network key and we do not", reason="wrong-network-key"
            )
    elif proof is None or not hmac.compare_digest(proof, expected):
        raise HandshakeError("the peer does not know our network key", reason="wrong-network-key")


def _check_challenge(challenge: str) -> None:
    if not _is_hex64(challenge):
        raise InputError(
            "a handshake challenge is 64 lowercase hex characters", reason="bad-challenge"
        )


def _check_key(network_key: bytes | None) -> None:
    if network_key is not None and (
        not isinstance(network_key, bytes) or len(network_key) != KEY_BYTES
    ):
        raise InputError(f"a network key is {KEY_BYTES} bytes", reason="bad-network-key")


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value: Any) -> bool:
    return _is_int(value) and 1 <= value <= 65535


def _is_addr(value: Any) -> bool:
    return isinstance(value, str) and is_address(value)


def _is_sig(value: Any) -> bool:
    return isinstance(value, str) and _HEX128.fullmatch(value) is not None


def _is_roles(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_ROLES
        and all(isinstance(r, str) and _ROLE.fullmatch(r) for r in value)
    )


def _finish_shape(body: dict[str, Any]) -> bool:
    return (
        _is_addr(body["address"])
        and _is_addr(body["peer"])
        and _is_hex64(body["challenge"])
        and _is_hex64(body["counter"])
        and (body["proof"] is None or _is_hex64(body["proof"]))
        and _is_sig(body["sig"])
    )


def _check_shape(reply: Any) -> None:
    """Exactly the fields `answer` writes, each of the right type and form."""
    if not isinstance(reply, dict) or set(reply) != FIELDS:
        raise HandshakeError("a handshake reply has exactly the hello fields", reason="bad-hello")
    problems = [
        name
        for name, ok in (
            ("address", _is_addr(reply["address"])),
            ("genesis_hash", _is_hex64(reply["genesis_hash"])),
            ("protocol", _is_int(reply["protocol"]) and 0 <= reply["protocol"] < 2**31),
            ("roles", _is_roles(reply["roles"])),
            ("port", _is_port(reply["port"])),
            ("challenge", _is_hex64(reply["challenge"])),
            ("caller", _is_addr(reply["caller"])),
            ("counter", _is_hex64(reply["counter"])),
            ("proof", reply["proof"] is None or _is_hex64(reply["proof"])),
            ("sig", _is_sig(reply["sig"])),
        )
        if not ok
    ]
    if problems:
        raise HandshakeError(f"malformed hello field(s): {', '.join(problems)}", reason="bad-hello")
