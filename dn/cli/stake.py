"""`dn stake add | remove | list`: back a model or delegate to a validator, and take it back.

A target is a model (its name, sha256 or a unique sha256 prefix, resolved through the node) or a
validator's `dn1…` address. Unstaked funds come back only after the chain's `unbonding_blocks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dn.cli.options import AMOUNT_HELP, Fee, PasswordFile, Wait
from dn.cli.output import emit, locked_wallet, opts, table

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    help="Staking: back a model (a share of its query fees) or delegate to a validator.",
    no_args_is_help=True,
)

TARGET_HELP = "A model (name, SHA-256 or 8+ digit prefix) or a validator's dn1… address."
Wallet = typer.Option(..., "--wallet", help="Wallet that stakes and signs.")


def _label(target: dict[str, Any]) -> str:
    """`target` is a resolved target, or a result that names one."""
    return f"model {target['name']}" if target["name"] else f"validator {target['target']}"


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
    from dn.client.stakes import stake
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount)
    with opts(ctx).client() as client:
        data = stake(
            client, locked_wallet(ctx, wallet, password_file), target, units, fee=fee, wait=wait
        )

    def human(out: Console) -> None:
        where = f"in block {data['height']}" if "height" in data else "pending"
        out.print(f"staked {format_dn(units)} DN on {_label(data)}, {where}: tx {data['tx']}")
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
    from dn.client.stakes import unstake
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount)
    with opts(ctx).client() as client:
        data = unstake(
            client, locked_wallet(ctx, wallet, password_file), target, units, fee=fee, wait=wait
        )
    unbonding = data["unbonding_blocks"]

    def human(out: Console) -> None:
        what = f"{format_dn(units)} DN from {_label(data)}"
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
    from dn.client.stakes import resolve_target
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
