"""`dn devnet …`: a whole local network in one process, for trying DeepNode out."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer

from dn.cli.output import opts, say, stderr, table

if TYPE_CHECKING:
    from dn.node.devnet import Devnet

app = typer.Typer(
    help="A local network in one process: several nodes, funded wallets, one command.",
    no_args_is_help=True,
)

DEFAULT_NODES = 3  # kept here too so `dn --help` does not import the node stack
DEFAULT_PORT_BASE = 8780


@app.command()
def up(
    ctx: typer.Context,
    nodes: int = typer.Option(DEFAULT_NODES, "--nodes", "-n", help="How many nodes to run."),
    validators: int | None = typer.Option(
        None,
        "--validators",
        help="How many of the nodes are validators (the first K; default: all but the --miners).",
    ),
    port_base: int = typer.Option(
        DEFAULT_PORT_BASE, "--port-base", help="Node i listens on 127.0.0.1:PORT_BASE+i."
    ),
    block_time: int | None = typer.Option(
        None,
        "--block-time",
        metavar="MS",
        help="Milliseconds between blocks when there is work (default 1000, or what the stored "
        "devnet has).",
    ),
    fresh: bool = typer.Option(
        False, "--fresh", help="Throw the stored devnet chain away and start a new one."
    ),
    miners: int = typer.Option(
        0,
        "--miners",
        help="How many of the nodes (the last M, not validators) also mine, with funded "
        "devnet-miner<j> wallets, serving every registered model in $DN_HOME/models.",
    ),
    idle_interval: int | None = typer.Option(
        None,
        "--idle-interval",
        metavar="MS",
        help="An empty block at least this often, in milliseconds (default 5000, or what the "
        "stored devnet has).",
    ),
    epoch_blocks: int | None = typer.Option(
        None,
        "--epoch-blocks",
        metavar="N",
        help="Blocks per PoWR epoch (default 100, or what the stored devnet has).",
    ),
    powr: bool = typer.Option(
        False,
        "--powr/--no-powr",
        help="Every validator node also does its PoWR duty: each epoch it evaluates the live "
        "models in $DN_HOME/models and commits, then reveals, their quality scores. Off by "
        "default for now.",
    ),
    powr_items: int | None = typer.Option(
        None, "--powr-items", min=1, help="With --powr: benchmark items per model per epoch."
    ),
    slots: int | None = typer.Option(
        None,
        "--slots",
        min=1,
        help="Queries and checks each miner serves at once per model; more are refused as "
        "busy (default: from the cores and memory).",
    ),
) -> None:
    """Run a local network of N nodes in this process until Ctrl-C.

    Node i listens on 127.0.0.1:PORT_BASE+i; the first K nodes are validators. The chain is kept
    in $DN_HOME and resumed next time. The funded wallets devnet-alice, devnet-bob and
    devnet-carol (password 'devnet') work from another terminal with the same DN_HOME.
    """
    from dn.config import home
    from dn.node import devnet, devnet_run

    base = home(opts(ctx).home)
    devnet.Shape.check(
        nodes,
        validators,
        block_time if block_time is not None else devnet.DEFAULT_BLOCK_TIME_MS,
        miners,
        epoch_blocks,
        idle_interval,
    )
    devnet.check_ports(port_base, nodes)
    with devnet.lock(base):
        net = devnet.prepare(
            base,
            nodes=nodes,
            validators=validators,
            block_time_ms=block_time,
            fresh=fresh,
            miners=miners,
            epoch_blocks=epoch_blocks,
            idle_ms=idle_interval,
            notify=say,
        )
        info = net.describe(port_base)

        def ready() -> None:
            if opts(ctx).json:
                sys.stdout.write(json.dumps(info) + "\n")
                sys.stdout.flush()
            _summary(info, net)

        state = "resuming" if net.resumed else "starting"
        say(f"{state} devnet {net.genesis.chain_id} ({net.shape.describe()}) in {base}")
        devnet_run.run(net, port_base, ready, powr=powr, powr_items=powr_items, slots=slots)
    say("devnet stopped")


def _summary(info: dict[str, Any], net: Devnet) -> None:
    out = stderr()
    rows = [
        [
            n["name"],
            n["url"],
            "validator"
            if n["validator"]
            else f"miner ({n['miner']})"
            if n["miner"]
            else "full node",
        ]
        for n in info["nodes"]
    ]
    out.print(table(None, ["node", "url", "role"], rows))
    out.print(
        f"funded wallets (password [bold]{info['password']}[/]; devnet only, never real funds):"
    )
    for wallet in info["wallets"]:
        out.print(f"  {wallet['name']:<14} {wallet['address']}")
    second = info["nodes"][1 if len(info["nodes"]) > 1 else 0]["url"]
    out.print(
        f"devnet {info['chain_id']} is up. From another terminal with DN_HOME={net.base}:\n"
        f"  DN_PASSWORD={info['password']} dn --node {second} wallet send devnet-alice "
        "devnet-bob 1.5\n"
        f"  dn --node {info['nodes'][0]['url']} wallet list --balances\n"
        "Ctrl-C stops the devnet."
    )
