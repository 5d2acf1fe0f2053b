"""`dn stake add | remove | list`: back a model or delegate to a validator, and take it back.

A target is a model (its name, sha256 or a unique sha256 prefix, resolved through the node) or a
validator's `dn1…` address. Unstaked funds come back only after the chain's `unbonding_blocks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dn.cli.output import emit, opts, table

if TYPE_CHECKING:
    from rich.console import Console

    from dn.client.http import NodeClient

app = typer.Typer(
    help="Staking: back a model (a share of its query fees) or delegate to a validator.",
    no_args_is_help=True,
)

TARGET_HELP = "A model (name, SHA-256 or 8+ digit prefix) or a validator's dn1… address."
AMOUNT_HELP = "Amount in DN, up to 9 decimals (e.g. 2.5)."
Wallet = typer.Option(..., "--wallet", help="Wallet that stakes and signs.")
Fee = typer.Option(None, "--fee", help="Fee in DN (default: the chain minimum).")
Wait = typer.Option(True, "--wait/--no-wait", help="Wait until it is in a block.")
PasswordFile = typer.Option(
    None,
    "--password-file",
    help="Read the password from this file (else $DN_PASSWORD or a prompt).",
)


def _looks_like_address(text: str) -> bool:
    return text.lower().startswith("dn1")


def resolve_target(client: NodeClient, ref: str) -> dict[str, Any]:
    """`{"target", "kind": "model" | "validator", "name"}` for a model ref or an address; a
    mistyped address is an InputError, an unknown model NotFound (both before any signing)."""
    from dn.encoding import pubkey_from_address

    ref = ref.strip()
    if _looks_like_address(ref):
        pubkey_from_address(ref)
        return {"target": ref, "kind": "validator", "name": None}
    model = client.model(ref)
    return {"target": model["id"], "kind": "model", "name": model["name"]}


def _label(target: dict[str, Any]) -> str:
    return f"model {target['name']}" if target["name"] else f"validator {target['target']}"


def _send(
    ctx: typer.Context,
    client: NodeClient,
    kind: str,
    target_ref: str,
    units: int,
    wallet: str,
    fee: str | None,
    wait: bool,
    password_file: Path | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resolve the target, unlock the wallet and send a `stake` or `unstake`; the result as
    the commands print it, and the resolved target."""
    from dn.cli.txs import send_tx, unlock

    target = resolve_target(client, target_ref)
    keypair = unlock(ctx, wallet, password_file)
    payload = {"target": target["target"], "amount": units}
    sent = send_tx(client, keypair, kind, payload, fee=fee, wait=wait)
    data: dict[str, Any] = {
        "target": target["target"],
        "kind": target["kind"],
        "name": target["name"],
        "backer": keypair.address,
        "amount": units,
        "tx": sent["id"],
        "status": sent["status"],
        "fee": sent["fee"],
        "nonce": sent["nonce"],
    }
    if "height" in sent:
        data["height"] = sent["height"]
        found = client.stakes(target=target["target"], backer=keypair.address)["stakes"]
        data["staked"] = sum(s["amount"] for s in found)  # the sender's stake there now
    return data, target


@app.command()
def add(
    ctx: typer.Context,
    target: str = typer.Argument(..., help=TARGET_HELP),
    amount: str = typer.Argument(..., help=AMOUNT_HELP),
    wallet: str = Wallet,
    fee: str | None = Fee,
    wait: bool = Wait,
    password_file: Path | None = PasswordFile,
) -> None:
    """Stake DN on a model or on a validator (at least the chain's stake_min).

    A model's backers share its query fees and PoWR rewards; a stake on a validator adds to its
    weight in the PoWR epoch close, and you share its reward pro rata to stake."""
    from dn.cli.txs import check_wallet
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount)
    check_wallet(ctx, wallet)
    with opts(ctx).client() as client:
        data, resolved = _send(
            ctx, client, "stake", target, units, wallet, fee, wait, password_file
        )

    def human(out: Console) -> None:
        where = f"in block {data['height']}" if "height" in data else "pending"
        out.print(f"staked {format_dn(units)} DN on {_label(resolved)}, {where}: tx {data['tx']}")
        if "staked" in data:
            out.print(f"your stake there is now {format_dn(data['staked'])} DN")

    emit(ctx, data, human)


@app.command()
def remove(
    ctx: typer.Context,
    target: str = typer.Argument(..., help=TARGET_HELP),
    amount: str = typer.Argument(..., help=AMOUNT_HELP),
    wallet: str = Wallet,
    fee: str | None = Fee,
    wait: bool = Wait,
    password_file: Path | None = PasswordFile,
) -> None:
    """Unstake DN from a model or a validator. The funds come back to the wallet only after the
    chain's unbonding period: the command prints the block at which they unlock. What stays
    staked must be 0 or at least stake_min."""
    from dn.cli.txs import check_wallet
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount)
    check_wallet(ctx, wallet)
    with opts(ctx).client() as client:
        data, resolved = _send(
            ctx, client, "unstake", target, units, wallet, fee, wait, password_file
        )
        unbonding = int(client.genesis()["params"].get("unbonding_blocks", 100))
    data["unbonding_blocks"] = unbonding
    data["unlock_height"] = data["height"] + unbonding if "height" in data else None

    def human(out: Console) -> None:
        what = f"{format_dn(units)} DN from {_label(resolved)}"
        if data["unlock_height"] is None:
            out.print(f"unstaking {what}, pending: tx {data['tx']}")
            out.print(f"the funds unlock {unbonding} blocks after the block that includes it")
            return
        out.print(f"unstaked {what} in block {data['height']}: tx {data['tx']}")
        out.print(
            f"the funds unlock at block {data['unlock_height']} (after {unbonding} blocks); "
            f"your stake there is now {format_dn(data['staked'])} DN"
        )

    emit(ctx, data, human)


@app.command("list")
def list_(
    ctx: typer.Context,
    wallet: str | None = typer.Option(
        None, "--wallet", help="Only the stakes of this wallet (a name or a dn1… address)."
    ),
    target_ref: str | None = typer.Option(
        None, "--target", help="Only the stakes on: " + TARGET_HELP
    ),
) -> None:
    """List stakes: every stake on chain, or only a wallet's, or only those on one target."""
    from dn.cli.wallet import resolve_address
    from dn.encoding import format_dn

    backer = resolve_address(ctx, wallet) if wallet is not None else None
    with opts(ctx).client() as client:
        target = resolve_target(client, target_ref)["target"] if target_ref is not None else None
        data = client.stakes(target=target, backer=backer)
        names = {m["id"]: m["name"] for m in client.models()["models"]}
    stakes = data["stakes"]

    def human(out: Console) -> None:
        if not stakes:
            out.print("no stakes" + (" match" if backer or target else " on chain yet"))
            return
        rows = [
            [
                f"model {names[s['target']]}"
                if s["target"] in names
                else f"validator {s['target']}",
                s["backer"],
                format_dn(s["amount"]),
            ]
            for s in stakes
        ]
        out.print(table(None, ["target", "backer", "DN"], rows))
        out.print(f"total {format_dn(sum(s['amount'] for s in stakes))} DN")

    emit(ctx, data, human)
