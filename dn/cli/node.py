"""`dn node …`: start a node in the foreground, ask one for its status."""

from __future__ import annotations

from typing import Any

import typer

from dn.cli.output import emit, opts, say, table
from dn.config import DEFAULT_NODE_NAME, DEFAULT_PORT

app = typer.Typer(help="Run a node and look at it.", no_args_is_help=True)


@app.command()
def start(
    ctx: typer.Context,
    name: str = typer.Option(DEFAULT_NODE_NAME, "--name", help="Which local node (a folder)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to listen on."),
) -> None:
    """Run the node in the foreground until Ctrl-C."""
    from dn.config import home
    from dn.errors import StoreError
    from dn.node.node import Node, NodeHome
    from dn.node.service import run_foreground

    node_home = NodeHome.named(name, home(opts(ctx).home))
    if not node_home.genesis_file.exists():
        raise StoreError(f"node {name!r} has no chain yet: run 'dn chain init --dev' first")
    node = Node(node_home)
    role = "validator" if node.is_validator else "full node"
    say(
        f"node {node.key.address} ({role}) on {node.genesis.chain_id} at height "
        f"{node.tip.height}, listening on http://{host}:{port}"
    )
    run_foreground(node, host, port)
    say("node stopped")


@app.command()
def status(ctx: typer.Context) -> None:
    """Ask the node (--node) how it is doing."""
    with opts(ctx).client() as client:
        data = client.status()

    def human(out: Any) -> None:
        rows = [
            ["node", data["node_address"]],
            ["role", "validator" if data["validator"] else "full node"],
            ["chain id", data["chain_id"]],
            ["height", data["height"]],
            ["tip", data["tip"]],
            ["pending txs", data["mempool"]],
            ["version", f"{data['version']} (protocol {data['protocol']})"],
        ]
        out.print(table(None, ["", ""], rows))

    emit(ctx, data, human)
