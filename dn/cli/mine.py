"""`dn mine`: run a node that serves models to the network (generating and checking)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dn.cli.node import GENESIS, HOST, JOIN, MDNS, NAME, PASSWORD_FILE, PEER, PORT
from dn.cli.output import opts, read_password, say
from dn.errors import InputError, ModelError

if TYPE_CHECKING:
    from dn.node.node import Node
    from dn.node.p2p.network import NetOptions
    from dn.runner.modelstore import ModelStore


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
    mdns: bool = MDNS,
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="llama.cpp threads (default: the cores, up to 8)."
    ),
    gpu_layers: int | None = typer.Option(
        None, "--gpu-layers", help="Layers to offload (default: all with a GPU, else none)."
    ),
    password_file: Path | None = PASSWORD_FILE,
) -> None:
    """Start (or join) a node with the miner role: register with a bond, fetch the models it
    serves from peers if needed, and generate and check answers until Ctrl-C."""
    from dn.chain.ledger import MODEL
    from dn.cli.node import prepare_node
    from dn.config import home
    from dn.encoding import parse_dn
    from dn.node.market.miner import MinerOptions
    from dn.node.service import run_foreground
    from dn.runner.modelstore import ModelStore

    store = opts(ctx).keystore()
    store.address(wallet)
    keypair = store.load(wallet, read_password(password_file))
    node, net = prepare_node(
        ctx, name=name, host=host, genesis=genesis, join=join, peer=peer, mdns=mdns
    )
    models_store = ModelStore.default(home(opts(ctx).home))
    on_chain = {key[len(MODEL) :] for key, _ in node.state.items() if key.startswith(MODEL)}
    chosen = [_resolve(node, net, ref, on_chain) for ref in model]
    if not model:
        chosen = sorted(s for s in on_chain if models_store.has(s))
    if not chosen:
        raise ModelError(
            "nothing to serve: give --model, or put a registered model in the local store "
            "('dn model pull ID' or 'dn model submit FILE')",
            reason="no-model",
        )
    missing = [sha for sha in chosen if not models_store.has(sha)]
    if missing:
        _pull(ctx, node, models_store, missing, net)
    options = MinerOptions(
        wallet=keypair,
        models=tuple(chosen),
        bond=parse_dn(bond, what="bond") if bond else None,
        threads=threads,
        gpu_layers=gpu_layers,
    )
    say(
        f"miner {keypair.address} on node {node.key.address}, serving "
        f"{len(chosen)} model(s), listening on http://{host}:{port}"
    )
    run_foreground(node, host, port, net, mine=options)
    say("miner stopped")


def _resolve(node: Node, net: NetOptions, ref: str, on_chain: set[str]) -> str:
    """A model's sha256 from the local chain state or, before this node has synced, from its
    peers."""
    from dn.chain.ledger import MODEL_NAME
    from dn.client.http import NodeClient
    from dn.errors import DNError

    sha = node.state.get(MODEL_NAME + ref)
    if sha is None and len(ref) >= 8:
        sha = next((s for s in sorted(on_chain) if s.startswith(ref.lower())), None)
    for url in net.peers:
        if sha is not None:
            break
        try:
            with NodeClient(url, timeout=10.0) as client:
                sha = client.model(ref)["id"]
        except DNError:
            continue
    if sha is None:
        raise InputError(f"no model {ref!r} on this chain (see 'dn model list')")
    return str(sha)


def _pull(
    ctx: typer.Context, node: Node, store: ModelStore, missing: list[str], net: NetOptions
) -> None:
    """Fetch models the miner should serve but does not hold, from the miners serving them
    and from the peers it was given."""
    from dn.chain import tasks
    from dn.chain.ledger import MINER
    from dn.cli.output import progress
    from dn.node.p2p.pull import pull_model

    for sha in missing:
        serving = tasks.eligible_miners(node.state, sha, node.tip.height)
        sources = [(node.state.get(MINER + m) or {}).get("url") for m in serving]
        sources += list(net.peers)
        with progress(f"pulling {sha[:12]}", None) as update:
            pull_model(sha, [s for s in sources if s], store, progress=update)
