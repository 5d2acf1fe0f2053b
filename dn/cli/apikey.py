"""`dn apikey create | list | revoke`: keys that let clients on the LAN use a node's
OpenAI-compatible API, each paid by the node's gateway wallet up to its own budget.

The keys live in the node's folder (dn/node/market/apikeys.py), so these commands work whether
the node runs or not, and a running node sees a new or revoked key at its next request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from dn.cli.output import emit, opts, say, table
from dn.config import DEFAULT_NODE_NAME

if TYPE_CHECKING:
    from rich.console import Console

    from dn.node.market.apikeys import KeyStore

app = typer.Typer(
    help="API keys for LAN clients of a node's OpenAI-compatible API (paid by its gateway "
    "wallet, each up to a budget).",
    no_args_is_help=True,
)
NAME = typer.Option(DEFAULT_NODE_NAME, "--name", help="Which local node (a folder).")


def _store(ctx: typer.Context, name: str) -> KeyStore:
    from dn.config import home
    from dn.errors import NotFound
    from dn.node.market.apikeys import KeyStore
    from dn.node.node import NodeHome

    folder = NodeHome.named(name, home(opts(ctx).home)).path
    if not folder.is_dir():
        raise NotFound(f"no local node {name!r} (no folder {folder})")
    return KeyStore.in_folder(folder)


def _when(ms: int | None) -> str:
    import datetime

    if ms is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@app.command()
def create(
    ctx: typer.Context,
    wallet: str = typer.Option(
        ...,
        "--wallet",
        help="Wallet the key spends: the node's --gateway-wallet (a key for another wallet "
        "is refused by the node).",
    ),
    budget: str = typer.Option(
        ..., "--budget", metavar="DN", help="The most this key may spend, in DN (prices and fees)."
    ),
    expires: str | None = typer.Option(
        None,
        "--expires",
        metavar="WHEN",
        help="When the key stops working: a duration (90m, 12h, 30d, 2w) or a UTC date "
        "(2027-01-31). Default: never.",
    ),
    name: str = NAME,
) -> None:
    """Make a key and print it (shown only now: only its hash is kept)."""
    from dn.encoding import format_dn, parse_dn
    from dn.node.market.apikeys import parse_expiry

    units = parse_dn(budget, what="--budget")
    until = parse_expiry(expires) if expires is not None else None
    address = opts(ctx).keystore().address(wallet)
    store = _store(ctx, name)
    try:
        key, record = store.create(address, units, until)
    finally:
        store.close()
    data = {"key": key, "node": name, **record.to_json()}

    def human(out: Console) -> None:
        out.print(key, soft_wrap=True)
        say(
            f"key {record.id} for node {name!r}: spends {wallet} ({address}) up to "
            f"{format_dn(units)} DN, expires {_when(until)}; it is shown only now"
        )

    emit(ctx, data, human)


@app.command("list")
def list_keys(ctx: typer.Context, name: str = NAME) -> None:
    """The node's keys (never their secrets): wallet, budget, spent, expiry, revoked."""
    from dn.encoding import format_dn

    store = _store(ctx, name)
    try:
        keys = [k.to_json() for k in store.all()]
    finally:
        store.close()

    def human(out: Console) -> None:
        rows: list[list[Any]] = [
            [
                k["id"],
                k["wallet"],
                format_dn(k["budget"]),
                format_dn(k["spent"]),
                _when(k["expires_ms"]),
                "yes" if k["revoked"] else "no",
            ]
            for k in keys
        ]
        columns = ["id", "wallet", "budget DN", "spent DN", "expires", "revoked"]
        out.print(table(None, columns, rows))

    emit(ctx, {"node": name, "keys": keys}, human)


@app.command()
def revoke(
    ctx: typer.Context,
    key_id: str = typer.Argument(..., metavar="ID", help="The key's id (dn apikey list)."),
    name: str = NAME,
) -> None:
    """Revoke a key: the node refuses it from its next request on."""
    store = _store(ctx, name)
    try:
        record = store.revoke(key_id.strip())
    finally:
        store.close()
    emit(ctx, record.to_json(), lambda out: out.print(f"revoked key {record.id}"))
