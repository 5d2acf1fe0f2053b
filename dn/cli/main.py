"""`dn`: the root command, global options, and where errors become messages and exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from dn.cli import (
    apikey,
    chain,
    devnet,
    escrow,
    mine,
    model,
    node,
    powr,
    query,
    stake,
    validate,
    wallet,
)
from dn.cli.output import Options, stderr
from dn.errors import DNError


class DNGroup(TyperGroup):
    """Runs a command and turns a DeepNode error into a one-line message and its exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        try:
            return super().invoke(ctx)
        except DNError as exc:
            stderr().print(f"[bold red]error:[/] {exc.message}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            stderr().print("interrupted")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=DNGroup,
    help="DeepNode: an open AI marketplace on your LAN, recorded on a signed SQLite chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(wallet.app, name="wallet")
app.add_typer(chain.app, name="chain")
app.add_typer(node.app, name="node")
app.add_typer(devnet.app, name="devnet")
app.add_typer(model.app, name="model")
app.add_typer(powr.app, name="powr")
app.add_typer(stake.app, name="stake")
app.add_typer(escrow.app, name="escrow")
app.add_typer(apikey.app, name="apikey")
app.add_typer(validate.app, name="validator")
app.command("mine")(mine.mine)
app.command("validate")(validate.validate)
app.command("query")(query.query)


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", help="DeepNode folder (default $DN_HOME or ~/.deepnode)."
    ),
    node_url: str | None = typer.Option(
        None, "--node", help="Node URL (default $DN_NODE, config.toml, or http://127.0.0.1:8765)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print data as JSON for scripts."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More logging (-vv more)."),
) -> None:
    ctx.obj = Options(home=home, node=node_url, json=json_out, verbose=verbose)
    if verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO)


def main() -> None:
    app()
