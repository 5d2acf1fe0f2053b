"""Writing to the chain from a wallet: sign a transaction with the sender's next nonce, submit
it, and wait until a block holds it. Every writer shares this: `dn wallet send`, `dn model
submit`, `dn stake …`, `dn validator unbond`, and the settlement of a paid query.

    sent = send(client, keypair, "transfer", {"to": address, "amount": units})
    # {"id", "status": "included", "height", "fee", "nonce"}

The fee defaults to the chain's `min_fee`, read from the node's genesis (the file's value, or
the default where the file leaves it out), never restated here.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from dn.chain.types import Tx
from dn.encoding import parse_dn
from dn.errors import InvalidTx

if TYPE_CHECKING:
    from dn.client.http import NodeClient
    from dn.wallet.keys import Keypair

NONCE_TRIES = 50  # each round of colliding writers lets at least one through
Fee = int | str | None  # units, DN as text (as `--fee` takes it), or None: the chain's min_fee


def fee_units(client: NodeClient, fee: Fee) -> int:
    """`fee` in units: an int as it is, DN text parsed, None the chain's `min_fee`."""
    if fee is None or fee == "":
        return client.param("min_fee")
    if isinstance(fee, str):
        return parse_dn(fee, allow_zero=True, what="fee")
    return fee


def sign_next(
    client: NodeClient,
    keypair: Keypair,
    kind: str,
    payload: dict[str, Any],
    *,
    fee: Fee = None,
) -> Tx:
    """A `kind` transaction for the node's chain, signed by `keypair` with its next nonce."""
    chain_id = client.status()["chain_id"]
    units = fee_units(client, fee)
    nonce = client.account(keypair.address)["next_nonce"]
    return Tx.create(keypair, chain_id=chain_id, kind=kind, nonce=nonce, fee=units, payload=payload)


def submit(client: NodeClient, tx: Tx, *, wait: bool = True) -> dict[str, Any]:
    """Submit `tx`; with `wait`, poll until it is in a block. Returns `{"id", "status"}`, plus
    `"height"` once included (status "pending" without `wait`)."""
    client.submit(tx.to_json())
    return _waited(client, tx, wait)


def _waited(client: NodeClient, tx: Tx, wait: bool) -> dict[str, Any]:
    """`{"id", "status"}` of a submitted `tx`: pending, or with `wait` its block's `height`."""
    if not wait:
        return {"id": tx.id, "status": "pending"}
    found = client.wait_for_tx(tx.id)
    return {"id": tx.id, "status": found["status"], "height": found["height"]}


def submit_next(
    client: NodeClient,
    keypair: Keypair,
    kind: str,
    payload: dict[str, Any],
    *,
    fee: Fee = None,
    wait: bool = True,
) -> tuple[Tx, dict[str, Any]]:
    """`sign_next` and `submit`; when another transaction of the same wallet (a concurrent
    query, say) took that nonce between the two, sign again with the next one (up to
    `NONCE_TRIES` times, a random moment of at most 50 ms apart).
    Returns the transaction sent and `submit`'s result."""
    for attempt in range(NONCE_TRIES):
        tx = sign_next(client, keypair, kind, payload, fee=fee)
        try:
            client.submit(tx.to_json())
        except InvalidTx as exc:
            # another of the wallet's transactions took the nonce (`duplicate`: the very same
            # bytes, a concurrent identical booking, which is not ours to use)
            if exc.reason not in ("nonce-too-low", "duplicate") or attempt == NONCE_TRIES - 1:
                raise
            time.sleep(random.uniform(0, 0.05))  # noqa: S311 - spreads the writers that collided
            continue
        return tx, _waited(client, tx, wait)
    raise AssertionError("unreachable")


def send(
    client: NodeClient,
    keypair: Keypair,
    kind: str,
    payload: dict[str, Any],
    *,
    fee: Fee = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Sign a `kind` transaction with the sender's next nonce and submit it (`submit_next`).
    Returns `{"id", "status", "fee", "nonce"}` plus `"height"` once included."""
    tx, sent = submit_next(client, keypair, kind, payload, fee=fee, wait=wait)
    return {**sent, "fee": tx.fee, "nonce": tx.nonce}


def transfer(
    client: NodeClient,
    keypair: Keypair,
    to: str,
    amount: int,
    *,
    fee: Fee = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Send `amount` units from `keypair` to address `to`. Returns `{"id", "status", "from",
    "to", "amount", "fee", "nonce"}`, with `"height"` after `status` once included."""
    sent = send(client, keypair, "transfer", {"to": to, "amount": amount}, fee=fee, wait=wait)
    result = {k: v for k, v in sent.items() if k in ("id", "status", "height")}
    result.update({"from": keypair.address, "to": to, "amount": amount})
    return {**result, "fee": sent["fee"], "nonce": sent["nonce"]}
