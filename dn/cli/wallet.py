"""`dn wallet …`: create, list, show, balance, send, export, import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dn.cli.options import PasswordFile
from dn.cli.output import emit, opts, read_password, table, unlock
from dn.errors import InputError, KeystoreCorrupt

app = typer.Typer(
    help="Wallets: keys sealed with your password, and what they hold.", no_args_is_help=True
)


def resolve_address(ctx: typer.Context, name_or_address: str) -> str:
    """A wallet name or a `dn1…` address; a mistyped address is an error, never a guess."""
    return opts(ctx).keystore().resolve(name_or_address)


@app.command()
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A name for the wallet (letters, digits, . _ -)."),
    kdf: str = typer.Option(
        "moderate",
        "--kdf",
        help="Key stretching: 'moderate' (default, for real funds) or 'fast' (devnet only: weak).",
    ),
    password_file: Path | None = PasswordFile,
) -> None:
    """Create a new wallet (a fresh Ed25519 key sealed with your password)."""
    from dn.wallet.keystore import KDF_PRESETS, check_name

    if kdf not in KDF_PRESETS:
        raise InputError(f"--kdf must be one of {', '.join(KDF_PRESETS)}")
    store = opts(ctx).keystore()
    check_name(name)
    if store.exists(name):
        from dn.errors import WalletExists

        raise WalletExists(f"wallet {name!r} exists already; pick another name")
    password = read_password(password_file, confirm=True)
    keypair = store.create(name, password, KDF_PRESETS[kdf])
    data = {"name": name, "address": keypair.address, "path": str(store.path(name))}
    emit(ctx, data, lambda out: out.print(f"created wallet [bold]{name}[/]: {keypair.address}"))


@app.command("list")
def list_(
    ctx: typer.Context,
    balances: bool = typer.Option(False, "--balances", help="Also ask the node for balances."),
) -> None:
    """List wallets and their addresses (no password needed)."""
    from dn.client.wallets import list_wallets
    from dn.encoding import format_dn

    rows = list_wallets(opts(ctx).keystore(), opts(ctx).client if balances else None)
    columns = ["name", "address"] + (["balance (DN)", "nonce"] if balances else [])

    def cells(row: dict[str, Any]) -> list[Any]:
        out = [row["name"], row["address"] or "(damaged)"]
        if balances:
            out += [format_dn(row["balance"]), row["nonce"]] if "balance" in row else ["", ""]
        return out

    emit(
        ctx,
        rows,
        lambda out: out.print(
            table(None, columns, [cells(r) for r in rows])
            if rows
            else "no wallets yet: try 'dn wallet create NAME'"
        ),
    )


@app.command()
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Wallet name.")) -> None:
    """Show a wallet's name and address."""
    store = opts(ctx).keystore()
    data = {"name": name, "address": store.address(name), "path": str(store.path(name))}
    emit(ctx, data, lambda out: out.print(f"{name}: {data['address']}"))


@app.command()
def balance(
    ctx: typer.Context, who: str = typer.Argument(..., help="Wallet name or dn1… address.")
) -> None:
    """Ask the node for a wallet's balance and nonce."""
    from dn.encoding import format_dn

    address = resolve_address(ctx, who)
    with opts(ctx).client() as client:
        acct = client.account(address)
    data = {
        "name": None if who == address else who,
        **acct,
        "balance_dn": format_dn(acct["balance"]),
    }
    emit(
        ctx, data, lambda out: out.print(f"{who}: {data['balance_dn']} DN (nonce {acct['nonce']})")
    )


@app.command()
def send(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Wallet that pays."),
    to: str = typer.Argument(..., help="Recipient: a dn1… address or a wallet name."),
    amount: str = typer.Argument(..., help="Amount in DN, up to 9 decimals (e.g. 1.5)."),
    fee: str | None = typer.Option(None, "--fee", help="Fee in DN (default: the chain minimum)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until it is in a block."),
    password_file: Path | None = PasswordFile,
) -> None:
    """Send DN from a wallet to an address."""
    from dn.client.txs import transfer
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount)
    recipient = resolve_address(ctx, to)
    keypair = unlock(ctx, name, password_file)  # a missing wallet fails before the prompt
    with opts(ctx).client() as client:
        result = transfer(client, keypair, recipient, units, fee=fee, wait=wait)
    where = f" in block {result['height']}" if "height" in result else " (pending)"
    emit(
        ctx,
        result,
        lambda out: out.print(
            f"sent {format_dn(units)} DN to {recipient}{where}: tx {result['id']}"
        ),
    )


@app.command()
def export(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Wallet name."),
    show_secret: bool = typer.Option(
        False, "--show-secret", help="Print the raw secret key (asks for confirmation)."
    ),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    password_file: Path | None = PasswordFile,
) -> None:
    """Print the sealed keystore for backup, or with --show-secret the raw secret key."""
    store = opts(ctx).keystore()
    store.address(name)  # refuses a missing, damaged or world-readable keystore
    if not show_secret:
        emit(ctx, json.loads(store.path(name).read_text()))
        return
    if not yes and not typer.confirm(
        "This prints your secret key: anyone who sees it can spend your funds. Continue?"
    ):
        raise typer.Exit(1)
    keypair = unlock(ctx, name, password_file)
    data = {"name": name, "address": keypair.address, "secret": keypair.seed().hex()}
    emit(ctx, data, lambda out: out.print(data["secret"]))


@app.command("import")
def import_(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name for the imported wallet."),
    secret_file: Path | None = typer.Option(
        None, "--secret-file", help="File holding the 64-hex-digit secret (else a prompt)."
    ),
    keystore_file: Path | None = typer.Option(
        None, "--keystore", help="A keystore exported with 'dn wallet export'."
    ),
    kdf: str = typer.Option("moderate", "--kdf", help="'moderate' (default) or 'fast' (devnet)."),
    password_file: Path | None = PasswordFile,
) -> None:
    """Import a wallet from a raw secret key or an exported keystore."""
    from dn.wallet.keys import Keypair
    from dn.wallet.keystore import KDF_PRESETS, check_name, unseal

    if kdf not in KDF_PRESETS:
        raise InputError(f"--kdf must be one of {', '.join(KDF_PRESETS)}")
    check_name(name)
    store = opts(ctx).keystore()
    if keystore_file is not None:
        try:
            doc = json.loads(keystore_file.read_text())
        except (OSError, ValueError) as exc:
            raise KeystoreCorrupt(f"cannot read keystore {keystore_file}: {exc}") from None
        password = read_password(password_file)
        keypair = unseal(doc, password)
    else:
        if secret_file is not None:
            try:
                secret = secret_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read secret file {secret_file}: {exc}") from None
        else:
            secret = typer.prompt("Secret key (hex)", hide_input=True).strip()
        try:
            seed = bytes.fromhex(secret)
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise InputError("a secret key is 64 hexadecimal digits")
        keypair = Keypair.from_seed(seed)
        password = read_password(password_file, confirm=True)
    store.save(name, keypair, password, KDF_PRESETS[kdf])
    data = {"name": name, "address": keypair.address, "path": str(store.path(name))}
    emit(ctx, data, lambda out: out.print(f"imported wallet [bold]{name}[/]: {keypair.address}"))
