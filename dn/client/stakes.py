"""Staking from a wallet: back a model or delegate to a validator (`stake`), take it back
(`unstake`), and a validator's own bond (`unbond`). Funds taken back return only after the
chain's `unbonding_blocks`, read from the node's genesis.

A target is a model (its name, sha256 or a unique sha256 prefix, resolved through the node) or a
validator's `dn1…` address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dn.client.txs import Fee, send

if TYPE_CHECKING:
    from dn.client.http import NodeClient
    from dn.wallet.keys import Keypair
    from dn.wallet.keystore import LockedWallet


def resolve_target(client: NodeClient, ref: str) -> dict[str, Any]:
    """`{"target", "kind": "model" | "validator", "name"}` for a model ref or an address; a
    mistyped address is an InputError, an unknown model NotFound (both before any signing)."""
    from dn.encoding import pubkey_from_address

    ref = ref.strip()
    if ref.lower().startswith("dn1"):
        pubkey_from_address(ref)
        return {"target": ref, "kind": "validator", "name": None}
    model = client.model(ref)
    return {"target": model["id"], "kind": "model", "name": model["name"]}


def _change(
    client: NodeClient,
    wallet: LockedWallet,
    kind: str,
    target_ref: str,
    amount: int,
    fee: Fee,
    wait: bool,
) -> dict[str, Any]:
    """Check the wallet, resolve the target, then unlock and send a `stake` or `unstake`."""
    wallet.address()  # a missing wallet fails before anything else
    target = resolve_target(client, target_ref)
    keypair = wallet.unlock()
    payload = {"target": target["target"], "amount": amount}
    sent = send(client, keypair, kind, payload, fee=fee, wait=wait)
    data: dict[str, Any] = {
        **target,
        "backer": keypair.address,
        "amount": amount,
        "tx": sent["id"],
        "status": sent["status"],
        "fee": sent["fee"],
        "nonce": sent["nonce"],
    }
    if "height" in sent:
        data["height"] = sent["height"]
        found = client.stakes(target=target["target"], backer=keypair.address)["stakes"]
        data["staked"] = sum(s["amount"] for s in found)  # the sender's stake there now
    return data


def stake(
    client: NodeClient,
    wallet: LockedWallet,
    target_ref: str,
    amount: int,
    *,
    fee: Fee = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Stake `amount` units from `wallet` on a model or a validator. Returns `{"target", "kind",
    "name", "backer", "amount", "tx", "status", "fee", "nonce"}`, and once included `"height"`
    and `"staked"` (the wallet's whole stake on that target now)."""
    return _change(client, wallet, "stake", target_ref, amount, fee, wait)


def unstake(
    client: NodeClient,
    wallet: LockedWallet,
    target_ref: str,
    amount: int,
    *,
    fee: Fee = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Take `amount` units of `wallet`'s stake off a target. Returns what `stake` does, with
    `"unbonding_blocks"` and `"unlock_height"` (None until included): the block from which the
    funds are back in the wallet."""
    data = _change(client, wallet, "unstake", target_ref, amount, fee, wait)
    unbonding = client.param("unbonding_blocks")
    data["unbonding_blocks"] = unbonding
    data["unlock_height"] = data["height"] + unbonding if "height" in data else None
    return data


def unbond(client: NodeClient, keypair: Keypair, amount: int) -> dict[str, Any]:
    """Take `amount` units out of the validator's own bond (`validator.unbond`) and wait for a
    block. Returns `send`'s result with `"amount"` and `"unlock_height"`, the block from which the
    funds are back."""
    sent = send(client, keypair, "validator.unbond", {"amount": amount})
    unbonding = client.param("unbonding_blocks")
    return {**sent, "amount": amount, "unlock_height": sent.get("height", 0) + unbonding}
