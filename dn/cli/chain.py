"""`dn chain …`: init, info, blocks, block, tx, verify."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer

from dn.cli.output import emit, opts, progress, say, table
from dn.config import DEFAULT_NODE_NAME
from dn.errors import ChainError, InputError

app = typer.Typer(
    help="The chain: set one up, look at its blocks, verify it.", no_args_is_help=True
)

NodeName = typer.Option(DEFAULT_NODE_NAME, "--name", help="Which local node (a folder in nodes/).")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


def _short(text: str, n: int = 12) -> str:
    return text[:n] + "…" if len(text) > n else text


@app.command()
def init(
    ctx: typer.Context,
    dev: bool = typer.Option(False, "--dev", help="A dev chain whose one validator is this node."),
    alloc: list[str] = typer.Option(
        [], "--alloc", help="Fund NAME_OR_ADDRESS=AMOUNT (DN) at genesis; repeat as needed."
    ),
    name: str = NodeName,
    network: str = typer.Option("devnet", "--network", help="Network name (part of the chain id)."),
    block_time_ms: int | None = typer.Option(None, "--block-time-ms", help="Block interval."),
    force: bool = typer.Option(False, "--force", help="Throw away this node's existing chain."),
) -> None:
    """Write a genesis for this node and create its chain store."""
    from dn.chain.genesis import default_params
    from dn.cli.wallet import resolve_address
    from dn.config import home
    from dn.encoding import parse_dn
    from dn.node.node import Node, NodeHome, init_dev_chain

    if not dev:
        raise InputError(
            "only single-validator dev chains can be made yet: add --dev "
            "(multi-validator genesis files come with the network release)"
        )
    allocations: dict[str, int] = {}
    for item in alloc:
        who, sep, amount = item.rpartition("=")
        if not sep or not who:
            raise InputError(f"--alloc wants NAME_OR_ADDRESS=AMOUNT, got {item!r}")
        address = resolve_address(ctx, who)
        allocations[address] = allocations.get(address, 0) + parse_dn(amount)
    params = default_params()
    if block_time_ms is not None:
        params["block_time_ms"] = block_time_ms
    node_home = NodeHome.named(name, home(opts(ctx).home))
    genesis = init_dev_chain(node_home, allocations, network=network, params=params, force=force)
    Node(node_home, genesis).close()  # creates the store with block 0
    data = {
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.hash,
        "genesis_file": str(node_home.genesis_file),
        "validator": genesis.validators[0],
        "allocations": genesis.allocations,
    }
    emit(
        ctx,
        data,
        lambda out: out.print(
            f"chain [bold]{genesis.chain_id}[/] ready in {node_home.path}\n"
            f"validator (this node): {genesis.validators[0]}\n"
            "start it with: dn node start"
        ),
    )


@app.command()
def info(ctx: typer.Context) -> None:
    """The chain as the node sees it: id, height, tip, state root, supply."""
    from dn.encoding import format_dn

    with opts(ctx).client() as client:
        status = client.status()

    def human(out: Any) -> None:
        rows = [
            ["chain id", status["chain_id"]],
            ["height", status["height"]],
            ["tip", status["tip"]],
            ["tip time", _when(status["tip_time"])],
            ["state root", status["state_root"]],
            ["node", status["node_address"]],
            ["pending txs", status["mempool"]],
            ["supply", f"{format_dn(status['supply']['created'])} DN"],
            ["burned", f"{format_dn(status['supply']['burned'])} DN"],
        ]
        out.print(table(None, ["", ""], rows))

    emit(ctx, status, human)


def _block_rows(blocks: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            b["height"],
            _short(b["hash"]),
            _when(b["header"]["time"]),
            len(b["tx_ids"]),
            _short(b["header"]["proposer"], 16),
        ]
        for b in blocks
    ]


@app.command()
def blocks(
    ctx: typer.Context,
    start: int | None = typer.Option(None, "--from", help="First height (default: the last few)."),
    limit: int = typer.Option(10, "--limit", min=1, max=100, help="How many blocks."),
) -> None:
    """List blocks."""
    with opts(ctx).client() as client:
        if start is None:
            start = max(0, client.status()["height"] - limit + 1)
        data = client.blocks(start, limit)
    emit(
        ctx,
        data,
        lambda out: out.print(
            table(None, ["height", "hash", "time", "txs", "proposer"], _block_rows(data["blocks"]))
        ),
    )


@app.command()
def block(
    ctx: typer.Context, ref: str = typer.Argument(..., help="A height or a block hash.")
) -> None:
    """Show one block and its transactions."""
    from dn.encoding import format_dn

    with opts(ctx).client() as client:
        data = client.block(ref)

    def human(out: Any) -> None:
        h = data["header"]
        out.print(f"block {data['height']}  {data['hash']}")
        out.print(f"time {_when(h['time'])}  proposer {h['proposer']}")
        out.print(f"prev {h['prev']}\nstate root {h['state_root']}\ntxs root {h['txs_root']}")
        rows = [
            [
                _short(tx_id),
                tx["kind"],
                _short(tx["sender"], 16),
                tx["nonce"],
                format_dn(tx["fee"]),
                format_dn(tx["payload"].get("amount", 0)),
            ]
            for tx_id, tx in zip(data["tx_ids"], data["txs"], strict=True)
        ]
        if rows:
            out.print(table(None, ["tx", "kind", "sender", "nonce", "fee", "amount"], rows))

    emit(ctx, data, human)


@app.command()
def tx(ctx: typer.Context, tx_id: str = typer.Argument(..., help="Transaction id (hex).")) -> None:
    """Show a transaction and where it is."""
    with opts(ctx).client() as client:
        data = client.tx(tx_id.lower())

    def human(out: Any) -> None:
        body = data["tx"]
        where = f"in block {data['height']}" if data["status"] == "included" else "pending"
        out.print(f"tx {data['id']} ({where})")
        rows = [[k, body[k]] for k in ("kind", "sender", "nonce", "fee")]
        rows += [[f"payload.{k}", v] for k, v in body["payload"].items()]
        out.print(table(None, ["", ""], rows))

    emit(ctx, data, human)


@app.command()
def verify(ctx: typer.Context, name: str = NodeName) -> None:
    """Replay the local node's store from genesis: links, signatures, state roots, supply."""
    from dn.chain.store import Store
    from dn.chain.verify import verify_store
    from dn.config import home
    from dn.node.node import NodeHome

    node_home = NodeHome.named(name, home(opts(ctx).home))
    store = Store.open(node_home.store_file, readonly=True)
    try:
        with progress("verifying", store.tip().height) as update:
            report = verify_store(store, update)
    finally:
        store.close()

    def human(out: Any) -> None:
        if report["ok"]:
            out.print(
                f"[green]ok[/]: {report['blocks']} blocks, {report['txs']} transactions, "
                f"state root {_short(report['state_root'], 16)}, supply invariant holds"
            )
        for problem in report["problems"]:
            out.print(f"[red]problem[/]: {problem}")

    emit(ctx, report, human)
    if not report["ok"]:
        raise ChainError("verification failed")
    if opts(ctx).verbose:
        say(f"verified chain {report['chain_id']} up to height {report['height']}")
