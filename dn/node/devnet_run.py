"""Running a devnet: open every node's store and serve them all on one asyncio loop, each
peered with all the others, until SIGINT/SIGTERM. Setting one up (its shape, wallets, genesis and
folders) is `dn.node.devnet`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from dn.config import wallets_dir
from dn.errors import GenesisError
from dn.node.devnet import DEVNET_PASSWORD, HOST, READY_POLL_S, Devnet, miner_threads
from dn.node.node import Node
from dn.wallet.keys import Keypair
from dn.wallet.keystore import Keystore


def open_nodes(devnet: Devnet) -> list[Node]:
    """Open every node's store (closing those already open if one fails)."""
    nodes: list[Node] = []
    try:
        for home in devnet.homes:
            node = Node(home)
            if node.genesis.hash != devnet.genesis.hash:
                node.close()
                raise GenesisError(f"{home.path} is not on the devnet's chain; use --fresh")
            nodes.append(node)
    except BaseException:
        for node in nodes:
            node.close()
        raise
    return nodes


async def serve(
    nodes: list[Node],
    port_base: int,
    on_ready: Callable[[], None] | None = None,
    miners: dict[int, Keypair] | None = None,
    powr: bool = False,
    powr_items: int | None = None,
    slots: int | None = None,
) -> None:
    """Serve every node on 127.0.0.1:port_base+i, each peered with all the others, until
    SIGINT/SIGTERM; `on_ready` is called once every node listens. Node i in `miners` also runs
    the miner role with that wallet, serving every registered model in the local store, `slots`
    sequences of each at once (default: from the cores and memory). With
    `powr`, every validator node also does its PoWR duty (`dn.node.validator.powr`) on the models in
    the local store (`powr_items` items per model, default the validator's), its fees paid by
    its node key."""
    from dn.node.market.miner import MinerOptions
    from dn.node.p2p.network import NetOptions
    from dn.node.service import NodeService, serve_all
    from dn.node.validator.powr import PowrValidator, for_node
    from dn.runner.modelstore import ModelStore

    miners = miners or {}
    validators: dict[int, PowrValidator] = {}
    if powr:
        count = sum(1 for node in nodes if node.is_validator)
        validators = {
            i: for_node(
                node,
                ModelStore.default(),
                threads=miner_threads(count),
                **({"items_per_model": powr_items} if powr_items else {}),
            )
            for i, node in enumerate(nodes)
            if node.is_validator
        }

    urls = [f"{HOST}:{port_base + i}" for i in range(len(nodes))]
    try:
        services = [
            NodeService(
                node,
                HOST,
                port_base + i,
                NetOptions(peers=[u for u in urls if u != urls[i]], mdns_interfaces=None),
                mine=MinerOptions(
                    wallet=miners[i],
                    models=(),
                    threads=miner_threads(len(miners)),
                    slots=slots,
                )
                if i in miners
                else None,
                validate=validators.get(i),
            )
            for i, node in enumerate(nodes)
        ]
    except BaseException:
        for node in nodes:
            node.close()
        raise

    async def announce() -> None:
        while not all(service.server.started for service in services):
            await asyncio.sleep(READY_POLL_S)
        if on_ready is not None:
            on_ready()

    watcher = asyncio.create_task(announce())
    try:
        await serve_all(services)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def run(
    devnet: Devnet,
    port_base: int,
    on_ready: Callable[[], None] | None = None,
    *,
    powr: bool = False,
    powr_items: int | None = None,
    slots: int | None = None,
) -> None:
    """Run the devnet in the foreground until SIGINT/SIGTERM (`powr`, `slots`: see `serve`)."""
    store = Keystore(wallets_dir(devnet.base))
    miners = {
        i: store.load(name, DEVNET_PASSWORD) for i, name in devnet.shape.miner_wallets().items()
    }
    nodes = open_nodes(devnet)
    asyncio.run(serve(nodes, port_base, on_ready, miners, powr, powr_items, slots))
