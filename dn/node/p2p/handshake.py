"""The signed peer handshake: how a node proves who it is before another node peers with it.

mDNS and `--peer` only say that *something* listens at a host and port. Before node A adds B as
a peer it sends B a fresh random challenge; B answers with its address, genesis hash, protocol
version, roles and API port, the challenge, and an Ed25519 signature by its node key over all of
that. A accepts only a reply that signs *this* challenge (no replays), comes from a key that is not
A's own, speaks A's protocol, is on A's genesis, and - when A runs with `--network-key` - proves
knowledge of the same key.

The network-key proof is an HMAC-SHA256 over the challenge *and the answering address*, not over
the challenge alone: a handshake endpoint answers anyone, so a stranger could relay our challenge
to a real member and paste that member's proof into a reply signed with the stranger's own key.
Binding the proof to the address makes a lifted proof worthless.

`verify` checks in this order and raises `HandshakeError` with the first reason that applies:
`bad-hello` (not the shape below), `wrong-challenge`, `bad-signature`, `self`, `wrong-protocol`,
`wrong-network-key`, `wrong-genesis`. Nothing but the shape and the challenge is looked at before
the signature checks out.

Pure: no I/O. The HTTP route and the retry policy live in `dn/node/http/app.py` and
`dn/node/p2p/network.py`.
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

SIGN_DOMAIN = "dn-handshake-v1"
PROOF_DOMAIN = "dn-handshake-proof-v1"
KEY_DOMAIN = b"dn-network-key-v1\x00"
KEY_BYTES = 32
MAX_ROLES = 16

FIELDS = frozenset(
    {"address", "genesis_hash", "protocol", "roles", "port", "challenge", "proof", "sig"}
)

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_HEX128 = re.compile(r"[0-9a-f]{128}", re.ASCII)
_ROLE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)


@dataclass(frozen=True)
class PeerHello:
    """What a verified handshake tells us about the peer."""

    address: str
    genesis_hash: str
    protocol: int
    roles: tuple[str, ...]
    port: int


def new_challenge() -> str:
    """32 fresh random bytes as lowercase hex: one per handshake we start."""
    return secrets.token_hex(32)


def network_key_from_text(text: str) -> bytes:
    """The 32-byte network key behind a `--network-key` passphrase (SHA-256, domain-separated)."""
    if not text or not text.strip():
        raise InputError("--network-key must not be empty", reason="bad-network-key")
    return hashlib.sha256(KEY_DOMAIN + text.encode("utf-8")).digest()


def answer(
    challenge: str,
    keypair: Keypair,
    *,
    genesis_hash: str,
    roles: list[str],
    port: int,
    network_key: bytes | None,
) -> dict[str, Any]:
    """Our signed reply to `challenge` (JSON-able)."""
    _check_challenge(challenge)
    if not _is_hex64(genesis_hash):
        raise InputError(f"not a genesis hash: {genesis_hash!r}")
    if not _is_roles(roles):
        raise InputError(f"roles must be short lowercase names, got {roles!r}")
    if not _is_port(port):
        raise InputError(f"not a TCP port: {port!r}")
    _check_key(network_key)
    body: dict[str, Any] = {
        "address": keypair.address,
        "genesis_hash": genesis_hash,
        "protocol": PROTOCOL_VERSION,
        "roles": list(roles),
        "port": port,
        "challenge": challenge,
        "proof": None if network_key is None else _proof(network_key, challenge, keypair.address),
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
    """The peer behind `reply` if it answers our `challenge` properly; else `HandshakeError`."""
    _check_challenge(challenge)
    _check_key(network_key)
    _check_shape(reply)
    if not hmac.compare_digest(reply["challenge"], challenge):
        raise HandshakeError("the reply answers another challenge", reason="wrong-challenge")
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
    proof = reply["proof"]
    if network_key is None:
        if proof is not None:
            raise HandshakeError(
                "the peer uses a network key and we do not", reason="wrong-network-key"
            )
    elif proof is None or not hmac.compare_digest(
        proof, _proof(network_key, challenge, reply["address"])
    ):
        raise HandshakeError("the peer does not know our network key", reason="wrong-network-key")
    if reply["genesis_hash"] != genesis_hash:
        raise HandshakeError("the peer is on another chain (genesis)", reason="wrong-genesis")
    return PeerHello(
        address=reply["address"],
        genesis_hash=reply["genesis_hash"],
        protocol=reply["protocol"],
        roles=tuple(reply["roles"]),
        port=reply["port"],
    )


# --- helpers ---------------------------------------------------------------------------------


def _signed_bytes(body: dict[str, Any]) -> bytes:
    return canonical({"domain": SIGN_DOMAIN, "hello": body})


def _proof(key: bytes, challenge: str, address: str) -> str:
    message = canonical({"domain": PROOF_DOMAIN, "challenge": challenge, "address": address})
    return hmac.new(key, message, hashlib.sha256).hexdigest()


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


def _is_roles(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_ROLES
        and all(isinstance(r, str) and _ROLE.fullmatch(r) for r in value)
    )


def _check_shape(reply: Any) -> None:
    """Exactly the fields `answer` writes, each of the right type and form."""
    if not isinstance(reply, dict) or set(reply) != FIELDS:
        raise HandshakeError("a handshake reply has exactly the hello fields", reason="bad-hello")
    problems = [
        name
        for name, ok in (
            ("address", isinstance(reply["address"], str) and is_address(reply["address"])),
            ("genesis_hash", _is_hex64(reply["genesis_hash"])),
            ("protocol", _is_int(reply["protocol"]) and 0 <= reply["protocol"] < 2**31),
            ("roles", _is_roles(reply["roles"])),
            ("port", _is_port(reply["port"])),
            ("challenge", _is_hex64(reply["challenge"])),
            ("proof", reply["proof"] is None or _is_hex64(reply["proof"])),
            ("sig", isinstance(reply["sig"], str) and _HEX128.fullmatch(reply["sig"])),
        )
        if not ok
    ]
    if problems:
        raise HandshakeError(f"malformed hello field(s): {', '.join(problems)}", reason="bad-hello")
