"""`dn node …`: start a node in the foreground, ask one for its status."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dn.cli.output import emit, opts, say, table, unlock
from dn.client.nodes import DEFAULT_PEER_EXPIRY_S
from dn.config import DEFAULT_NODE_NAME, DEFAULT_PORT

if TYPE_CHECKING:
    from dn.node.node import Node
    from dn.node.p2p.network import NetOptions
    from dn.wallet.keys import Keypair

app = typer.Typer(help="Run a node and look at it.", no_args_is_help=True)

# Options every command that runs a node takes (`dn node start`, `dn mine`, `dn validate`).
NAME = typer.Option(DEFAULT_NODE_NAME, "--name", help="Which local node (a folder).")
HOST = typer.Option("127.0.0.1", "--host", help="Address to listen on.")
PORT = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to listen on.")
GENESIS = typer.Option(
    None, "--genesis", help="Join the network this genesis file defines (pinned on first use)."
)
JOIN = typer.Option(
    None, "--join", help="Fetch and pin the genesis from a running node at URL; peer with it."
)
MDNS = typer.Option(True, "--mdns/--no-mdns", help="Find peers on the LAN with mDNS.")
NETWORK_KEY = typer.Option(
    None,
    "--network-key",
    envvar="DN_NETWORK_KEY",
    help="A passphrase shared by your nodes: peers without it are refused.",
)
PEER = typer.Option(
    [], "--peer", help="A peer to connect to as HOST:PORT, where mDNS does not reach; repeat."
)
PASSWORD_FILE = typer.Option(
    None,
    "--password-file",
    help="Read the wallet's password from this file (else $DN_PASSWORD or a prompt).",
)


@app.command()
def start(
    ctx: typer.Context,
    name: str = NAME,
    host: str = HOST,
    port: int = PORT,
    genesis: Path | None = GENESIS,
    join: str | None = JOIN,
    peer: list[str] = PEER,
    network_key: str | None = NETWORK_KEY,
    mdns: bool = MDNS,
    mdns_interface: list[str] = typer.Option(
        [],
        "--mdns-interface",
        help="IPv4 address of an interface for mDNS; repeat. Default: the --host address "
        "(all interfaces when --host is 0.0.0.0).",
    ),
    peer_expiry: float = typer.Option(
        DEFAULT_PEER_EXPIRY_S,
        "--peer-expiry",
        min=1.0,
        help="Seconds of silence before a peer is dropped.",
    ),
    gateway_wallet: str | None = typer.Option(
        None,
        "--gateway-wallet",
        help="Wallet that signs and pays for queries sent to the OpenAI-compatible API "
        "(/v1/...): clients on this machine, and others with a key from 'dn apikey create'.",
    ),
    password_file: Path | None = typer.Option(
        None,
        "--password-file",
        help="Read the gateway wallet's password from this file (else $DN_PASSWORD or a prompt).",
    ),
    max_price: str = typer.Option(
        "1",
        "--max-price",
        metavar="DN",
        help="The most the gateway wallet pays per 1,000 tokens (DN); the OpenAI routes refuse "
        "dearer models. A request may lower it (`dn_max_price`), never raise it.",
    ),
    validate: bool = typer.Option(
        False,
        "--validate/--no-validate",
        help="Do a validator's duties: every epoch, evaluate the live models held in "
        "$DN_HOME/models on the built-in suites, commit and reveal their quality scores, and "
        "re-check rejected and sampled tasks (the node key pays the fees).",
    ),
    powr_items: int = typer.Option(
        8,
        "--powr-items",
        min=1,
        max=1000,
        metavar="N",
        help="With --validate: benchmark items per model and epoch.",
    ),
) -> None:
    """Run the node in the foreground until Ctrl-C."""
    from dn.encoding import parse_dn
    from dn.node.service import run_foreground

    cap = parse_dn(max_price, allow_zero=True, what="--max-price")
    wallet = unlock(ctx, gateway_wallet, password_file) if gateway_wallet is not None else None
    node, net = prepare_node(
        ctx,
        name=name,
        host=host,
        genesis=genesis,
        join=join,
        peer=peer,
        mdns=mdns,
        network_key=network_key,
        mdns_interface=mdns_interface,
        peer_expiry=peer_expiry,
    )
    validator = None
    if validate:
        from dn.config import home
        from dn.node.setup import powr_duty
        from dn.runner.modelstore import ModelStore

        models = ModelStore.default(home(opts(ctx).home))
        validator = powr_duty(node, name, models, powr_items)
    role = "validator" if node.is_validator else "full node"
    say(
        f"node {node.key.address} ({role}) on {node.genesis.chain_id} at height "
        f"{node.tip.height}, listening on http://{host}:{port}"
    )
    if wallet is not None:
        say(
            f"OpenAI-compatible API at http://{host}:{port}/v1, paid by {gateway_wallet} "
            f"({wallet.address}) up to {max_price} DN per 1,000 tokens; it answers clients on "
            "this machine, and others with an API key (dn apikey create)"
        )
    if validate:
        say(
            f"PoWR: each epoch, the live models in {models.root} are evaluated on {powr_items} "
            "items each; commits and reveals are paid by the node key"
        )
    run_foreground(
        node, host, port, net, gateway_wallet=wallet, gateway_max_price=cap, validate=validator
    )
    say("node stopped")


def prepare_node(
    ctx: typer.Context,
    *,
    name: str,
    host: str,
    genesis: Path | None,
    join: str | None,
    peer: list[str],
    mdns: bool,
    network_key: str | None = None,
    mdns_interface: list[str] | None = None,
    peer_expiry: float = DEFAULT_PEER_EXPIRY_S,
    key: Keypair | None = None,
) -> tuple[Node, NetOptions]:
    """The node folder set up (genesis pinned from --genesis or --join) and opened, and its
    network options (`open_node`): what `dn node start`, `dn mine` and `dn validate` share."""
    from dn.client.nodes import open_node
    from dn.config import home

    return open_node(
        home(opts(ctx).home),
        name=name,
        host=host,
        genesis=genesis,
        join=join,
        peers=peer,
        mdns=mdns,
        network_key=network_key,
        mdns_interfaces=mdns_interface,
        peer_expiry=peer_expiry,
        key=key,
        notify=say,
    )


@app.command()
def peers(ctx: typer.Context) -> None:
    """List the node's peers: address, height, roles, when last heard from."""
    import time

    with opts(ctx).client() as client:
        data = client.peers()

    def human(out: Any) -> None:
        now_ms = time.time_ns() // 1_000_000
        rows = [
            [
                p["url"],
                p["address"],
                p["height"],
                ",".join(p["roles"]) or "-",
                p["source"],
                f"{max(0, now_ms - p['last_seen_ms']) / 1000:.1f} s ago",
            ]
            for p in data["peers"]
        ]
        out.print(table(None, ["url", "node", "height", "roles", "via", "last seen"], rows))
        for ban in data["banned"]:
            out.print(f"banned: {ban['url']} for {ban['until_s']} s more ({ban['reason']})")

    emit(ctx, data, human)


