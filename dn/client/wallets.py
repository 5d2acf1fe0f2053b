"""The wallets on this machine, with what a node says they hold (`dn wallet list`).

Only the keystore and, when balances are asked for, the node client: listing wallets stays light
(no server or model code is imported).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dn.errors import InputError, KeystoreCorrupt

if TYPE_CHECKING:
    from dn.client.http import NodeClient
    from dn.wallet.keystore import Keystore


def list_wallets(
    store: Keystore, connect: Callable[[], NodeClient] | None = None
) -> list[dict[str, Any]]:
    """`[{"name", "address"}]` for every wallet in `store`, by name; a damaged one has `address`
    None and an `error`, a file whose name is not a wallet name is left out. With `connect`
    (called only when there is a wallet to ask about), each sound wallet also gets the node's
    `balance` and `nonce`."""
    rows: list[dict[str, Any]] = []
    for name in store.names():
        try:
            rows.append({"name": name, "address": store.address(name)})
        except InputError:
            continue  # a file that is not a wallet name
        except KeystoreCorrupt as exc:
            rows.append({"name": name, "address": None, "error": exc.message})
    if connect is not None and rows:
        with connect() as client:
            for row in rows:
                if row["address"]:
                    acct = client.account(row["address"])
                    row.update(balance=acct["balance"], nonce=acct["nonce"])
    return rows
