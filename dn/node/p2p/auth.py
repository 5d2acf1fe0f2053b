"""Signed node-to-node requests: how a receiver knows which node sent a request, so that
penalties land on the node that sent bad data and never on a URL that a stranger typed into a
header (THREATS.md: accountability), and so that a node with a network key answers its
peer-to-peer routes only to members.

The sender signs, with its node key (the key it proved in the handshake), the genesis hash, its
own URL (or nothing, for a caller that serves none), the receiver's node address, the method, the
path with its query, the SHA-256 of the exact body bytes, the time and a random nonce. The
receiver takes the request as coming from that key only when the signature checks out, the
request names the receiver, it is fresh, and its signature has not been seen before (so a
captured request cannot be replayed, to the same node or, since it names its receiver, to any
other). Anything else is unauthenticated: on an open network still read, but it can cost no one
anything; on a keyed network refused.

Pure: no I/O. `dn.node.p2p.members` adds the replay memory and the member table,
`dn.node.p2p.session` signs what a node sends.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import NamedTuple

from dn.encoding import canonical, is_address
from dn.wallet.keys import Keypair
from dn.wallet.keys import verify as verify_signature

REQUEST_DOMAIN = b"dn-request-v1\x00"
FROM_HEADER = "x-dn-from"
NODE_HEADER = "x-dn-node"
TIME_HEADER = "x-dn-time"
NONCE_HEADER = "x-dn-nonce"
SIG_HEADER = "x-dn-sig"
HANDSHAKE_HEADER = "x-dn-handshake"  # on a refusal: "required", handshake (again) and retry
FRESH_MS = 30_000  # how far a request's time may be from the receiver's clock


class Signed(NamedTuple):
    """Who signed a request (and the URL it names as its own, if any), and the signature (the
    receiver remembers it against replays)."""

    url: str | None
    address: str
    sig: str


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def _signed(
    genesis_hash: str,
    from_url: str,
    to_address: str,
    method: str,
    target: str,
    body: bytes,
    time_ms: int,
    nonce: str,
) -> bytes:
    return REQUEST_DOMAIN + canonical(
        {
            "genesis": genesis_hash,
            "from": from_url,
            "to": to_address,
            "method": method.upper(),
            "target": target,
            "body": hashlib.sha256(body).hexdigest(),
            "time": time_ms,
            "nonce": nonce,
        }
    )


def sign_request(
    key: Keypair,
    *,
    genesis_hash: str,
    to_address: str,
    method: str,
    target: str,
    body: bytes,
    time_ms: int,
    from_url: str | None = None,
) -> dict[str, str]:
    """The headers that make a request (`method` on `target`, the path and `?query` as sent, with
    `body`) to node `to_address` a signed one. `from_url` is where the sender serves, if it
    does: a push names it so that the receiver can tell which of its peers sent it."""
    nonce = secrets.token_hex(16)
    url = from_url or ""
    sig = key.sign(_signed(genesis_hash, url, to_address, method, target, body, time_ms, nonce))
    headers = {
        NODE_HEADER: key.address,
        TIME_HEADER: str(time_ms),
        NONCE_HEADER: nonce,
        SIG_HEADER: sig.hex(),
    }
    if from_url:
        headers[FROM_HEADER] = from_url
    return headers


def sign_push(
    key: Keypair,
    *,
    genesis_hash: str,
    from_url: str,
    to_address: str,
    path: str,
    body: bytes,
    time_ms: int,
) -> dict[str, str]:
    """`sign_request` for a gossip push: a POST from the peer at `from_url`."""
    return sign_request(
        key,
        genesis_hash=genesis_hash,
        to_address=to_address,
        method="POST",
        target=path,
        body=body,
        time_ms=time_ms,
        from_url=from_url,
    )


def check_request(
    headers: Mapping[str, str],
    *,
    genesis_hash: str,
    to_address: str,
    method: str,
    target: str,
    body: bytes,
    now_ms: int,
) -> Signed | None:
    """Who signed this request, or None when it is not a valid, fresh request to `to_address`."""
    address, url = headers.get(NODE_HEADER), headers.get(FROM_HEADER)
    time_text, nonce = headers.get(TIME_HEADER, ""), headers.get(NONCE_HEADER, "")
    sig = headers.get(SIG_HEADER, "")
    if address is None or not is_address(address):
        return None
    if not (time_text.isascii() and time_text.isdigit() and len(time_text) <= 16):
        return None
    if not _is_hex(nonce, 32) or not _is_hex(sig, 128):
        return None
    time_ms = int(time_text)
    if abs(now_ms - time_ms) > FRESH_MS:
        return None
    signed = _signed(genesis_hash, url or "", to_address, method, target, body, time_ms, nonce)
    if not verify_signature(address, signed, bytes.fromhex(sig)):
        return None
    return Signed(url.rstrip("/") if url else None, address, sig)
