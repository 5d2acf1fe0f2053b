"""`dn escrow deposit | withdraw | show`: the prepaid escrow that pays a wallet's queries.

Miners serve a ticket only when the consumer's escrow covers it (with the consumer's other open
tickets), and settlements are paid out of the escrow, never the balance. A withdrawal stops
backing new tickets at once and is back in the wallet after the chain's `escrow_unlock_blocks`.
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
    help="Query escrow: the DN set aside that pays for your queries (miners check it first).",
    no_args_is_help=True,
)

Wallet = typer.Option(..., "--wallet", help="Wallet whose escrow it is (it signs).")


def _describe(data: dict[str, Any]) -> str:
    from dn.encoding import format_dn

    text = f"{format_dn(data['amount'])} DN in escrow, {format_dn(data['available'])} DN available"
    if data.get("reserved"):
        text += f", {format_dn(data['reserved'])} DN reserved by booked slots"
    if data["unlocking"]:
        text += f", {format_dn(data['unlocking'])} DN unlocking until block {data['unlock_at']}"
    return text


@app.command()
def deposit(
    ctx: typer.Context,
    amount: str = typer.Argument(..., help=AMOUNT_HELP),
    wallet: str = Wallet,
    fee: str | None = Fee,
    wait: bool = Wait,
    password_file: Path | None = PasswordFile,
) -> None:
    """Move DN from the wallet's balance into its query escrow, which pays for its queries."""
    from dn.client.escrow import deposit as send_deposit
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount)
    with opts(ctx).client() as client:
        data = send_deposit(
            client, locked_wallet(ctx, wallet, password_file), units, fee=fee, wait=wait
        )

    def human(out: Console) -> None:
        where = f"in block {data['height']}" if "height" in data else "pending"
        out.print(f"deposited {format_dn(units)} DN into the escrow, {where}: tx {data['tx']}")
        if "escrow" in data:
            out.print(_describe(data["escrow"]))

    emit(ctx, data, human)


@app.command()
def withdraw(
    ctx: typer.Context,
    amount: str = typer.Argument(..., help=AMOUNT_HELP),
    wallet: str = Wallet,
    fee: str | None = Fee,
    wait: bool = Wait,
    password_file: Path | None = PasswordFile,
) -> None:
    """Start taking DN out of the escrow. It stops backing new queries at once and comes back
    to the wallet after the chain's escrow_unlock_blocks (so tickets already served can still
    be paid); a second withdrawal moves the whole unlock to its own later block."""
    from dn.client.escrow import withdraw as send_withdraw
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount)
    with opts(ctx).client() as client:
        data = send_withdraw(
            client, locked_wallet(ctx, wallet, password_file), units, fee=fee, wait=wait
        )

    def human(out: Console) -> None:
        if "height" not in data:
            out.print(
                f"withdrawing {format_dn(units)} DN from the escrow, pending: tx {data['tx']}"
            )
            out.print(f"it unlocks {data['unlock_blocks']} blocks after the block that includes it")
            return
        out.print(f"withdrawing {format_dn(units)} DN in block {data['height']}: tx {data['tx']}")
        out.print(_describe(data["escrow"]))

    emit(ctx, data, human)


@app.command()
def show(
    ctx: typer.Context,
    address: str | None = typer.Argument(None, help="A dn1… address or a wallet name."),
    wallet: str | None = typer.Option(None, "--wallet", help="Show this wallet's escrow."),
) -> None:
    """Show an escrow: what it holds, what backs new queries (available), what booked slots
    reserve until they settle or expire, and what is unlocking, with the block it comes back
    at."""
    from dn.cli.wallet import resolve_address
    from dn.client.escrow import show as read
    from dn.encoding import format_dn
    from dn.errors import InputError

    ref = address if address is not None else wallet
    if ref is None or (address is not None and wallet is not None):
        raise InputError("give an ADDRESS or --wallet NAME (one of them)")
    who = resolve_address(ctx, ref)
    with opts(ctx).client() as client:
        data = read(client, who)

    def human(out: Console) -> None:
        due = f" (back at block {data['unlock_at']})" if data["unlocking"] else ""
        rows = [
            ["in escrow", format_dn(data["amount"])],
            ["available for new queries", format_dn(data["available"])],
            ["reserved by booked slots", format_dn(data.get("reserved", 0))],
            ["unlocking" + due, format_dn(data["unlocking"])],
            ["wallet balance", format_dn(data["balance"])],
        ]
        out.print(table(f"escrow of {who} at block {data['height']}", ["", "DN"], rows))

    emit(ctx, data, human)
