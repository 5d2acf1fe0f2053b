"""A consumer's query escrow (dn/chain/escrow.py): put DN in (`deposit`), start taking it out
(`withdraw`: it stops backing new tickets at once and is back in the wallet after the chain's
`escrow_unlock_blocks`), and read it (`show`). Miners serve only tickets the escrow covers, and
settlements are paid out of it.

    deposit(client, wallet, 10 * UNITS_PER_DN)   # {"address", "amount", "tx", "status", …}
    show(client, address)                        # {"address", "amount", "available", …}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dn.client.txs import Fee, send

if TYPE_CHECKING:
    from dn.client.http import NodeClient
    from dn.wallet.keystore import LockedWallet


def show(client: NodeClient, address: str) -> dict[str, Any]:
    """`{"address", "height", "balance", "amount", "available", "unlocking", "unlock_at"}`:
    the escrow of `address` as the node sees it (all zero when it has none)."""
    found = client.account(address)
    held = found.get("escrow") or {"amount": 0, "available": 0, "unlocking": 0, "unlock_at": None}
    return {"address": address, "height": found["height"], "balance": found["balance"], **held}


def _change(
    client: NodeClient, wallet: LockedWallet, kind: str, amount: int, fee: Fee, wait: bool
) -> dict[str, Any]:
    wallet.address()  # a missing wallet fails before anything else
    keypair = wallet.unlock()
    sent = send(client, keypair, kind, {"amount": amount}, fee=fee, wait=wait)
    data: dict[str, Any] = {
        "address": keypair.address,
        "amount": amount,
        "tx": sent["id"],
        "status": sent["status"],
        "fee": sent["fee"],
        "nonce": sent["nonce"],
    }
    if "height" in sent:
        data["height"] = sent["height"]
        data["escrow"] = show(client, keypair.address)
    return data


def deposit(
    client: NodeClient, wallet: LockedWallet, amount: int, *, fee: Fee = None, wait: bool = True
) -> dict[str, Any]:
    """Move `amount` units from the wallet's balance into its escrow (`escrow.deposit`).
    Returns `{"address", "amount", "tx", "status", "fee", "nonce"}`, and once included
    `"height"` and `"escrow"` (what `show` returns)."""
    return _change(client, wallet, "escrow.deposit", amount, fee, wait)


def withdraw(
    client: NodeClient, wallet: LockedWallet, amount: int, *, fee: Fee = None, wait: bool = True
) -> dict[str, Any]:
    """Start unlocking `amount` units of the wallet's escrow (`escrow.withdraw`). Returns what
    `deposit` does, with `"unlock_blocks"`; once included, `escrow.unlock_at` is the block at
    whose start the units are back in the balance."""
    from dn.chain.escrow import unlock_blocks
    from dn.chain.genesis import Genesis

    data = _change(client, wallet, "escrow.withdraw", amount, fee, wait)
    data["unlock_blocks"] = unlock_blocks(Genesis.from_json(client.genesis()))
    return data
