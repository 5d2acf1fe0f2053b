"""`dn mine`: run a node that serves models to the network (generating and checking)."""

from __future__ import annotations

from pathlib import Path

import typer

from dn.cli.node import (
    GENESIS,
    HOST,
    JOIN,
    MDNS,
    NAME,
    NETWORK_KEY,
    PASSWORD_FILE,
    PEER,
    PORT,
)
from dn.cli.output import opts, progress, say, unlock


def mine(
    ctx: typer.Context,
    wallet: str = typer.Option(..., "--wallet", help="Wallet that bonds, signs and is paid."),
    model: list[str] = typer.Option(
        [],
        "--model",
        help="A model to serve (name, id or id prefix); repeat. Default: every "
        "model on chain that is in the local store.",
    ),
    bond: str | None = typer.Option(
        None, "--bond", help="Bond in DN (default: the chain's minimum)."
    ),
    name: str = NAME,
    host: str = HOST,
    port: int = PORT,
    genesis: Path | None = GENESIS,
    join: str | None = JOIN,
    peer: list[str] = PEER,
    network_key: str | None = NETWORK_KEY,
    mdns: bool = MDNS,
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="llama.cpp threads (default: the cores, up to 8)."
    ),
    gpu_layers: int | None = typer.Option(
        None, "--gpu-layers", help="Layers to offload (default: all with a GPU, else none)."
    ),
    slots: int | None = typer.Option(
        None,
        "--slots",
        min=1,
        help="Queries and checks each model serves at once, batched; more are refused as busy "
        "(default: from the cores and memory).",
    ),
    password_file: Path | None = PASSWORD_FILE,
) -> None:
    """Start (or join) a node with the miner role: register with a bond, fetch the models it
    serves from peers if needed, and generate and check answers until Ctrl-C."""
    from dn.cli.node import prepare_node
    from dn.client.models import models_to_serve
    from dn.config import home
    from dn.encoding import parse_dn
    from dn.node.market.miner import MinerOptions
    from dn.node.service import run_foreground
    from dn.runner.modelstore import ModelStore

    keypair = unlock(ctx, wallet, password_file)
    node, net = prepare_node(
        ctx,
        name=name,
        host=host,
        genesis=genesis,
        join=join,
        peer=peer,
        mdns=mdns,
        network_key=network_key,
    )
    models_store = ModelStore.default(home(opts(ctx).home))
    chosen = models_to_serve(
        node, net.peers, models_store, model, bar=progress, network_key=net.network_key
    )
    options = MinerOptions(
        wallet=keypair,
        models=tuple(chosen),
        bond=parse_dn(bond, what="bond") if bond else None,
        threads=threads,
        gpu_layers=gpu_layers,
        slots=slots,
    )
    say(
        f"miner {keypair.address} on node {node.key.address}, serving "
        f"{len(chosen)} model(s), listening on http://{host}:{port}"
    )
    run_foreground(node, host, port, net, mine=options)
    say("miner stopped")
