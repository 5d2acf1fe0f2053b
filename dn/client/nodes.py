"""Opening a local node to run it (`dn node start`, `dn mine`, `dn validate`): its folder, the
genesis pinned there (from a file, or fetched from a running node with `join`), and its network
options. It lives with the client because joining asks a running node for its genesis.

    node, net = open_node(home(), name="default", host="127.0.0.1", join="10.0.0.7:8765")
    run_foreground(node, "127.0.0.1", 8765, net)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dn.errors import InputError

if TYPE_CHECKING:
    from dn.chain.genesis import Genesis
    from dn.node.node import Node
    from dn.node.p2p.network import NetOptions
    from dn.wallet.keys import Keypair

DEFAULT_PEER_EXPIRY_S = 15.0


def fetch_genesis(url: str) -> Genesis:
    """The genesis of the node at `url` (checked as any genesis file is)."""
    from dn.chain.genesis import Genesis
    from dn.client.http import NodeClient

    with NodeClient(url, timeout=10.0) as client:
        return Genesis.from_json(client.genesis())


def open_node(
    base: Path,
    *,
    name: str,
    host: str,
    genesis: Path | None = None,
    join: str | None = None,
    peers: list[str] | None = None,
    mdns: bool = True,
    network_key: str | None = None,
    mdns_interfaces: list[str] | None = None,
    peer_expiry: float = DEFAULT_PEER_EXPIRY_S,
    key: Keypair | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[Node, NetOptions]:
    """Node `name` under `base` opened, and how it finds its peers.

    Its genesis is pinned on first use from the file `genesis` or from the node at `join` (which
    also becomes a peer); either, later, must be the genesis the folder holds. `peers` are
    HOST:PORT or URLs; `network_key` the shared passphrase; mDNS runs on `mdns_interfaces`, by
    default the `host` address (`mdns_interfaces` in `dn.node.p2p.discovery`). `key` signs
    blocks instead of the node key (a validator's wallet)."""
    from dn.node.node import Node, NodeHome
    from dn.node.p2p.discovery import mdns_interfaces as choose_interfaces
    from dn.node.p2p.network import NetOptions, normalise_peer
    from dn.node.setup import pin_genesis, require_genesis

    node_home = NodeHome.named(name, base)
    static = [normalise_peer(p) for p in peers or []]
    if genesis is not None and join is not None:
        raise InputError("give --genesis or --join, not both")
    if join is not None:
        url = normalise_peer(join)
        pin_genesis(node_home, fetch_genesis(url), source=url, notify=notify)
        static.append(url)
    elif genesis is not None:
        from dn.chain.genesis import Genesis

        pin_genesis(node_home, Genesis.load(genesis), source=str(genesis), notify=notify)
    require_genesis(node_home, name)
    net = NetOptions(
        peers=static,
        network_key=_network_key(network_key),
        mdns_interfaces=choose_interfaces(mdns, mdns_interfaces or [], host),
        expire_s=peer_expiry,
    )
    return Node(node_home, key=key), net


def _network_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    from dn.node.p2p.handshake import network_key_from_text

    return network_key_from_text(text)
