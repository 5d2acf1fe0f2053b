"""`dn chain …`: init, info, blocks, block, tx, task, verify, explain."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from dn.chain.genesis import PARAMS
from dn.cli.output import emit, opts, progress, say, table
from dn.config import DEFAULT_NODE_NAME
from dn.encoding import format_dn
from dn.errors import ChainError, InputError

app = typer.Typer(
    help="The chain: set one up, look at its blocks, verify it.", no_args_is_help=True
)

_PARAM_NAMES = ", ".join(PARAMS)

NodeName = typer.Option(DEFAULT_NODE_NAME, "--name", help="Which local node (a folder in nodes/).")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


def _short(text: str, n: int = 12) -> str:
    return text[:n] + "…" if len(text) > n else text


@app.command()
def init(
    ctx: typer.Context,
    dev: bool = typer.Option(False, "--dev", help="A dev chain whose one validator is this node."),
    validator: list[str] = typer.Option(
        [],
        "--validator",
        help="A validator's node address (dn1…, from 'dn node address'); repeat for each one.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the genesis file (not with --dev)."
    ),
    alloc: list[str] = typer.Option(
        [], "--alloc", help="Fund NAME_OR_ADDRESS=AMOUNT (DN) at genesis; repeat as needed."
    ),
    param: list[str] = typer.Option(
        [],
        "--param",
        help="Set a genesis parameter, NAME=VALUE (an integer), e.g. block_time_ms=200; repeat "
        f"as needed. Names: {_PARAM_NAMES}.",
    ),
    name: str = NodeName,
    network: str = typer.Option("devnet", "--network", help="Network name (part of the chain id)."),
    block_time_ms: int | None = typer.Option(
        None, "--block-time-ms", help="Block interval in ms (the same as --param block_time_ms=N)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="With --dev: throw away this node's existing chain. With --out: overwrite the file.",
    ),
) -> None:
    """Write a genesis: a multi-validator file (--validator …, --out FILE) or a dev chain
    for this node (--dev)."""
    from dn.chain.genesis import checked_params

    if dev:
        if validator:
            raise InputError(
                "--dev makes a chain whose one validator is this node: leave out --validator, "
                "or leave out --dev to write a genesis file for several validators"
            )
        if out is not None:
            raise InputError(
                "--dev writes the genesis into this node's folder: leave out --out, "
                "or leave out --dev to write a genesis file for several validators"
            )
    elif not validator:
        raise InputError(
            "give --validator ADDRESS for each validator (their 'dn node address'), "
            "or --dev for a single-validator chain on this node"
        )
    elif out is None:
        raise InputError("give --out FILE: where to write the genesis file")
    params = checked_params(_param_overrides(param, block_time_ms))
    allocations = _allocations(ctx, alloc)
    if out is None:  # --dev
        _init_dev(ctx, name, allocations, network=network, params=params, force=force)
    else:
        validators = _validators(validator)
        _write_genesis(ctx, out, validators, allocations, network, params, force=force)


def _param_overrides(items: list[str], block_time_ms: int | None) -> dict[str, int]:
    """NAME=VALUE texts (and --block-time-ms) as a dict; one name given two values is an error."""
    given: list[tuple[str, str, int]] = []  # (name, as the user wrote it, value)
    if block_time_ms is not None:
        given.append(("block_time_ms", f"--block-time-ms {block_time_ms}", block_time_ms))
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param wants NAME=VALUE, got {item!r}")
        try:
            value = int(text.strip())
        except ValueError:
            raise InputError(f"--param {key} wants an integer, got {text!r}") from None
        given.append((key, f"--param {item}", value))
    overrides: dict[str, int] = {}
    first: dict[str, str] = {}
    for key, source, value in given:
        if key in overrides and overrides[key] != value:
            raise InputError(f"{key} is given twice: {first[key]} and {source}")
        overrides[key] = value
        first.setdefault(key, source)
    return overrides


def _allocations(ctx: typer.Context, items: list[str]) -> dict[str, int]:
    """NAME_OR_ADDRESS=AMOUNT texts as {address: units}, adding up repeats."""
    from dn.cli.wallet import resolve_address
    from dn.encoding import parse_dn

    allocations: dict[str, int] = {}
    for item in items:
        who, sep, amount = item.rpartition("=")
        if not sep or not who:
            raise InputError(f"--alloc wants NAME_OR_ADDRESS=AMOUNT, got {item!r}")
        address = resolve_address(ctx, who)
        allocations[address] = allocations.get(address, 0) + parse_dn(amount)
    return allocations


def _validators(addresses: list[str]) -> list[str]:
    """Checked `dn1…` addresses, sorted and without repeats (consensus takes them in order)."""
    from dn.encoding import pubkey_from_address
    from dn.errors import InvalidAddress

    for address in addresses:
        try:
            pubkey_from_address(address)
        except InvalidAddress as exc:
            raise InvalidAddress(f"--validator: {exc.message}") from None
    return sorted(set(addresses))


def _init_dev(
    ctx: typer.Context,
    name: str,
    allocations: dict[str, int],
    *,
    network: str,
    params: dict[str, int],
    force: bool,
) -> None:
    from dn.config import home
    from dn.node.node import NodeHome
    from dn.node.setup import init_dev

    node_home = NodeHome.named(name, home(opts(ctx).home))
    genesis = init_dev(node_home, allocations, network=network, params=params, force=force)
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


def _write_genesis(
    ctx: typer.Context,
    out: Path,
    validators: list[str],
    allocations: dict[str, int],
    network: str,
    params: dict[str, int],
    *,
    force: bool,
) -> None:
    from dn.node.setup import write_genesis

    genesis = write_genesis(
        out, validators, allocations, network=network, params=params, force=force
    )
    data = {
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.hash,
        "validators": genesis.validators,
        "out": str(out),
    }

    def human(console: Any) -> None:
        from rich.markup import escape

        where = escape(str(out))  # a path may hold [brackets] that Rich would take for markup
        console.print(f"genesis for chain [bold]{genesis.chain_id}[/] written to {where}")
        console.print(f"validators ({len(genesis.validators)}):")
        for address in genesis.validators:
            console.print(f"  {address}")
        console.print(f"start each node with: dn node start --genesis {where}")

    emit(ctx, data, human)


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
def task(
    ctx: typer.Context, task_id: str = typer.Argument(..., help="Task id (hex), as dn query says.")
) -> None:
    """Show a settled task: who generated and checked it, what it cost, and the validators'
    verdict on it once a quorum of them agreed (who was at fault and what they lost), or, while
    it is contested, each vote so far and until which block votes are taken."""
    from dn.client.tasks import show_task

    with opts(ctx).client() as client:
        data = show_task(client, task_id.lower())

    def human(out: Any) -> None:
        out.print(f"task {data['task']}: {data['status']} in block {data['height']}")
        rows = [[k, data[k]] for k in ("model", "consumer", "generator", "checker", "tokens")]
        rows.append(["paid", f"{format_dn(data['paid'])} DN"])
        out.print(table(None, ["", ""], rows))
        verdict = data.get("verdict")
        contest = data.get("contest")
        if verdict is None and contest is not None:
            when = "open until" if contest["open"] else "closed at"
            out.print(
                f"contested, no ruling yet: {len(contest['votes'])} vote(s); a ruling needs "
                f"{contest['quorum_bps'] / 100:g} % of the voice; votes {when} block "
                f"{contest['open_until']}"
            )
            for voter, faults in contest["votes"].items():
                said = ", ".join(f"{a} {r}" for a, r in faults.items()) or "nobody at fault"
                out.print(f"  {voter}: {said}")
            return
        if verdict is None:
            out.print("no verdict (yet): validators judge rejected and spot-checked tasks")
            return
        out.print(f"verdict by {', '.join(verdict['by'])} in block {verdict['height']}:")
        if not verdict["faults"]:
            out.print("  nobody at fault")
        for address, reason in verdict["faults"].items():
            lost = format_dn(verdict["slashed"].get(address, 0))
            line = f"  {address}: {reason}, slashed {lost} DN"
            forfeited = verdict.get("forfeited", {}).get(address, 0)
            if forfeited:
                line += f", its share of {format_dn(forfeited)} DN taken back"
            out.print(line)
        if verdict["refund"]:
            out.print(f"  the consumer got {format_dn(verdict['refund'])} DN back")
        for address, lost in verdict.get("outvoted", {}).items():
            out.print(f"  validator {address} voted otherwise, slashed {format_dn(lost)} DN")

    emit(ctx, data, human)


@app.command()
def verify(
    ctx: typer.Context,
    name: str = NodeName,
    genesis: Path | None = typer.Option(
        None,
        "--genesis",
        metavar="FILE",
        help="The genesis the store must hold (default: the node's genesis.json, if it has one).",
    ),
) -> None:
    """Replay the local node's store from genesis: links, signatures, every block's hash (the
    tip's too), state roots, supply, and that the store's genesis is the genesis file's."""
    from dn.chain.genesis import Genesis
    from dn.chain.store import Store
    from dn.chain.verify import verify_store
    from dn.config import home
    from dn.node.node import NodeHome

    node_home = NodeHome.named(name, home(opts(ctx).home))
    genesis_file = genesis or (node_home.genesis_file if node_home.genesis_file.exists() else None)
    expected = Genesis.load(genesis_file) if genesis_file is not None else None
    store = Store.open(node_home.store_file, readonly=True)
    try:
        with progress("verifying", store.tip().height) as update:
            report = verify_store(store, update, genesis=expected)
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


@app.command()
def explain(
    ctx: typer.Context,
    who: str = typer.Argument(..., metavar="ADDRESS", help="An address (dn1…) or a wallet name."),
    name: str = NodeName,
    start: int = typer.Option(
        0, "--from", min=0, help="List the entries from this height on (the rest is the opening)."
    ),
) -> None:
    """Trace every credit and debit of an address's balance to its cause (a transaction, a
    task, an epoch reward, a bond or stake coming back), replaying the local node's store."""
    from dn.chain.explain import UNEXPLAINED
    from dn.chain.explain import explain as explain_address
    from dn.chain.store import Store
    from dn.cli.wallet import resolve_address
    from dn.config import home
    from dn.encoding import format_dn
    from dn.node.node import NodeHome

    address = resolve_address(ctx, who)
    node_home = NodeHome.named(name, home(opts(ctx).home))
    store = Store.open(node_home.store_file, readonly=True)
    try:
        with progress("replaying", store.tip().height) as update:
            found = explain_address(store, address, start, update)
    finally:
        store.close()
    data = found.to_json()
    totals = data["totals"]

    def signed(units: int) -> str:
        return ("+" if units > 0 else "") + format_dn(units)

    def human(out: Any) -> None:
        out.print(f"{address} at height {found.height}")
        rows = [
            [e.height, _short(e.tx) if e.tx else "", e.cause, signed(e.amount)]
            for e in found.entries
        ]
        if start:
            rows.insert(0, [start, "", "opening balance", format_dn(found.opening)])
        out.print(table(None, ["height", "tx", "cause", "DN"], rows))
        if found.locked:
            locked = [[_locked(item), format_dn(item["amount"])] for item in found.locked]
            out.print(table("locked (not in the balance)", ["where", "DN"], locked))
        out.print(
            f"received {format_dn(totals['received'])} DN, spent {format_dn(totals['spent'])} "
            f"DN, balance [bold]{format_dn(totals['balance'])} DN[/]"
            + (f", locked {format_dn(totals['locked'])} DN" if totals["locked"] else "")
        )
        if totals["unexplained"] or any(e.kind == UNEXPLAINED for e in found.entries):
            out.print(f"[red]unexplained[/]: {signed(totals['unexplained'])} units")
        else:
            out.print("[green]ok[/]: every unit explained")

    emit(ctx, data, human)
    if any(e.kind == UNEXPLAINED for e in found.entries):
        raise ChainError("some balance changes have no cause the explainer knows")


def _locked(item: dict[str, Any]) -> str:
    if item["kind"] == "escrow":
        unlocking = item["unlocking"]
        return "query escrow" + (f", {format_dn(unlocking)} DN unlocking" if unlocking else "")
    if item["kind"] == "bond":
        return "miner bond"
    if item["kind"] == "validator-bond":
        return "validator bond"
    if item["kind"] == "stake" and "name" in item:
        return f"stake on model {item['name']} ({_short(item['target'])})"
    if item["kind"] == "stake":
        return f"stake on validator {item['target']}"
    return f"unbonding, back at block {item['due']}"
