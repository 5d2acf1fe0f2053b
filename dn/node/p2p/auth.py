"""Signed node-to-node pushes: how a receiver knows which peer a gossiped block or transaction
batch came from, so that penalties land on the node that sent bad data and never on a URL that a
stranger typed into a header (THREATS.md: accountability).

The sender signs, with its node key (the key it proved in the handshake), the genesis hash, its
own URL, the receiver's node address, the route, the SHA-256 of the exact body bytes and the time.
The receiver takes the push as coming from a peer only when the signature checks out, the key is
the one that peer proved in its handshake, the push names the receiver, it is fresh, and its
signature has not been seen before (so a captured push cannot be replayed to run up its sender's
penalties). Anything else is unauthenticated: still read, but it can cost no one anything.

Pure: no I/O. `Network.authenticate` (dn/node/p2p/network.py) adds the peer table and the replay
memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import NamedTuple

from dn.encoding import canonical, is_address
from dn.wallet.keys import Keypair
from dn.wallet.keys import verify as verify_signature

PUSH_DOMAIN = b"dn-push-v1\x00"
FROM_HEADER = "x-dn-from"
NODE_HEADER = "x-dn-node"
TIME_HEADER = "x-dn-time"
SIG_HEADER = "x-dn-sig"
FRESH_MS = 30_000  # how far a push's time may be from the receiver's clock


class Push(NamedTuple):
    """Who signed a push, and the signature (the receiver remembers it against replays)."""

    url: str
    address: str
    sig: str


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _signed(
    genesis_hash: str, from_url: str, to_address: str, path: str, body: bytes, time_ms: int
) -> bytes:
    return PUSH_DOMAIN + canonical(
        {
            "genesis": genesis_hash,
            "from": from_url,
            "to": to_address,
            "path": path,
            "body": hashlib.sha256(body).hexdigest(),
            "time": time_ms,
        }
    )


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
    """The headers that make `body`, pushed to `path` of node `to_address`, a signed push."""
    sig = key.sign(_signed(genesis_hash, from_url, to_address, path, body, time_ms))
    return {
        FROM_HEADER: from_url,
        NODE_HEADER: key.address,
        TIME_HEADER: str(time_ms),
        SIG_HEADER: sig.hex(),
    }


def check_push(
    headers: Mapping[str, str],
    *,
    genesis_hash: str,
    to_address: str,
    path: str,
    body: bytes,
    now_ms: int,
) -> Push | None:
    """Who signed this push, or None when it is not a valid, fresh push to `to_address`."""
    url, address = headers.get(FROM_HEADER), headers.get(NODE_HEADER)
    time_text, sig = headers.get(TIME_HEADER, ""), headers.get(SIG_HEADER, "")
    if url is None or address is None or not is_address(address):
        return None
    if not (time_text.isascii() and time_text.isdigit() and len(time_text) <= 16):
        return None
    if len(sig) != 128 or not _is_hex(sig):
        return None
    time_ms = int(time_text)
    if abs(now_ms - time_ms) > FRESH_MS:
        return None
    signed = _signed(genesis_hash, url, to_address, path, body, time_ms)
    if not verify_signature(address, signed, bytes.fromhex(sig)):
        return None
    return Push(url.rstrip("/"), address, sig)
