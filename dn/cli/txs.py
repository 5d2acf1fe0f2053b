"""Signing and sending a transaction from a wallet: what `dn wallet send`, `dn model submit` and
the other commands that write to the chain share.

    keypair = unlock(ctx, "alice", password_file)      # wallet checked before the prompt
    with opts(ctx).client() as client:
        sent = send_tx(client, keypair, "transfer", {...}, fee=None, wait=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dn.cli.output import opts, read_password

if TYPE_CHECKING:
    from dn.client.http import NodeClient
    from dn.wallet.keys import Keypair


def check_wallet(ctx: typer.Context, name: str) -> str:
    """The address of wallet `name`; a missing or damaged wallet fails here, before any prompt."""
    return opts(ctx).keystore().address(name)


def unlock(ctx: typer.Context, name: str, password_file: Path | None) -> Keypair:
    """Open wallet `name` with the password from --password-file, $DN_PASSWORD or a prompt."""
    check_wallet(ctx, name)
    return opts(ctx).keystore().load(name, read_password(password_file))


def send_tx(
    client: NodeClient,
    keypair: Keypair,
    kind: str,
    payload: dict[str, Any],
    *,
    fee: str | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Sign a `kind` transaction with the sender's next nonce and submit it; with `wait`, poll
    until it is in a block. `fee` is in DN (default: the chain's minimum). Returns
    `{"id", "status", "fee", "nonce"}` plus `"height"` once included."""
    from dn.chain.types import Tx
    from dn.encoding import parse_dn

    genesis = client.genesis()
    status = client.status()
    fee_units = parse_dn(fee, allow_zero=True, what="fee") if fee else genesis["params"]["min_fee"]
    nonce = client.account(keypair.address)["next_nonce"]
    tx = Tx.create(
        keypair, chain_id=status["chain_id"], kind=kind, nonce=nonce, fee=fee_units, payload=payload
    )
    client.submit(tx.to_json())
    result: dict[str, Any] = {"id": tx.id, "status": "pending"}
    if wait:
        found = client.wait_for_tx(tx.id)
        result = {"id": tx.id, "status": found["status"], "height": found["height"]}
    return {**result, "fee": fee_units, "nonce": nonce}
