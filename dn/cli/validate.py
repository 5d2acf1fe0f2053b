"""`dn validate`: run a node as a validator that joins the set with a wallet's bond;
`dn validator list | unbond`: look at the set, leave it."""

from __future__ import annotations

from pathlib import Path

import typer

from dn.cli.node import GENESIS, HOST, JOIN, MDNS, NAME, NETWORK_KEY, PASSWORD_FILE, PEER, PORT
from dn.cli.output import opts, say, unlock


def validate(
    ctx: typer.Context,
    wallet: str = typer.Option(
        ..., "--wallet", help="Wallet that bonds, signs blocks and pays the validator's fees."
    ),
    bond: str | None = typer.Option(
        None, "--bond", help="Bond in DN (default: the chain's validator_min_bond)."
    ),
    name: str = NAME,
    host: str = HOST,
    port: int = PORT,
    genesis: Path | None = GENESIS,
    join: str | None = JOIN,
    peer: list[str] = PEER,
    network_key: str | None = NETWORK_KEY,
    mdns: bool = MDNS,
    powr_items: int = typer.Option(
        8, "--powr-items", min=1, max=1000, metavar="N", help="Benchmark items per model, epoch."
    ),
    password_file: Path | None = PASSWORD_FILE,
) -> None:
    """Start (or join) a node as a validator: bond from the wallet (`validator.bond`) once the
    node has synced, join the set at the next epoch boundary, then produce blocks in turn,
    evaluate models every epoch (PoWR) and re-check rejected and sampled tasks, until Ctrl-C.
    The wallet's key signs the blocks. To leave: `dn validator unbond`."""
    from dn.cli.node import prepare_node
    from dn.config import home
    from dn.encoding import format_dn, parse_dn
    from dn.node.service import run_foreground
    from dn.node.validator.powr import for_node
    from dn.runner.modelstore import ModelStore

    keypair = unlock(ctx, wallet, password_file)  # a missing wallet fails before the prompt
    node, net = prepare_node(
        ctx,
        name=name,
        host=host,
        genesis=genesis,
        join=join,
        peer=peer,
        mdns=mdns,
        network_key=network_key,
        key=keypair,
    )
    amount = parse_dn(bond, what="bond") if bond else int(node.genesis.param("validator_min_bond"))
    models = ModelStore.default(home(opts(ctx).home))
    validator = for_node(node, models, items_per_model=powr_items)
    state = "in the validator set" if node.is_validator else "not in the validator set yet"
    say(
        f"validator {keypair.address} ({state}) on {node.genesis.chain_id} at height "
        f"{node.tip.height}, listening on http://{host}:{port}"
    )
    if not node.is_validator:
        say(f"it bonds {format_dn(amount)} DN once synced and joins at the next epoch boundary")
    run_foreground(node, host, port, net, validate=validator, bond=amount)
    say("validator stopped")


app = typer.Typer(help="The validator set: look at it, leave it.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """The validators: who is in the set, their own weight, bond, delegations, and who joins
    or leaves at the next epoch boundary."""
    from dn.cli.output import emit, table
    from dn.encoding import format_dn

    with opts(ctx).client() as client:
        data = client.validators()

    def human(out: object) -> None:
        rows = []
        for v in data["validators"]:
            change = (
                f"joins at epoch {v['joins']}"
                if v["joins"] is not None
                else f"leaves at epoch {v['leaves']}"
                if v["leaves"] is not None
                else ""
            )
            rows.append(
                [
                    v["address"],
                    "yes" if v["active"] else "no",
                    "genesis" if v["genesis"] else "bonded",
                    format_dn(v["bond"]),
                    format_dn(v["weight"] + v["delegated"]),
                    change,
                ]
            )
        out.print(  # type: ignore[attr-defined]
            table(
                f"validators at height {data['height']}",
                ["address", "active", "kind", "bond (DN)", "stake (DN)", "next"],
                rows,
            )
        )

    emit(ctx, data, human)


@app.command()
def unbond(
    ctx: typer.Context,
    amount: str = typer.Argument(..., help="DN to unbond (all of it to leave the set)."),
    wallet: str = typer.Option(..., "--wallet", help="The validator's wallet."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="Read the password from this file (else $DN_PASSWORD)."
    ),
) -> None:
    """Take DN out of a validator's bond (`validator.unbond`). Unbonding all of it leaves the set
    at the next epoch boundary; the DN come back after the chain's unbonding period."""
    from dn.cli.output import emit
    from dn.client.stakes import unbond as send_unbond
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(amount, what="amount")
    keypair = unlock(ctx, wallet, password_file)
    with opts(ctx).client() as client:
        data = send_unbond(client, keypair, units)

    def human(out: object) -> None:
        out.print(  # type: ignore[attr-defined]
            f"unbonded {format_dn(units)} DN in block {data.get('height')}: tx {data['id']}; "
            f"it comes back at block {data['unlock_height']}"
        )

    emit(ctx, data, human)