@app.command()
def status(ctx: typer.Context) -> None:
    """Ask the node (--node) how it is doing; a miner's node also shows its miner."""
    from dn.encoding import format_dn

    with opts(ctx).client() as client:
        data = client.status()

    def human(out: Any) -> None:
        miner = data.get("miner")
        roles = [r for r, on in (("validator", data["validator"]), ("miner", miner)) if on]
        rows = [
            ["node", data["node_address"]],
            ["role", ", ".join(roles) or "full node"],
            ["chain id", data["chain_id"]],
            ["height", data["height"]],
            ["tip", data["tip"]],
            ["pending txs", data["mempool"]],
            ["version", f"{data['version']} (protocol {data['protocol']})"],
        ]
        if miner:
            rows += [
                ["miner", miner["miner"]],
                [
                    "registered",
                    f"yes, bond {format_dn(miner['bond'])} DN" if miner["registered"] else "no",
                ],
                ["models served", len(miner["models"])],
                ["check sessions", miner["sessions"]],
                ["tasks recorded", miner["records"]],
                ["held to settle", f"{miner['unsettled']} (sent if the consumer does not)"],
            ]
        out.print(table(None, ["", ""], rows))

    emit(ctx, data, human)


@app.command()
def address(
    ctx: typer.Context,
    name: str = typer.Option(DEFAULT_NODE_NAME, "--name", help="Which local node (a folder)."),
) -> None:
    """Print this node's address (its key is made on first use), for a genesis --validator."""
    from dn.config import home
    from dn.node.node import NodeHome

    node_home = NodeHome.named(name, home(opts(ctx).home))
    made = not node_home.key_file.exists()
    key = node_home.key()
    if made:
        say(f"made a new key for node {name!r} in {node_home.key_file}")
    emit(ctx, {"name": name, "address": key.address}, lambda out: out.print(key.address))
